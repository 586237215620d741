"""A Lavalink v4 server on loopback, faithful enough for the real, unmodified wavelink to drive it.

:class:`FakeLavalink` speaks Lavalink v4's REST API and WebSocket protocol (as documented at
lavalink.dev and implemented in ``lavalink-devs/Lavalink``): the ``ready`` op with session resuming,
``playerUpdate`` and ``stats`` ops, the five player events, track loading from a catalogue the test
seeds (autoplay's recommendation loads included: :meth:`FakeLavalink.recommend`; each source's track links:
:mod:`sonora_cog.testing.fake_lavalink_sources`), the real binary track format
(:mod:`sonora_cog.testing.trackcodec`), request bodies read as Lavalink reads them
(:mod:`sonora_cog.testing.fake_lavalink_decoding`), and Lavalink's error JSON.
Playback is simulated by :class:`~sonora_cog.testing.fake_lavalink_player.FakePlayer`.

Tests also get controls a real node does not have: crash and restart it on the same port, drop every
WebSocket (a network blip), close a guild's Discord voice socket, inject track exceptions and request
failures, and inspect players, sessions, requests and sent messages.

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import re
import secrets
import string
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypeVar

from aiohttp import WSMsgType, web

from sonora_cog.testing.fake_lavalink_autoplay import parse_recommendation_request
from sonora_cog.testing.fake_lavalink_decoding import BadRequestJson, equalizer_error, read_filters, read_int
from sonora_cog.testing.fake_lavalink_player import (
    FakePlayer,
    FakePlayerState,
    FakeSession,
    FakeSessionInfo,
    now_ms,
)
from sonora_cog.testing.fake_lavalink_sources import TrackLink, locate_track, track_link
from sonora_cog.testing.trackcodec import (
    PROBE_NAMES,
    PROBING_SOURCES,
    decode_probe_info,
    decode_track_details,
    encode_track,
)

__all__ = ("FakeLavalink", "FakePlayerState", "FakeSessionInfo", "RecordedRequest")

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
_MISSING: Any = object()

LAVALINK_VERSION = "4.0.8"
_SOURCE_MANAGERS = ("youtube", "soundcloud", "bandcamp", "twitch", "vimeo", "http", "local")
_FILTERS = (
    "volume",
    "equalizer",
    "karaoke",
    "timescale",
    "tremolo",
    "vibrato",
    "distortion",
    "rotation",
    "channelMix",
    "lowPass",
)
_SEARCH_PREFIXES = {
    "ytsearch": "youtube",
    "ytmsearch": "youtube",
    "scsearch": "soundcloud",
    "spsearch": "spotify",
    "amsearch": "applemusic",
    "dzsearch": "deezer",
    "bcsearch": "bandcamp",
}
_SESSION_ID_CHARS = string.ascii_lowercase + string.digits
_TRUE, _FALSE = {"true", "on", "yes", "1"}, {"false", "off", "no", "0"}
#: What lavaplayer reports as the length of a live stream (``Units.DURATION_MS_UNKNOWN``).
STREAM_LENGTH = 2**63 - 1


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One REST request the server received (the WebSocket handshake included)."""

    method: str
    path: str
    route: str
    query: dict[str, str]
    json: Any
    at: float


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error_json(status: int, message: str, request: web.Request) -> web.Response:
    """Lavalink's (Spring's) error body: timestamp, status, error, message, path, and trace on request."""
    body: dict[str, Any] = {
        "timestamp": now_ms(),
        "status": status,
        "error": HTTPStatus(status).phrase,
        "message": message,
        "path": request.path,
    }
    if request.query.get("trace", "").lower() == "true":
        body["trace"] = f'org.springframework.web.server.ResponseStatusException: {status} "{message}"\n\tat ...'
    return web.json_response(body, status=status)


