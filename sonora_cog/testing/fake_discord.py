"""FakeDiscord: a Discord gateway v10 + REST API on loopback for the real, unmodified discord.py.

Tests build a world (guilds, channels, roles, members), point discord.py at the fake with
:func:`sonora_cog.testing.discord_client.point_discord_at`, and then drive it: members join voice, a
moderator disconnects the bot, slash commands and button clicks arrive, the gateway asks for a
reconnect. What the bot sends back (REST calls, interaction answers, gateway opcodes) is recorded.

Example::

    async with FakeDiscord() as fake:
        guild = fake.add_guild("Test")
        text = guild.add_text_channel("general")
        voice = guild.add_voice_channel("Music")
        user = guild.add_member(name="alice")
        point_discord_at(fake)
        ...
        interaction = await fake.send_slash_command(guild.id, user.id, "music", "play", {"query": "x"})
        answer = await interaction.wait_response()

Split by concept: :mod:`.fake_discord_models` (the world), :mod:`.fake_discord_gateway` (websocket),
:mod:`.fake_discord_guild` (a guild and its permissions), :mod:`.fake_discord_rest` (HTTP routes),
:mod:`.fake_discord_commands` (registered commands, who Discord lets use them),
:mod:`.fake_discord_messaging` (messages, interaction traffic), :mod:`.fake_discord_interactions`
(what a test reads back).

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from sonora_cog.testing.fake_discord_commands import CommandNotAvailable
from sonora_cog.testing.fake_discord_gateway import (
    FakeGateway,
    GatewaySend,
    GatewaySession,
    Intents,
    RateLimitViolation,
    most_in_window,
)
from sonora_cog.testing.fake_discord_guild import FakeGuild
from sonora_cog.testing.fake_discord_interactions import (
    FakeInteraction,
    InteractionCallback,
)
from sonora_cog.testing.fake_discord_messaging import MessagingMixin
from sonora_cog.testing.fake_discord_models import (
    ChannelType,
    FakeChannel,
    FakeFile,
    FakeMessage,
    FakeUser,
    FakeVoiceState,
    Permissions,
    SnowflakeFactory,
)
from sonora_cog.testing.fake_discord_rest import FakeRest

__all__ = (
    "CommandNotAvailable",
    "FakeDiscord",
    "FakeGuild",
    "FakeInteraction",
    "FakeMessage",
    "GatewaySend",
    "InteractionCallback",
    "RateLimitViolation",
    "most_in_window",
)

_log = logging.getLogger(__name__)

#: View, send, embed, attach, read history, connect, speak, voice activity: a music bot's invite.
DEFAULT_BOT_PERMISSIONS = (
    Permissions.VIEW_CHANNEL
    | Permissions.SEND_MESSAGES
    | Permissions.EMBED_LINKS
    | Permissions.ATTACH_FILES
    | Permissions.READ_MESSAGE_HISTORY
    | Permissions.CONNECT
    | Permissions.SPEAK
    | Permissions.USE_VAD
)


class FakeDiscord(MessagingMixin):
    """A Discord gateway + REST server on ``127.0.0.1`` (async context manager).

    Parameters
    ----------
    token:
        The bot token; REST calls need ``Authorization: Bot <token>`` (else 401) and IDENTIFY/RESUME
        with another token are closed with 4004.
    bot_id, bot_name:
        The bot's own user; ``application_id`` defaults to ``bot_id`` as for every modern application.
    heartbeat_interval_ms:
        Sent in HELLO; Discord's is 41250.
    session_timeout:
        Seconds a session whose connection dropped stays resumable; when it ends, the bot's voice
        states of that session are disconnected (as Discord does when a bot's session dies).
    interaction_response_timeout:
        Seconds the bot has for the initial interaction callback (Discord: 3), else 10062.
    """

    def __init__(
        self,
        *,
        token: str = "fake-bot-token",  # noqa: S107 - the fake token of a fake server
        bot_id: int | None = None,
        bot_name: str = "SonoraTestBot",
        application_id: int | None = None,
        heartbeat_interval_ms: int = 41250,
        session_timeout: float = 60.0,
        interaction_response_timeout: float = 3.0,
        enforce_gateway_rate_limit: bool = False,
        allowed_privileged_intents: int = Intents.PRIVILEGED,
        recommended_shards: int = 1,
        voice_endpoint: str = "fake-voice.discord.media:443",
        owner_id: int | None = None,
    ) -> None:
        self.snowflake = SnowflakeFactory()
        self.token = token
        bid = bot_id if bot_id is not None else self.snowflake()
        self.bot_user = FakeUser(bid, bot_name, bot=True)
        self.application_id: int = application_id if application_id is not None else bid
        self.application_flags = 0
        self.owner_id = owner_id
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.session_timeout = session_timeout
        self.interaction_response_timeout = interaction_response_timeout
        self.enforce_gateway_rate_limit = enforce_gateway_rate_limit
        self.allowed_privileged_intents = allowed_privileged_intents
        self.recommended_shards = recommended_shards
        self.voice_endpoint = voice_endpoint
        self.clock: Callable[[], float] = time.monotonic
        #: Minimum seconds between a message appearing/changing and a test clicking it.
        self.human_delay = 0.1
        #: Seconds Discord takes to answer each op 4 voice state request (real Discord: tens of ms).
        #: Answers keep their order; the client may send more requests meanwhile.
        self.voice_latency = 0.0

        self.users: dict[int, FakeUser] = {bid: self.bot_user}
        self.guilds: dict[int, FakeGuild] = {}
        self.messages: dict[int, FakeMessage] = {}
        self.attachments: dict[int, FakeFile] = {}
        self.interactions: list[FakeInteraction] = []
        self.interactions_by_token: dict[str, FakeInteraction] = {}
        #: Global commands as last synced (``PUT /applications/{id}/commands``).
        self.synced_commands: list[dict[str, Any]] = []
        #: Guild commands as last synced, per guild id.
        self.synced_guild_commands: dict[int, list[dict[str, Any]]] = {}
        self.sync_count = 0
        #: Per guild: application command permissions by command id (or application id), see
        #: :meth:`set_command_permissions`.
        self.command_permissions: dict[int, dict[int, list[dict[str, Any]]]] = {}
        #: The DM channel id of each user who sent a command from their DM with the bot.
        self.dm_channels: dict[int, int] = {}
        #: ``(method, path)`` of every API request, in order.
        self.requests: list[tuple[str, str]] = []
        #: ``(method, path)`` of requests to routes the fake does not implement.
        self.unknown_routes: list[tuple[str, str]] = []
        self.voice_servers_sent: list[dict[str, Any]] = []
        #: Channels added while the bot is connected, announced (CHANNEL_CREATE) before the next event.
        self.unannounced_channels: list[FakeChannel] = []

        self.gateway = FakeGateway(self)
        self._rest = FakeRest(self)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self.host = "127.0.0.1"
        #: True while :meth:`stop` runs: new gateway connections are refused.
        self.stopping = False
        self._site: web.SockSite | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start serving (on the same port as before if restarted)."""
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_get("/gateway", self.gateway.handle)
        self._rest.install(app)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._port or 0))
        self._port = sock.getsockname()[1]
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        self._site = web.SockSite(self._runner, sock)
        await self._site.start()
        _log.info("FakeDiscord listening on %s", self.base_url)

    async def stop(self) -> None:
        """Close every gateway connection (code 1001, like a Discord restart) and stop serving."""
        if self._runner is None:
            return
        self.stopping = True
        try:
            # Stop listening first: a client that reconnects at once is refused (connection refused, as
            # from a stopped Discord) instead of being accepted by a server that is shutting down.
            if self._site is not None:
                await self._site.stop()
            await self.gateway.close_all(1001, "Going away")
            await self._runner.cleanup()
        finally:
            self._runner = None
            self.stopping = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The TCP port (stable across :meth:`stop` / :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("FakeDiscord is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """The REST base, what ``discord.http.Route.BASE`` must be: ``<base_url>/api/v10``."""
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        """The gateway URL (``ws://127.0.0.1:<port>/gateway``), as ``/gateway/bot`` returns it."""
        return f"ws://{self.host}:{self.port}/gateway"

    # -- world building ----------------------------------------------------------------------------------

    def add_guild(
        self,
        name: str,
        *,
        guild_id: int | None = None,
        owner_id: int | None = None,
        bot_permissions: int = DEFAULT_BOT_PERMISSIONS,
    ) -> FakeGuild:
        """Add a guild the bot is a member of (with a managed role carrying ``bot_permissions``)."""
        gid = guild_id if guild_id is not None else self.snowflake()
        owner = owner_id if owner_id is not None else self.snowflake()
        guild = FakeGuild(self, gid, name, owner)
        self.guilds[gid] = guild
        guild.add_member(owner, name=f"owner{owner % 10000}")
        bot_role = guild.add_role(self.bot_user.username, bot_permissions, managed=True, bot_id=self.bot_user.id)
        guild.add_member(self.bot_user.id, roles=[bot_role])
        return guild

    def guild(self, guild_id: int) -> FakeGuild:
        """The guild with this id (``KeyError`` if unknown)."""
        return self.guilds[int(guild_id)]

    def find_channel(self, channel_id: int) -> tuple[FakeGuild, FakeChannel] | None:
        """``(guild, channel)`` for a channel id, or ``None``."""
        for guild in self.guilds.values():
            if channel_id in guild.channels:
                return guild, guild.channels[channel_id]
        return None

    def host_attachment(self, filename: str, data: bytes, content_type: str | None = None) -> dict[str, Any]:
        """Serve ``data`` on the fake; return the attachment object to put in a command option."""
        file = FakeFile(filename, data, content_type, id=self.snowflake())
        self.attachments[file.id] = file
        return {**file.to_payload(self.base_url, 0), "ephemeral": True}

    # -- observation -------------------------------------------------------------------------------

    @property
    def gateway_send_counts(self) -> dict[int, int]:
        """Frames received from each gateway connection (by connection number)."""
        return dict(self.gateway.send_counts)

    @property
    def rate_limit_violations(self) -> list[RateLimitViolation]:
        """Frames a connection sent beyond 120 per rolling 60 s."""
        return list(self.gateway.violations)

    def gateway_sends(self, op: int | None = None) -> dict[int, list[GatewaySend]]:
        """The frames received from each gateway connection (by connection number), in order of arrival;
        only those of opcode ``op`` when given. ``gateway.connection_shards`` gives each connection's shard."""
        out: dict[int, list[GatewaySend]] = {}
        for send in self.gateway.send_log:
            if op is None or send.op == op:
                out.setdefault(send.connection_id, []).append(send)
        return out

    @property
    def voice_state_update_counts(self) -> dict[int, int]:
        """How many op 4 VOICE_STATE_UPDATE the bot sent, per guild id."""
        return dict(self.gateway.voice_state_update_counts)

    @property
    def identify_count(self) -> int:
        """Accepted IDENTIFYs."""
        return self.gateway.identify_count

    @property
    def resume_count(self) -> int:
        """Accepted RESUMEs."""
        return self.gateway.resume_count

    @property
    def sessions(self) -> list[GatewaySession]:
        """Gateway sessions not ended."""
        return self.gateway.live_sessions()

    def connected_sessions(self) -> list[GatewaySession]:
        """Sessions with an open connection."""
        return [s for s in self.sessions if s.connection is not None and s.connection.open]

    def bot_voice_channel(self, guild_id: int) -> int | None:
        """The channel the bot is connected to in a guild, or ``None``."""
        return self.guild(guild_id).voice_channel_of(self.bot_user.id)

    async def notify(self) -> None:
        """Wake :meth:`wait_until` waiters."""
        async with self._changed:
            self._changed.notify_all()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109 - a test helper deadline, like asyncio.wait_for
        """Wait until ``predicate()`` holds (re-checked after every gateway/REST change)."""
        async with asyncio.timeout(timeout), self._changed:
            while not predicate():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.05)

    # -- test-driven gateway events ---------------------------------------------------------------------

    async def dispatch(self, event: str, data: dict[str, Any], *, guild_id: int | None = None) -> int:
        """Dispatch a raw event to the sessions covering ``guild_id``; return how many got it."""
        return await self.gateway.dispatch(event, data, guild_id=guild_id)

    async def dispatch_guild_create(self, guild_id: int) -> None:
        """Send GUILD_CREATE for a guild added while the bot is connected (the bot "joins" it).

        Without the ``unavailable`` field: it is for a guild that was unavailable (listed so in READY, or
        back from an outage), and clients tell a join by its absence (discord.py's ``on_guild_join``,
        hikari's ``GuildJoinEvent``), while ``unavailable: false`` reads as the guild becoming available.
        """
        guild = self.guild(guild_id)
        for session in self.gateway.live_sessions(guild_id):
            data = guild.to_payload(all_members=bool(session.intents & Intents.GUILD_MEMBERS))
            del data["unavailable"]
            await session.dispatch("GUILD_CREATE", data)

    async def _voice_update(self, guild: FakeGuild, state: FakeVoiceState) -> None:
        member = guild.members.get(state.user_id)
        await self.dispatch("VOICE_STATE_UPDATE", state.to_payload(member), guild_id=guild.id)

    async def member_join_voice(
        self, guild_id: int, user_id: int, channel_id: int, *, self_mute: bool = False, self_deaf: bool = False
    ) -> None:
        """A member joins (or moves to) a voice channel."""
        guild = self.guild(guild_id)
        if user_id not in guild.members:
            raise KeyError(f"user {user_id} is not a member of guild {guild_id}")
        if not guild.channels.get(channel_id) or not guild.channels[channel_id].is_voice:
            raise KeyError(f"{channel_id} is not a voice channel of guild {guild_id}")
        previous = guild.voice_states.get(user_id)
        session_id = previous.session_id if previous else secrets.token_hex(16)
        state = FakeVoiceState(guild_id, user_id, channel_id, session_id, self_mute, self_deaf)
        guild.voice_states[user_id] = state
        await self._voice_update(guild, state)

    async def member_leave_voice(self, guild_id: int, user_id: int) -> None:
        """A member leaves voice."""
        guild = self.guild(guild_id)
        state = guild.voice_states.pop(user_id, None)
        if state is None:
            raise KeyError(f"user {user_id} is not in voice in guild {guild_id}")
        state.channel_id = None
        await self._voice_update(guild, state)

    async def disconnect_bot_from_voice(self, guild_id: int) -> None:
        """A moderator disconnects the bot: VOICE_STATE_UPDATE with ``channel_id`` null for the bot."""
        await self.member_leave_voice(guild_id, self.bot_user.id)

    async def move_bot(self, guild_id: int, channel_id: int) -> None:
        """A moderator drags the bot to another voice channel (same voice session, new channel)."""
        guild = self.guild(guild_id)
        state = guild.voice_states.get(self.bot_user.id)
        if state is None:
            raise KeyError(f"the bot is not in voice in guild {guild_id}")
        channel = guild.channels[channel_id]
        state.channel_id = channel_id
        state.suppress = channel.type == ChannelType.GUILD_STAGE_VOICE
        await self._voice_update(guild, state)

    async def delete_channel(self, guild_id: int, channel_id: int) -> None:
        """Delete a channel: occupants are disconnected (VOICE_STATE_UPDATE), then CHANNEL_DELETE."""
        guild = self.guild(guild_id)
        channel = guild.channels[channel_id]
        for user_id, state in list(guild.voice_states.items()):
            if state.channel_id == channel_id:
                del guild.voice_states[user_id]
                state.channel_id = None
                await self._voice_update(guild, state)
        del guild.channels[channel_id]
        await self.dispatch("CHANNEL_DELETE", channel.to_payload(), guild_id=guild_id)

    async def invalidate_session(self, resumable: bool = False) -> None:
        """Send op 9 INVALID_SESSION to every connection; non-resumable sessions end at once."""
        sessions = self.connected_sessions()
        await self.gateway.send_op(9, resumable)
        if not resumable:
            for session in sessions:
                await self.gateway.end_session(session)

    async def request_heartbeat(self) -> None:
        """Send op 1 HEARTBEAT to every connection (the client must heartbeat at once)."""
        await self.gateway.send_op(1, None)

    async def reconnect_request(self) -> None:
        """Send op 7 RECONNECT to every connection (the client resumes)."""
        await self.gateway.send_op(7, None)

    async def close_gateway(self, code: int = 4000, reason: str = "") -> None:
        """Close every gateway connection with ``code`` (4000 and most 4xxx are resumable)."""
        await self.gateway.close_all(code, reason)

    # -- hooks used by the gateway and REST halves ---------------------------------------------------------

    async def _bot_voice_request(
        self, guild_id: int, channel_id: int | None, session_id: str, *, self_mute: bool, self_deaf: bool
    ) -> None:
        guild = self.guilds.get(guild_id)
        if guild is None:
            _log.warning("op 4 for unknown guild %s ignored", guild_id)
            return
        bot_id = self.bot_user.id
        previous = guild.voice_states.get(bot_id)
        if channel_id is None:
            guild.voice_states.pop(bot_id, None)
            state = FakeVoiceState(guild_id, bot_id, None, session_id, self_mute, self_deaf)
            await self._voice_update(guild, state)
            return
        channel = guild.channels.get(channel_id)
        if channel is None or not channel.is_voice:
            _log.warning("op 4 to unknown voice channel %s ignored", channel_id)
            return
        perms = guild.channel_permissions(bot_id, channel_id)
        if not (perms & Permissions.VIEW_CHANNEL and perms & Permissions.CONNECT):
            _log.warning("op 4: the bot lacks CONNECT in %s; Discord ignores it", channel_id)
            return
        occupants = [s for s in guild.voice_states.values() if s.channel_id == channel_id and s.user_id != bot_id]
        if channel.user_limit and len(occupants) >= channel.user_limit and not perms & Permissions.MOVE_MEMBERS:
            _log.warning("op 4: voice channel %s is full; Discord ignores it", channel_id)
            return
        stage = channel.type == ChannelType.GUILD_STAGE_VOICE
        state = FakeVoiceState(guild_id, bot_id, channel_id, session_id, self_mute, self_deaf, suppress=stage)
        guild.voice_states[bot_id] = state
        await self._voice_update(guild, state)
        moved = previous is not None and previous.session_id == session_id and previous.channel_id != channel_id
        if not moved:
            server = {"token": secrets.token_hex(8), "guild_id": str(guild_id), "endpoint": self.voice_endpoint}
            self.voice_servers_sent.append(server)
            await self.dispatch("VOICE_SERVER_UPDATE", server, guild_id=guild_id)
        await self.notify()

    async def _update_bot_stage_state(self, guild: FakeGuild, body: Mapping[str, Any]) -> None:
        state = guild.voice_states.get(self.bot_user.id)
        if state is None:
            return
        if "suppress" in body:
            state.suppress = bool(body["suppress"])
        if "request_to_speak_timestamp" in body:
            state.request_to_speak_timestamp = body["request_to_speak_timestamp"]
        await self._voice_update(guild, state)

    async def _on_session_end(self, session_id: str) -> None:
        for guild in self.guilds.values():
            state = guild.voice_states.get(self.bot_user.id)
            if state is not None and state.session_id == session_id:
                del guild.voice_states[self.bot_user.id]
                state.channel_id = None
                await self._voice_update(guild, state)
        await self.notify()
