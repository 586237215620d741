"""The record codec: round trips, the documented envelope, one distinct error per kind of bad input."""

from __future__ import annotations

import hashlib
import pickle
import re
import struct
import sys
import time
import tracemalloc
from base64 import urlsafe_b64decode
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import orjson
import pytest
import xxhash
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from sonora_cog.codec import (
    FIXED_HEADER_BYTES,
    MAGIC,
    Codec,
    DecodedRecord,
    describe,
    header_length,
    read_meta,
)
from sonora_cog.errors import (
    BadMagic,
    ChecksumMismatch,
    ConfigError,
    InvalidSnapshot,
    SchemaVersionError,
    SnapshotCorrupted,
    SnapshotTooLarge,
    TamperedSnapshot,
    TruncatedSnapshot,
    UnsupportedFormat,
    WrongKeyError,
)
from sonora_cog.keyring import Keyring, key_id
from sonora_cog.meta import SnapshotKind, SnapshotMeta

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))
KEYRING_A = Keyring(KEY_A)

#: (compression, encrypt) — every combination the codec writes.
SETTINGS = [("none", False), ("zstd", False), ("none", True), ("zstd", True)]
SETTING_IDS = [f"{c}-{'aes' if e else 'plain'}" for c, e in SETTINGS]

META = SnapshotMeta(
    id="20261125T011830123-3fa9c2",
    guild_id=123456789012345678,
    created_at=1_764_000_000.25,
    kind=SnapshotKind.manual,
    label="before the party",
    track_count=2,
    current_title="Song",
    content_hash="",
)
SMALL_PAYLOAD: dict[str, Any] = {"schema": 1, "guild_id": "123", "queue": {"upcoming": [1, 2.5, "x", None]}}


def make_codec(compression: str, encrypt: bool, **kwargs: Any) -> Codec:
    return Codec(compression=compression, keyring=KEYRING_A if encrypt else None, encrypt=encrypt, **kwargs)


def small_record(compression: str = "none", encrypt: bool = False) -> bytes:
    return make_codec(compression, encrypt).encode(SMALL_PAYLOAD, META).data


# -- an independent writer of the layout documented in codec.py, to craft records ---------------------


def blake(data: bytes, size: int) -> bytes:
    return hashlib.blake2b(data, digest_size=size).digest()


def content_digest(data: bytes, version: int = 2) -> bytes:
    """Format 1: SHA-256; format 2: XXH3-128."""
    return hashlib.sha256(data).digest() if version == 1 else xxhash.xxh3_128_digest(data)


def trailer(header: bytes, body: bytes, version: int) -> bytes:
    """Format 1: blake2b-16 of (header ‖ sha256(body)); format 2: XXH3-128 of the body."""
    return blake(header + content_digest(body, 1), 16) if version == 1 else content_digest(body, 2)


def build_record(
    body: bytes,
    *,
    payload_len: int,
    content_hash: str,
    flags: int = 0,
    version: int = 2,
    crypto: bytes = b"",
) -> bytes:
    meta_json = orjson.dumps({**META.to_json(), "content_hash": content_hash})
    fixed = struct.pack(">4sBBIQQ", b"SNRA", version, flags, len(meta_json), len(body), payload_len)
    header = fixed + blake(fixed, 8) + crypto + meta_json
    header += blake(header, 16)
    return header + body + trailer(header, body, version)


def plain_record(raw: bytes, version: int = 2) -> bytes:
    return build_record(raw, payload_len=len(raw), content_hash=content_digest(raw, version).hex(), version=version)


def zstd_record(body: bytes, payload_len: int) -> bytes:
    return build_record(body, payload_len=payload_len, content_hash="0" * 64, flags=0x01)


def fix_checksums(data: bytes | bytearray) -> bytes:
    """Recompute every checksum of a (modified) record, as someone tampering with it would."""
    data = bytearray(data)
    data[26:34] = blake(bytes(data[:26]), 8)
    flags, meta_len, body_len = data[5], *struct.unpack(">IQ", data[6:18])
    end = 34 + (20 if flags & 0x02 else 0) + meta_len + 16
    data[end - 16 : end] = blake(bytes(data[: end - 16]), 16)
    body = bytes(data[end : end + body_len])
    data[end + body_len :] = trailer(bytes(data[:end]), body, data[4])
    return bytes(data)


# -- round trips ---------------------------------------------------------------------------------------

json_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | json_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(json_text, inner, max_size=5),
    max_leaves=25,
)
payloads = st.dictionaries(json_text, json_values, max_size=8)