def _parse_bool(value: str, name: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise _HttpError(
        400,
        f"Failed to convert value of type 'java.lang.String' to required type 'boolean' "
        f"for parameter '{name}': Invalid boolean value [{value}]",
    )


def _decode(reader: Callable[[Any], _T], value: Any) -> _T:
    """``reader(value)``, a value Lavalink's JSON decoding rejects answered as Lavalink does (400)."""
    try:
        return reader(value)
    except BadRequestJson as exc:
        raise _HttpError(400, f"Failed to read request: {exc}") from None


def _expect_int(body: Mapping[str, Any], key: str, *, bits: int, nullable: bool = False) -> Any:
    """An ``Int`` (``bits=32``) or ``Long`` (``bits=64``) field as kotlinx reads it (quoted digits too)."""
    value = body.get(key, _MISSING)
    if value is _MISSING or (value is None and nullable):
        return value
    return _decode(lambda v: read_int(v, key, bits=bits), value)


def _expect(body: Mapping[str, Any], key: str, kinds: tuple[type, ...], *, nullable: bool = False) -> Any:
    value = body.get(key, _MISSING)
    if value is _MISSING or (value is None and nullable):
        return value
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise _HttpError(400, f"Failed to read request: invalid value for '{key}'")
    return value


class FakeLavalink:
    """A Lavalink v4 node on loopback, for end-to-end tests.

    Parameters
    ----------
    password: str
        The node password (``Authorization`` header).
    host: str
        The interface to listen on.
    port: int
        The port; 0 picks a free one at :meth:`start`, kept across :meth:`restart`.
    player_update_interval: float
        Seconds between ``playerUpdate`` ops for each playing player (Lavalink's default is 5).
    stats_interval: float
        Seconds between ``stats`` ops (Lavalink sends one at connect, then every minute).

    Use it as an async context manager::

        async with FakeLavalink(player_update_interval=0.05) as lavalink, aiohttp.ClientSession() as http:
            track = lavalink.add_track("Song", "Artist", 180_000)
            node = wavelink.Node(uri=lavalink.uri, password=lavalink.password, session=http)
            # (wavelink never closes a session it made itself: give it one you close)

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        *,
        password: str = "youshallnotpass",  # noqa: S107 - Lavalink's documented default
        host: str = "127.0.0.1",
        port: int = 0,
        player_update_interval: float = 5.0,
        stats_interval: float = 60.0,
    ) -> None:
        self._password = password
        self._host = host
        self._port = port
        self.player_update_interval = player_update_interval
        self.stats_interval = stats_interval
        #: The source managers ``/v4/info`` reports and track decoding accepts (add_track extends it).
        self.source_managers: list[str] = list(_SOURCE_MANAGERS)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._started_at = time.monotonic()
        self._sessions: dict[str, FakeSession] = {}  # connected sessions: the only ones REST can see
        self._resumable: dict[str, FakeSession] = {}  # disconnected, waiting for a resume
        self._handlers: dict[web.WebSocketResponse, tuple[web.BaseRequest, asyncio.Event]] = {}
        self._tracks: dict[str, dict[str, Any]] = {}
        self._uris: dict[str, str] = {}
        self._links: dict[TrackLink, str] = {}  # a track's link as its source manager reads it -> identifier
        self._playlists: dict[str, dict[str, Any]] = {}
        self._recommendations: dict[str, list[dict[str, Any]]] = {}  # seed identifier -> tracks
        self._failures: dict[str, dict[str, Any]] = {}
        self._injected: dict[str, list[tuple[int, str]]] = {}
        self._broken_players: dict[str, frozenset[str]] = {}  # guild -> sessions where it still works
        self._requests: list[RecordedRequest] = []
        self._messages: list[tuple[str, dict[str, Any]]] = []
        self._delays: dict[str, float] = {}
        self.request_counts: Counter[str] = Counter()
        """Requests per normalised route, e.g. ``"PATCH /v4/sessions/{sessionId}/players/{guildId}"``."""

    # -- lifecycle -----------------------------------------------------------------------------------

    async def __aenter__(self) -> FakeLavalink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start listening (on the same port as before, after the first start)."""
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/v4/websocket", self._ws_handler)
        app.router.add_get("/version", self._version)
        app.router.add_get("/v4/info", self._info)
        app.router.add_get("/v4/stats", self._stats)
        app.router.add_get("/v4/loadtracks", self._loadtracks)
        app.router.add_get("/v4/decodetrack", self._decodetrack)
        app.router.add_post("/v4/decodetracks", self._decodetracks)
        app.router.add_patch("/v4/sessions/{sessionId}", self._patch_session)
        app.router.add_get("/v4/sessions/{sessionId}/players", self._get_players)
        players = "/v4/sessions/{sessionId}/players/{guildId}"
        app.router.add_get(players, self._get_player)
        app.router.add_patch(players, self._patch_player)
        app.router.add_delete(players, self._delete_player)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        self._site = site
        if self._port == 0:
            self._port = int(self._runner.addresses[0][1])
        self._started_at = time.monotonic()
        _log.debug("FakeLavalink listening on %s", self.uri)

    async def close(self) -> None:
        """Stop the server, dropping every connection, session and player."""
        # Stop listening first: a client reconnecting at once is refused, as by a dead Lavalink,
        # instead of being accepted by a server that is shutting down and never answered.
        if self._site is not None:
            await self._site.stop()
            self._site = None
        self._crash_sessions()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def restart(self) -> None:
        """Crash and come back on the same port: every session and player is lost (no resume possible)."""
        await self.close()
        await self.start()

    @property
    def uri(self) -> str:
        """The base URI to give wavelink, e.g. ``http://127.0.0.1:40123``."""
        return f"http://{self._host}:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    @property
    def password(self) -> str:
        return self._password

    # -- catalogue -----------------------------------------------------------------------------------

    def add_track(
        self,
        title: str,
        author: str,
        length_ms: int,
        identifier: str | None = None,
        uri: str | None = None,
        is_stream: bool = False,
        source: str = "youtube",
        artwork_url: str | None = None,
        isrc: str | None = None,
    ) -> dict[str, Any]:
        """Add a track that ``/v4/loadtracks`` can find; returns its full Lavalink track JSON.

        The track gets the ``identifier`` and ``uri`` its source manager gives
        (:func:`~sonora_cog.testing.fake_lavalink_sources.locate_track`): without ``identifier`` a stable
        id in the source's shape is derived from title and author, and without ``uri`` the source's track
        link is made from it (``https://open.spotify.com/track/<id>`` for ``spotify``, as LavaSrc gives;
        ``None`` only for a source it does not know). Loading that link, or another link to the same track
        that the source manager accepts, finds the track. An ``http``, ``local``, ``bandcamp`` or ``twitch``
        track is identified by its link, as lavaplayer does (``identifier`` and ``uri`` are the same string);
        an ``http`` or ``local`` track's ``encoded`` string carries the container probe lavaplayer writes,
        chosen from the extension (:func:`~sonora_cog.testing.trackcodec.probe_info_for`).
        A new ``source`` is added to :attr:`source_managers` (as a plugin such as LavaSrc would).

        .. versionchanged:: 0.5
           ``http`` and ``local`` tracks are identified by their location and carry a container probe;
           every source the fake knows gets its source manager's ``uri``, which loads the track.
        """
        location = locate_track(source, title, author, identifier, uri)
        identifier, uri = location.identifier, location.uri
        if artwork_url is None and source == "youtube":
            artwork_url = f"https://i.ytimg.com/vi/{identifier}/maxresdefault.jpg"
        if source not in self.source_managers:
            self.source_managers.append(source)
        info = {
            "identifier": identifier,
            "isSeekable": not is_stream,
            "author": author,
            "length": length_ms,
            "isStream": is_stream,
            "position": 0,
            "title": title,
            "uri": uri,
            "artworkUrl": artwork_url,
            "isrc": isrc,
            "sourceName": source,
        }
        track = {"encoded": encode_track(info), "info": info, "pluginInfo": {}, "userData": {}}
        self._tracks[identifier] = track
        if uri:
            self._uris[uri] = identifier
            if (link := track_link(uri)) is not None:
                self._links[link] = identifier
        return _copy(track)

    def add_playlist(
        self, name: str, tracks: Iterable[Mapping[str, Any] | str], url: str, selected_track: int = -1
    ) -> dict[str, Any]:
        """Add a playlist loadable by ``url``; ``tracks`` are track JSON objects or catalogue identifiers."""
        resolved = [self._tracks[item] if isinstance(item, str) else json.loads(json.dumps(item)) for item in tracks]
        data = {"info": {"name": name, "selectedTrack": selected_track}, "pluginInfo": {}, "tracks": resolved}
        self._playlists[url] = data
        return _copy(data)

    def recommend(self, seed: Mapping[str, Any] | str, tracks: Iterable[Mapping[str, Any] | str]) -> None:
        """Make ``tracks`` what autoplay finds after ``seed``, whatever URL the client builds for it.

        ``seed`` is a track JSON object or its identifier, ``tracks`` are track JSON objects or catalogue
        identifiers. Loading the seed's YouTube mix (any YouTube watch URL with ``list=RD<seed id>``, as
        wavelink's autoplay builds for a YouTube seed) then gives a ``playlist`` of ``tracks``, and LavaSrc's
        ``sprec:seed_tracks=...`` (wavelink's query for Spotify seeds) gives the ``tracks`` of every seed it
        names, up to its ``limit``. Calling it again for a seed replaces its tracks. A playlist added with
        :meth:`add_playlist` at the exact URL still wins.

        wavelink seeds autoplay only from ``youtube`` and ``spotify`` tracks, so give ``seed`` one of those
        sources (``add_track(..., source="spotify")`` also enables ``sprec:``, as the LavaSrc plugin does).

        .. versionadded:: 0.5
        """
        seed_id = seed if isinstance(seed, str) else str(seed["info"]["identifier"])
        self._recommendations[seed_id] = [
            json.loads(json.dumps(self._tracks[item] if isinstance(item, str) else item)) for item in tracks
        ]

    def _load_recommendations(self, identifier: str) -> dict[str, Any] | None:
        """The load result of an autoplay request (:meth:`recommend`); ``None`` if it is not one or finds nothing."""
        request = parse_recommendation_request(identifier)
        if request is None or request.source not in self.source_managers:
            return None
        found: dict[str, dict[str, Any]] = {}
        for seed in request.seeds:
            for track in self._recommendations.get(seed, ()):
                found.setdefault(track["info"]["identifier"], track)
        ids = list(found)[: request.limit]
        if not ids:
            return None
        # A mix is named by YouTube ("YouTube mix" is lavaplayer's default); LavaSrc names its own playlist.
        name = "YouTube mix" if request.source == "youtube" else "Spotify Recommendations"
        selected = ids.index(request.selected) if request.selected in ids else -1
        data = {"info": {"name": name, "selectedTrack": selected}, "pluginInfo": {}, "tracks": [found[i] for i in ids]}
        return {"loadType": "playlist", "data": json.loads(json.dumps(data))}

    def fail_load(self, identifier: str, message: str, severity: str = "common") -> None:
        """Make loading ``identifier`` fail (``loadType: error``; playing it by identifier gives a 500)."""
        cause = f"com.sedmelluq.discord.lavaplayer.tools.FriendlyException: {message}"
        self._failures[identifier] = {"message": message, "severity": severity, "cause": cause}

    def seed_demo_catalogue(self) -> list[dict[str, Any]]:
        """Add about twenty plausible tracks, a stream and a playlist; returns the tracks added."""
        songs = [
            ("Clair de Lune", "Claude Debussy", 301_000),
            ("Gymnopédie No. 1", "Erik Satie", 185_000),
            ("The Four Seasons: Spring", "Antonio Vivaldi", 612_000),
            ("Boléro", "Maurice Ravel", 903_000),
            ("Canon in D", "Johann Pachelbel", 356_000),
            ("Für Elise", "Ludwig van Beethoven", 175_000),
            ("Moonlight Sonata", "Ludwig van Beethoven", 901_000),
            ("Nocturne Op. 9 No. 2", "Frédéric Chopin", 270_000),
            ("The Blue Danube", "Johann Strauss II", 642_000),
            ("Air on the G String", "Johann Sebastian Bach", 318_000),
            ("Lo-fi Beats to Study To", "Chill Collective", 142_000),
            ("Midnight Drive", "Neon Arcade", 214_000),
            ("Paper Boats", "The Harbour Lights", 198_000),
            ("Static & Sunshine", "Juniper Vale", 231_000),
            ("Ocean Avenue Nights", "Coastal Radio", 204_000),
            ("Run the Numbers", "Ledger Kids", 187_000),
            ("Glass Houses", "Mira Sol", 243_000),
            ("Late Train Home", "The Commuters", 259_000),
        ]
        added = [self.add_track(title, author, length) for title, author, length in songs]
        added.append(self.add_track("Forest Rain", "Ambient Lab", 372_000, source="soundcloud"))
        added.append(self.add_track("24/7 Lofi Radio", "Chill Collective", STREAM_LENGTH, is_stream=True))
        self.add_playlist(
            "Classical Essentials", added[:10], "https://www.youtube.com/playlist?list=PLclassicalessentials"
        )
        return added

    # -- introspection -------------------------------------------------------------------------------

    def _all_sessions(self) -> list[FakeSession]:
        return [*self._sessions.values(), *self._resumable.values()]

    def _find_player(self, guild_id: int | str) -> FakePlayer | None:
        for session in self._all_sessions():
            if (player := session.players.get(int(guild_id))) is not None:
                return player
        return None

    def players(self, session_id: str | None = None) -> list[FakePlayerState]:
        """Snapshots of every player (of one session if ``session_id`` is given)."""
        return [
            player.snapshot()
            for session in self._all_sessions()
            if session_id is None or session.session_id == session_id
            for player in session.players.values()
        ]

    def player(self, guild_id: int | str) -> FakePlayerState | None:
        """A snapshot of ``guild_id``'s player (connected sessions first), or ``None``."""
        player = self._find_player(guild_id)
        return None if player is None else player.snapshot()

    @property
    def sessions(self) -> list[FakeSessionInfo]:
        """Every session: connected ones, then those waiting to be resumed."""
        return [session.info() for session in self._all_sessions()]

    @property
    def connected_clients(self) -> int:
        """How many WebSocket clients are connected now."""
        return sum(1 for ws in self._handlers if not ws.closed)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first."""
        return list(self._requests)

    @property
    def messages(self) -> list[tuple[str, dict[str, Any]]]:
        """Every WebSocket message sent or queued for resume, as ``(session_id, payload)``."""
        return list(self._messages)

    def events(self, event_type: str | None = None, guild_id: int | str | None = None) -> list[dict[str, Any]]:
        """The ``op: event`` messages sent so far, optionally of one type and/or guild."""
        return [
            payload
            for _sid, payload in self._messages
            if payload.get("op") == "event"
            and (event_type is None or payload["type"] == event_type)
            and (guild_id is None or payload["guildId"] == str(guild_id))
        ]

    def clear_log(self) -> None:
        """Forget recorded requests, counts and messages."""
        self._requests.clear()
        self._messages.clear()
        self.request_counts.clear()

    async def wait_for(
        self,
        predicate: Callable[[], _T | Awaitable[_T]],
        timeout: float = 5.0,  # noqa: ASYNC109 - a test helper's deadline, like asyncio.wait_for's
        *,
        interval: float = 0.01,
    ) -> _T:
        """Poll ``predicate`` (sync or async) until it returns something truthy, and return that.

        Raises
        ------
        TimeoutError
            ``predicate`` stayed falsy for ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            await asyncio.sleep(interval)

    # -- test controls -------------------------------------------------------------------------------

    def _require_player(self, guild_id: int | str) -> FakePlayer:
        player = self._find_player(guild_id)
        if player is None:
            raise LookupError(f"no player for guild {guild_id}")
        return player

    async def drop_connections(self, code: int = 1001, reason: str = "network blip", *, abrupt: bool = False) -> None:
        """Drop every WebSocket; sessions with resuming enabled wait to be resumed, the others end.

        By default each socket is closed cleanly with ``code``. With ``abrupt`` the TCP connections are
        cut without a close frame, as a network failure does (the client then sees code 1006).

        .. note:: wavelink 3.5 reconnects after an abrupt drop but not after a clean close frame: its
           keep-alive loop only checks for ``CLOSED``/``CLOSING`` and dies on the ``CLOSE`` message.
        """
        handlers = list(self._handlers.items())
        for ws, (request, _done) in handlers:
            if abrupt and request.transport is not None:
                request.transport.abort()
            else:
                with contextlib.suppress(Exception):
                    await ws.close(code=code, message=reason.encode())
        for _ws, (_request, done) in handlers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 2.0)

    async def close_voice(
        self,
        guild_id: int | str,
        code: int = 4006,
        reason: str = "Your session is no longer valid.",
        by_remote: bool = True,
    ) -> None:
        """Discord closed the guild's voice socket: send ``WebSocketClosedEvent``; the player disconnects."""
        self._require_player(guild_id).close_voice(code, reason, by_remote)

    async def send_track_exception(
        self,
        guild_id: int | str,
        message: str = "Something went wrong while playing the track.",
        severity: str = "common",
        cause: str = "java.lang.RuntimeException: Something went wrong",
        end_track: bool = True,
    ) -> None:
        """Send ``TrackExceptionEvent``; with ``end_track`` the track then ends as lavaplayer ends it
        (``loadFailed`` if nothing was played yet, else ``finished``)."""
        player = self._require_player(guild_id)
        if player.track is None:
            raise LookupError(f"guild {guild_id} is not playing")
        exception = {"message": message, "severity": severity, "cause": cause, "causeStackTrace": f"{cause}\n"}
        player.send_event("TrackExceptionEvent", track=player.track_json(), exception=exception)
        if end_track:
            player.end_track("loadFailed" if player.position == 0 else "finished")

    async def send_track_stuck(self, guild_id: int | str, threshold_ms: int = 10_000) -> None:
        """Send ``TrackStuckEvent`` followed by a ``playerUpdate``, as Lavalink does; the track stays."""
        player = self._require_player(guild_id)
        if player.track is None:
            raise LookupError(f"guild {guild_id} is not playing")
        player.send_event("TrackStuckEvent", track=player.track_json(), thresholdMs=threshold_ms)
        player.send_update()

    async def end_track(self, guild_id: int | str, reason: str = "finished") -> None:
        """End the guild's current track now with ``reason`` (skip the wait for its natural end)."""
        self._require_player(guild_id).end_track(reason)

    def fail_requests(self, route: str, status: int = 500, message: str = "Injected failure", times: int = 1) -> None:
        """Make the next ``times`` requests to ``route`` (a :attr:`request_counts` key) fail with ``status``."""
        self._injected.setdefault(route, []).extend([(status, message)] * times)

    def delay_requests(self, route: str, seconds: float) -> None:
        """Make every request to ``route`` (a :attr:`request_counts` key) wait ``seconds`` before it is
        handled, as a slow or hung node does, until called again with 0."""
        if seconds > 0:
            self._delays[route] = seconds
        else:
            self._delays.pop(route, None)

    def fail_player(self, guild_id: int | str, *, except_sessions: Iterable[str] = ()) -> None:
        """Make every request for the guild's player fail with 500 (as Lavalink does when a player cannot be
        created or updated), in every session but ``except_sessions``, until :meth:`heal_player`."""
        self._broken_players[str(guild_id)] = frozenset(except_sessions)

    def heal_player(self, guild_id: int | str) -> None:
        """Undo :meth:`fail_player`."""
        self._broken_players.pop(str(guild_id), None)

    # -- HTTP plumbing -------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        route_info = request.match_info.route.resource
        route = route_info.canonical if route_info is not None else request.path
        key = f"{request.method} {route}"
        body: Any = None
        if request.body_exists:
            text = await request.text()
            try:
                body = json.loads(text)
            except ValueError:
                body = text
        self._requests.append(
            RecordedRequest(request.method, request.path, route, dict(request.query), body, time.time())
        )
        self.request_counts[key] += 1
        if delay := self._delays.get(key, 0.0):
            await asyncio.sleep(delay)
        if route != "/v4/websocket":
            authorization = request.headers.get("Authorization")
            if authorization is None:
                return web.Response(status=401)
            if authorization != self._password:
                return web.Response(status=403)
        try:
            if injected := self._injected.get(key):
                status, message = injected.pop(0)
                raise _HttpError(status, message)
            working = self._broken_players.get(request.match_info.get("guildId", ""))
            if working is not None and request.match_info.get("sessionId") not in working:
                raise _HttpError(500, "Injected player failure")
            response = await handler(request)
        except _HttpError as exc:
            response = _error_json(exc.status, exc.message, request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _error_json(exc.status, exc.reason, request)
        if not response.prepared:
            response.headers["Lavalink-Api-Version"] = "4"
        return response

    @staticmethod
    async def _json_body(request: web.Request) -> Any:
        try:
            return json.loads(await request.text())
        except ValueError:
            raise _HttpError(400, "Failed to read request") from None

    def _session(self, request: web.Request) -> FakeSession:
        session = self._sessions.get(request.match_info["sessionId"])
        if session is None:
            raise _HttpError(404, "Session not found")
        return session

    @staticmethod
    def _guild_id(request: web.Request) -> int:
        raw = request.match_info["guildId"]
        try:
            return int(raw)
        except ValueError:
            raise _HttpError(
                400,
                f"Failed to convert value of type 'java.lang.String' to required type 'long'; "
                f'For input string: "{raw}"',
            ) from None

    # -- WebSocket -----------------------------------------------------------------------------------

    def _new_session_id(self) -> str:
        while True:
            session_id = "".join(secrets.choice(_SESSION_ID_CHARS) for _ in range(16))
            if session_id not in self._sessions and session_id not in self._resumable:
                return session_id

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != self._password:
            _log.warning("FakeLavalink: authentication failed from %s", request.remote)
            return web.Response(status=401)
        user_id = request.headers.get("User-Id", "")
        if not user_id.isdigit():
            return web.Response(status=400)
        client_name = request.headers.get("Client-Name")
        resume_id = request.headers.get("Session-Id")
        session = self._resumable.pop(resume_id, None) if resume_id else None
        ws = web.WebSocketResponse()
        ws.headers["Session-Resumed"] = "true" if session is not None else "false"
        await ws.prepare(request)
        done = asyncio.Event()
        self._handlers[ws] = (request, done)
        if session is not None:
            self._sessions[session.session_id] = session
            session.attach(ws, request)
            session.send({"op": "ready", "resumed": True, "sessionId": session.session_id})
            session.replay()
            _log.debug("FakeLavalink: resumed session %s", session.session_id)
        else:
            session = FakeSession(self._new_session_id(), user_id, client_name, self._record)
            self._sessions[session.session_id] = session
            session.attach(ws, request)
            session.send({"op": "ready", "resumed": False, "sessionId": session.session_id})
            session.tasks = [
                asyncio.create_task(self._stats_loop(session)),
                asyncio.create_task(self._update_loop(session)),
            ]
        try:
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    _log.debug("FakeLavalink ignores client message (v4 accepts none): %s", message.data)
        finally:
            await self._connection_closed(session, ws)
            del self._handlers[ws]
            done.set()
        return ws

    async def _connection_closed(self, session: FakeSession, ws: web.WebSocketResponse) -> None:
        if session.ws is not ws:
            return
        await session.detach()
        if self._sessions.get(session.session_id) is not session:
            return  # crashed or already gone
        del self._sessions[session.session_id]
        if session.resuming:
            session.paused = True
            self._resumable[session.session_id] = session
            session.expiry = asyncio.get_running_loop().call_later(session.timeout, self._expire, session)
        else:
            session.shutdown()

    def _expire(self, session: FakeSession) -> None:
        if self._resumable.get(session.session_id) is session:
            del self._resumable[session.session_id]
            session.shutdown()

    def _crash_sessions(self) -> None:
        for session in self._all_sessions():
            if session.request is not None and session.request.transport is not None:
                session.request.transport.abort()
            session.abandon()
            session.shutdown()
        self._sessions.clear()
        self._resumable.clear()

    def _record(self, session_id: str, payload: dict[str, Any]) -> None:
        self._messages.append((session_id, payload))

    def _stats_payload(self, session: FakeSession | None) -> dict[str, Any]:
        players = [p for s in self._sessions.values() for p in s.players.values()]
        frame_stats = None
        if session is not None and session.players:
            frame_stats = {"sent": 3000 * len(session.players), "nulled": 0, "deficit": 0}
        return {
            "players": len(players),
            "playingPlayers": sum(1 for p in players if p.track is not None and not p.paused),
            "uptime": int((time.monotonic() - self._started_at) * 1000),
            "memory": {"free": 200_000_000, "used": 100_000_000, "allocated": 300_000_000, "reservable": 4_000_000_000},
            "cpu": {"cores": 4, "systemLoad": 0.05, "lavalinkLoad": 0.01},
            "frameStats": frame_stats,
        }

    async def _stats_loop(self, session: FakeSession) -> None:
        while True:
            session.send({"op": "stats", **self._stats_payload(session)})
            await asyncio.sleep(self.stats_interval)

    async def _update_loop(self, session: FakeSession) -> None:
        while True:
            await asyncio.sleep(self.player_update_interval)
            for player in list(session.players.values()):
                if player.track is not None:
                    player.send_update()

    # -- REST: info and tracks -----------------------------------------------------------------------

    async def _version(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=LAVALINK_VERSION)

    async def _info(self, request: web.Request) -> web.StreamResponse:
        major, minor, patch = (int(part) for part in LAVALINK_VERSION.split("."))
        return web.json_response(
            {
                "version": {
                    "semver": LAVALINK_VERSION,
                    "major": major,
                    "minor": minor,
                    "patch": patch,
                    "preRelease": None,
                    "build": None,
                },
                "buildTime": 1_700_000_000_000,
                "git": {"branch": "master", "commit": "fakelavalink", "commitTime": 1_700_000_000_000},
                "jvm": "17.0.9",
                "lavaplayer": "2.2.1",
                "sourceManagers": list(self.source_managers),
                "filters": list(_FILTERS),
                "plugins": [],
            }
        )

    async def _stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._stats_payload(None))

    def load(self, identifier: str) -> dict[str, Any]:
        """Resolve ``identifier`` as ``GET /v4/loadtracks`` does; returns the load result JSON."""
        if identifier in self._failures:
            return {"loadType": "error", "data": dict(self._failures[identifier])}
        if match := re.fullmatch(r"([a-z]+search):(.*)", identifier, flags=re.DOTALL):
            source = _SEARCH_PREFIXES.get(match[1])
            if source is not None and source in self.source_managers:
                terms = match[2].lower().split()
                found = [
                    track
                    for track in self._tracks.values()
                    if track["info"]["sourceName"] == source
                    and all(term in f"{track['info']['title']} {track['info']['author']}".lower() for term in terms)
                ]
                if found:
                    return {"loadType": "search", "data": json.loads(json.dumps(found))}
                return {"loadType": "empty", "data": {}}
        if identifier in self._playlists:
            return {"loadType": "playlist", "data": json.loads(json.dumps(self._playlists[identifier]))}
        if (recommended := self._load_recommendations(identifier)) is not None:
            return recommended
        track_id = self._uris.get(identifier, identifier)
        if track_id not in self._tracks and (link := track_link(identifier)) is not None:
            # Another link to a catalogue track, read by the source manager that owns such links.
            track_id = self._links.get(link, "") if link.source in self.source_managers else ""
        if track_id in self._tracks:
            return {"loadType": "track", "data": json.loads(json.dumps(self._tracks[track_id]))}
        return {"loadType": "empty", "data": {}}

    async def _loadtracks(self, request: web.Request) -> web.StreamResponse:
        identifier = request.query.get("identifier")
        if identifier is None:
            raise _HttpError(
                400, "Required request parameter 'identifier' for method parameter type String is not present"
            )
        return web.json_response(self.load(identifier))

    def _decode(self, encoded: str) -> dict[str, Any]:
        """Decode as Lavalink does: the source manager must exist and read its own details.

        An ``http`` or ``local`` track's details are its container probe (lavaplayer's
        ``ProbingAudioSourceManager.decodeTrackFactory``); a blob without one, or with a probe lavaplayer
        does not have, decodes to no track in lavaplayer, and so fails here too.
        """
        missing = "Failed to decode track due to a mismatching version or missing source manager"
        try:
            info, _version, details = decode_track_details(encoded)
            if info["sourceName"] in PROBING_SOURCES and decode_probe_info(details)[0] not in PROBE_NAMES:
                raise _HttpError(500, missing)
        except ValueError as exc:
            raise _HttpError(500, f"Failed to decode track: {exc}") from None
        if info["sourceName"] not in self.source_managers:
            raise _HttpError(500, missing)
        return {"encoded": encoded, "info": info, "pluginInfo": {}, "userData": {}}

    async def _decodetrack(self, request: web.Request) -> web.StreamResponse:
        encoded = request.query.get("encodedTrack") or request.query.get("track")
        if encoded is None:
            raise _HttpError(400, "No track to decode provided")
        return web.json_response(self._decode(encoded))

    async def _decodetracks(self, request: web.Request) -> web.StreamResponse:
        body = await self._json_body(request)
        if not isinstance(body, list) or not all(isinstance(item, str) for item in body):
            raise _HttpError(400, "Failed to read request")
        if not body:
            raise _HttpError(400, "No tracks to decode provided")
        return web.json_response([self._decode(item) for item in body])

    # -- REST: sessions and players ------------------------------------------------------------------

    async def _patch_session(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        body = await self._json_body(request)
        if not isinstance(body, dict):
            raise _HttpError(400, "Failed to read request")
        resuming = _expect(body, "resuming", (bool,))
        timeout = _expect_int(body, "timeout", bits=64)
        if resuming is not _MISSING:
            session.resuming = resuming
        if timeout is not _MISSING:
            session.timeout = timeout
        return web.json_response({"resuming": session.resuming, "timeout": session.timeout})

    async def _get_players(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        return web.json_response([player.to_json() for player in session.players.values()])

    async def _get_player(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        player = session.players.get(self._guild_id(request))
        if player is None:
            raise _HttpError(404, "Player not found")
        return web.json_response(player.to_json())

    async def _delete_player(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        player = session.players.pop(self._guild_id(request), None)
        if player is not None:
            player.destroy()
        return web.Response(status=204)

    async def _patch_player(self, request: web.Request) -> web.StreamResponse:
        """``PATCH /v4/sessions/{sessionId}/players/{guildId}``, step by step as Lavalink's PlayerRestHandler."""
        session = self._session(request)
        guild_id = self._guild_id(request)
        body = await self._json_body(request)
        if not isinstance(body, dict):
            raise _HttpError(400, "Failed to read request")
        no_replace = _parse_bool(request.query.get("noReplace", "false"), "noReplace")
        track = _expect(body, "track", (dict,))
        legacy = body.get("encodedTrack", _MISSING) is not _MISSING or body.get("identifier", _MISSING) is not _MISSING
        if track is not _MISSING and legacy:
            raise _HttpError(400, "Cannot specify both track and encodedTrack/identifier")
        source = track if track is not _MISSING else body
        encoded = _expect(source, "encoded" if track is not _MISSING else "encodedTrack", (str,), nullable=True)
        identifier = _expect(source, "identifier", (str,))
        user_data = _expect(track, "userData", (dict,)) if track is not _MISSING else _MISSING
        if encoded is not _MISSING and identifier is not _MISSING:
            raise _HttpError(400, "Cannot specify both encodedTrack and identifier")
        position = _expect_int(body, "position", bits=64)
        end_time = _expect_int(body, "endTime", bits=64, nullable=True)
        volume = _expect_int(body, "volume", bits=32)
        paused = _expect(body, "paused", (bool,))
        filters = _expect(body, "filters", (dict,))
        if filters is not _MISSING:
            filters = _decode(read_filters, filters)
        voice = _expect(body, "voice", (dict,))
        if voice is not _MISSING and not all(voice.get(key) for key in ("token", "endpoint", "sessionId")):
            raise _HttpError(400, f"Partial Lavalink voice state: {voice}")
        if end_time is not _MISSING and end_time is not None and end_time <= 0:
            raise _HttpError(400, "End time must be greater than 0")
        new_track = encoded is not _MISSING or identifier is not _MISSING

        player = session.get_player(guild_id)
        if voice is not _MISSING and (
            not player.connected
            or any(player.voice.get(key) != voice.get(key) for key in ("token", "endpoint", "sessionId"))
        ):
            self._displace_voice(player)
            player.connect_voice(voice)
        elif voice is not _MISSING:
            player.voice = dict(voice)
        if paused is not _MISSING and not new_track:
            player.set_paused(paused)
        if user_data is not _MISSING and not new_track:
            player.set_user_data(user_data)
        if volume is not _MISSING:
            player.set_volume(volume)
        if position is not _MISSING and not new_track and player.track is not None:
            player.seek(position)
            player.send_update()
        if end_time is not _MISSING and not new_track:
            player.arm_end_time(end_time)
        if filters is not _MISSING:
            if (problem := equalizer_error(filters)) is not None:
                raise _HttpError(500, problem)  # FilterChain.parse throws; what came before stays applied
            player.set_filters(filters)
            player.send_update()
        if new_track:
            if no_replace and player.track is not None:
                return web.json_response(player.to_json())
            player.set_paused(paused if paused is not _MISSING else False)
            if identifier is not _MISSING:
                encoded = self._resolve_single(identifier)
            if encoded is None:
                player.stop()
            else:
                self._decode(encoded)  # 500 for an undecodable track or a missing source manager
                player.play(
                    encoded,
                    user_data=None if user_data is _MISSING else user_data,
                    position=None if position is _MISSING else position,
                    end_time=None if end_time is _MISSING else end_time,
                )
        return web.json_response(player.to_json())

    def _displace_voice(self, player: FakePlayer) -> None:
        """Discord allows a user one voice connection per guild: when ``player`` connects, a player of
        the same bot user and guild on another session (another process, or a resumable session left
        by a dead one) loses its voice socket (``WebSocketClosedEvent`` 4006, queued for a paused
        session) and stops producing audio, as it would on Discord's voice servers."""
        for session in self._all_sessions():
            other = session.players.get(player.guild_id)
            if (
                session is not player.session
                and session.user_id == player.session.user_id
                and other is not None
                and other.connected
            ):
                other.close_voice(4006, "Your session is no longer valid.", True)

    def _resolve_single(self, identifier: str) -> str:
        result = self.load(identifier)
        if result["loadType"] == "track":
            encoded: str = result["data"]["encoded"]
            return encoded
        if result["loadType"] in ("playlist", "search"):
            raise _HttpError(400, "Cannot play a playlist or search result")
        if result["loadType"] == "error":
            raise _HttpError(500, result["data"]["message"])
        raise _HttpError(400, "No matches found for identifier")


def _copy(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of a JSON object, as a client would receive it."""
    copied: dict[str, Any] = json.loads(json.dumps(obj))
    return copied
