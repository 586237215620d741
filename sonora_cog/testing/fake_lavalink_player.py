"""Sessions and players of :class:`~sonora_cog.testing.fake_lavalink.FakeLavalink`.

A :class:`FakeSession` is one Lavalink WebSocket session (``SocketContext`` in Lavalink's source): its
players, its resume settings, and the ordered stream of messages it sends. A :class:`FakePlayer` plays
like lavaplayer does, without audio: the position advances with the monotonic clock while a track is
loaded, the player is not paused and the voice connection is up; the timescale filter's
``speed * rate`` scales how fast track time passes; the end of the track (or an armed ``endTime``
marker) ends it with ``TrackEndEvent(reason="finished")``; streams never end.

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from sonora_cog.testing.trackcodec import decode_track_details, encode_track

__all__ = ("FakePlayer", "FakePlayerState", "FakeSession", "FakeSessionInfo", "now_ms")

_log = logging.getLogger(__name__)

#: The ping Lavalink reports for a connected voice gateway in this fake (``-1`` when disconnected).
VOICE_PING_MS = 12


def now_ms() -> int:
    """Wall-clock Unix time in milliseconds, as Lavalink's ``state.time`` and error ``timestamp``."""
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class FakePlayerState:
    """A read-only snapshot of one fake player, for test assertions.

    ``track`` is the full Lavalink track JSON (``encoded`` re-encoded at the current position, as
    Lavalink does), ``position`` is the track time in ms at the moment of the snapshot.
    """

    guild_id: str
    session_id: str
    track: dict[str, Any] | None
    position: int
    volume: int
    paused: bool
    filters: dict[str, Any]
    voice: dict[str, Any]
    connected: bool
    end_time: int | None


@dataclass(frozen=True, slots=True)
class FakeSessionInfo:
    """A read-only snapshot of one Lavalink session."""

    session_id: str
    user_id: str
    client_name: str | None
    connected: bool
    resuming: bool
    timeout: int
    player_count: int


