"""Fit a state to the configured limits, so that a guild is never lost to a cap.

The ``[limits]`` caps are what a guild's state may hold; a state the bot really holds can exceed them
(a 10,050-track playlist, 20 KB of extras, a track whose URL is 5,000 characters), and a record written
under higher limits can meet a process with lower ones. Refusing such a state would lose the whole
guild, so both ways it is *fitted*: everything that fits is kept, and what was left out is said.

* a queue or auto queue longer than ``max_queue_tracks`` keeps the first ones (those that play next);
  a history longer than ``max_history_tracks`` keeps the newest;
* extras over ``max_extras_bytes`` lose their largest keys until they fit; a track's ``userData`` or a
  filters object over it is left out;
* a track text field (title, author, URL...) or playlist name over ``max_string_length`` is shortened;
* a track whose ``encoded`` form exceeds ``max_encoded_length`` cannot be stored and is left out;
* a whole record over ``storage.max_record_bytes`` keeps a part of each track list (:func:`shrink`).

Records read from the store are parsed with :func:`read_limits` (generous; the record and payload size
caps bound the work) and then fitted. Imported files are not: they are refused when over the limits.

Pure: no I/O; the caller logs the notes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from operator import itemgetter, methodcaller
from typing import Any

import orjson

from .model import Limits, SessionState, TrackList, TrackState, tracks_json

__all__ = ("fit_to_limits", "read_limits", "shrink")

# C-speed accessors for whole track lists (no Python code per track). Captured tracks have every key;
# a record's may lack the optional ones, which the slower ``get`` form then reads.
_ENCODED = itemgetter("encoded")
_PLAYLIST = (itemgetter("playlist"), methodcaller("get", "playlist"))
_USER_DATA = (itemgetter("userData"), methodcaller("get", "userData"))


def _each(objects: Sequence[Mapping[str, Any]], getters: tuple[Any, Any]) -> list[Any]:
    try:
        return list(map(getters[0], objects))
    except KeyError:
        return list(map(getters[1], objects))


#: Fields of a track's ``info`` that are text.
_TEXT_FIELDS = ("identifier", "author", "title", "uri", "artworkUrl", "isrc", "sourceName")


def read_limits(limits: Limits) -> Limits:
    """The caps a record from the store is parsed with: ``limits`` or far more (it is fitted afterwards)."""
    return Limits(
        max_queue_tracks=max(limits.max_queue_tracks, 1_000_000),
        max_history_tracks=max(limits.max_history_tracks, 1_000_000),
        max_string_length=max(limits.max_string_length, 1 << 20),
        max_encoded_length=max(limits.max_encoded_length, 1 << 22),
        max_extras_bytes=max(limits.max_extras_bytes, 1 << 26),
    )


def shrink(state: SessionState, fraction: float) -> tuple[SessionState, str] | None:
    """``state`` keeping ``fraction`` of each track list (upcoming and auto queue: the first ones; history:
    the newest), with a note; ``None`` when the lists are empty (nothing left to take out)."""
    queue, autoplay = state.queue, state.autoplay
    if not (queue.upcoming or queue.history or autoplay.auto_queue):
        return None

    def keep(count: int) -> int:
        return min(count - 1, int(count * fraction)) if count else 0

    upcoming = queue.upcoming[: keep(len(queue.upcoming))]
    history = queue.history[len(queue.history) - keep(len(queue.history)) :]
    auto_queue = autoplay.auto_queue[: keep(len(autoplay.auto_queue))]
    note = (
        f"record: over storage.max_record_bytes; saved {len(upcoming):,} of {len(queue.upcoming):,} queued, "
        f"{len(history):,} of {len(queue.history):,} history and {len(auto_queue):,} of "
        f"{len(autoplay.auto_queue):,} auto-queue tracks (turn on compression, or raise the cap)"
    )
    return replace(
        state,
        queue=replace(queue, upcoming=upcoming, history=history),
        autoplay=replace(autoplay, auto_queue=auto_queue),
    ), note


def fit_to_limits(state: SessionState, limits: Limits) -> tuple[SessionState, list[str]]:
    """``state`` cut down to ``limits`` (the same object when it fits) and one note per thing left out,
    each ``"<what>: <detail>"``."""
    notes: list[str] = []
    queue, autoplay = state.queue, state.autoplay
    current = _fit_track(queue.current, "the current track", limits, notes) if queue.current else None
    upcoming = _fit_list(queue.upcoming, "queue", limits, notes)
    history = queue.history
    if len(history) > limits.max_history_tracks:
        notes.append(
            f"history: {len(history):,} tracks, over limits.max_history_tracks "
            f"({limits.max_history_tracks:,}); the newest {limits.max_history_tracks:,} are kept"
        )
        history = history[len(history) - limits.max_history_tracks :]
    history = _fit_list(history, "history", limits, notes)
    auto_queue = _fit_list(autoplay.auto_queue, "auto queue", limits, notes)
    extras = _fit_extras(state.extras, limits, notes)
    filters = state.filters
    config_size = _json_size(filters.filter_config)
    if config_size is None or config_size > limits.max_extras_bytes:
        notes.append(
            f"filters: over limits.max_extras_bytes ({limits.max_extras_bytes:,}) as JSON; saved without filters"
        )
        filters = replace(filters, active_filters=(), filter_config={})
    if not notes:
        return state, notes
    return replace(
        state,
        queue=replace(queue, current=current, upcoming=upcoming, history=history),
        autoplay=replace(autoplay, auto_queue=auto_queue),
        filters=filters,
        extras=extras,
    ), notes


def _fit_extras(extras: Mapping[str, Any], limits: Limits, notes: list[str]) -> Mapping[str, Any]:
    """The extras without keys that cannot be written (nested over ~254 levels, not JSON), then without
    their largest keys until they fit (most extras have one big value, if any)."""
    size = _json_size(extras) if extras else 0
    if size is not None and size <= limits.max_extras_bytes:
        return extras
    kept = {k: v for k, v in extras.items() if _json_size({k: v}) is not None}
    dropped = [k for k in extras if k not in kept]
    for key in sorted(kept, key=lambda k: _json_size({k: kept[k]}) or 0, reverse=True):
        if (_json_size(kept) or 0) <= limits.max_extras_bytes:
            break
        del kept[key]
        dropped.append(key)
    names = ", ".join(repr(k) for k in dropped[:5]) + (", ..." if len(dropped) > 5 else "")
    shown = f"{size:,} bytes of JSON, over" if size is not None else "not all JSON the writer can write; limit"
    notes.append(f"extras: {shown} limits.max_extras_bytes ({limits.max_extras_bytes:,}); saved without {names}")
    return kept


def _fit_list(tracks: Sequence[TrackState], name: str, limits: Limits, notes: list[str]) -> Sequence[TrackState]:
    kept = tracks
    if len(tracks) > limits.max_queue_tracks:
        notes.append(
            f"{name}: {len(tracks):,} tracks, over limits.max_queue_tracks "
            f"({limits.max_queue_tracks:,}); the first {limits.max_queue_tracks:,} are saved"
        )
        kept = tracks[: limits.max_queue_tracks]
    if _all_fit(kept, limits):  # the common case: one pass, no per-track work
        return kept
    fitted = [_fit_track(t, f"{name} track {i + 1}", limits, notes) for i, t in enumerate(kept)]
    if all(f is t for f, t in zip(fitted, kept, strict=True)):
        return kept
    return TrackList([t.data for t in fitted if t is not None])


def _all_fit(tracks: Sequence[TrackState], limits: Limits) -> bool:
    """Whether every track surely fits: short ``encoded`` forms (so short text fields, see _fit_track), short
    playlist names, and all their userData together within one track's cap (C-speed passes, no per-track code)."""
    objects = tracks_json(tracks)
    if not objects:
        return True
    cap = limits.max_string_length
    if max(map(len, map(_ENCODED, objects))) > cap:
        return False
    playlists = _each(objects, _PLAYLIST)
    if any(playlists) and any(len(p.get("name") or "") > cap for p in playlists if p is not None):
        return False
    total = _json_size(_each(objects, _USER_DATA))
    return total is not None and total <= limits.max_extras_bytes


