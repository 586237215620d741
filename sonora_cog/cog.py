"""SonoraCog: wires Discord and wavelink events to the tracker, the jobs and the restore engine.

Load it with ``await bot.load_extension("sonora_cog")`` (settings found as :func:`load_settings`
describes), or build it yourself: ``await bot.add_cog(SonoraCog(bot, settings=..., manager=...))``.

The cog is composed: this module is the lifecycle and the change-tracking listeners; recovery
(startup rehydration, rebuilds, rejoins) is :class:`~sonora_cog.recovery.RecoveryMixin`; the
``/snapshot`` commands are :class:`~sonora_cog.commands.SnapshotCommands`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterable
from typing import Any

import discord
import wavelink
from discord.ext import commands

from .config import Settings, load_settings
from .errors import StoreError
from .jobs import build_scheduler
from .lease import LeaseManager
from .manager import SessionManager
from .meta import SnapshotKind
from .model import SessionState
from .player import COG_NAME, SonoraPlayer
from .recovery import RecoveryMixin
from .restore import RestoreReport, TokenBucket
from .resume import resume_sessions
from .tracker import SessionTracker

__all__ = ("SonoraCog",)

_log = logging.getLogger(__name__)


class SonoraCog(RecoveryMixin, commands.Cog, name=COG_NAME):
    """Persistence and automatic recovery for every wavelink player of a bot.

    Parameters
    ----------
    bot:
        The bot.
    settings:
        Settings (found by :func:`~sonora_cog.config.load_settings` when omitted).
    manager:
        A ready :class:`~sonora_cog.manager.SessionManager` (built from the settings when omitted).
    player_cls:
        The player class used when sonora_cog itself joins a channel to restore a session.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        bot: commands.Bot,
        *,
        settings: Settings | None = None,
        manager: SessionManager | None = None,
        player_cls: type[wavelink.Player] = SonoraPlayer,
    ) -> None:
        self.bot = bot
        self.settings = settings or (manager.settings if manager is not None else load_settings())
        self.manager = manager or SessionManager(self.settings)
        self.player_cls = player_cls
        storage = self.settings.storage
        #: Guild ownership between processes (a no-op lease within one process for the filesystem store).
        self.leases = LeaseManager.for_store(
            self.manager.store, ttl=storage.lease_ttl, renew_interval=storage.lease_renew_interval
        )
        self.tracker = SessionTracker(bot, self.manager, leases=self.leases)
        self.scheduler = build_scheduler(self.tracker, self.settings)
        restore = self.settings.restore
        self.pacer = TokenBucket(restore.joins_per_second, restore.join_burst)
        self._internal_leaves: set[int] = set()
        self._rehydration: asyncio.Task[list[RestoreReport]] | None = None
        #: Set once the startup restore is over (or will not run): unowned Lavalink players may go.
        self._rehydrated = asyncio.Event()
        #: Owned guilds with a live record found at startup; ``None`` until the store could be listed.
        self._startup_guilds: list[int] | None = None
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sigterm_installed = False
        self._commands: Any = None
        self._previous_heartbeat: float | None = None

    # -- lifecycle ----------------------------------------------------------------------------------

    async def cog_load(self) -> None:
        """Hold every guild that has a live record (until restored), start the jobs, add commands."""
        self.leases.start()
        if self.settings.restore.on_startup:
            try:
                await self._find_startup_guilds()
            except StoreError as exc:
                _log.error("cannot list the live records (%s); the guilds are restored once the store is back", exc)
                self._spawn(self._find_startup_guilds_when_store_is_back())
        else:
            self._rehydrated.set()
        self.scheduler.start()
        self._install_sigterm()
        if self.settings.commands.enabled:
            from .commands import SnapshotCommands

            self._commands = SnapshotCommands(self)
            self.bot.tree.add_command(self._commands)
        self._maybe_rehydrate()

    async def connect_nodes(self, nodes: Iterable[wavelink.Node], **options: Any) -> dict[str, wavelink.Node]:
        """Connect wavelink's node pool, resuming the Lavalink sessions of the previous process.

        Use it in place of ``wavelink.Pool.connect(nodes=nodes, client=bot, ...)`` (``options`` are passed
        on: ``cache_capacity`` and so on), after the cog is loaded, in ``setup_hook``. Each node whose URI
        had a session in the previous process asks Lavalink for it again; if Lavalink still holds it
        (``restore.lavalink_resume_timeout``, 60 s by default), its players never stopped playing and
        the startup restore adopts them without re-buffering. Otherwise the node gets a new session and
        the startup restore plays every guild from its live record, as it does without this method.

        Returns what ``wavelink.Pool.connect`` returns.
        """
        nodes = list(nodes)
        if self.settings.restore.resume_lavalink_sessions and self.bot.user is None:
            _log.warning("connect_nodes() before the bot logged in (use setup_hook): not resuming Lavalink sessions")
        elif self.settings.restore.resume_lavalink_sessions:
            try:
                sessions = await self.manager.read_lavalink_sessions(self.tracker.owner)
            except StoreError as exc:
                _log.warning("cannot read the previous Lavalink session ids (%s); starting new sessions", exc)
                sessions = {}
            for node in resume_sessions(nodes, sessions):
                _log.info("Lavalink node %s: asking to resume session %s", node.identifier, node.session_id)
        return await wavelink.Pool.connect(nodes=nodes, client=self.bot, **options)

    async def cog_unload(self) -> None:
        """Write a ``shutdown`` snapshot and the live record of every player; stop the jobs."""
        if self._rehydration is not None and not self._rehydration.done():
            self._rehydration.cancel()
        await self.tracker.shutdown()
        if self._closing:
            await self._leave_voice_for_handover()
        await self.leases.close()  # after the last writes: a waiting process takes over from here
        self.scheduler.shutdown(wait=False)
        if self._commands is not None:
            self.bot.tree.remove_command(self._commands.name)
        if self._sigterm_installed:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)
        await self.manager.close()
        _log.info("sonora_cog unloaded; every player's state is saved")

    def _install_sigterm(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGTERM, lambda: self._spawn(self._on_sigterm()))
        except (NotImplementedError, RuntimeError, ValueError):
            return  # not the main thread, or no signal support (Windows): bot.close() still saves
        self._sigterm_installed = True

    async def _on_sigterm(self) -> None:
        _log.info("SIGTERM: saving every player's state and closing the bot")
        self._closing = True
        await self.bot.close()

    async def _leave_voice_for_handover(self) -> None:
        """Leave voice before releasing the leases, so a late leave never disconnects the next process."""
        for player in self.tracker.players():
            await self._leave_quietly(player)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("background task %s failed", task.get_coro(), exc_info=task.exception())

    # -- listeners ----------------------------------------------------------------------------------

    @commands.Cog.listener()
    async def on_wavelink_player_update(self, payload: wavelink.PlayerUpdateEventPayload) -> None:
        player = payload.player
        if player is not None and player.guild is not None:
            self.tracker.record_position(player.guild.id, payload.position)

    @commands.Cog.listener()
    async def on_wavelink_track_start(self, payload: wavelink.TrackStartEventPayload) -> None:
        self._mark(payload.player)

    @commands.Cog.listener()
    async def on_wavelink_track_end(self, payload: wavelink.TrackEndEventPayload) -> None:
        self._mark(payload.player)

    @commands.Cog.listener()
    async def on_voice_state_update(
        self, member: discord.Member, before: discord.VoiceState, after: discord.VoiceState
    ) -> None:
        if self.bot.user is None or member.id != self.bot.user.id:
            return
        guild_id = member.guild.id
        if before.channel is None and after.channel is not None:
            self.tracker.session_started(guild_id)
        elif before.channel is not None and after.channel is None:
            if guild_id in self._internal_leaves:
                self._internal_leaves.discard(guild_id)
            elif self.tracker.is_held(guild_id) and not isinstance(member.guild.voice_client, wavelink.Player):
                # Discord ended the *previous* process's voice state (its gateway session timed out)
                # while this guild waits for its restore: that is not the session ending.
                _log.debug("guild %s: the previous process's voice state ended; its restore is pending", guild_id)
            else:
                self.tracker.session_ended(guild_id, "disconnected from voice")
        elif after.channel is not None:
            self.tracker.mark_dirty(guild_id)

    def _mark(self, player: wavelink.Player | None) -> None:
        if player is not None and player.guild is not None:
            self.tracker.mark_dirty(player.guild.id)

    # -- for commands and bot code ------------------------------------------------------------------

    def current_state(self, guild: discord.Guild, kind: SnapshotKind = SnapshotKind.manual) -> SessionState | None:
        """Capture the guild's player now, or ``None`` when the bot is not playing there."""
        player = guild.voice_client
        if isinstance(player, wavelink.Player) and player.connected and player.guild is not None:
            return self.tracker.capture(player, kind)
        return None
