"""Fit a captured state to the configured limits, so that every record sonora_cog writes can be read back.

The ``[limits]`` caps guard the reader against hostile records; a state the bot really holds can exceed
them (a 10,050-track playlist, 20 KB of extras, a track whose URL is 5,000 characters). Written as it
is, such a record would be refused when it is read back, and the whole guild lost after a crash. So
every write fits the state first, keeps everything that fits, and says what it left out:

* a queue or auto queue longer than ``max_queue_tracks`` keeps the first ones (those that play next);
* extras over ``max_extras_bytes`` are left out (the rest of the state is saved), as are a track's
  ``userData`` and a filters object over it;
* a track text field (title, author, URL...) or playlist name over ``max_string_length`` is shortened;
* a track whose ``encoded`` form exceeds ``max_encoded_length`` cannot be stored and is left out.

Pure: no I/O; the caller logs the notes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson

from .model import Limits, SessionState, TrackState

__all__ = ("fit_to_limits",)

#: Fields of a track's ``info`` that are text.
_TEXT_FIELDS = ("identifier", "author", "title", "uri", "artworkUrl", "isrc", "sourceName")


def fit_to_limits(state: SessionState, limits: Limits) -> tuple[SessionState, list[str]]:
    """``state`` cut down to ``limits`` (the same object when it fits) and one note per thing left out,
    each ``"<what>: <detail>"``."""
    notes: list[str] = []
    queue, autoplay = state.queue, state.autoplay
    current = _fit_track(queue.current, "the current track", limits, notes) if queue.current else None
    upcoming = _fit_list(queue.upcoming, "queue", limits, notes)
    history = _fit_list(queue.history, "history", limits, notes)
    auto_queue = _fit_list(autoplay.auto_queue, "auto queue", limits, notes)
    extras = state.extras
    if extras and _json_size(extras) > limits.max_extras_bytes:
        notes.append(f"extras: {_json_size(extras):,} bytes of JSON, over limits.max_extras_bytes "
                     f"({limits.max_extras_bytes:,}); saved without them")
        extras = {}
    filters = state.filters
    if _json_size(filters.filter_config) > limits.max_extras_bytes:
        notes.append(f"filters: over limits.max_extras_bytes ({limits.max_extras_bytes:,}) as JSON; "
                     "saved without filters")
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


def _fit_list(tracks: tuple[TrackState, ...], name: str, limits: Limits, notes: list[str]) -> tuple[TrackState, ...]:
    kept = tracks
    if len(tracks) > limits.max_queue_tracks:
        notes.append(f"{name}: {len(tracks):,} tracks, over limits.max_queue_tracks "
                     f"({limits.max_queue_tracks:,}); the first {limits.max_queue_tracks:,} are saved")
        kept = tracks[: limits.max_queue_tracks]
    fitted = [_fit_track(t, f"{name} track {i + 1}", limits, notes) for i, t in enumerate(kept)]
    if all(f is t for f, t in zip(fitted, kept, strict=True)):
        return kept
    return tuple(t for t in fitted if t is not None)


def _fit_track(track: TrackState, where: str, limits: Limits, notes: list[str]) -> TrackState | None:
    data = track.data
    encoded = data["encoded"]
    if len(encoded) > limits.max_encoded_length:
        notes.append(f"{where}: its encoded form is {len(encoded):,} characters, over "
                     f"limits.max_encoded_length ({limits.max_encoded_length:,}); left out")
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
    if user_data and _json_size(user_data) > limits.max_extras_bytes:
        notes.append(f"{where}: its userData is over limits.max_extras_bytes ({limits.max_extras_bytes:,}); "
                     "saved without it")
        changed["userData"] = {}
    playlist = data.get("playlist")
    if playlist is not None and isinstance(playlist.get("name"), str) and len(playlist["name"]) > cap:
        notes.append(f"{where}: its playlist name is over limits.max_string_length ({cap:,}); shortened")
        changed["playlist"] = {**playlist, "name": playlist["name"][:cap]}
    return TrackState({**data, **changed}) if changed else track


def _json_size(value: Any) -> int:
    try:
        return len(orjson.dumps(value))
    except TypeError:
        return 0  # not JSON at all: the encoder says so, with the field
