"""Lavalink's binary track format, checked against encoded strings published by Lavalink and others."""

from __future__ import annotations

import base64
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sonora_cog.testing.trackcodec import (
    decode_probe_info,
    decode_track,
    decode_track_details,
    encode_track,
    probe_info_for,
)

# The example of Lavalink's REST docs (docs/api/rest.md, "Track Decoding") and of its protocol test suite
# (protocol/src/commonTest/kotlin/PlayerSerializerTest.kt), lavalink-devs/Lavalink. It is a version-2 track,
# so it carries no artworkUrl: the test suite asserts `artworkUrl shouldBe null` (the docs' JSON shows a
# URL there, which only a fresh load from the YouTube source would add).
LAVALINK_DOCS_V2 = (
    "QAAAjQIAJVJpY2sgQXN0bGV5IC0gTmV2ZXIgR29ubmEgR2l2ZSBZb3UgVXAADlJpY2tBc3RsZXlWRVZPAAAAAAADPCAAC2RRdzR3OVdn"
    "WGNRAAEAK2h0dHBzOi8vd3d3LnlvdXR1YmUuY29tL3dhdGNoP3Y9ZFF3NHc5V2dYY1EAB3lvdXR1YmUAAAAAAAAAAA=="
)
# README of @lavalink/encoding (github.com/lavalibs/encoding): version 2, flags 1.
LAVALIBS_ENCODING_V2 = (
    "QAAAkwIANFNrcmlsbGV4ICYgSGFic3RyYWt0IC0gQ2hpY2tlbiBTb3VwIFtPZmZpY2lhbCBBdWRpb10ABU9XU0xBAAAAAAADLIAACzIy"
    "TVdyV1BWX1FNAAEAK2h0dHBzOi8vd3d3LnlvdXR1YmUuY29tL3dhdGNoP3Y9MjJNV3JXUFZfUU0AB3lvdXR1YmUAAAAAAAAAAA=="
)
# Lavalink4NET's "Track decoding" documentation: a version-3 track as Lavalink v4 encodes it.
LAVALINK4NET_V3 = (
    "QAAA2QMAPFJpY2sgQXN0bGV5IC0gTmV2ZXIgR29ubmEgR2l2ZSBZb3UgVXAgKE9mZmljaWFsIE11c2ljIFZpZGVvKQALUmljayBBc3Rs"
    "ZXkAAAAAAANACAALZFF3NHc5V2dYY1EAAQAraHR0cHM6Ly93d3cueW91dHViZS5jb20vd2F0Y2g/dj1kUXc0dzlXZ1hjUQEANGh0dHBz"
    "Oi8vaS55dGltZy5jb20vdmkvZFF3NHc5V2dYY1EvbWF4cmVzZGVmYXVsdC5qcGcAAAd5b3V0dWJlAAAAAAAAAAA="
)
# An http track as Lavalink v3 (lavaplayer's HttpAudioSourceManager) encoded it: after the source name "http"
# comes the container probe "mp3" (`00 03 6d 70 33`). From Lavalink4NET's track tests
# (tests/Lavalink4NET.Abstractions.Tests/LavalinkTrackTests.cs, TestTrackDecodeEncodeRoundtripV2), and the same
# track in version 3 from TestTrackDecodeEncodeRoundtripV3.
LAVALINK_HTTP_V2 = (
    "QAAAiwIAC0RlYXRoIG9mIE1lAApTQUlOVCBQSE5YAAAAAAAAdVgAKGh0dHBzOi8vd3d3Lm1ib3hkcml2ZS5jb20vc3RhcnRtdXNpYy5tcDMA"
    "AQAoaHR0cHM6Ly93d3cubWJveGRyaXZlLmNvbS9zdGFydG11c2ljLm1wMwAEaHR0cAADbXAzAAAAAAAAAAA="
)
LAVALINK_HTTP_V3 = (
    "QAAAjQMAC0RlYXRoIG9mIE1lAApTQUlOVCBQSE5YAAAAAAAAdVgAKGh0dHBzOi8vd3d3Lm1ib3hkcml2ZS5jb20vc3RhcnRtdXNpYy5tcDMA"
    "AQAoaHR0cHM6Ly93d3cubWJveGRyaXZlLmNvbS9zdGFydG11c2ljLm1wMwAAAARodHRwAANtcDMAAAAAAAAAAA=="
)


def test_lavalink_docs_vector_decodes_to_the_documented_info() -> None:
    assert decode_track_details(LAVALINK_DOCS_V2)[1] == 2
    assert decode_track(LAVALINK_DOCS_V2) == {
        "identifier": "dQw4w9WgXcQ",
        "isSeekable": True,
        "author": "RickAstleyVEVO",
        "length": 212000,
        "isStream": False,
        "position": 0,
        "title": "Rick Astley - Never Gonna Give You Up",
        "uri": "https://www.youtube.com/watch?v=dQw4w9WgXcQ",
        "artworkUrl": None,
        "isrc": None,
        "sourceName": "youtube",
    }


