"""The gateway half of :class:`~sonora_cog.testing.fake_discord.FakeDiscord`: a Discord gateway v10.

What it implements, following https://discord.com/developers/docs/topics/gateway and what discord.py 2.7
(``discord/gateway.py``) sends:

* connection URL query ``v=10&encoding=json`` and transport compression ``compress=zstd-stream`` (one
  zstd stream per connection, every message flushed as a complete block) or ``zlib-stream`` (one zlib
  context, every message ending in the ``00 00 ff ff`` Z_SYNC_FLUSH suffix) — whichever the client asks;
* HELLO (op 10), heartbeats (op 1 → op 11 ACK; the server may request one with op 1), IDENTIFY (op 2) → READY +
  one GUILD_CREATE per guild of the shard, RESUME (op 6) → replay of missed dispatches + RESUMED, or
  INVALID_SESSION (op 9, ``d=false``) when the session is gone, REQUEST_GUILD_MEMBERS (op 8) →
  GUILD_MEMBERS_CHUNK, VOICE_STATE_UPDATE (op 4), PRESENCE_UPDATE (op 3, recorded);
* close codes 4001 (unknown opcode), 4002 (decode error), 4003 (not authenticated), 4004 (authentication
  failed), 4005 (already authenticated), 4008 (rate limited, when enforced), 4010 (invalid shard),
  4012 (invalid API version), 4013 (invalid intents), 4014 (disallowed intents);
* send accounting: 120 gateway sends per connection per rolling 60 s is Discord's limit; every frame the
  client sends is counted and every frame beyond the limit is recorded as a :class:`RateLimitViolation`;
  every frame is also logged as a :class:`GatewaySend` (when, on which connection, which op, the guild of
  an op 4), and :attr:`FakeGateway.connection_shards` says which shard each connection identified as, so
  a test can check any window of any shard connection (:func:`most_in_window`).

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import secrets
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

if TYPE_CHECKING:
    from sonora_cog.testing.fake_discord import FakeDiscord

__all__ = (
    "FakeGateway",
    "GatewayConnection",
    "GatewaySend",
    "GatewaySession",
    "Intents",
    "RateLimitViolation",
    "most_in_window",
)

_log = logging.getLogger(__name__)

GATEWAY_SEND_LIMIT = 120
GATEWAY_SEND_WINDOW = 60.0
_REPLAY_BUFFER = 2000


class Intents:
    """Gateway intent bits used by the fake to filter dispatches."""

    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1
    GUILD_VOICE_STATES = 1 << 7
    GUILD_PRESENCES = 1 << 8
    GUILD_MESSAGES = 1 << 9
    MESSAGE_CONTENT = 1 << 15
    PRIVILEGED = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT
    ALL = (1 << 26) - 1


#: Which intent a dispatch needs; events not listed are always sent.
EVENT_INTENTS: dict[str, int] = {
    "GUILD_UPDATE": Intents.GUILDS,
    "GUILD_DELETE": Intents.GUILDS,
    "GUILD_ROLE_CREATE": Intents.GUILDS,
    "GUILD_ROLE_UPDATE": Intents.GUILDS,
    "GUILD_ROLE_DELETE": Intents.GUILDS,
    "CHANNEL_CREATE": Intents.GUILDS,
    "CHANNEL_UPDATE": Intents.GUILDS,
    "CHANNEL_DELETE": Intents.GUILDS,
    "GUILD_MEMBER_ADD": Intents.GUILD_MEMBERS,
    "GUILD_MEMBER_UPDATE": Intents.GUILD_MEMBERS,
    "GUILD_MEMBER_REMOVE": Intents.GUILD_MEMBERS,
    "VOICE_STATE_UPDATE": Intents.GUILD_VOICE_STATES,
    "MESSAGE_CREATE": Intents.GUILD_MESSAGES,
    "MESSAGE_UPDATE": Intents.GUILD_MESSAGES,
    "MESSAGE_DELETE": Intents.GUILD_MESSAGES,
}


@dataclass(frozen=True, slots=True)
class RateLimitViolation:
    """One frame a client sent beyond Discord's 120-per-60-s gateway send limit."""

    connection_id: int
    session_id: str | None
    op: int | None
    count_in_window: int
    at: float


