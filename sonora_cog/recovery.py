"""Recovery: bringing players back after a restart, a Lavalink restart, a lost voice connection or a
gateway re-identify. A mixin of :class:`~sonora_cog.cog.SonoraCog` (one concern per module, as jishaku
stacks its features); it uses the cog's manager, tracker, leases and pacer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import discord
import wavelink
from discord.ext import commands

from .config import Settings
from .errors import SonoraError, StoreError
from .lease import LeaseManager, LeaseStatus
from .manager import SessionManager
from .model import SessionState
from .restore import (
    ALL_PARTS,
    RestoreReport,
    RestoreStatus,
    TokenBucket,
    adoptable,
    advance_position,
    leave_voice,
    restore_state,
)
from .resume import Ghost, destroy_ghost, enable_resuming, find_ghosts
from .tracker import SessionTracker

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

__all__ = ("VOICE_LOST_CODES", "RecoveryMixin")

_log = logging.getLogger(__name__)

#: Voice WebSocket close codes that mean "the connection was lost", not "you were removed".
VOICE_LOST_CODES = frozenset({4006, 4009, 4015})


class RecoveryMixin:
    """Startup rehydration, rebuilding lost players and rejoining lost voice connections."""

    bot: commands.Bot
    settings: Settings
    manager: SessionManager
    tracker: SessionTracker
    leases: LeaseManager
    pacer: TokenBucket
    player_cls: type[wavelink.Player]
    _internal_leaves: set[int]
    _rehydration: asyncio.Task[list[RestoreReport]] | None
    _rehydrated: asyncio.Event
    _startup_guilds: list[int] | None
    _previous_heartbeat: float | None
    _spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]]  # provided by the cog

    async def _find_startup_guilds(self) -> None:
        """List the owned guilds with a live record and hold them until they are restored."""
        playing = {p.guild.id for p in self.tracker.players() if p.guild is not None}
        guilds = [g for g in await self.manager.live_guilds() if self.owns(g) and g not in playing]
        # When the previous process last checkpointed: unchanged tracks played on until then.
        self._previous_heartbeat = await self.manager.read_heartbeat(self.tracker.owner)
        for guild_id in guilds:
            self.tracker.hold(guild_id)
        self._startup_guilds = guilds
        self._maybe_rehydrate()

    async def _find_startup_guilds_when_store_is_back(self) -> None:
        delay = 1.0
        while self._startup_guilds is None:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
            try:
                await self._find_startup_guilds()
            except StoreError as exc:
                _log.debug("the store is still unavailable: %s", exc)
        _log.info("the store is back: restoring %d guild(s)", len(self._startup_guilds))

    # -- ownership ----------------------------------------------------------------------------------

    def owns(self, guild_id: int) -> bool:
        """Whether this process's shards own ``guild_id`` (always true for an unsharded bot)."""
        count = self.bot.shard_count or 1
        if count <= 1:
            return True
        shard = (guild_id >> 22) % count
        shard_ids: Iterable[int] | None = getattr(self.bot, "shard_ids", None)
        if shard_ids is None:
            shard_ids = [self.bot.shard_id or 0]
        return shard in set(shard_ids)

    # -- startup rehydration ------------------------------------------------------------------------

    def _maybe_rehydrate(self) -> None:
        if self._rehydration is not None or not self.settings.restore.on_startup or self._startup_guilds is None:
            return
        if not self.bot.is_ready() or not any(
            n.status is wavelink.NodeStatus.CONNECTED for n in wavelink.Pool.nodes.values()
        ):
            return
        self._rehydration = self._spawn(self.rehydrate(self._startup_guilds))
        self._rehydration.add_done_callback(lambda _: self._rehydrated.set())

    async def rehydrate(self, guild_ids: Iterable[int] | None = None) -> list[RestoreReport]:
        """Restore every owned guild's live record younger than ``restore.max_age``, paced.

        Each guild's lease is taken first: a guild another process holds (the old deployment, still
        shutting down) is waited for up to ``storage.lease_wait`` seconds, then skipped.

        A player that a resumed Lavalink session kept playing for a guild (see :mod:`sonora_cog.resume`)
        is adopted as it is when it plays the recorded track; the others are destroyed afterwards.
        """
        ids = await self.manager.live_guilds() if guild_ids is None else guild_ids
        targets = [g for g in ids if self.owns(g)]
        if not targets:
            _log.info("startup restore finished: nothing to restore")
            return []
        ghosts = await find_ghosts(wavelink.Pool.nodes.values())
        if ghosts:
            _log.info("the resumed Lavalink session still plays in %d guild(s)", len(ghosts))
        _log.info("restoring %d guild(s) from their live records", len(targets))
        semaphore = asyncio.Semaphore(self.settings.restore.concurrency)
        done = 0

        async def one(guild_id: int, lease: LeaseStatus | None, error: str | None = None) -> RestoreReport:
            nonlocal done
            if lease is not None and lease.acquired:
                async with semaphore:
                    report = await self._rehydrate_guild(guild_id, ghosts.get(guild_id))
            else:
                self.tracker.release(guild_id, dirty=False)
                reason = error or f"another process owns this guild ({lease.holder if lease else '?'})"
                report = RestoreReport(guild_id, RestoreStatus.skipped, reason=reason)
                self._dispatch_report(report)
            done += 1
            how = "adopted from the resumed Lavalink session" if report.adopted else report.reason
            _log.info("restore %d/%d: guild %s %s%s", done, len(targets), guild_id, report.status.value,
                      f" ({how})" if how else "")
            return report

        tasks: dict[int, asyncio.Task[RestoreReport]] = {}
        try:
            async for lease in self.leases.acquire_many(targets, wait=self.settings.storage.lease_wait):
                tasks[lease.guild_id] = self._spawn(one(lease.guild_id, lease))
        except StoreError as exc:
            for guild_id in targets:
                if guild_id not in tasks:
                    tasks[guild_id] = self._spawn(one(guild_id, None, f"cannot take its lease: {exc}"))
        reports = await asyncio.gather(*tasks.values())
        restored = sum(r.ok for r in reports)
        _log.info("startup restore finished: %d restored, %d skipped or failed", restored, len(reports) - restored)
        return list(reports)

    async def _rehydrate_guild(self, guild_id: int, ghost: Ghost | None = None) -> RestoreReport:
        try:
            state = await self.manager.read_live(guild_id)
        except SonoraError as exc:
            self.tracker.release(guild_id, dirty=False)
            report = RestoreReport(guild_id, RestoreStatus.failed, reason=f"{type(exc).__name__}: {exc}")
            self._dispatch_report(report)
            return report
        if state is None:
            self.tracker.release(guild_id, dirty=False)
            return RestoreReport(guild_id, RestoreStatus.skipped, reason="no live record")
        # A record is only rewritten when something changes: the session was alive until the later of
        # its last write and the previous process's last checkpoint.
        age = time.time() - max(state.created_at, self._previous_heartbeat or 0.0)
        guild = self.bot.get_guild(guild_id)
        if age > self.settings.restore.max_age:
            report = RestoreReport(guild_id, RestoreStatus.skipped, state=state,
                                   reason=f"the session is stale ({age / 60:.0f} min old)")
        elif guild is None:
            report = RestoreReport(guild_id, RestoreStatus.skipped, state=state, reason="the guild is not available")
        else:
            if self._previous_heartbeat is not None:
                state = advance_position(state, self._previous_heartbeat)
            # A ghost that plays another track is replaced by the restore, not adopted.
            adopt = ghost if ghost is not None and adoptable(ghost, state) else None
            report = await self.restore(guild, state, adopt=adopt)
        self.tracker.release(guild_id, dirty=report.ok)
        self._dispatch_report(report)
        return report

    # -- restoring ----------------------------------------------------------------------------------

    async def restore(
        self,
        guild: discord.Guild,
        state: SessionState,
        *,
        parts: Iterable[str] = ALL_PARTS,
        backup: SessionState | None = None,
        adopt: Ghost | None = None,
    ) -> RestoreReport:
        """Restore ``state`` in ``guild`` now (paced; held from checkpoints while it runs)."""
        was_held = self.tracker.is_held(guild.id)  # the startup restore holds it until it is done
        self.tracker.hold(guild.id)
        try:
            self.tracker.session_started(guild.id)
            report = await restore_state(
                guild, state, self.settings.restore, parts=parts, backup=backup,
                player_cls=self.player_cls, pacer=self.pacer, adopt=adopt,
            )
        finally:
            if not was_held:
                self.tracker.release(guild.id, dirty=False)
        if report.ok or report.status is RestoreStatus.rolled_back:
            self.tracker.mark_dirty(guild.id)
        return report

    async def rebuild(self, player: wavelink.Player, reason: str) -> RestoreReport | None:
        """Rebuild a player whose Lavalink side or voice connection was lost, from its own state."""
        guild = player.guild
        if guild is None:
            return None
        state = self.tracker.capture(player)
        _log.warning("guild %s: %s; rebuilding its player", guild.id, reason)
        await self._leave_quietly(player)
        report = await self.restore(guild, state)
        self._dispatch_report(report)
        return report

    async def _leave_quietly(self, player: wavelink.Player) -> None:
        """Leave voice without ending the session: the live record stays, and a restore may follow."""
        guild = player.guild
        if guild is None:
            return
        self._internal_leaves.add(guild.id)
        try:
            async with asyncio.timeout(10):
                await leave_voice(player)
        except (TimeoutError, discord.DiscordException, wavelink.WavelinkException, OSError) as exc:
            _log.warning("leaving voice in guild %s failed (%r); going on", guild.id, exc)

    def _dispatch_report(self, report: RestoreReport) -> None:
        if report.ok:
            self.bot.dispatch("sonora_session_restored", report)
        elif report.status is not RestoreStatus.skipped:
            guild = self.bot.get_guild(report.guild_id)
            self.bot.dispatch("sonora_restore_failed", guild, SonoraError(report.reason or "restore failed"))
        else:
            self.bot.dispatch("sonora_restore_skipped", report)

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        if self._rehydration is None:
            self._maybe_rehydrate()
        elif self._rehydration.done():
            # A second READY means discord.py re-identified (session invalidated): it dropped every
            # voice client, so the players of this process are orphaned. Bring them back.
            self._spawn(self._rejoin_after_reidentify())

    async def _rejoin_after_reidentify(self) -> list[RestoreReport]:
        orphaned = []
        for guild_id in await self.manager.live_guilds():
            guild = self.bot.get_guild(guild_id)
            if guild is not None and guild.voice_client is None and self.owns(guild_id):
                orphaned.append(guild_id)
        if orphaned:
            _log.warning("gateway session was re-identified; rejoining %d guild(s)", len(orphaned))
            for guild_id in orphaned:
                self.tracker.hold(guild_id)
        return await self.rehydrate(orphaned) if orphaned else []

    @commands.Cog.listener()
    async def on_wavelink_node_ready(self, payload: wavelink.NodeReadyEventPayload) -> None:
        self._maybe_rehydrate()
        if self.settings.restore.resume_lavalink_sessions:
            self._spawn(self._keep_lavalink_session(payload.node))
        if payload.resumed:
            self._spawn(self._destroy_ghosts_after_rehydration(payload.node))
        if payload.resumed or not self.settings.restore.on_node_reconnect:
            return
        lost = [p for p in self.tracker.players() if p.node is payload.node and p.current is not None]
        for player in lost:
            self._spawn(self.rebuild(player, "the Lavalink node came back without its players"))

    async def _keep_lavalink_session(self, node: wavelink.Node) -> None:
        """Have Lavalink hold the node's session across a restart, and record its id for the next process."""
        await enable_resuming(node, self.settings.restore.lavalink_resume_timeout)
        sessions = {n.uri: n.session_id for n in wavelink.Pool.nodes.values() if n.session_id}
        try:
            await self.manager.write_lavalink_sessions(self.tracker.owner, sessions)
        except StoreError as exc:
            _log.warning("cannot record the Lavalink session id of node %s: %s", node.identifier, exc)

    async def _destroy_ghosts_after_rehydration(self, node: wavelink.Node) -> int:
        """Once the startup restore has adopted what it could, destroy the node's players nobody controls."""
        await self._rehydrated.wait()
        ghosts = await find_ghosts([node])
        destroyed = [await destroy_ghost(ghost) for ghost in ghosts.values()]
        return sum(destroyed)

    @commands.Cog.listener()
    async def on_wavelink_websocket_closed(self, payload: wavelink.WebsocketClosedEventPayload) -> None:
        player = payload.player
        code = payload.code.value  # wavelink gives a DiscordVoiceCloseType enum
        if player is None or code not in VOICE_LOST_CODES or not self.settings.restore.on_voice_lost:
            return
        self._spawn(self.rebuild(player, f"voice connection lost (code {code})"))
