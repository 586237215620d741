"""Test factories: real Lavalink track JSON (with real ``encoded`` strings) and states built from it."""

from __future__ import annotations

import itertools
import time
from typing import Any

from sonora_cog.meta import SnapshotKind
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

_ids = itertools.count(1)


def lavalink_track(
    title: str = "Song",
    author: str = "Artist",
    length: int = 180_000,
    *,
    identifier: str | None = None,
    stream: bool = False,
    source: str = "youtube",
    user_data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A track exactly as Lavalink v4 sends it (``/v4/loadtracks``), with a real encoded blob."""
    identifier = identifier or f"id{next(_ids):09d}"
    info = {
        "identifier": identifier,
        "isSeekable": not stream,
        "author": author,
        "length": length,
        "isStream": stream,
        "position": 0,
        "title": title,
        "uri": f"https://www.youtube.com/watch?v={identifier}",
        "artworkUrl": f"https://i.ytimg.com/vi/{identifier}/maxresdefault.jpg",
        "isrc": None,
        "sourceName": source,
    }
    return {"encoded": encode_track(info), "info": info, "pluginInfo": {}, "userData": user_data or {}}


def sample_state(guild_id: int = 111111111111111111, tracks: int = 5, **overrides: Any) -> SessionState:
    """A fully populated state: current track, queue, history, filters, autoplay, extras."""
    made = [TrackState({**lavalink_track(f"Track {i}"), "playlist": None, "recommended": False}) for i in range(tracks)]
    state = SessionState(
        guild_id=guild_id,
        channel_id=222222222222222222,
        node="main",
        created_at=1_764_000_000.5,
        kind=SnapshotKind.manual,
        label="friday night",
        player=PlayerState(
            volume=80, paused=False, position=61_000, position_at=1_764_000_000.5, connected=True, session_id="abc123"
        ),
        queue=QueueState(
            current=made[0] if made else None,
            upcoming=tuple(made[1:]),
            history=tuple(made[:1]),
            loop_mode=LoopMode.queue,
        ),
        filters=FilterState(active_filters=("timescale",), filter_config={"timescale": {"speed": 1.25}}),
        autoplay=AutoplayState(enabled=True, mode=AutoplayMode.partial, auto_queue=(), max_history=100),
        extras={"announce_channel": "333333333333333333"},
    )
    return SessionState(**{**{f: getattr(state, f) for f in state.__dataclass_fields__}, **overrides})


class ManualClock:
    """A monotonic clock that moves only when a test says so: ``clock()`` reads it, ``advance(s)`` moves it.

    It starts at ``time.monotonic()``, so times a component read from the real clock before it was
    given this one stay in the past.
    """

    def __init__(self, start: float | None = None) -> None:
        self.now = time.monotonic() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