@dataclass(frozen=True, slots=True)
class GatewaySend:
    """One frame a client sent, as the fake received it."""

    #: ``time.monotonic()`` when the frame arrived.
    at: float
    connection_id: int
    op: int | None
    #: The guild of an op 4 VOICE_STATE_UPDATE (``None`` for other ops).
    guild_id: int | None = None


def most_in_window(times: Sequence[float], window: float = GATEWAY_SEND_WINDOW) -> int:
    """The most of ``times`` (sorted or not) within any ``window`` seconds, ends included (as the
    fake's own accounting counts them)."""
    ordered = sorted(times)
    best = start = 0
    for end, at in enumerate(ordered):
        while at - ordered[start] > window:
            start += 1
        best = max(best, end - start + 1)
    return best


class _Compressor:
    """Server side of discord.py's transport decompression contexts (``discord/utils.py``)."""

    def __init__(self, kind: str | None) -> None:
        self.kind = kind
        self._zlib: Any = None
        self._zstd: Any = None
        self._flush: int = 0
        if kind == "zlib-stream":
            self._zlib = zlib.compressobj()
        elif kind == "zstd-stream":
            import zstandard

            self._zstd = zstandard.ZstdCompressor().compressobj()
            self._flush = zstandard.COMPRESSOBJ_FLUSH_BLOCK
        elif kind is not None:
            raise ValueError(f"unsupported transport compression {kind!r}")

    def compress(self, data: bytes) -> bytes:
        out: bytes
        if self._zlib is not None:
            out = self._zlib.compress(data) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
        else:
            out = self._zstd.compress(data) + self._zstd.flush(self._flush)
        return out


class GatewayConnection:
    """One websocket connection from a client."""

    def __init__(self, connection_id: int, ws: web.WebSocketResponse, compress: str | None) -> None:
        self.id = connection_id
        self.ws = ws
        self.compress = compress
        self.session: GatewaySession | None = None
        self.sends: collections.deque[float] = collections.deque()
        self.total_sends = 0
        self.last_heartbeat: float | None = None
        #: Set when the server closed the connection (so the close code is ours, not the client's).
        self.closed_by_server = False
        self._compressor = _Compressor(compress)
        self._send_lock = asyncio.Lock()

    @property
    def open(self) -> bool:
        """Whether the websocket is still open."""
        return not self.ws.closed

    async def send(self, frame: dict[str, Any]) -> None:
        """Serialize, compress as negotiated and send one gateway frame."""
        raw = json.dumps(frame, separators=(",", ":")).encode()
        async with self._send_lock:
            if self.ws.closed:
                return
            try:
                if self.compress is None:
                    await self.ws.send_str(raw.decode())
                else:
                    await self.ws.send_bytes(self._compressor.compress(raw))
            except (ConnectionError, RuntimeError) as exc:
                _log.debug("gateway connection %s: send failed: %s", self.id, exc)

    async def close(self, code: int, reason: str = "") -> None:
        """Close the websocket with a gateway close code."""
        if not self.ws.closed:
            self.closed_by_server = True
            await self.ws.close(code=code, message=reason.encode())