def _fit_track(track: TrackState, where: str, limits: Limits, notes: list[str]) -> TrackState | None:
    data = track.data
    encoded = data["encoded"]
    if len(encoded) > limits.max_encoded_length:
        notes.append(
            f"{where}: its encoded form is {len(encoded):,} characters, over "
            f"limits.max_encoded_length ({limits.max_encoded_length:,}); left out"
        )
        return None
    changed: dict[str, Any] = {}
    cap = limits.max_string_length
    # Every text field of ``info`` is inside ``encoded`` (Lavalink's binary form, base64): when that is
    # within the cap, so are they, and the common case costs one len().
    info = data["info"]
    if len(encoded) > cap:
        long = {k: v[:cap] for k in _TEXT_FIELDS if isinstance(v := info.get(k), str) and len(v) > cap}
        if long:
            notes.append(f"{where}: {', '.join(long)} over limits.max_string_length ({cap:,}); shortened")
            changed["info"] = {**info, **long}
    user_data = data.get("userData")
    size = _json_size(user_data) if user_data else 0
    if size is None or size > limits.max_extras_bytes:
        notes.append(
            f"{where}: its userData is over limits.max_extras_bytes ({limits.max_extras_bytes:,}) "
            "or not JSON the writer can write; saved without it"
        )
        changed["userData"] = {}
    playlist = data.get("playlist")
    if playlist is not None and isinstance(playlist.get("name"), str) and len(playlist["name"]) > cap:
        notes.append(f"{where}: its playlist name is over limits.max_string_length ({cap:,}); shortened")
        changed["playlist"] = {**playlist, "name": playlist["name"][:cap]}
    return TrackState({**data, **changed}) if changed else track


def _json_size(value: Any) -> int | None:
    """Bytes of ``value`` as JSON, or ``None`` when it cannot be written (nested too deep, not JSON)."""
    try:
        return len(orjson.dumps(value))
    except TypeError:
        return None