def test_lavalibs_encoding_vector() -> None:
    info, version, details = decode_track_details(LAVALIBS_ENCODING_V2)
    assert (version, details) == (2, b"")
    assert info["title"] == "Skrillex & Habstrakt - Chicken Soup [Official Audio]"
    assert info["author"] == "OWSLA"
    assert info["length"] == 208000
    assert info["identifier"] == "22MWrWPV_QM"
    assert info["isStream"] is False
    assert info["uri"] == "https://www.youtube.com/watch?v=22MWrWPV_QM"
    assert info["sourceName"] == "youtube"
    assert info["position"] == 0


def test_version_3_vector_decodes_and_re_encodes_byte_for_byte() -> None:
    info = decode_track(LAVALINK4NET_V3)
    assert info["title"] == "Rick Astley - Never Gonna Give You Up (Official Music Video)"
    assert info["author"] == "Rick Astley"
    assert info["length"] == 213000
    assert info["artworkUrl"] == "https://i.ytimg.com/vi/dQw4w9WgXcQ/maxresdefault.jpg"
    assert info["isrc"] is None
    assert encode_track(info) == LAVALINK4NET_V3


def _utf(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">H", len(raw)) + raw


def _message(body: bytes, *, versioned: bool) -> str:
    header = len(body) | ((1 << 30) if versioned else 0)
    return base64.b64encode(struct.pack(">I", header) + body).decode()


def test_version_1_has_no_version_byte_and_no_uri() -> None:
    body = (
        _utf("Title")
        + _utf("Author")
        + struct.pack(">q", 1234)
        + _utf("abc")
        + b"\x01"
        + _utf("http")
        + struct.pack(">q", 99)
    )
    info, version, _ = decode_track_details(_message(body, versioned=False))
    assert version == 1
    assert info == {
        "identifier": "abc",
        "isSeekable": False,
        "author": "Author",
        "length": 1234,
        "isStream": True,
        "position": 99,
        "title": "Title",
        "uri": None,
        "artworkUrl": None,
        "isrc": None,
        "sourceName": "http",
    }


def test_version_2_absent_uri_and_source_details_before_position() -> None:
    details = _utf("mp3")  # the http source's container probe
    body = (
        b"\x02"
        + _utf("T")
        + _utf("A")
        + struct.pack(">q", 5)
        + _utf("id")
        + b"\x00"
        + b"\x00"
        + _utf("http")
        + details
        + struct.pack(">q", 3)
    )
    info, version, got_details = decode_track_details(_message(body, versioned=True))
    assert (version, got_details) == (2, details)
    assert info["uri"] is None and info["position"] == 3 and info["sourceName"] == "http"
    assert decode_track(encode_track(info, details=details)) == info


def test_http_track_is_encoded_with_its_container_probe_byte_for_byte() -> None:
    # Built from lavaplayer's layout (DefaultAudioPlayerManager.encodeTrack, version 3): the info fields, then
    # writeUTF(sourceName), then HttpAudioSourceManager.encodeTrack -> ProbingAudioSourceManager.encodeTrackFactory
    # (writeUTF of the probe name, no "|parameters" for mp3), then writeLong(position); the message header is
    # MessageOutput.commitMessage(TRACK_INFO_VERSIONED = 1): size | 1 << 30.
    url = "https://radio.example/live/stream.mp3"
    body = (
        b"\x03"
        + _utf("Morning Show")
        + _utf("Radio Example")
        + struct.pack(">q", 2**63 - 1)
        + _utf(url)
        + b"\x01"  # isStream
        + b"\x01"
        + _utf(url)  # uri present
        + b"\x00"  # no artworkUrl
        + b"\x00"  # no isrc
        + _utf("http")
        + _utf("mp3")  # the container probe
        + struct.pack(">q", 0)
    )
    info = {
        "title": "Morning Show",
        "author": "Radio Example",
        "length": 2**63 - 1,
        "identifier": url,
        "isStream": True,
        "uri": url,
        "artworkUrl": None,
        "isrc": None,
        "sourceName": "http",
    }
    assert encode_track(info) == _message(body, versioned=True)


def test_lavalink_http_tracks_decode_and_re_encode_byte_for_byte() -> None:
    for encoded, version in ((LAVALINK_HTTP_V2, 2), (LAVALINK_HTTP_V3, 3)):
        info, got_version, details = decode_track_details(encoded)
        assert got_version == version
        assert decode_probe_info(details) == ("mp3", None)
        assert info == {
            "identifier": "https://www.mboxdrive.com/startmusic.mp3",
            "isSeekable": True,
            "author": "SAINT PHNX",
            "length": 30040,
            "isStream": False,
            "position": 0,
            "title": "Death of Me",
            "uri": "https://www.mboxdrive.com/startmusic.mp3",
            "artworkUrl": None,
            "isrc": None,
            "sourceName": "http",
        }
    assert encode_track(decode_track(LAVALINK_HTTP_V3)) == LAVALINK_HTTP_V3