@pytest.mark.parametrize(("compression", "encrypt"), SETTINGS, ids=SETTING_IDS)
@settings(max_examples=60, deadline=None)
@given(payload=payloads)
def test_round_trip(compression: str, encrypt: bool, payload: dict[str, Any]) -> None:
    codec = make_codec(compression, encrypt)
    encoded = codec.encode(payload, META)
    decoded = codec.decode(encoded.data)
    assert isinstance(decoded, DecodedRecord)
    assert decoded.payload == payload
    assert decoded.meta == encoded.meta
    assert decoded.meta.size == len(encoded.data)
    assert encoded.meta.content_hash == xxhash.xxh3_128_hexdigest(orjson.dumps(payload))
    info = describe(encoded.data)
    assert (info.compressed, info.encrypted, info.intact) == (compression == "zstd", encrypt, True)
    assert info.key_id == (KEYRING_A.current_id if encrypt else None)


def test_plain_record_matches_the_documented_layout() -> None:
    raw = orjson.dumps(SMALL_PAYLOAD)
    assert Codec().encode(SMALL_PAYLOAD, META).data == plain_record(raw)


def test_encrypted_record_does_not_contain_the_payload() -> None:
    data = small_record("none", True)
    assert b"upcoming" not in data
    assert bytes.fromhex(KEYRING_A.current_id or "") in data


def test_encode_accepts_any_mapping() -> None:
    data = Codec().encode(MappingProxyType(SMALL_PAYLOAD), META).data
    assert Codec().decode(data).payload == SMALL_PAYLOAD


# -- meta without a key ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("compression", "encrypt"), SETTINGS, ids=SETTING_IDS)
def test_read_meta_from_the_header_alone_without_a_key(compression: str, encrypt: bool) -> None:
    encoded = make_codec(compression, encrypt).encode(SMALL_PAYLOAD, META)
    length = header_length(encoded.data[:FIXED_HEADER_BYTES])
    assert length < len(encoded.data)
    meta = read_meta(encoded.data[:length])
    assert meta == encoded.meta  # size = the full record's length, as the header declares it
    assert meta.label == "before the party"
    assert meta.content_hash == encoded.meta.content_hash != ""
    with pytest.raises(TruncatedSnapshot):
        read_meta(encoded.data[: length - 1])
    with pytest.raises(TruncatedSnapshot):
        header_length(encoded.data[: FIXED_HEADER_BYTES - 1])


def test_describe_reports_sizes_and_damage() -> None:
    data = small_record("zstd", True)
    info = describe(data)
    assert info.format_version == 2
    assert info.compression == "zstd"
    assert info.record_bytes == len(data) == info.header_bytes + info.body_bytes + 16
    assert info.payload_bytes == len(orjson.dumps(SMALL_PAYLOAD))
    assert info.meta.id == META.id
    damaged = bytearray(data)
    damaged[-20] ^= 1
    assert describe(bytes(damaged)).intact is False
    assert describe(data[: info.header_bytes]).intact is False


# -- content hash ---------------------------------------------------------------------------------------


def test_content_hash_is_equal_for_equal_payloads_and_differs_otherwise() -> None:
    codec = Codec(compression="zstd", keyring=KEYRING_A, encrypt=True)
    first = codec.encode(orjson.loads(orjson.dumps(SMALL_PAYLOAD)), META)
    again = codec.encode(orjson.loads(orjson.dumps(SMALL_PAYLOAD)), META)
    plain = Codec().encode(SMALL_PAYLOAD, META)
    other = codec.encode({**SMALL_PAYLOAD, "guild_id": "124"}, META)
    assert first.data != again.data  # fresh nonce each time
    assert first.meta.content_hash == again.meta.content_hash == plain.meta.content_hash
    assert other.meta.content_hash != first.meta.content_hash


# -- one distinct error per kind of bad input -------------------------------------------------------------


@pytest.mark.parametrize(("compression", "encrypt"), SETTINGS, ids=SETTING_IDS)
def test_every_prefix_is_truncated(compression: str, encrypt: bool) -> None:
    data = small_record(compression, encrypt)
    codec = make_codec(compression, encrypt)
    for end in range(len(data)):
        with pytest.raises(TruncatedSnapshot):
            codec.decode(data[:end])


