"""Capture: a live ``wavelink.Player`` → :class:`~sonora_cog.model.SessionState`, and back for tracks.

Pure and synchronous: performs no I/O and no awaits, so it can run inside a checkpoint of thousands of
guilds and be tested without a bot.

Capture copies no track: each stored track object is built from what wavelink already holds, by
reference: Lavalink's own ``info`` and ``pluginInfo`` objects (``Playable.raw_data``) and the track's
live extras. So a capture costs a small dict per track and nothing per byte, and the encoder writes what
Lavalink sent. (For speed, :func:`tracks_json` reads the attributes behind ``Playable``'s public
properties; ``tests/unit/test_capture.py`` checks it against the public API for every kind of track.)

The way back for a single track (:func:`to_playable`) rebuilds a ``wavelink.Playable`` from the
stored Lavalink JSON with no network call, identical in encoded string, info, extras, playlist and
``recommended``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING, Any, cast

import orjson
import wavelink

from .meta import SnapshotKind

if TYPE_CHECKING:
    from wavelink.types.tracks import PlaylistPayload, TrackPayload
from .model import (
    DEFAULT_LIMITS,
    AutoplayMode,
    AutoplayState,
    FilterState,
    Limits,
    LoopMode,
    PlayerState,
    QueueState,
    SessionState,
    TrackList,
    TrackState,
)

__all__ = (
    "PositionSample",
    "active_filter_names",
    "autoplay_mode_from_wavelink",
    "autoplay_mode_to_wavelink",
    "capture_state",
    "change_signature",
    "loop_mode_from_queue_mode",
    "loop_mode_to_queue_mode",
    "playback_position",
    "playback_speed",
    "to_filters",
    "to_playable",
    "track_state",
    "tracks_json",
)

_LOOP_FROM_WAVELINK = {
    wavelink.QueueMode.normal: LoopMode.none,
    wavelink.QueueMode.loop: LoopMode.track,
    wavelink.QueueMode.loop_all: LoopMode.queue,
}
_LOOP_TO_WAVELINK = {v: k for k, v in _LOOP_FROM_WAVELINK.items()}
_AUTOPLAY_FROM_WAVELINK = {
    wavelink.AutoPlayMode.enabled: AutoplayMode.enabled,
    wavelink.AutoPlayMode.partial: AutoplayMode.partial,
    wavelink.AutoPlayMode.disabled: AutoplayMode.disabled,
}
_AUTOPLAY_TO_WAVELINK = {v: k for k, v in _AUTOPLAY_FROM_WAVELINK.items()}


def loop_mode_from_queue_mode(mode: wavelink.QueueMode) -> LoopMode:
    """wavelink ``QueueMode`` normal / loop / loop_all → ``none`` / ``track`` / ``queue``."""
    return _LOOP_FROM_WAVELINK[mode]


def loop_mode_to_queue_mode(mode: LoopMode) -> wavelink.QueueMode:
    """The inverse of :func:`loop_mode_from_queue_mode`."""
    return _LOOP_TO_WAVELINK[mode]


def autoplay_mode_from_wavelink(mode: wavelink.AutoPlayMode) -> AutoplayMode:
    """wavelink ``AutoPlayMode`` → our :class:`AutoplayMode` (same names)."""
    return _AUTOPLAY_FROM_WAVELINK[mode]


def autoplay_mode_to_wavelink(mode: AutoplayMode) -> wavelink.AutoPlayMode:
    """The inverse of :func:`autoplay_mode_from_wavelink`."""
    return _AUTOPLAY_TO_WAVELINK[mode]


@dataclass(frozen=True, slots=True)
class PositionSample:
    """The playback clock of one player: where its track was at one instant, and whether it was paused.

    Set from Lavalink's ``playerUpdate`` (every few seconds) and by :class:`~sonora_cog.player.SonoraPlayer`
    whenever the bot itself sets a position (play, seek) or pauses and resumes. wavelink extrapolates
    ``Player.position`` at 1x from its last update and freezes it at that update while paused;
    capture extrapolates from this sample at the timescale filter's speed instead, and takes a paused
    position as it was when the pause happened, so the stored position is Lavalink's track time.

    Attributes
    ----------
    position:
        Milliseconds into the track.
    monotonic:
        ``time.monotonic()`` when it was there.
    paused:
        Whether the player was paused then (a paused clock does not advance).
    stalled:
        The player's Lavalink node was lost then: nothing plays until the player is on a node again,
        so the clock stands still whatever the pause state (see :mod:`sonora_cog.failover`).
    """

    position: int
    monotonic: float
    paused: bool = False
    stalled: bool = False


def _playlist_json(playlist: wavelink.PlaylistInfo) -> dict[str, Any]:
    return {
        "name": playlist.name,
        "selectedTrack": playlist.selected,
        "tracks": playlist.tracks,
        "type": playlist.type,
        "url": playlist.url,
        "artworkUrl": playlist.artwork,
        "author": playlist.author,
    }


def tracks_json(tracks: Iterable[wavelink.Playable]) -> list[dict[str, Any]]:
    """Each track as the object it is stored as: Lavalink's track JSON plus wavelink's ``playlist`` and
    ``recommended``, referencing wavelink's own objects (``info``, ``pluginInfo``, the live extras).

    The same as ``[track_state(t).data for t in tracks]``, reading the attributes behind ``Playable``'s
    properties (no property call per track). The objects share wavelink's: treat them as read-only.
    """
    return [
        {
            "encoded": t._encoded,
            "info": (raw := t._raw_data)["info"],
            "pluginInfo": raw.get("pluginInfo") or {},
            # ExtrasNamespace is a SimpleNamespace: its __dict__ is what ``dict(track.extras)`` gives.
            "userData": t._extras.__dict__,
            "playlist": None if t._playlist is None else _playlist_json(t._playlist),
            "recommended": t._recommended,
        }
        for t in tracks
    ]


def track_state(track: wavelink.Playable) -> TrackState:
    """Capture one track as Lavalink's JSON plus wavelink's ``playlist`` and ``recommended`` (public API only)."""
    raw: Mapping[str, Any] = track.raw_data
    playlist = track.playlist
    return TrackState(
        {
            "encoded": track.encoded,
            "info": raw["info"],
            "pluginInfo": raw.get("pluginInfo") or {},
            "userData": vars(track.extras),
            "playlist": None if playlist is None else _playlist_json(playlist),
            "recommended": track.recommended,
        }
    )


def to_playable(track: TrackState) -> wavelink.Playable:
    """Rebuild a ``wavelink.Playable`` from a stored track, with no network call."""
    data = track.data
    payload = cast(
        "TrackPayload",
        {
            "encoded": data["encoded"],
            "info": data["info"],
            "pluginInfo": data.get("pluginInfo") or {},
            "userData": data.get("userData") or {},
        },
    )
    playlist = None
    stored = data.get("playlist")
    if stored is not None:
        plugin = {k: stored[k] for k in ("type", "url", "artworkUrl", "author") if stored.get(k) is not None}
        count = stored.get("tracks", 0)
        playlist = wavelink.PlaylistInfo(
            cast(
                "PlaylistPayload",
                {
                    "info": {"name": stored["name"], "selectedTrack": stored["selectedTrack"]},
                    "pluginInfo": plugin,
                    "tracks": [payload] * (count if isinstance(count, int) and count > 0 else 0),
                },
            )
        )
    playable = wavelink.Playable(payload, playlist=playlist)
    if data.get("recommended"):
        # wavelink exposes ``recommended`` read-only and sets this attribute itself (Player autoplay).
        playable._recommended = True
    return playable


def active_filter_names(payload: Mapping[str, Any]) -> tuple[str, ...]:
    """The names of the filters in a Lavalink filters object that actually change the sound."""
    names = []
    for name, value in payload.items():
        if name == "volume":
            if value not in (None, 1, 1.0):
                names.append(name)
        elif name == "equalizer":
            if any(band.get("gain", 0) for band in value or ()):
                names.append(name)
        elif value:
            names.append(name)
    return tuple(names)


def to_filters(state: FilterState) -> wavelink.Filters:
    """Rebuild ``wavelink.Filters`` from the stored Lavalink filters object."""
    return wavelink.Filters(data=dict(state.filter_config))  # type: ignore[arg-type]


def playback_speed(filter_config: Mapping[str, Any]) -> float:
    """How fast track time runs under a Lavalink filters object (timescale ``speed`` times ``rate``)."""
    timescale = filter_config.get("timescale") or {}
    speed = timescale.get("speed") or 1.0
    rate = timescale.get("rate") or 1.0
    return float(speed) * float(rate)


def playback_position(
    player: wavelink.Player,
    sample: PositionSample | None,
    *,
    speed: float | None = None,
    monotonic_now: float | None = None,
) -> int:
    """Where the player's current track is now, in track time (ms; 0 when nothing plays).

    From ``sample`` when it is stalled (its node was lost: frozen), or when it agrees with the player
    on being paused: frozen when paused, moved on at
    ``speed`` (the timescale's, by default) when playing. Otherwise (no sample, or the player was
    paused or resumed where the clock did not see it) wavelink's own ``Player.position``.
    """
    current = player.current
    if current is None:
        return 0
    if sample is not None and sample.stalled:
        position = sample.position
    elif sample is None or sample.paused != player.paused:
        position = wavelink.Player.position.fget(player)  # type: ignore[attr-defined]  # wavelink's own
    elif sample.paused:
        position = sample.position
    else:
        now = time.monotonic() if monotonic_now is None else monotonic_now
        rate = playback_speed(player.filters()) if speed is None else speed
        position = int(sample.position + max(0.0, now - sample.monotonic) * 1000.0 * rate)
    if not current.is_stream:
        position = min(position, current.length)
    return max(0, position)


_ENCODED_ATTR = attrgetter("_encoded")
_EXTRAS_ATTR = attrgetter("_extras")


def change_signature(
    player: wavelink.Player,
    *,
    sample: PositionSample | None = None,
    extras: Any = None,
    history_limit: int = 100,
) -> int:
    """A cheap hash of everything a live record holds except a playing track's position and the clock.

    Equal for a player that did not change (a playing track moving on is not a change; a paused one
    moving is). Used to find changes nobody reported (a plain ``wavelink.Player``, or a queued track's
    extras changed in place) without capturing and encoding the whole state.
    """
    queue = player.queue
    history = list(queue.history or ())[-history_limit:] if history_limit else []
    current = [player.current] if player.current is not None else []
    tracks = [*current, *queue, *history, *player.auto_queue]
    # Which tracks, in which lists: hashing the same ``encoded`` str objects again reuses their cached hashes.
    # (Read through wavelink's attributes with C-speed getters: no Python code per track.)
    identity = hash((len(current), len(queue), len(history), *map(_ENCODED_ATTR, tracks)))
    channel = player.channel
    try:
        data = orjson.dumps(
            [
                channel.id if channel is not None else None,
                player.volume,
                player.paused,
                playback_position(player, sample) if player.paused else None,
                player.filters(),
                queue.mode.value,
                player.autoplay.value,
                bool(getattr(player, "shuffle_enabled", False)),
                extras,
                [*map(vars, map(_EXTRAS_ATTR, tracks))],
            ],
            option=orjson.OPT_NON_STR_KEYS,
        )
    except TypeError:  # not JSON (the bot's extras): always "changed", so the write reports the error
        return time.monotonic_ns()
    return hash((identity, data))


def capture_state(
    player: wavelink.Player,
    *,
    kind: SnapshotKind = SnapshotKind.live,
    label: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    extras: Mapping[str, Any] | None = None,
    position_sample: PositionSample | None = None,
    now: float | None = None,
    monotonic_now: float | None = None,
) -> SessionState:
    """Read a player's whole state.

    Parameters
    ----------
    player:
        A connected ``wavelink.Player`` or subclass.
    kind, label:
        What the state is for (the live record, an auto or manual snapshot...).
    limits:
        History is cut to the newest ``max_history_tracks``; the rest is captured whole. Every write
        then fits the state to the limits and logs what it left out (see :mod:`sonora_cog.fit`).
    extras:
        Bot-supplied JSON to keep with the state (see ``SonoraPlayer.extras``).
    position_sample:
        The last ``playerUpdate`` (see :class:`PositionSample`); makes positions exact under a
        timescale filter.
    now, monotonic_now:
        Clock readings (for tests); the current time when omitted.

    Raises
    ------
    ValueError
        The player has no guild (it was never connected).
    """
    guild = player.guild
    if guild is None:
        raise ValueError("cannot capture a player that has no guild (never connected)")
    wall = time.time() if now is None else now
    mono = time.monotonic() if monotonic_now is None else monotonic_now
    filter_config = player.filters()
    current = player.current
    position = playback_position(player, position_sample, speed=playback_speed(filter_config), monotonic_now=mono)

    history_queue = player.queue.history
    history = TrackList()
    if history_queue is not None and limits.max_history_tracks:
        history = TrackList(tracks_json(list(history_queue)[-limits.max_history_tracks :]))

    channel = player.channel
    node = player.node
    return SessionState(
        guild_id=guild.id,
        channel_id=channel.id if channel else None,
        node=node.identifier,
        created_at=wall,
        kind=kind,
        label=label,
        player=PlayerState(
            volume=player.volume,
            paused=player.paused,
            position=position,
            position_at=wall,
            connected=bool(player.connected),
            session_id=node.session_id,
        ),
        queue=QueueState(
            current=None if current is None else TrackState(tracks_json((current,))[0]),
            upcoming=TrackList(tracks_json(player.queue)),
            history=history,
            loop_mode=loop_mode_from_queue_mode(player.queue.mode),
            shuffle_enabled=bool(getattr(player, "shuffle_enabled", False)),
        ),
        filters=FilterState(active_filters=active_filter_names(filter_config), filter_config=filter_config),
        autoplay=AutoplayState(
            enabled=player.autoplay is not wavelink.AutoPlayMode.disabled,
            mode=autoplay_mode_from_wavelink(player.autoplay),
            auto_queue=TrackList(tracks_json(player.auto_queue)),
            max_history=limits.max_history_tracks,
        ),
        extras=dict(extras or {}),
    )