class FakePlayer:
    """One guild's player inside a :class:`FakeSession` (Lavalink's ``LavalinkPlayer``)."""

    def __init__(self, session: FakeSession, guild_id: int) -> None:
        self.session = session
        self.guild_id = guild_id
        self.track: dict[str, Any] | None = None
        self.volume = 100
        self.paused = False
        self.filters: dict[str, Any] = {}
        self.voice: dict[str, Any] = {}
        self.connected = False
        self.end_time: int | None = None  # an armed endTime marker
        self._details = b""
        self._anchor_pos = 0.0
        self._anchor_clock = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None

    # -- clock ---------------------------------------------------------------------------------------

    @property
    def rate(self) -> float:
        """How many ms of track time pass per real ms: timescale ``speed * rate``."""
        timescale = self.filters.get("timescale") or {}
        speed = timescale.get("speed", 1.0)
        rate = timescale.get("rate", 1.0)
        return float(1.0 if speed is None else speed) * float(1.0 if rate is None else rate)

    @property
    def advancing(self) -> bool:
        """Whether track time is passing (a track, not paused, voice connected, rate > 0)."""
        return self.track is not None and not self.paused and self.connected and self.rate > 0

    @property
    def is_stream(self) -> bool:
        return bool(self.track and self.track["info"]["isStream"])

    def _exact_position(self) -> float:
        if self.track is None:
            return 0.0
        pos = self._anchor_pos
        if self.advancing:
            pos += (time.monotonic() - self._anchor_clock) * 1000.0 * self.rate
        if not self.is_stream:
            pos = min(pos, float(self._target()))
        return pos

    @property
    def position(self) -> int:
        """The current track position in ms (0 without a track)."""
        return int(self._exact_position())

    def _rebase(self, position: float | None = None) -> None:
        """Freeze the clock at the current (or given) position; call before changing what drives it."""
        self._anchor_pos = self._exact_position() if position is None else float(position)
        self._anchor_clock = time.monotonic()

    def _target(self) -> int:
        assert self.track is not None
        length = int(self.track["info"]["length"])
        return length if self.end_time is None else min(length, self.end_time)

    def _reschedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.advancing or self.is_stream:
            return
        remaining_ms = self._target() - self._exact_position()
        delay = max(0.0, remaining_ms / self.rate / 1000.0)
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.track is None or not self.advancing:
            return
        if self._exact_position() >= self._target() - 0.5:
            self._rebase(self._target())
            self._end("finished")
        else:
            self._reschedule()

    # -- JSON ----------------------------------------------------------------------------------------

    def track_json(self) -> dict[str, Any] | None:
        """The playing track as Lavalink renders it: info.position and ``encoded`` at the current position."""
        if self.track is None:
            return None
        position = self.position
        info = {**self.track["info"], "position": position}
        return {
            "encoded": encode_track(info, details=self._details),
            "info": info,
            "pluginInfo": dict(self.track.get("pluginInfo") or {}),
            "userData": dict(self.track.get("userData") or {}),
        }

    def state_json(self) -> dict[str, Any]:
        """Lavalink's player state object (``playerUpdate.state`` and ``Player.state``)."""
        return {
            "time": now_ms(),
            "position": self.position,
            "connected": self.connected,
            "ping": VOICE_PING_MS if self.connected else -1,
        }

    def voice_json(self) -> dict[str, Any]:
        voice = {
            "token": self.voice.get("token", ""),
            "endpoint": self.voice.get("endpoint", ""),
            "sessionId": self.voice.get("sessionId", ""),
        }
        if self.voice.get("channelId") is not None:
            voice["channelId"] = self.voice["channelId"]
        return voice

    def to_json(self) -> dict[str, Any]:
        """Lavalink's Player object, as ``GET/PATCH /v4/sessions/{sessionId}/players/{guildId}`` return it."""
        return {
            "guildId": str(self.guild_id),
            "track": self.track_json(),
            "volume": self.volume,
            "paused": self.paused,
            "state": self.state_json(),
            "voice": self.voice_json(),
            "filters": dict(self.filters),
        }

    def snapshot(self) -> FakePlayerState:
        return FakePlayerState(
            guild_id=str(self.guild_id),
            session_id=self.session.session_id,
            track=self.track_json(),
            position=self.position,
            volume=self.volume,
            paused=self.paused,
            filters=json.loads(json.dumps(self.filters)),
            voice=self.voice_json(),
            connected=self.connected,
            end_time=self.end_time,
        )

    # -- messages ------------------------------------------------------------------------------------

    def send_update(self) -> None:
        """Send a ``playerUpdate`` for this player (as ``SocketServer.sendPlayerUpdate``)."""
        self.session.send({"op": "playerUpdate", "guildId": str(self.guild_id), "state": self.state_json()})

    def send_event(self, event_type: str, **fields: Any) -> None:
        self.session.send({"op": "event", "type": event_type, "guildId": str(self.guild_id), **fields})

    def _end(self, reason: str) -> None:
        track = self.track_json()
        self.track = None
        self.end_time = None
        self._rebase(0)
        self._reschedule()
        self.send_event("TrackEndEvent", track=track, reason=reason)

    # -- operations (each mirrors one lavaplayer / Lavalink call) ------------------------------------

    def play(
        self, encoded: str, *, user_data: dict[str, Any] | None, position: int | None, end_time: int | None
    ) -> None:
        """Start ``encoded`` (``AudioPlayer.playTrack``): ends the current track as ``replaced`` first.

        Raises
        ------
        ValueError
            ``encoded`` is not a decodable track.
        """
        info, _version, details = decode_track_details(encoded)
        if self.track is not None:
            self._end("replaced")
        start = 0 if position is None or info["isStream"] else max(0, position)
        self.track = {"encoded": encoded, "info": info, "pluginInfo": {}, "userData": dict(user_data or {})}
        self._details = details
        self.end_time = None
        self._rebase(min(start, int(info["length"])) if not info["isStream"] else 0)
        self.arm_end_time(end_time)
        self.send_event("TrackStartEvent", track=self.track_json())
        self._reschedule()
        self.send_update()

    def stop(self) -> None:
        """Stop the current track (``AudioPlayer.stopTrack``): ``TrackEndEvent(stopped)`` if one played."""
        if self.track is not None:
            self._end("stopped")

    def end_track(self, reason: str = "finished") -> None:
        """End the current track now with ``reason`` (a test control; no-op without a track)."""
        if self.track is not None:
            self._end(reason)

    def arm_end_time(self, end_time: int | None) -> None:
        """Set or clear the ``endTime`` marker; a marker already behind the position is ignored (LATE)."""
        self._rebase()
        if end_time is None or self.track is None or end_time <= self.position:
            self.end_time = None
        else:
            self.end_time = end_time
        self._reschedule()

    def seek(self, position: int) -> None:
        """Move to ``position`` (no-op for streams); seeking past an armed ``endTime`` ends the track."""
        if self.track is None or self.is_stream:
            return
        if self.end_time is not None and position >= self.end_time:
            self._rebase(self.end_time)
            self._end("finished")
            return
        self._rebase(max(0, min(position, int(self.track["info"]["length"]))))
        self._reschedule()

    def set_paused(self, paused: bool) -> None:
        self._rebase()
        self.paused = paused
        self._reschedule()

    def set_volume(self, volume: int) -> None:
        self.volume = min(1000, max(0, volume))

    def set_filters(self, filters: dict[str, Any]) -> None:
        self._rebase()
        self.filters = {key: value for key, value in filters.items() if value is not None}
        self._reschedule()

    def set_user_data(self, user_data: dict[str, Any]) -> None:
        if self.track is not None:
            self.track["userData"] = dict(user_data)

    def connect_voice(self, voice: dict[str, Any]) -> None:
        """Connect to Discord voice with ``voice`` (token/endpoint/sessionId[/channelId])."""
        self._rebase()
        self.voice = dict(voice)
        self.connected = True
        self._reschedule()
        self.send_update()  # Koe's gatewayReady

    def close_voice(self, code: int, reason: str, by_remote: bool) -> None:
        """Discord's voice socket closed: ``WebSocketClosedEvent`` then a ``playerUpdate``; time stops."""
        self._rebase()
        self.connected = False
        self._reschedule()
        self.send_event("WebSocketClosedEvent", code=code, reason=reason, byRemote=by_remote)
        self.send_update()

    def destroy(self) -> None:
        """``AudioPlayer.destroy``: stops the track (``TrackEndEvent(stopped)``) and drops the voice link."""
        self.stop()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.connected = False