def test_local_track_probe_comes_from_the_file_extension() -> None:
    info = {
        "title": "Intro",
        "author": "Unknown artist",
        "length": 5000,
        "identifier": "/music/intro.flac",
        "isStream": False,
        "uri": "/music/intro.flac",
        "sourceName": "local",
    }
    details = decode_track_details(encode_track(info))[2]
    assert details == _utf("flac")
    assert decode_track_details(encode_track({**info, "sourceName": "youtube"}))[2] == b""  # only probing sources


@pytest.mark.parametrize(
    ("location", "probe"),
    [
        ("https://cdn.example/a/song.MP3", "mp3"),
        ("/music/b.ogg", "ogg"),
        ("https://cdn.example/voice.opus?sig=1", "ogg"),
        ("https://cdn.example/c.m4a", "mp4"),
        ("https://cdn.example/d.aac", "adts"),
        ("https://cdn.example/e.webm#t=3", "matroska/webm"),
        ("https://live.example/hls/index.m3u8", "m3u|hls-outer"),
        ("https://radio.example/stream", "mp3"),
        ("https://radio.example:8000/", "mp3"),
    ],
)
def test_probe_info_for_a_location(location: str, probe: str) -> None:
    assert probe_info_for(location) == probe


def test_probe_parameters_follow_the_separator() -> None:
    assert decode_probe_info(_utf("m3u|hls-outer")) == ("m3u", "hls-outer")
    with pytest.raises(ValueError, match="truncated"):
        decode_probe_info(b"")  # an http track encoded without its probe
    with pytest.raises(ValueError, match="unexpected bytes"):
        decode_probe_info(_utf("mp3") + b"\x00")


def test_strings_use_java_modified_utf8() -> None:
    info = {
        "title": "a\0b\U0001f600",
        "author": "é",
        "length": 1,
        "identifier": "x",
        "isStream": False,
        "sourceName": "youtube",
    }
    raw = base64.b64decode(encode_track(info))
    # NUL is C0 80 and the emoji is a surrogate pair of two 3-byte sequences: 1 + 2 + 1 + 6 = 10 bytes.
    assert raw[5:17] == b"\x00\x0aa\xc0\x80b\xed\xa0\xbd\xed\xb8\x80"
    assert decode_track(encode_track(info))["title"] == "a\0b\U0001f600"


_text = st.text(max_size=60)
_long = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@given(
    title=_text,
    author=_text,
    identifier=_text,
    source=_text,
    length=_long,
    position=_long,
    is_stream=st.booleans(),
    uri=st.none() | _text,
    artwork=st.none() | _text,
    isrc=st.none() | _text,
)
def test_encode_decode_round_trip(
    title: str,
    author: str,
    identifier: str,
    source: str,
    length: int,
    position: int,
    is_stream: bool,
    uri: str | None,
    artwork: str | None,
    isrc: str | None,
) -> None:
    info = {
        "identifier": identifier,
        "isSeekable": not is_stream,
        "author": author,
        "length": length,
        "isStream": is_stream,
        "position": position,
        "title": title,
        "uri": uri,
        "artworkUrl": artwork,
        "isrc": isrc,
        "sourceName": source,
    }
    encoded = encode_track(info)
    assert decode_track(encoded) == info
    assert decode_track_details(encoded)[1] == 3


@pytest.mark.parametrize(
    ("encoded", "message"),
    [
        ("not base64!!", "base64"),
        ("", "too short"),
        (base64.b64encode(b"\x40\x00\x00\x10\x03").decode(), "declares 16 bytes"),
        (_message(b"\x09" + _utf("T"), versioned=True), "version 9"),
        (_message(b"\x03" + _utf("T") + b"\x00", versioned=True), "truncated"),
        (_message(b"\x03\x00\x02\xff\xff", versioned=True), "UTF-8"),
        (LAVALINK_DOCS_V2[:-12] + "AAAAAAAA", "declares"),
    ],
)
def test_garbage_raises_a_clear_value_error(encoded: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_track(encoded)


def test_non_string_input_is_refused() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        decode_track(b"QAAA")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"title": None}, "'title' must be a string"),
        ({"length": 1.5}, "'length' must be a 64-bit integer"),
        ({"length": 2**63}, "'length' must be a 64-bit integer"),
        ({"isStream": "no"}, "'isStream' must be a boolean"),
        ({"uri": 5}, "'uri' must be a string or None"),
        ({"author": "x" * 70_000}, "too long"),
    ],
)
def test_encode_refuses_bad_info(change: dict[str, object], message: str) -> None:
    info = {**decode_track(LAVALINK4NET_V3), **change}
    with pytest.raises(ValueError, match=message):
        encode_track(info)


def test_encode_requires_the_fields() -> None:
    info = decode_track(LAVALINK4NET_V3)
    del info["sourceName"]
    with pytest.raises(ValueError, match="missing 'sourceName'"):
        encode_track(info)