@pytest.mark.parametrize(("compression", "encrypt"), SETTINGS, ids=SETTING_IDS)
@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_a_flipped_byte_anywhere_is_a_checksum_mismatch(compression: str, encrypt: bool, mask: int) -> None:
    data = small_record(compression, encrypt)
    codec = make_codec(compression, encrypt)
    for position in range(len(data)):
        damaged = bytearray(data)
        damaged[position] ^= mask
        expected = BadMagic if position < len(MAGIC) else ChecksumMismatch
        with pytest.raises(expected):
            codec.decode(bytes(damaged))


@pytest.mark.parametrize("data", [b"PK\x03\x04" + bytes(60), b"{}", b"X", b"snra" + bytes(60)])
def test_wrong_magic(data: bytes) -> None:
    with pytest.raises(BadMagic):
        Codec().decode(data)
    with pytest.raises(BadMagic):
        read_meta(data)


@pytest.mark.parametrize("data", [b"", b"S", b"SNR", b"SNRA"])
def test_a_magic_prefix_is_truncated(data: bytes) -> None:
    with pytest.raises(TruncatedSnapshot):
        Codec().decode(data)


@pytest.mark.parametrize(("offset", "value"), [(4, 3), (4, 0), (5, 0x04), (5, 0x80)])
def test_unknown_format_version_or_flag(offset: int, value: int) -> None:
    data = bytearray(small_record())
    data[offset] = value
    data = fix_checksums(data)
    for call in (Codec().decode, read_meta, describe):
        with pytest.raises(UnsupportedFormat) as info:
            call(data)
        assert isinstance(info.value, SchemaVersionError)
        assert not isinstance(info.value, SnapshotCorrupted)  # newer, not damaged: never quarantined


def test_wrong_key_names_the_key_id_and_never_the_key() -> None:
    data = small_record("zstd", True)
    other = Keyring(KEY_B)
    with pytest.raises(WrongKeyError) as info:
        Codec(keyring=other).decode(data)
    message = str(info.value)
    assert key_id(KEY_A) in message
    assert KEY_A.hex() not in message
    assert KEY_B.hex() not in message


@pytest.mark.parametrize("keyring", [None, Keyring(None)], ids=["no-keyring", "empty-keyring"])
def test_encrypted_record_without_a_key(keyring: Keyring | None) -> None:
    with pytest.raises(WrongKeyError, match=key_id(KEY_A)):
        Codec(keyring=keyring).decode(small_record("none", True))


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_modified_ciphertext_with_recomputed_checksums_is_tampered(compression: str) -> None:
    data = small_record(compression, True)
    info = describe(data)
    damaged = bytearray(data)
    damaged[info.header_bytes + 3] ^= 0x01
    with pytest.raises(TamperedSnapshot):
        make_codec(compression, True).decode(fix_checksums(damaged))


def test_modified_clear_text_meta_of_an_encrypted_record_is_tampered() -> None:
    data = small_record("none", True)
    forged = fix_checksums(data.replace(b"before the party", b"before THE party"))
    assert read_meta(forged).label == "before THE party"  # the header alone only says it is intact
    with pytest.raises(TamperedSnapshot):
        make_codec("none", True).decode(forged)


def test_modified_plain_payload_with_recomputed_checksums_fails_the_content_hash() -> None:
    data = small_record()
    forged = fix_checksums(data.replace(b'"123"', b'"999"'))
    assert describe(forged).intact
    with pytest.raises(ChecksumMismatch, match="content hash"):
        Codec().decode(forged)


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"text"', b"{not json", b"\xff\xfe"])
def test_payload_that_is_not_a_json_object(raw: bytes) -> None:
    with pytest.raises(InvalidSnapshot) as info:
        Codec().decode(plain_record(raw))
    assert info.value.path == ""


def test_invalid_meta_json() -> None:
    data = small_record()
    forged = fix_checksums(data.replace(b'"kind":"manual"', b'"kind":"manual"'.replace(b":", b";", 1)))
    with pytest.raises(InvalidSnapshot):
        read_meta(forged)


def test_trailing_bytes_are_corrupt() -> None:
    with pytest.raises(SnapshotCorrupted) as info:
        Codec().decode(small_record() + b"\x00")
    assert type(info.value) is SnapshotCorrupted


def test_a_frame_that_is_not_zstd_is_corrupt() -> None:
    with pytest.raises(SnapshotCorrupted) as info:
        Codec().decode(zstd_record(b"definitely not zstd", 10))
    assert type(info.value) is SnapshotCorrupted


# -- size caps --------------------------------------------------------------------------------------------


