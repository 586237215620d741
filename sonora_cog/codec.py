"""Payload dict + :class:`~sonora_cog.meta.SnapshotMeta` ⇄ the bytes of one stored record (pure: no I/O).

Envelope, format version 2 (all integers big-endian)::

    offset  size  field
    ------  ----  -----------------------------------------------------------------------------
         0     4  magic  b"SNRA"
         4     1  format version (2)
         5     1  flags: 0x01 body is zstd-compressed, 0x02 body is AES-256-GCM encrypted;
                  any other bit set = a feature of a newer release
         6     4  M  = length of the meta JSON
        10     8  B  = length of the body as stored
        18     8  P  = length of the payload JSON (before compression and encryption)
        26     8  blake2b-8 of bytes 0..26 (the fixed-header checksum)
        34        -- FIXED_HEADER_BYTES: every format version keeps the 34 bytes above as they are
        34     8  key id            } only when encrypted: names the key (see keyring.py) and the
        42    12  nonce             } random 96-bit GCM nonce
         .     M  meta JSON (orjson of ``SnapshotMeta.to_json()``), readable without any key
         .    16  blake2b-16 of every byte before it (the header checksum)
                  -- end of header: H = 34 + (20 if encrypted) + M + 16 bytes
         H     B  body: payload JSON, then zstd (one frame, content size in it) if 0x01,
                  then AES-256-GCM (ciphertext + 16-byte tag, the whole header as associated data) if 0x02
       H+B    16  trailer: XXH3-128 of the body as stored

``meta.content_hash`` is the XXH3-128 (hex) of the payload JSON, checked again after decoding. A body that
is the payload JSON itself (no compression, no encryption) has that same hash as its trailer, so a record
costs one pass of one fast hash over its payload (the header checksums cover a few hundred bytes).

The header and the body are checked separately, so a record can be given another meta (a snapshot made
from a live record, :meth:`Codec.rewrap`) without touching its body; the content hash in the meta ties the
two together, and an encrypted body is also bound to its header as the cipher's associated data.

Format version 1, written by sonora_cog 0.1, is still read: the same layout, with ``content_hash`` the
SHA-256 of the payload JSON and the trailer the blake2b-16 of (header ‖ sha256(body)).

Reading checks, in this order, each failure with its own exception (all from :mod:`sonora_cog.errors`):

=============================================================  =============================================
record longer than ``max_record_bytes`` (before parsing)        :class:`SnapshotTooLarge`
first bytes are not ``SNRA``                                    :class:`BadMagic`
fewer bytes than the fixed header / header / record             :class:`TruncatedSnapshot`
fixed-header, header or trailer checksum wrong                  :class:`ChecksumMismatch`
format version or flag unknown (checksum good: a newer writer)  :class:`UnsupportedFormat`
declared record / payload / meta length over its cap            :class:`SnapshotTooLarge`
encrypted, and no keyring or no key with the record's id        :class:`WrongKeyError`
key found but the GCM tag fails (modified, checksums redone)    :class:`TamperedSnapshot`
zstd output exceeds the declared length or the cap              :class:`SnapshotTooLarge`
payload differs from ``meta.content_hash``                      :class:`ChecksumMismatch`
meta or payload not valid JSON / payload not an object          :class:`InvalidSnapshot`
anything else inconsistent (bad zstd frame, trailing bytes)     :class:`SnapshotCorrupted`
=============================================================  =============================================

``zstandard`` (``sonora-cog[zstd]``) and ``cryptography`` (``sonora-cog[crypto]``) are imported on first
use; when one is needed and missing, :class:`~sonora_cog.errors.ConfigError` names the extra to install.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any, Literal

import orjson
import xxhash

from .errors import (
    BadMagic,
    ChecksumMismatch,
    ConfigError,
    InvalidSnapshot,
    SnapshotCorrupted,
    SnapshotTooLarge,
    TamperedSnapshot,
    TruncatedSnapshot,
    UnsupportedFormat,
    WrongKeyError,
)
from .keyring import KEY_ID_BYTES, Keyring, load_aesgcm
from .meta import SnapshotMeta

__all__ = (
    "FIXED_HEADER_BYTES",
    "FORMAT_VERSION",
    "MAGIC",
    "Codec",
    "DecodedRecord",
    "EncodedRecord",
    "Keyring",
    "RecordInfo",
    "check_json_shape",
    "describe",
    "header_length",
    "read_meta",
)

MAGIC = b"SNRA"
#: The envelope format version this release writes.
FORMAT_VERSION = 2
#: The envelope format versions this release reads.
READ_VERSIONS = (1, 2)
FLAG_ZSTD = 0x01
FLAG_ENCRYPTED = 0x02
_KNOWN_FLAGS = FLAG_ZSTD | FLAG_ENCRYPTED

_FIXED = struct.Struct(">4sBBIQQ")
_FIXED_SUM_BYTES = 8
#: Bytes at the start of every record from which :func:`header_length` tells the full header length.
FIXED_HEADER_BYTES = _FIXED.size + _FIXED_SUM_BYTES
NONCE_BYTES = 12
TAG_BYTES = 16
CHECKSUM_BYTES = 16
#: The meta JSON is small (a label, a title, ids); anything larger is refused before it is read.
MAX_META_BYTES = 64 * 1024
# A zstd window up to this size is accepted whatever the payload length (it costs little memory).
_MIN_WINDOW_LIMIT = 1 << 20


def _blake2b(data: bytes | memoryview, size: int) -> bytes:
    return hashlib.blake2b(data, digest_size=size).digest()


def _content_digest(version: int, raw: bytes | memoryview) -> bytes:
    """The hash ``meta.content_hash`` holds (hex) for a payload JSON, by envelope format version."""
    return hashlib.sha256(raw).digest() if version == 1 else xxhash.xxh3_128_digest(raw)


def _zstd() -> ModuleType:
    try:
        return importlib.import_module("zstandard")
    except ImportError:
        raise ConfigError("zstd compression needs the 'zstandard' package: pip install 'sonora-cog[zstd]'") from None


@dataclass(frozen=True, slots=True)
class EncodedRecord:
    """What :meth:`Codec.encode` returns.

    Attributes
    ----------
    data:
        The record's bytes, ready to store.
    meta:
        The meta that was written: ``content_hash`` filled in, ``size`` set to ``len(data)``.
    """

    data: bytes
    meta: SnapshotMeta


@dataclass(frozen=True, slots=True)
class DecodedRecord:
    """What :meth:`Codec.decode` returns.

    Attributes
    ----------
    meta:
        The record's meta, ``size`` set to the record's length.
    payload:
        The payload JSON object, as plain Python values.
    """

    meta: SnapshotMeta
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RecordInfo:
    """A record's envelope, described for people (CLI ``inspect``); built by :func:`describe`.

    Attributes
    ----------
    format_version:
        Envelope format version.
    compression:
        ``"zstd"`` or ``"none"``.
    encrypted:
        Whether the body is AES-256-GCM encrypted.
    key_id:
        Id of the key the record needs, when encrypted.
    header_bytes, body_bytes, payload_bytes, record_bytes:
        Lengths of the header, the stored body, the payload JSON, and the whole record.
    meta:
        The record's meta (``size`` = ``record_bytes``).
    intact:
        Whether all of the record is there and its trailer checksum matches (decryption not tried).
    """

    format_version: int
    compression: Literal["none", "zstd"]
    encrypted: bool
    key_id: str | None
    header_bytes: int
    body_bytes: int
    payload_bytes: int
    record_bytes: int
    meta: SnapshotMeta
    intact: bool

    @property
    def compressed(self) -> bool:
        """Whether the body is zstd-compressed."""
        return self.compression == "zstd"


@dataclass(frozen=True, slots=True)
class _Header:
    version: int
    flags: int
    body_bytes: int
    payload_bytes: int
    key_id: str | None
    nonce: bytes
    header_bytes: int
    meta: SnapshotMeta

    @property
    def record_bytes(self) -> int:
        return self.header_bytes + self.body_bytes + CHECKSUM_BYTES


def _check_magic(head: bytes | memoryview) -> None:
    start = bytes(head[: len(MAGIC)])
    if start != MAGIC[: len(start)]:
        raise BadMagic("not a sonora record (the first bytes are not b'SNRA')")
    if len(start) < len(MAGIC):
        raise TruncatedSnapshot(f"record is {len(start)} bytes long: shorter than its magic")


def _parse_fixed(head: bytes | memoryview) -> tuple[int, int, int, int, int]:
    """Check the fixed header; return ``(version, flags, meta_len, body_len, payload_len)``."""
    _check_magic(head)
    if len(head) < FIXED_HEADER_BYTES:
        raise TruncatedSnapshot(
            f"record is {len(head)} bytes long: shorter than the {FIXED_HEADER_BYTES}-byte fixed header"
        )
    fixed = head[: _FIXED.size]
    if _blake2b(fixed, _FIXED_SUM_BYTES) != head[_FIXED.size : FIXED_HEADER_BYTES]:
        raise ChecksumMismatch("fixed header checksum does not match")
    _, version, flags, meta_len, body_len, payload_len = _FIXED.unpack(fixed)
    if version not in READ_VERSIONS:
        raise UnsupportedFormat(
            f"record uses envelope format version {version}; this release reads versions "
            f"{', '.join(map(str, READ_VERSIONS))}"
        )
    if flags & ~_KNOWN_FLAGS:
        raise UnsupportedFormat(f"record uses envelope features this release does not know (flags {flags:#04x})")
    if meta_len > MAX_META_BYTES:
        raise SnapshotTooLarge(f"record meta is {meta_len} bytes, over the {MAX_META_BYTES}-byte cap")
    return version, flags, meta_len, body_len, payload_len


def _header_length(flags: int, meta_len: int) -> int:
    crypto = KEY_ID_BYTES + NONCE_BYTES if flags & FLAG_ENCRYPTED else 0
    return FIXED_HEADER_BYTES + crypto + meta_len + CHECKSUM_BYTES


def _parse_header(head: bytes | memoryview) -> _Header:
    version, flags, meta_len, body_len, payload_len = _parse_fixed(head)
    end = _header_length(flags, meta_len)
    if len(head) < end:
        raise TruncatedSnapshot(f"record is {len(head)} bytes long: shorter than its {end}-byte header")
    if _blake2b(head[: end - CHECKSUM_BYTES], CHECKSUM_BYTES) != head[end - CHECKSUM_BYTES : end]:
        raise ChecksumMismatch("header checksum does not match")
    pos = FIXED_HEADER_BYTES
    kid: str | None = None
    nonce = b""
    if flags & FLAG_ENCRYPTED:
        kid = bytes(head[pos : pos + KEY_ID_BYTES]).hex()
        nonce = bytes(head[pos + KEY_ID_BYTES : pos + KEY_ID_BYTES + NONCE_BYTES])
        pos += KEY_ID_BYTES + NONCE_BYTES
    try:
        meta_obj = orjson.loads(head[pos : pos + meta_len])
    except orjson.JSONDecodeError as exc:
        raise InvalidSnapshot("meta", f"not valid JSON ({exc})") from None
    record_bytes = end + body_len + CHECKSUM_BYTES
    meta = SnapshotMeta.from_json(meta_obj, size=record_bytes)
    return _Header(version, flags, body_len, payload_len, kid, nonce, end, meta)


def header_length(head: bytes) -> int:
    """Return how many bytes the full header of a record occupies, from its first bytes.

    Parameters
    ----------
    head:
        At least the first :data:`FIXED_HEADER_BYTES` bytes of a record.

    Returns
    -------
    int
        The header length; read that many bytes and pass them to :func:`read_meta`.

    Raises
    ------
    TruncatedSnapshot
        ``head`` is shorter than :data:`FIXED_HEADER_BYTES`.
    BadMagic, ChecksumMismatch, UnsupportedFormat, SnapshotTooLarge
        The fixed header is not a sonora one, is damaged, is from a newer release, or declares an
        oversized meta.
    """
    _, flags, meta_len, _, _ = _parse_fixed(head)
    return _header_length(flags, meta_len)


def read_meta(head: bytes) -> SnapshotMeta:
    """Return a record's meta from its header alone; no key is needed, even for encrypted records.

    Parameters
    ----------
    head:
        The first bytes of a record: at least :func:`header_length` of them (more is fine).

    Returns
    -------
    SnapshotMeta
        The meta, checked against the header checksum; ``size`` is the record's full length as its
        header declares it.

    Raises
    ------
    TruncatedSnapshot
        ``head`` is shorter than the header.
    BadMagic, ChecksumMismatch, UnsupportedFormat, SnapshotTooLarge, InvalidSnapshot
        See the module docstring.
    """
    return _parse_header(head).meta


def describe(data: bytes) -> RecordInfo:
    """Describe a record's envelope (format, compression, encryption, key id, sizes) without a key.

    Parameters
    ----------
    data:
        The record, or at least its header (``intact`` is then ``False``).

    Returns
    -------
    RecordInfo

    Raises
    ------
    TruncatedSnapshot, BadMagic, ChecksumMismatch, UnsupportedFormat, SnapshotTooLarge, InvalidSnapshot
        The header cannot be read (see :func:`read_meta`).
    """
    header = _parse_header(data)
    intact = len(data) == header.record_bytes and _trailer_ok(memoryview(data), header)[0]
    return RecordInfo(
        format_version=header.version,
        compression="zstd" if header.flags & FLAG_ZSTD else "none",
        encrypted=bool(header.flags & FLAG_ENCRYPTED),
        key_id=header.key_id,
        header_bytes=header.header_bytes,
        body_bytes=header.body_bytes,
        payload_bytes=header.payload_bytes,
        record_bytes=header.record_bytes,
        meta=header.meta,
        intact=intact,
    )


def _trailer_ok(view: memoryview, header: _Header) -> tuple[bool, bytes]:
    """Check the trailer; return ``(ok, the body's content digest)`` (see :func:`_content_digest`)."""
    end = header.header_bytes + header.body_bytes
    body_digest = _content_digest(header.version, view[header.header_bytes : end])
    if header.version == 1:
        expected = _blake2b(bytes(view[: header.header_bytes]) + body_digest, CHECKSUM_BYTES)
    else:
        expected = body_digest
    return expected == view[end : end + CHECKSUM_BYTES], body_digest


class Codec:
    """Encodes payloads into records and decodes them back, with the configured compression,
    encryption and size caps.

    A codec's settings are fixed at construction; it is safe to share between threads (encoding runs
    off the event loop).

    Parameters
    ----------
    compression:
        ``"zstd"`` to compress new records (needs ``sonora-cog[zstd]``), ``"none"`` not to. Reading
        handles both whatever this says.
    compression_level:
        zstd level, up to 22 (negative levels are zstd's fast modes).
    keyring:
        Keys for encrypting new records (its current key) and reading encrypted ones (any key).
    encrypt:
        Encrypt new records with the keyring's current key (needs ``sonora-cog[crypto]``).
    max_record_bytes:
        Largest record accepted, as stored; checked before anything else is parsed.
    max_payload_bytes:
        Largest payload JSON accepted, after decompression; checked before and while decompressing.

    Raises
    ------
    ValueError
        A setting is out of range.
    ConfigError
        ``encrypt`` without a current key, or a needed optional package is missing.

    Notes
    -----
    Encoding refuses (with :class:`SnapshotTooLarge`) to write a record this codec could not read back.

    .. versionadded:: 0.1

    .. versionchanged:: 0.5
        Writes envelope format 2 (one XXH3-128 pass over the payload); reads formats 1 and 2.
    """

    __slots__ = (
        "_compression",
        "_compression_level",
        "_encrypt",
        "_keyring",
        "_local",
        "_max_payload_bytes",
        "_max_record_bytes",
    )

    def __init__(
        self,
        *,
        compression: Literal["none", "zstd"] = "none",
        compression_level: int = 3,
        keyring: Keyring | None = None,
        encrypt: bool = False,
        max_record_bytes: int = 8 * 1024 * 1024,
        max_payload_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        if compression not in ("none", "zstd"):
            raise ValueError(f"compression must be 'none' or 'zstd', got {compression!r}")
        if isinstance(compression_level, bool) or not isinstance(compression_level, int):
            raise ValueError("compression_level must be an integer")
        if not -(1 << 17) <= compression_level <= 22:
            raise ValueError(f"compression_level must be at most 22, got {compression_level}")
        for name, value in (("max_record_bytes", max_record_bytes), ("max_payload_bytes", max_payload_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if compression == "zstd":
            _zstd()
        if encrypt:
            if keyring is None or keyring.current_id is None:
                raise ConfigError("encryption is enabled but no current encryption key is configured")
            load_aesgcm()
        self._compression: Literal["none", "zstd"] = compression
        self._compression_level = compression_level
        self._keyring = keyring
        self._encrypt = encrypt
        self._max_record_bytes = max_record_bytes
        self._max_payload_bytes = max_payload_bytes
        self._local = threading.local()

    @property
    def compression(self) -> Literal["none", "zstd"]:
        """Compression of new records."""
        return self._compression

    @property
    def compression_level(self) -> int:
        """zstd level of new records."""
        return self._compression_level

    @property
    def keyring(self) -> Keyring | None:
        """Keys for writing (current) and reading (all)."""
        return self._keyring

    @property
    def encrypt(self) -> bool:
        """Whether new records are encrypted with the keyring's current key."""
        return self._encrypt

    @property
    def max_record_bytes(self) -> int:
        """Largest record accepted, as stored."""
        return self._max_record_bytes

    @property
    def max_payload_bytes(self) -> int:
        """Largest payload JSON accepted, after decompression."""
        return self._max_payload_bytes

    def __repr__(self) -> str:
        return (
            f"<Codec compression={self.compression!r} level={self.compression_level} "
            f"encrypt={self.encrypt} keyring={self.keyring!r}>"
        )

    # -- writing ---------------------------------------------------------------------------------

    def encode(self, payload: Mapping[str, Any], meta: SnapshotMeta) -> EncodedRecord:
        """Encode ``payload`` with ``meta`` into one record.

        Parameters
        ----------
        payload:
            A JSON-able mapping (a ``SessionState``'s JSON form); keys must be strings.
        meta:
            The record's meta; its ``content_hash`` is replaced.

        Returns
        -------
        EncodedRecord
            The record's bytes, and ``meta`` with ``content_hash`` = XXH3-128 (hex) of the payload
            JSON and ``size`` = the record's length.

        Raises
        ------
        TypeError
            ``payload`` holds something JSON cannot represent.
        SnapshotTooLarge
            The payload JSON exceeds ``max_payload_bytes``, or the record ``max_record_bytes``.
        """
        if not isinstance(payload, dict):
            payload = dict(payload)
        raw = orjson.dumps(payload)
        digest = xxhash.xxh3_128_digest(raw)
        meta = replace(meta, content_hash=digest.hex())
        data = self._seal(raw, digest, meta)
        return EncodedRecord(data, meta.with_size(len(data)))

    def _seal(self, raw: bytes, raw_digest: bytes, meta: SnapshotMeta) -> bytes:
        if len(raw) > self.max_payload_bytes:
            raise SnapshotTooLarge(
                f"payload is {len(raw)} bytes, over the max_payload_bytes cap of {self.max_payload_bytes}",
                size=len(raw),
                cap=self.max_payload_bytes,
            )
        flags = 0
        body = raw
        if self.compression == "zstd":
            flags |= FLAG_ZSTD
            body = self._compressor().compress(raw)
        crypto = b""
        cipher: Any = None
        nonce = b""
        if self.encrypt:
            assert self.keyring is not None and self.keyring.current_id is not None
            flags |= FLAG_ENCRYPTED
            cipher = self.keyring.cipher(self.keyring.current_id)
            nonce = os.urandom(NONCE_BYTES)
            crypto = bytes.fromhex(self.keyring.current_id) + nonce
        body_len = len(body) + (TAG_BYTES if cipher is not None else 0)
        header = self._header(flags, crypto, meta, body_len, len(raw))
        if cipher is not None:
            body = cipher.encrypt(nonce, body, header)
        trailer = raw_digest if body is raw else xxhash.xxh3_128_digest(body)
        return b"".join((header, body, trailer))

    def _header(self, flags: int, crypto: bytes, meta: SnapshotMeta, body_len: int, payload_len: int) -> bytes:
        """A version-2 header for a body of ``body_len`` bytes, refused when the record would be over the cap."""
        meta_json = orjson.dumps(meta.to_json())
        if len(meta_json) > MAX_META_BYTES:
            raise SnapshotTooLarge(f"meta is {len(meta_json)} bytes, over the {MAX_META_BYTES}-byte cap")
        fixed = _FIXED.pack(MAGIC, FORMAT_VERSION, flags, len(meta_json), body_len, payload_len)
        header = b"".join((fixed, _blake2b(fixed, _FIXED_SUM_BYTES), crypto, meta_json))
        header += _blake2b(header, CHECKSUM_BYTES)
        record_bytes = len(header) + body_len + CHECKSUM_BYTES
        if record_bytes > self.max_record_bytes:
            raise SnapshotTooLarge(
                f"record would be {record_bytes} bytes, over the max_record_bytes cap of {self.max_record_bytes}",
                size=record_bytes,
                cap=self.max_record_bytes,
            )
        return header

    def _compressor(self) -> Any:
        # zstd contexts are not thread-safe: one per thread, reused.
        compressor = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = _zstd().ZstdCompressor(
                level=self.compression_level, write_content_size=True, write_checksum=False
            )
            self._local.compressor = compressor
        return compressor

    # -- reading ---------------------------------------------------------------------------------

    def decode(self, data: bytes) -> DecodedRecord:
        """Decode a record written by :meth:`encode` (with any settings and any key in the keyring).

        Parameters
        ----------
        data:
            The whole record.

        Returns
        -------
        DecodedRecord
            Its meta (``size`` = ``len(data)``) and payload.

        Raises
        ------
        SnapshotCorrupted
            Or one of its subclasses, :class:`BadMagic`, :class:`TruncatedSnapshot`,
            :class:`ChecksumMismatch`, :class:`SnapshotTooLarge`, :class:`InvalidSnapshot`.
        UnsupportedFormat
            The record was written by a newer release.
        WrongKeyError, TamperedSnapshot
            Encrypted with a key the keyring does not hold / modified after encryption.
        ConfigError
            The record needs ``zstandard`` or ``cryptography`` and it is not installed.
        """
        header, raw, _ = self._open(data)
        return DecodedRecord(header.meta, _load_payload(raw))

    def reencode(self, data: bytes) -> bytes:
        """Re-write a record with this codec's settings and current key, keeping its meta (re-keying).

        The record is opened with whichever key it names (previous keys are fine), checked in full
        like :meth:`decode`, and sealed again in the current format; the payload JSON is not
        re-serialised, so ``content_hash`` is unchanged (a format-1 record gets its XXH3 content hash).

        Parameters
        ----------
        data:
            The whole record.

        Returns
        -------
        bytes
            The new record.

        Raises
        ------
        SnapshotCorrupted, UnsupportedFormat, WrongKeyError, TamperedSnapshot, ConfigError
            As :meth:`decode`.
        """
        header, raw, digest = self._open(data)
        _load_payload(raw)
        return self._reseal(header, raw, digest, header.meta).data

    def rewrap(self, data: bytes, **changes: Any) -> EncodedRecord:
        """The same record under another meta: a snapshot made from a live record, with no second encode.

        A format-2 record that is not encrypted keeps its body and trailer byte for byte; only the
        header (a few hundred bytes) is new, and neither the payload nor its hash is computed again. An
        encrypted record is decrypted and encrypted again, because its header is the cipher's associated
        data (with this codec's current key, and a new nonce); a format-1 record is sealed again in the
        current format. In no case is the payload JSON serialised again. The record is checked first:
        its checksums, and in the other cases everything :meth:`decode` checks.

        Parameters
        ----------
        data:
            The whole record (a live record's bytes, as stored).
        changes:
            The :class:`~sonora_cog.meta.SnapshotMeta` fields that differ from the record's own meta
            (``id``, ``kind``, ``created_at``, ``label``...); ``content_hash`` and ``size`` are the
            new record's.

        Returns
        -------
        EncodedRecord

        Raises
        ------
        SnapshotCorrupted, UnsupportedFormat, WrongKeyError, TamperedSnapshot, ConfigError
            As :meth:`decode`.
        SnapshotTooLarge
            The new meta makes the record longer than ``max_record_bytes``.
        TypeError
            ``changes`` names a field a meta does not have.

        .. versionadded:: 0.5
        """
        view = memoryview(data)
        header = self._check_envelope(view)
        meta = replace(header.meta, **changes)
        if header.version == FORMAT_VERSION and header.key_id is None:
            ok, _ = _trailer_ok(view, header)
            if not ok:
                raise ChecksumMismatch("record checksum does not match")
            meta = replace(meta, content_hash=header.meta.content_hash, size=0)
            new_header = self._header(header.flags, b"", meta, header.body_bytes, header.payload_bytes)
            rewrapped = b"".join((new_header, view[header.header_bytes :]))
            return EncodedRecord(rewrapped, meta.with_size(len(rewrapped)))
        header, raw, digest = self._open(data)
        _load_payload(raw)
        return self._reseal(header, raw, digest, meta)

    def _reseal(self, header: _Header, raw: bytes | memoryview, digest: bytes, meta: SnapshotMeta) -> EncodedRecord:
        """Seal an opened record's payload JSON again, in the current format, under ``meta``."""
        if header.version != FORMAT_VERSION:
            digest = xxhash.xxh3_128_digest(raw)
        meta = replace(meta, content_hash=digest.hex(), size=0)
        data = self._seal(bytes(raw), digest, meta)
        return EncodedRecord(data, meta.with_size(len(data)))

    def _check_envelope(self, view: memoryview) -> _Header:
        """Check a record's header and lengths against the caps (not its checksums); return the header."""
        if len(view) > self.max_record_bytes:
            raise SnapshotTooLarge(
                f"record is {len(view)} bytes, over the max_record_bytes cap of {self.max_record_bytes}"
            )
        header = _parse_header(view)
        if header.record_bytes > self.max_record_bytes:
            raise SnapshotTooLarge(f"record declares {header.record_bytes} bytes, over the cap")
        if header.payload_bytes > self.max_payload_bytes:
            raise SnapshotTooLarge(
                f"payload declares {header.payload_bytes} bytes, over the max_payload_bytes cap "
                f"of {self.max_payload_bytes}"
            )
        if len(view) < header.record_bytes:
            raise TruncatedSnapshot(f"record is {len(view)} bytes long; its header says {header.record_bytes}")
        if len(view) > header.record_bytes:
            raise SnapshotCorrupted(f"{len(view) - header.record_bytes} unexpected bytes after the record")
        return header

    def _open(self, data: bytes) -> tuple[_Header, bytes | memoryview, bytes]:
        """Check and unwrap a record; return its header, payload JSON and the payload's content digest."""
        view = memoryview(data)
        header = self._check_envelope(view)
        ok, body_digest = _trailer_ok(view, header)
        if not ok:
            raise ChecksumMismatch("record checksum does not match")
        body: bytes | memoryview = view[header.header_bytes : header.header_bytes + header.body_bytes]
        if header.key_id is not None:
            body = self._decrypt(header, body, view[: header.header_bytes])
        raw: bytes | memoryview
        if header.flags & FLAG_ZSTD:
            raw = self._decompress(body, header.payload_bytes)
        elif len(body) != header.payload_bytes:
            raise SnapshotCorrupted(f"payload is {len(body)} bytes; its header says {header.payload_bytes}")
        else:
            raw = body
        digest = body_digest if header.flags == 0 else _content_digest(header.version, raw)
        if digest.hex() != header.meta.content_hash:
            raise ChecksumMismatch("payload does not match the content hash in its meta")
        return header, raw, digest

    def _decrypt(self, header: _Header, body: bytes | memoryview, aad: memoryview) -> bytes:
        assert header.key_id is not None
        if self.keyring is None:
            raise WrongKeyError(
                f"record is encrypted with key {header.key_id} and no keyring is configured", key_id=header.key_id
            )
        cipher = self.keyring.cipher(header.key_id)
        if cipher is None:
            raise WrongKeyError(
                f"record is encrypted with key {header.key_id}, which is not in the keyring "
                f"(keys: {', '.join(self.keyring.key_ids) or 'none'})",
                key_id=header.key_id,
            )
        invalid_tag = importlib.import_module("cryptography.exceptions").InvalidTag
        try:
            return bytes(cipher.decrypt(header.nonce, body, aad))
        except invalid_tag:
            raise TamperedSnapshot(
                f"record encrypted with key {header.key_id} fails authentication: modified after it was written"
            ) from None

    def _decompress(self, body: bytes | memoryview, expected: int) -> bytes:
        """Decompress one zstd frame to exactly ``expected`` bytes, never producing more than that + 1."""
        zstd = _zstd()
        try:
            params = zstd.get_frame_parameters(body)
        except zstd.ZstdError as exc:
            raise SnapshotCorrupted(f"compressed payload is not a zstd frame ({exc})") from None
        declared = params.content_size
        if declared != zstd.CONTENTSIZE_UNKNOWN and declared != expected:
            error = SnapshotTooLarge if declared > expected else SnapshotCorrupted
            raise error(f"compressed payload declares {declared} bytes; its header says {expected}")
        window_limit = max(expected, _MIN_WINDOW_LIMIT)
        if params.window_size > window_limit:
            raise SnapshotTooLarge(f"compressed payload needs a {params.window_size}-byte window")
        dctx = zstd.ZstdDecompressor(max_window_size=1 << (window_limit - 1).bit_length())
        chunks: list[bytes] = []
        remaining = expected + 1
        try:
            with dctx.stream_reader(body, closefd=False) as reader:
                while remaining > 0:
                    chunk = reader.read(remaining)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    remaining -= len(chunk)
        except zstd.ZstdError as exc:
            raise SnapshotCorrupted(f"compressed payload cannot be decompressed ({exc})") from None
        if remaining == 0:
            raise SnapshotTooLarge(f"compressed payload decompresses to more than the {expected} bytes declared")
        if remaining > 1:
            raise SnapshotCorrupted(f"compressed payload ends {remaining - 1} bytes early")
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)  # one chunk: no copy


def check_json_shape(raw: bytes | bytearray | memoryview, what: str = "payload") -> None:
    """Refuse JSON whose element count is out of proportion to its size, before it is parsed.

        Parsing builds one Python object per element; ``[[],[],...]`` makes a 60-byte list of every 3 bytes
        of input, ``["abcde",...]`` a 60-byte string of every 8. Counting brackets and commas (C speed, no
        objects) bounds what a parse may allocate to a few times the input's size, which the size caps bound
        already: real records hold one value per 20-50 bytes (a track is ~17 keys and ~4 objects in ~700 bytes),
    and what passes costs at most ~5-6 times its size once parsed.

        Raises
        ------
        InvalidSnapshot
            Far more containers or values than real records ever hold for that size.
    """
    data = bytes(raw) if isinstance(raw, memoryview) else raw
    size = len(data)
    objects = data.count(b"{")
    containers = data.count(b"[") + objects
    keys = data.count(b":")
    values = data.count(b",")
    # Real records: 60-200 bytes per object, 18-40 per key, 20-50 per value (tracks, the smallest to typical).
    if (
        containers > max(100_000, size // 16)
        or objects > max(50_000, size // 48)
        or keys > max(200_000, size // 16)
        or values > max(200_000, size // 12)
    ):
        raise InvalidSnapshot(
            "",
            f"{what} has {containers:,} lists/objects, {keys:,} keys and {values:,} values in "
            f"{size:,} bytes: not a record (refused before parsing)",
        )


def _load_payload(raw: bytes | memoryview) -> dict[str, Any]:
    check_json_shape(raw)  # before any object is built
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidSnapshot("", f"payload is not valid JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise InvalidSnapshot("", f"payload is not a JSON object (got {type(payload).__name__})")
    return payload
