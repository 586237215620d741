"""(a') The original Sonora 1.2.8's snapshot serialisation, measured in the same run as (a).

``sonora.snapshot.SessionSnapshot`` from the ``py-sonora`` package (``pip install -e ".[bench-original]"``):
per guild, ``capture_player_state``, ``capture_queue_state``, ``capture_filters_state`` and
``capture_autoplay_state`` of the same players (through stand-ins with the attributes it reads, built
before the clock starts, as its own player and track objects would already exist), ``to_json()`` (it
computes a SHA-256 checksum over a sorted dump, then dumps again with ``indent=2``) and one plain
``open/write/close`` of the text — what its ``SnapshotManager.save_snapshot`` does, with no fsync, no
rename, no atomicity. Sonora 1.2.8 keeps the last 50 history tracks; the stand-ins give it the same.
"""

from __future__ import annotations

import importlib.metadata
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import wavelink

__all__ = ("run_original",)


def _track(track: wavelink.Playable) -> SimpleNamespace:
    # The attribute names Sonora 1.2.8's _serialize_track reads.
    return SimpleNamespace(
        title=track.title,
        author=track.author,
        uri=track.uri,
        identifier=track.identifier,
        length=track.length,
        position=track.position,
        isStream=track.is_stream,
        isSeekable=track.is_seekable,
        track=track.encoded,
    )


def _stand_in(player: wavelink.Player) -> tuple[int, SimpleNamespace, SimpleNamespace, Any, SimpleNamespace]:
    assert player.guild is not None
    history = list(player.queue.history or [])
    queue = SimpleNamespace(
        current=_track(player.current) if player.current else None,
        upcoming=[_track(t) for t in player.queue],
        history=[_track(t) for t in history],
        loop_mode=str(player.queue.mode),
        shuffle_enabled=False,
    )
    state = SimpleNamespace(
        volume=player.volume, paused=player.paused, position=player.position, connected=True, session_id=None
    )
    filters = SimpleNamespace(active_filters=[], to_payload=lambda: dict(player.filters()))
    autoplay = SimpleNamespace(enabled=False, strategy="similar_artist", max_history=50, smart_shuffle=True)
    return player.guild.id, state, queue, filters, autoplay


def run_original(players: list[wavelink.Player], folder: Path) -> dict[str, Any]:
    """Time Sonora 1.2.8's capture + ``to_json`` + plain write for each player; ``{"missing": ...}`` when
    ``py-sonora`` is not installed."""
    try:
        from sonora.snapshot import SessionSnapshot
    except ImportError as exc:
        return {"missing": f'{exc}: pip install -e ".[bench-original]"'}
    version = importlib.metadata.version("py-sonora")  # its sonora.__version__ says 1.2.7
    stand_ins = [_stand_in(p) for p in players]
    folder.mkdir(parents=True)
    written = 0
    started = time.perf_counter()
    for guild_id, state, queue, filters, autoplay in stand_ins:
        snapshot = SessionSnapshot(guild_id)
        snapshot.capture_player_state(cast(Any, state))  # a stand-in for Sonora's player-state reader
        snapshot.capture_queue_state(queue)
        snapshot.capture_filters_state(filters)
        snapshot.capture_autoplay_state(autoplay)
        text = snapshot.to_json()
        with (folder / f"{guild_id}.json").open("w") as f:
            f.write(text)
        written += len(text)
    seconds = time.perf_counter() - started
    return {
        "version": version,
        "seconds": seconds,
        "bytes": written,
        "us_per_guild": round(seconds / len(players) * 1e6, 1),
    }