def test_record_over_the_cap_is_refused_before_parsing() -> None:
    data = small_record()
    with pytest.raises(SnapshotTooLarge):
        Codec(max_record_bytes=len(data) - 1).decode(data)
    with pytest.raises(SnapshotTooLarge):  # refused before even looking at the magic
        Codec(max_record_bytes=10).decode(b"garbage" * 10)
    Codec(max_record_bytes=len(data)).decode(data)


def test_declared_payload_over_the_cap_is_refused() -> None:
    data = small_record("zstd")
    with pytest.raises(SnapshotTooLarge):
        Codec(max_payload_bytes=10).decode(data)


def test_encode_refuses_what_it_could_not_read_back() -> None:
    with pytest.raises(SnapshotTooLarge):
        Codec(max_payload_bytes=10).encode(SMALL_PAYLOAD, META)
    with pytest.raises(SnapshotTooLarge):
        Codec(max_record_bytes=100).encode(SMALL_PAYLOAD, META)


HUNDRED_MB = 100 * 1024 * 1024


def zeros_bomb(level: int, with_size: bool) -> bytes:
    """zstd of 100 MB of zeros (about 3 kB), built without ever holding 100 MB."""
    compressor = zstandard.ZstdCompressor(level=level)
    stream = compressor.compressobj(size=HUNDRED_MB) if with_size else compressor.compressobj()
    chunk = bytes(1024 * 1024)
    return b"".join([*(stream.compress(chunk) for _ in range(100)), stream.flush()])


@pytest.mark.parametrize(
    ("level", "with_size", "declared"),
    [
        (3, True, HUNDRED_MB),  # honest header: refused on the declared length
        (3, True, 1000),  # lying header, frame knows its size
        (3, False, 1000),  # lying header, frame of unknown size and a window too large
        (1, False, 1024 * 1024),  # lying header, small window: only the streaming cap stops it
    ],
)
def test_decompression_bomb_is_refused_cheaply(level: int, with_size: bool, declared: int) -> None:
    data = zstd_record(zeros_bomb(level, with_size), declared)
    assert len(data) < 10_000
    codec = Codec(compression="zstd")
    tracemalloc.start()
    try:
        started = time.perf_counter()
        with pytest.raises(SnapshotTooLarge):
            codec.decode(data)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, peak
    assert elapsed < 5.0  # a sanity bound, not a timing target: decompressing it all takes far longer


# -- format 1 (sonora_cog 0.1), still read ---------------------------------------------------------------