@dataclass(eq=False)
class GatewaySession:
    """A gateway session: what a RESUME can pick up again.

    Dispatches are numbered and kept (the last 2000) so a resumed connection gets what it missed.
    """

    id: str
    shard: tuple[int, int] | None
    intents: int
    seq: int = 0
    connection: GatewayConnection | None = None
    log: collections.deque[tuple[int, dict[str, Any]]] = field(
        default_factory=lambda: collections.deque(maxlen=_REPLAY_BUFFER)
    )
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    expiry: asyncio.TimerHandle | None = None
    ended: bool = False

    def covers(self, guild_id: int) -> bool:
        """Whether the guild belongs to this session's shard (``(guild_id >> 22) % count == id``)."""
        if self.shard is None:
            return True
        shard_id, count = self.shard
        return (guild_id >> 22) % count == shard_id

    def wants(self, event: str) -> bool:
        """Whether the session's intents ask for this event."""
        needed = EVENT_INTENTS.get(event)
        return needed is None or bool(self.intents & needed)

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Number the event, keep it for replay, and send it if a connection is attached."""
        async with self.lock:
            self.seq += 1
            frame = {"op": 0, "t": event, "s": self.seq, "d": data}
            self.log.append((self.seq, frame))
            if self.connection is not None and self.connection.open:
                await self.connection.send(frame)


class FakeGateway:
    """The websocket endpoint and the sessions of :class:`FakeDiscord` (one per fake)."""

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.sessions: dict[str, GatewaySession] = {}
        self.connections: dict[int, GatewayConnection] = {}
        self.send_counts: dict[int, int] = {}
        self.violations: list[RateLimitViolation] = []
        #: Every frame received from a client, in order of arrival.
        self.send_log: list[GatewaySend] = []
        #: The shard each connection identified (or resumed) as; ``None`` for an unsharded one.
        self.connection_shards: dict[int, tuple[int, int] | None] = {}
        self.voice_state_update_counts: collections.Counter[int] = collections.Counter()
        self.presence_updates: list[dict[str, Any]] = []
        self.identify_count = 0
        self.resume_count = 0
        self._ids = itertools.count(1)

    # -- websocket endpoint ---------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """aiohttp handler for ``GET /gateway`` (websocket upgrade)."""
        if self.fake.stopping:
            # A client reconnecting while the fake shuts down is refused at once (as a closed port
            # would), instead of hanging in a handshake the dying server never finishes.
            return web.Response(status=503, text="shutting down")
        ws = web.WebSocketResponse(max_msg_size=0, autoping=True)
        await ws.prepare(request)
        compress = request.query.get("compress")
        try:
            conn = GatewayConnection(next(self._ids), ws, compress)
        except (ValueError, ImportError) as exc:
            _log.warning("gateway: refusing compression %r: %s", compress, exc)
            await ws.close(code=4002, message=b"Unsupported compression")
            return ws
        self.connections[conn.id] = conn
        self.send_counts[conn.id] = 0
        _log.debug("gateway connection %s opened: %s", conn.id, request.query_string)
        if request.query.get("v", "10") != "10":
            await conn.close(4012, "Invalid API version")
            return ws
        if request.query.get("encoding", "json") != "json":
            await conn.close(4002, "Only encoding=json is supported by the fake")
            return ws
        try:
            await conn.send({"op": 10, "d": {"heartbeat_interval": self.fake.heartbeat_interval_ms}})
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                try:
                    frame = json.loads(msg.data)
                    op = frame["op"]
                except (ValueError, KeyError, TypeError):
                    await conn.close(4002, "Decode error")
                    break
                if not self._account(conn, op, frame.get("d")):
                    break
                await self._handle_frame(conn, op, frame.get("d"))
        finally:
            self._detach(conn, client_code=None if conn.closed_by_server else ws.close_code)
        return ws

    def _account(self, conn: GatewayConnection, op: int | None, d: Any) -> bool:
        now = time.monotonic()
        guild_id = None
        if op == 4 and isinstance(d, dict):
            try:
                guild_id = int(d.get("guild_id"))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                guild_id = None
        self.send_log.append(GatewaySend(now, conn.id, op, guild_id))
        conn.total_sends += 1
        self.send_counts[conn.id] = conn.total_sends
        conn.sends.append(now)
        while conn.sends and now - conn.sends[0] > GATEWAY_SEND_WINDOW:
            conn.sends.popleft()
        if len(conn.sends) > GATEWAY_SEND_LIMIT:
            session_id = conn.session.id if conn.session else None
            self.violations.append(RateLimitViolation(conn.id, session_id, op, len(conn.sends), now))
            _log.warning("gateway connection %s exceeded 120 sends / 60 s (op %s)", conn.id, op)
            if self.fake.enforce_gateway_rate_limit:
                asyncio.ensure_future(conn.close(4008, "Rate limited."))  # noqa: RUF006
                return False
        return True

    async def _handle_frame(self, conn: GatewayConnection, op: int, d: Any) -> None:
        if op == 1:
            conn.last_heartbeat = time.monotonic()
            await conn.send({"op": 11})
        elif op == 2:
            await self._identify(conn, d or {})
        elif op == 6:
            await self._resume(conn, d or {})
        elif conn.session is None:
            await conn.close(4003, "Not authenticated.")
        elif op == 3:
            self.presence_updates.append(d)
        elif op == 4:
            await self._voice_state(conn.session, d or {})
        elif op == 8:
            await self._request_members(conn.session, d or {})
        elif op == 11:
            pass
        else:
            await conn.close(4001, "Unknown opcode.")

    # -- sessions ------------------------------------------------------------------------------------

    async def _identify(self, conn: GatewayConnection, d: dict[str, Any]) -> None:
        fake = self.fake
        if conn.session is not None:
            await conn.close(4005, "Already authenticated.")
            return
        if d.get("token") != fake.token:
            await conn.close(4004, "Authentication failed.")
            return
        intents = d.get("intents")
        if not isinstance(intents, int) or intents < 0 or intents > Intents.ALL:
            await conn.close(4013, "Invalid intent(s).")
            return
        if intents & Intents.PRIVILEGED & ~fake.allowed_privileged_intents:
            await conn.close(4014, "Disallowed intent(s).")
            return
        raw_shard = d.get("shard")
        shard: tuple[int, int] | None = None
        if raw_shard is not None:
            try:
                shard = (int(raw_shard[0]), int(raw_shard[1]))
            except (TypeError, ValueError, IndexError):
                shard = (-1, 0)
            if not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
                await conn.close(4010, "Invalid shard.")
                return
        self.identify_count += 1
        session = GatewaySession(secrets.token_hex(16), shard, intents)
        self.sessions[session.id] = session
        conn.session = session
        session.connection = conn
        self.connection_shards[conn.id] = shard
        guilds = [g for g in fake.guilds.values() if session.covers(g.id)]
        ready: dict[str, Any] = {
            "v": 10,
            "user": {**fake.bot_user.to_payload(), "verified": True, "mfa_enabled": False, "email": None},
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": fake.gateway_url,
            "application": {"id": str(fake.application_id), "flags": fake.application_flags},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "user_settings": {},
            "geo_ordered_rtc_regions": ["fake-local"],
            "auth": {},
            "_trace": ['["sonora-fake-gateway",{"micros":0}]'],
        }
        if shard is not None:
            ready["shard"] = list(shard)
        await session.dispatch("READY", ready)
        all_members = bool(intents & Intents.GUILD_MEMBERS)
        for guild in guilds:
            await session.dispatch("GUILD_CREATE", guild.to_payload(all_members=all_members))

    async def _resume(self, conn: GatewayConnection, d: dict[str, Any]) -> None:
        if d.get("token") != self.fake.token:
            await conn.close(4004, "Authentication failed.")
            return
        session = self.sessions.get(str(d.get("session_id")))
        seq = d.get("seq") or 0
        oldest = session.log[0][0] if session and session.log else 1
        if session is None or session.ended or seq > session.seq or seq + 1 < oldest:
            await conn.send({"op": 9, "d": False})
            return
        self.resume_count += 1
        if session.expiry is not None:
            session.expiry.cancel()
            session.expiry = None
        previous = session.connection
        if previous is not None and previous is not conn:
            previous.session = None
            await previous.close(4000, "Session resumed elsewhere")
        async with session.lock:
            conn.session = session
            session.connection = conn
            self.connection_shards[conn.id] = session.shard
            for number, frame in list(session.log):
                if number > seq:
                    await conn.send(frame)
        await session.dispatch("RESUMED", {"_trace": ['["sonora-fake-gateway",{"micros":0}]']})

    def _detach(self, conn: GatewayConnection, *, client_code: int | None) -> None:
        self.connections.pop(conn.id, None)
        session = conn.session
        if session is None or session.connection is not conn:
            return
        session.connection = None
        if client_code in (1000, 1001):
            # A client closing normally ends its session (Discord: not resumable after 1000/1001).
            asyncio.ensure_future(self.end_session(session))  # noqa: RUF006
        else:
            loop = asyncio.get_running_loop()
            session.expiry = loop.call_later(
                self.fake.session_timeout, lambda: asyncio.ensure_future(self.end_session(session))
            )

    async def end_session(self, session: GatewaySession) -> None:
        """End a session for good: it can no longer resume, and its bot voice states disconnect."""
        if session.ended:
            return
        session.ended = True
        if session.expiry is not None:
            session.expiry.cancel()
        self.sessions.pop(session.id, None)
        await self.fake._on_session_end(session.id)

    def live_sessions(self, guild_id: int | None = None) -> list[GatewaySession]:
        """Sessions not ended (connected or awaiting a resume), optionally only those covering a guild."""
        return [s for s in self.sessions.values() if not s.ended and (guild_id is None or s.covers(guild_id))]

    async def dispatch(self, event: str, data: dict[str, Any], *, guild_id: int | None = None) -> int:
        """Dispatch an event to every session that covers ``guild_id`` and wants it; return how many.

        Channels added since the last event are announced first (CHANNEL_CREATE), so a test that adds a
        channel and then acts in it is seen by the bot in that order, as on Discord.
        """
        while self.fake.unannounced_channels:
            channel = self.fake.unannounced_channels.pop(0)
            for session in self.live_sessions(channel.guild_id):
                if session.wants("CHANNEL_CREATE"):
                    await session.dispatch("CHANNEL_CREATE", channel.to_payload())
        targets = [s for s in self.live_sessions(guild_id) if s.wants(event)]
        for session in targets:
            await session.dispatch(event, data)
        return len(targets)

    async def send_op(self, op: int, d: Any) -> None:
        """Send a non-dispatch opcode to every open connection."""
        for conn in list(self.connections.values()):
            await conn.send({"op": op, "d": d})

    async def close_all(self, code: int, reason: str = "") -> None:
        """Close every open connection with ``code``."""
        await asyncio.gather(*(c.close(code, reason) for c in list(self.connections.values())))

    # -- client requests -----------------------------------------------------------------------------

    async def _voice_state(self, session: GatewaySession, d: dict[str, Any]) -> None:
        try:
            guild_id = int(d["guild_id"])
        except (KeyError, TypeError, ValueError):
            _log.warning("gateway: op 4 without a guild_id: %r", d)
            return
        self.voice_state_update_counts[guild_id] += 1
        if not session.covers(guild_id):
            _log.warning("gateway: op 4 for guild %s outside shard %s ignored", guild_id, session.shard)
            return
        if self.fake.voice_latency > 0:
            await asyncio.sleep(self.fake.voice_latency)
        channel_id = d.get("channel_id")
        await self.fake._bot_voice_request(
            guild_id,
            None if channel_id is None else int(channel_id),
            session.id,
            self_mute=bool(d.get("self_mute")),
            self_deaf=bool(d.get("self_deaf")),
        )

    async def _request_members(self, session: GatewaySession, d: dict[str, Any]) -> None:
        guild_ids = d.get("guild_id")
        for raw in guild_ids if isinstance(guild_ids, list) else [guild_ids]:
            guild = self.fake.guilds.get(int(raw)) if raw is not None else None
            if guild is None:
                continue
            members = list(guild.members.values())
            if d.get("user_ids"):
                wanted = {int(u) for u in d["user_ids"]}
                members = [m for m in members if m.id in wanted]
            elif d.get("query"):
                query = str(d["query"]).lower()
                members = [m for m in members if m.user.username.lower().startswith(query)]
            if d.get("limit"):
                members = members[: int(d["limit"])]
            chunk: dict[str, Any] = {
                "guild_id": str(guild.id),
                "members": [m.to_payload() for m in members],
                "chunk_index": 0,
                "chunk_count": 1,
            }
            if d.get("nonce") is not None:
                chunk["nonce"] = d["nonce"]
            if d.get("presences"):
                chunk["presences"] = []
            await session.dispatch("GUILD_MEMBERS_CHUNK", chunk)
