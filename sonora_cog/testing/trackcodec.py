"""Lavalink's binary track format: the ``encoded`` string of every track JSON object.

Lavalink (through lavaplayer's ``DefaultAudioPlayerManager.encodeTrack``) writes a track as one
``MessageOutput`` message, base64 encoded::

    int32   header: message size in bytes (low 30 bits) | flags << 30 (flag 1 = TRACK_INFO_VERSIONED)
    byte    version (only when the versioned flag is set; otherwise the version is 1)
    UTF     title
    UTF     author
    int64   length (ms)
    UTF     identifier
    bool    isStream
    ?UTF    uri                      (version >= 2; a bool "present" then a UTF)
    ?UTF    artworkUrl               (version >= 3)
    ?UTF    isrc                     (version >= 3)
    UTF     sourceName
    ...     source-specific details  (the ``http`` and ``local`` sources: their container probe; see below)
    int64   position (ms)

All integers are big-endian and ``UTF`` is Java's ``DataOutput.writeUTF``: an unsigned 16-bit byte
count followed by *modified* UTF-8 (NUL as ``C0 80``, characters beyond the BMP as two 3-byte
surrogates). :func:`encode_track` writes version 3, as Lavalink v4 does; :func:`decode_track` reads
versions 1 to 3 and returns Lavalink's ``info`` JSON object.

The layout is lavaplayer's (``lavalink-devs/lavaplayer``): ``DefaultAudioPlayerManager.encodeTrack``
writes the version byte, the info fields, then ``encodeTrackDetails`` (``writeUTF(sourceName)`` and the
source manager's ``encodeTrack``), then ``writeLong(position)``, and commits the message with
``MessageOutput.commitMessage(TRACK_INFO_VERSIONED)`` (``size | flags << 30``). Most source managers
write no details. ``HttpAudioSourceManager`` and ``LocalAudioSourceManager`` (both
``ProbingAudioSourceManager``) write ``encodeTrackFactory``: one ``writeUTF`` of the container probe's
name, plus ``"|" + parameters`` when the probe has parameters (``"mp3"``, ``"m3u|hls-outer"``), and
``decodeTrackFactory`` reads it back and looks the name up in the container registry.
:func:`encode_track` writes that probe for ``http`` and ``local`` tracks (:func:`probe_info_for`).

.. versionadded:: 0.1
.. versionchanged:: 0.5
   ``http`` and ``local`` tracks carry their container probe, as lavaplayer writes them.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Mapping
from typing import Any

__all__ = (
    "PROBE_NAMES",
    "PROBING_SOURCES",
    "TRACK_INFO_VERSION",
    "decode_probe_info",
    "decode_track",
    "decode_track_details",
    "encode_track",
    "probe_info_for",
)

#: The version :func:`encode_track` writes (lavaplayer's ``TRACK_INFO_VERSION``).
TRACK_INFO_VERSION = 3
_VERSIONED_FLAG = 1  # lavaplayer's TRACK_INFO_VERSIONED, stored in the top two bits of the header
_SIZE_MASK = 0x3FFFFFFF
_INT64 = struct.Struct(">q")
_UTF_MAX = 0xFFFF

#: The sources whose tracks carry a container probe after ``sourceName`` (lavaplayer's probing source managers).
PROBING_SOURCES = frozenset({"http", "local"})
#: lavaplayer's container probes (``MediaContainer``), by ``MediaContainerProbe.getName()``.
PROBE_NAMES = frozenset(
    {"wav", "matroska/webm", "mp4", "flac", "ogg", "m3u", "pls", "plain", "mp3", "adts", "mpegts-adts"}
)
_PROBE_SEPARATOR = "|"  # ProbingAudioSourceManager.PARAMETERS_SEPARATOR
# The probe lavaplayer finds for a file of each extension (it probes the content; these are what it finds
# in the usual file of that kind). An HLS playlist over http is the m3u probe with parameters "hls-outer".
_PROBE_BY_EXTENSION = {
    "mp3": "mp3",
    "wav": "wav",
    "flac": "flac",
    "ogg": "ogg",
    "oga": "ogg",
    "opus": "ogg",
    "mp4": "mp4",
    "m4a": "mp4",
    "aac": "adts",
    "mkv": "matroska/webm",
    "mka": "matroska/webm",
    "webm": "matroska/webm",
    "ts": "mpegts-adts",
    "m3u": "m3u|hls-outer",
    "m3u8": "m3u|hls-outer",
}
_DEFAULT_PROBE = "mp3"


# -- Java modified UTF-8 ------------------------------------------------------------------------------


def _java_utf(text: str) -> bytes:
    """Encode ``text`` as ``DataOutput.writeUTF`` does (length prefix included)."""
    out = bytearray()
    for char in text:
        code = ord(char)
        units: tuple[int, ...]
        if code > 0xFFFF:  # Java strings hold UTF-16: write both surrogates, 3 bytes each
            code -= 0x10000
            units = (0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF))
        else:
            units = (code,)
        for unit in units:
            if 0x01 <= unit <= 0x7F:
                out.append(unit)
            elif unit <= 0x7FF:  # includes NUL, written as C0 80
                out += bytes((0xC0 | (unit >> 6), 0x80 | (unit & 0x3F)))
            else:
                out += bytes((0xE0 | (unit >> 12), 0x80 | ((unit >> 6) & 0x3F), 0x80 | (unit & 0x3F)))
    if len(out) > _UTF_MAX:
        raise ValueError(f"string too long for the track format ({len(out)} bytes encoded, max {_UTF_MAX})")
    return struct.pack(">H", len(out)) + bytes(out)


def _decode_java_utf(data: bytes) -> str:
    units: list[int] = []
    i, n = 0, len(data)
    while i < n:
        first = data[i]
        if first < 0x80:
            units.append(first)
            i += 1
        elif first >> 5 == 0b110:
            if i + 1 >= n or data[i + 1] >> 6 != 0b10:
                raise ValueError("malformed modified UTF-8 in track string")
            units.append(((first & 0x1F) << 6) | (data[i + 1] & 0x3F))
            i += 2
        elif first >> 4 == 0b1110:
            if i + 2 >= n or data[i + 1] >> 6 != 0b10 or data[i + 2] >> 6 != 0b10:
                raise ValueError("malformed modified UTF-8 in track string")
            units.append(((first & 0x0F) << 12) | ((data[i + 1] & 0x3F) << 6) | (data[i + 2] & 0x3F))
            i += 3
        else:
            raise ValueError("malformed modified UTF-8 in track string")
    # Join surrogate pairs back into code points, as Java's String would when printed.
    return "".join(map(chr, units)).encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


class _Reader:
    """Sequential big-endian reader over one message body, raising ValueError on truncation."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def _take(self, size: int) -> bytes:
        end = self._pos + size
        if end > len(self._data):
            raise ValueError("truncated track data")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def byte(self) -> int:
        return self._take(1)[0]

    def boolean(self) -> bool:
        return self.byte() != 0

    def int64(self) -> int:
        value: int = _INT64.unpack(self._take(8))[0]
        return value

    def utf(self) -> str:
        (size,) = struct.unpack(">H", self._take(2))
        return _decode_java_utf(self._take(size))

    def nullable_utf(self) -> str | None:
        return self.utf() if self.boolean() else None