def legacy_record(payload: dict[str, Any], compression: str = "none", encrypt: bool = False) -> bytes:
    """A record exactly as sonora_cog 0.1 wrote it: format 1, SHA-256 content hash, blake2b trailer."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    raw = orjson.dumps(payload)
    flags, body, crypto, nonce = 0, raw, b"", b"\x07" * 12
    if compression == "zstd":
        flags |= 0x01
        body = zstandard.ZstdCompressor(level=3, write_content_size=True).compress(raw)
    if encrypt:
        flags |= 0x02
        crypto = bytes.fromhex(key_id(KEY_A)) + nonce
    meta_json = orjson.dumps({**META.to_json(), "content_hash": hashlib.sha256(raw).hexdigest()})
    body_len = len(body) + (16 if encrypt else 0)
    fixed = struct.pack(">4sBBIQQ", b"SNRA", 1, flags, len(meta_json), body_len, len(raw))
    header = fixed + blake(fixed, 8) + crypto + meta_json
    header += blake(header, 16)
    if encrypt:
        body = AESGCM(KEY_A).encrypt(nonce, body, header)
    return header + body + blake(header + hashlib.sha256(body).digest(), 16)


@pytest.mark.parametrize(("compression", "encrypt"), SETTINGS, ids=SETTING_IDS)
def test_format_1_records_are_still_read_and_damage_is_still_found(compression: str, encrypt: bool) -> None:
    data = legacy_record(SMALL_PAYLOAD, compression, encrypt)
    codec = make_codec(compression, encrypt)
    decoded = codec.decode(data)
    assert decoded.payload == SMALL_PAYLOAD
    assert decoded.meta.content_hash == hashlib.sha256(orjson.dumps(SMALL_PAYLOAD)).hexdigest()
    assert describe(data).format_version == 1 and describe(data).intact
    damaged = bytearray(data)
    damaged[-20] ^= 0x01
    with pytest.raises(ChecksumMismatch):
        codec.decode(bytes(damaged))
    upgraded = codec.reencode(data)
    assert describe(upgraded).format_version == 2
    assert codec.decode(upgraded).meta.content_hash == xxhash.xxh3_128_hexdigest(orjson.dumps(SMALL_PAYLOAD))


def test_a_body_under_another_records_header_fails_the_content_hash() -> None:
    first = Codec().encode(SMALL_PAYLOAD, META).data
    second = Codec().encode({**SMALL_PAYLOAD, "guild_id": "999"}, META).data
    end = describe(first).header_bytes
    swapped = first[:end] + second[describe(second).header_bytes :]
    swapped = fix_checksums(
        swapped[:26] + struct.pack(">Q", len(second) - describe(second).header_bytes - 16) + swapped[34:]
    )  # the body length in the header, as a forger would set it
    with pytest.raises(ChecksumMismatch, match="content hash"):
        Codec().decode(swapped)


# -- rewrap: a snapshot from a live record's bytes -----------------------------------------------------------

SHUTDOWN = {
    "id": "20261130T080000000-abcdef",
    "created_at": 1_800_000_000.5,
    "kind": SnapshotKind.shutdown,
    "label": None,
}


@pytest.mark.parametrize(("compression", "encrypt"), SETTINGS, ids=SETTING_IDS)
def test_rewrap_gives_the_same_payload_under_the_new_meta(compression: str, encrypt: bool) -> None:
    codec = make_codec(compression, encrypt)
    live = codec.encode(SMALL_PAYLOAD, META)
    snapshot = codec.rewrap(live.data, **SHUTDOWN)
    decoded = codec.decode(snapshot.data)
    assert decoded.payload == SMALL_PAYLOAD
    # The live record's meta (guild, track count, title, content hash) with the fields given changed.
    assert decoded.meta == snapshot.meta == replace(live.meta, **SHUTDOWN, size=len(snapshot.data))
    assert decoded.meta.content_hash == live.meta.content_hash
    live_body = live.data[describe(live.data).header_bytes :]
    snapshot_body = snapshot.data[describe(snapshot.data).header_bytes :]
    # Not encrypted: the body and trailer are the live record's bytes; encrypted: sealed again (new nonce).
    assert (snapshot_body == live_body) is (not encrypt)


def test_rewrap_checks_the_record_first() -> None:
    with pytest.raises(TypeError):
        Codec().rewrap(Codec().encode(SMALL_PAYLOAD, META).data, colour="blue")
    live = Codec().encode(SMALL_PAYLOAD, META).data
    damaged = bytearray(live)
    damaged[-20] ^= 0x01
    with pytest.raises(ChecksumMismatch):
        Codec().rewrap(bytes(damaged), **SHUTDOWN)
    with pytest.raises(TruncatedSnapshot):
        Codec().rewrap(live[:-1], **SHUTDOWN)
    with pytest.raises(WrongKeyError):
        Codec(keyring=Keyring(KEY_B)).rewrap(small_record("none", True), **SHUTDOWN)
    with pytest.raises(SnapshotTooLarge):
        Codec(max_record_bytes=len(live) + 10).rewrap(live, **{**SHUTDOWN, "label": "x" * 100})


def test_rewrap_of_a_format_1_record_writes_format_2() -> None:
    snapshot = Codec().rewrap(legacy_record(SMALL_PAYLOAD), **SHUTDOWN)
    assert describe(snapshot.data).format_version == 2
    decoded = Codec().decode(snapshot.data)
    assert decoded.payload == SMALL_PAYLOAD
    assert decoded.meta.content_hash == xxhash.xxh3_128_hexdigest(orjson.dumps(SMALL_PAYLOAD))


# -- keys -------------------------------------------------------------------------------------------------


def test_key_rotation_and_rekey() -> None:
    old = Codec(keyring=Keyring(KEY_A), encrypt=True).encode(SMALL_PAYLOAD, META)
    with pytest.raises(WrongKeyError):
        Codec(keyring=Keyring(KEY_B)).decode(old.data)

    rotated = Codec(compression="zstd", keyring=Keyring(KEY_B, [KEY_A]), encrypt=True)
    assert rotated.decode(old.data).payload == SMALL_PAYLOAD
    rekeyed = rotated.reencode(old.data)
    info = describe(rekeyed)
    assert (info.key_id, info.compressed) == (key_id(KEY_B), True)
    assert key_id(KEY_B) != key_id(KEY_A)

    decoded = Codec(keyring=Keyring(KEY_B)).decode(rekeyed)
    assert decoded.payload == SMALL_PAYLOAD
    assert decoded.meta == old.meta.with_size(len(rekeyed))


def test_reencode_to_plain_drops_encryption() -> None:
    data = small_record("zstd", True)
    plain = Codec(keyring=KEYRING_A).reencode(data)
    assert describe(plain).encrypted is False
    assert Codec().decode(plain).payload == SMALL_PAYLOAD


def test_key_id_is_the_documented_hash() -> None:
    expected = hashlib.sha256(b"sonora-key-id:" + KEY_A).digest()[:8].hex()
    assert Keyring(KEY_A).current_id == key_id(KEY_A) == expected
    assert len(expected) == 16


def test_keyring_from_text_forms_agree() -> None:
    text = Keyring.generate_key_text()
    unpadded = text.rstrip("=")
    raw = urlsafe_b64decode(text)
    ids = {Keyring.from_text(form).current_id for form in (text, unpadded, raw.hex(), raw.hex().upper())}
    assert ids == {key_id(raw)}
    ring = Keyring.from_text(None, [text])
    assert ring.current_id is None
    assert ring.has(key_id(raw))


@pytest.mark.parametrize(
    ("current", "previous", "where"),
    [
        ("key:" + KEY_A.hex()[:40], [], "current key"),
        (KEY_A.hex()[:-1], [], "current key"),
        (Keyring.generate_key_text()[:-3], [], "current key"),
        (KEY_A.hex(), [KEY_B.hex(), KEY_B.hex() + "00"], "previous key [1]"),
        (KEY_A.hex(), [KEY_B.hex(), "!" + KEY_B.hex()[1:]], "previous key [1]"),
    ],
)
def test_keyring_from_text_errors_name_the_position_never_the_text(
    current: str, previous: list[str], where: str
) -> None:
    with pytest.raises(ValueError, match=rf"^{re.escape(where)}") as info:
        Keyring.from_text(current, previous)
    message = str(info.value)
    bad = current if where == "current key" else previous[1]
    for secret in (bad, bad[4:20], KEY_A.hex()[:16], KEY_B.hex()[:16]):
        assert secret not in message
    assert info.value.__cause__ is None
    assert info.value.__context__ is None  # no chained decoder error that could quote the text


@pytest.mark.parametrize("bad", [b"short", KEY_A + b"x", KEY_A.hex()])
def test_keyring_rejects_keys_that_are_not_32_bytes(bad: Any) -> None:
    with pytest.raises(ValueError) as info:
        Keyring(KEY_A, [bad])
    assert "previous key [0]" in str(info.value)
    assert KEY_A.hex() not in str(info.value)


def test_repr_never_shows_keys() -> None:
    ring = Keyring(KEY_A, [KEY_B])
    codec = Codec(keyring=ring, encrypt=True)
    for text in (repr(ring), str(ring), repr(codec)):
        assert key_id(KEY_A) in text or key_id(KEY_B) in text
        for key in (KEY_A, KEY_B):
            assert key.hex() not in text
            assert repr(key) not in text
            assert repr(key)[2:20] not in text
    with pytest.raises(TypeError):
        pickle.dumps(ring)


# -- configuration ----------------------------------------------------------------------------------------


def test_encrypt_needs_a_current_key() -> None:
    with pytest.raises(ConfigError):
        Codec(encrypt=True)
    with pytest.raises(ConfigError):
        Codec(encrypt=True, keyring=Keyring(None, [KEY_A]))


@pytest.mark.parametrize(
    "kwargs",
    [{"compression": "gzip"}, {"compression_level": 23}, {"max_record_bytes": 0}, {"max_payload_bytes": -1}],
)
def test_bad_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Codec(**kwargs)


def test_missing_zstandard_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    data = small_record("zstd")
    monkeypatch.setitem(sys.modules, "zstandard", None)
    with pytest.raises(ConfigError, match=r"sonora-cog\[zstd\]"):
        Codec(compression="zstd")
    with pytest.raises(ConfigError, match=r"sonora-cog\[zstd\]"):
        Codec().decode(data)
    assert Codec().decode(small_record()).payload == SMALL_PAYLOAD  # plain records need nothing


def test_missing_cryptography_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    data = small_record("none", True)
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.ciphers.aead", None)
    with pytest.raises(ConfigError, match=r"sonora-cog\[crypto\]"):
        Codec(keyring=Keyring(KEY_A), encrypt=True)
    with pytest.raises(ConfigError, match=r"sonora-cog\[crypto\]"):
        Codec(keyring=Keyring(KEY_A)).decode(data)