@dataclass(eq=False)
class FakeSession:
    """One Lavalink session (``SocketContext``): players, resume settings and the outgoing stream.

    Messages go through one queue and one writer task per connection, so they reach the client in the
    order they were produced. While a resumable session has no connection they are queued and replayed
    on resume, as Lavalink does.
    """

    session_id: str
    user_id: str
    client_name: str | None
    record: Callable[[str, dict[str, Any]], None]
    resuming: bool = False
    timeout: int = 60
    players: dict[int, FakePlayer] = field(default_factory=dict)
    ws: web.WebSocketResponse | None = None
    request: web.BaseRequest | None = None
    backlog: list[str] = field(default_factory=list)
    paused: bool = False
    expiry: asyncio.TimerHandle | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _outbox: asyncio.Queue[str | None] | None = None
    _writer: asyncio.Task[None] | None = None

    def info(self) -> FakeSessionInfo:
        return FakeSessionInfo(
            session_id=self.session_id,
            user_id=self.user_id,
            client_name=self.client_name,
            connected=self.connected,
            resuming=self.resuming,
            timeout=self.timeout,
            player_count=len(self.players),
        )

    @property
    def connected(self) -> bool:
        return self.ws is not None and not self.ws.closed

    def get_player(self, guild_id: int) -> FakePlayer:
        player = self.players.get(guild_id)
        if player is None:
            player = self.players[guild_id] = FakePlayer(self, guild_id)
        return player

    def send(self, payload: dict[str, Any]) -> None:
        """Send ``payload`` now, queue it while paused for resume, or drop it if the session is gone."""
        text = json.dumps(payload)
        if self.paused:
            self.backlog.append(text)
        elif self._outbox is not None:
            self._outbox.put_nowait(text)
        else:
            return
        self.record(self.session_id, payload)

    def attach(self, ws: web.WebSocketResponse, request: web.BaseRequest) -> None:
        """Bind a (new or resumed) WebSocket connection and start its writer."""
        self.ws, self.request, self.paused = ws, request, False
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        self._outbox = asyncio.Queue()
        self._writer = asyncio.create_task(self._write(ws, self._outbox))

    def replay(self) -> None:
        """After ``ready(resumed=true)``: replay queued messages, then a playerUpdate per player."""
        assert self._outbox is not None
        backlog, self.backlog = self.backlog, []
        for text in backlog:
            self._outbox.put_nowait(text)
        for player in self.players.values():
            player.send_update()

    async def detach(self) -> None:
        """The connection is gone: stop its writer (messages produced from now on are not sent)."""
        if self._outbox is not None:
            self._outbox.put_nowait(None)
        self._outbox = None
        if self._writer is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._writer, 1.0)
            self._writer = None
        self.ws = None
        self.request = None

    async def _write(self, ws: web.WebSocketResponse, outbox: asyncio.Queue[str | None]) -> None:
        while (text := await outbox.get()) is not None:
            if ws.closed:
                return
            try:
                await ws.send_str(text)
            except (ConnectionError, RuntimeError) as exc:
                _log.debug("session %s: send failed: %s", self.session_id, exc)
                return

    def abandon(self) -> None:
        """Forget the connection at once without sending anything more (the server crashed)."""
        if self._writer is not None:
            self._writer.cancel()
        self._writer = self._outbox = None
        self.ws = self.request = None
        self.paused = False

    def shutdown(self) -> None:
        """Destroy every player and stop the session's periodic tasks (``SocketContext.shutdown``)."""
        for player in list(self.players.values()):
            player.destroy()
        self.players.clear()
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        for task in self.tasks:
            task.cancel()
        self.tasks.clear()
        self.paused = False
        self.backlog.clear()
