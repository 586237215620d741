"""Property: capture → encode → decode → rebuild is the identity on every field, for every codec setting."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sonora_cog.capture import to_playable, track_state
from sonora_cog.codec import Codec, Keyring
from sonora_cog.meta import SnapshotKind, SnapshotMeta
from sonora_cog.model import (
    AutoplayMode,
    AutoplayState,
    FilterState,
    LoopMode,
    PlayerState,
    QueueState,
    SessionState,
    TrackState,
)
from sonora_cog.testing.trackcodec import encode_track

KEY = bytes(range(32))
CODECS = {
    "plain": Codec(),
    "zstd": Codec(compression="zstd"),
    "encrypted": Codec(keyring=Keyring(KEY), encrypt=True),
    "zstd+encrypted": Codec(compression="zstd", keyring=Keyring(KEY), encrypt=True),
}

text = st.text(min_size=0, max_size=40)
json_scalar = (
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False) | text
)
json_value = st.recursive(
    json_scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3), max_leaves=8
)
snowflake = st.integers(min_value=1, max_value=2**63)


@st.composite
def tracks(draw: Any) -> TrackState:
    stream = draw(st.booleans())
    info = {
        "identifier": draw(st.text(min_size=1, max_size=20)),
        "isSeekable": not stream,
        "author": draw(text),
        "length": draw(st.integers(0, 2**40)),
        "isStream": stream,
        "position": 0,
        "title": draw(text),
        "uri": draw(st.none() | text),
        "artworkUrl": draw(st.none() | text),
        "isrc": draw(st.none() | text),
        "sourceName": draw(st.sampled_from(["youtube", "soundcloud", "http"])),
    }
    data = {
        "encoded": encode_track(info),
        "info": info,
        "pluginInfo": draw(st.dictionaries(text, json_scalar, max_size=2)),
        "userData": draw(st.dictionaries(text, json_value, max_size=3)),
        "playlist": draw(st.none() | st.fixed_dictionaries({"name": text, "selectedTrack": st.integers(-1, 50)})),
        "recommended": draw(st.booleans()),
    }
    return TrackState(data)


@st.composite
def states(draw: Any) -> SessionState:
    track_list = st.lists(tracks(), max_size=4).map(tuple)
    return SessionState(
        guild_id=draw(snowflake),
        channel_id=draw(st.none() | snowflake),
        node=draw(st.none() | text),
        created_at=draw(st.floats(0, 4e9)),
        kind=draw(st.sampled_from(list(SnapshotKind))),
        label=draw(st.none() | text),
        player=PlayerState(
            volume=draw(st.integers(0, 1000)),
            paused=draw(st.booleans()),
            position=draw(st.integers(0, 2**40)),
            position_at=draw(st.floats(0, 4e9)),
            connected=draw(st.booleans()),
            session_id=draw(st.none() | text),
        ),
        queue=QueueState(
            current=draw(st.none() | tracks()),
            upcoming=draw(track_list),
            history=draw(track_list),
            loop_mode=draw(st.sampled_from(list(LoopMode))),
            shuffle_enabled=draw(st.booleans()),
        ),
        filters=FilterState(
            active_filters=tuple(draw(st.lists(text, max_size=3))),
            filter_config=draw(st.dictionaries(text, json_value, max_size=3)),
        ),
        autoplay=AutoplayState(
            enabled=draw(st.booleans()),
            mode=draw(st.sampled_from(list(AutoplayMode))),
            auto_queue=draw(track_list),
            max_history=draw(st.integers(0, 500)),
        ),
        extras=draw(st.dictionaries(text, json_value, max_size=4)),
    )


@pytest.mark.parametrize("codec_name", list(CODECS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=states())
def test_encode_decode_is_identity(codec_name: str, state: SessionState) -> None:
    codec = CODECS[codec_name]
    meta = SnapshotMeta(
        id="20261125T011830123-3fa9c2",
        guild_id=state.guild_id,
        created_at=state.created_at,
        kind=state.kind,
        label=None,
        track_count=state.track_count,
        current_title=None,
        content_hash="",
    )
    record = codec.encode(state.to_json(), meta)
    decoded = codec.decode(record.data)
    again = SessionState.from_json(decoded.payload)
    assert again == state
    assert decoded.meta.content_hash == record.meta.content_hash
    for before, after in zip(state.queue.upcoming, again.queue.upcoming, strict=True):
        rebuilt = to_playable(after)
        assert rebuilt.encoded == before.encoded
        assert dict(rebuilt.extras) == dict(before.user_data)
        assert rebuilt.recommended == before.recommended
        assert track_state(rebuilt).data["info"] == before.data["info"]