# -- container probes (http and local tracks) ---------------------------------------------------------


def probe_info_for(location: str) -> str:
    """The probe info lavaplayer records for the file or URL ``location``, chosen by its extension.

    lavaplayer detects the container from the content; a fake serves no content, so the extension stands in
    for it: ``"mp3"`` for ``.mp3``, ``"ogg"`` for ``.ogg``/``.opus``, ``"mp4"`` for ``.m4a``, ``"adts"`` for
    ``.aac``, ``"matroska/webm"`` for ``.webm``, ``"m3u|hls-outer"`` for an ``.m3u8`` HLS stream, and
    ``"mp3"`` (the usual internet radio) when the extension says nothing.

    .. versionadded:: 0.5
    """
    path = location.split("?", 1)[0].split("#", 1)[0].rstrip("/")
    name = path.rsplit("/", 1)[-1]
    extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return _PROBE_BY_EXTENSION.get(extension, _DEFAULT_PROBE)


def decode_probe_info(details: bytes) -> tuple[str, str | None]:
    """Read the container probe of an ``http`` or ``local`` track's details (``decodeTrackFactory``).

    Returns
    -------
    tuple[str, str | None]
        ``(probe name, parameters)``, e.g. ``("mp3", None)`` or ``("m3u", "hls-outer")``.

    Raises
    ------
    ValueError
        ``details`` is not exactly one ``writeUTF`` string (an http track encoded without its probe).

    .. versionadded:: 0.5
    """
    reader = _Reader(bytes(details))
    probe_info = reader.utf()
    if reader.remaining:
        raise ValueError(f"{reader.remaining} unexpected bytes after the container probe")
    name, separator, parameters = probe_info.partition(_PROBE_SEPARATOR)
    return name, parameters if separator else None


def _default_details(info: Mapping[str, Any]) -> bytes:
    """What lavaplayer's source manager writes after ``sourceName`` for ``info``."""
    if info.get("sourceName") not in PROBING_SOURCES:
        return b""
    location = info.get("uri") or info.get("identifier") or ""
    return _java_utf(probe_info_for(location if isinstance(location, str) else ""))


# -- public API -----------------------------------------------------------------------------------------


def encode_track(info: Mapping[str, Any], *, details: bytes | None = None) -> str:
    """Encode a Lavalink track ``info`` object into its ``encoded`` string (format version 3).

    Parameters
    ----------
    info: Mapping[str, Any]
        Lavalink's track info JSON: ``title``, ``author``, ``length``, ``identifier``, ``isStream``,
        ``sourceName`` are required; ``uri``, ``artworkUrl``, ``isrc`` (nullable) and ``position``
        (default 0) are optional. ``isSeekable`` is derived, never stored.
    details: bytes | None
        Source-specific bytes written between ``sourceName`` and ``position``. By default what lavaplayer
        writes: the container probe of :func:`probe_info_for` (``uri``, else ``identifier``) for ``http``
        and ``local`` tracks, nothing for youtube, soundcloud and most other sources.

    Returns
    -------
    str
        The standard base64 string, as Lavalink sends it.

    Raises
    ------
    ValueError
        A required field is missing, has the wrong type, or a string is longer than 65535 bytes.
    """
    try:
        title, author, identifier, source = (
            info["title"],
            info["author"],
            info["identifier"],
            info["sourceName"],
        )
        length, is_stream = info["length"], info["isStream"]
    except KeyError as exc:
        raise ValueError(f"track info is missing {exc.args[0]!r}") from None
    position = info.get("position", 0) or 0
    for name, value in (("title", title), ("author", author), ("identifier", identifier), ("sourceName", source)):
        if not isinstance(value, str):
            raise ValueError(f"track info {name!r} must be a string, not {type(value).__name__}")
    for name, value in (("length", length), ("position", position)):
        if not isinstance(value, int) or isinstance(value, bool) or not -(2**63) <= value < 2**63:
            raise ValueError(f"track info {name!r} must be a 64-bit integer")
    if not isinstance(is_stream, bool):
        raise ValueError("track info 'isStream' must be a boolean")

    body = bytearray((TRACK_INFO_VERSION,))
    body += _java_utf(title) + _java_utf(author) + _INT64.pack(length) + _java_utf(identifier)
    body.append(1 if is_stream else 0)
    for name in ("uri", "artworkUrl", "isrc"):
        value = info.get(name)
        if value is None:
            body.append(0)
        elif isinstance(value, str):
            body.append(1)
            body += _java_utf(value)
        else:
            raise ValueError(f"track info {name!r} must be a string or None")
    if details is None:
        details = _default_details(info)
    body += _java_utf(source) + bytes(details) + _INT64.pack(position)
    header = len(body) | (_VERSIONED_FLAG << 30)
    return base64.b64encode(struct.pack(">I", header) + bytes(body)).decode("ascii")


def decode_track_details(encoded: str) -> tuple[dict[str, Any], int, bytes]:
    """Decode ``encoded`` and also return its format version and source-specific detail bytes.

    Returns
    -------
    tuple[dict[str, Any], int, bytes]
        ``(info, version, details)``; see :func:`decode_track` for ``info``.

    Raises
    ------
    ValueError
        ``encoded`` is not a well-formed Lavalink track of version 1, 2 or 3.
    """
    if not isinstance(encoded, str):
        raise ValueError(f"an encoded track must be a string, not {type(encoded).__name__}")
    try:
        raw = base64.b64decode(encoded.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("encoded track is not valid base64") from None
    if len(raw) < 4:
        raise ValueError("encoded track is too short to hold a message header")
    (header,) = struct.unpack(">I", raw[:4])
    size, flags = header & _SIZE_MASK, header >> 30
    body = raw[4:]
    if size != len(body):
        raise ValueError(f"encoded track declares {size} bytes but holds {len(body)}")
    reader = _Reader(body)
    version = reader.byte() if flags & _VERSIONED_FLAG else 1
    if not 1 <= version <= TRACK_INFO_VERSION:
        raise ValueError(f"unsupported track format version {version}")
    title = reader.utf()
    author = reader.utf()
    length = reader.int64()
    identifier = reader.utf()
    is_stream = reader.boolean()
    uri = reader.nullable_utf() if version >= 2 else None
    artwork_url = reader.nullable_utf() if version >= 3 else None
    isrc = reader.nullable_utf() if version >= 3 else None
    source = reader.utf()
    if reader.remaining < 8:
        raise ValueError("truncated track data: no position")
    details = reader._take(reader.remaining - 8)
    position = reader.int64()
    info: dict[str, Any] = {
        "identifier": identifier,
        "isSeekable": not is_stream,
        "author": author,
        "length": length,
        "isStream": is_stream,
        "position": position,
        "title": title,
        "uri": uri,
        "artworkUrl": artwork_url,
        "isrc": isrc,
        "sourceName": source,
    }
    return info, version, details


def decode_track(encoded: str) -> dict[str, Any]:
    """Decode a Lavalink ``encoded`` track string (format version 1, 2 or 3) into its ``info`` object.

    Parameters
    ----------
    encoded: str
        The base64 string from a track's ``encoded`` field.

    Returns
    -------
    dict[str, Any]
        Lavalink's track info JSON: ``identifier``, ``isSeekable`` (``not isStream``), ``author``,
        ``length``, ``isStream``, ``position``, ``title``, ``uri``, ``artworkUrl``, ``isrc``,
        ``sourceName``. Fields a version does not carry (``uri`` before 2; ``artworkUrl`` and
        ``isrc`` before 3) are ``None``.

    Raises
    ------
    ValueError
        ``encoded`` is not valid base64, is truncated, declares a wrong size or an unknown version,
        or holds malformed strings.
    """
    return decode_track_details(encoded)[0]
