"""Recovery: bringing players back after a restart, a Lavalink restart, a lost voice connection or a
gateway re-identify. A mixin of :class:`~sonora_cog.cog.SonoraCog` (one concern per module, as jishaku
stacks its features); every restore runs inside the session owner's ``restoring`` phase.
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

from ._typing import AnyBot
from .config import Settings
from .errors import NotReadableHere, RestoreError, RestoreInProgress, SonoraError, StoreError, WrongKeyError
from .lease import LeaseStatus
from .manager import SessionManager
from .meta import SnapshotKind
from .model import SessionState
from .outcomes import RestorePath
from .owner import SessionOwner
from .pacing import ShardPacer, shard_id_of
from .restore import (
    ALL_PARTS,
    RestoreReport,
    RestoreStatus,
    adoptable,
    advance_position,
    leave_voice,
    restore_state,
)
from .resume import Ghost, destroy_ghost, enable_resuming, find_ghosts
from .session import Phase

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from .deployer import DeployController
    from .handover import Handover

__all__ = ("VOICE_LOST_CODES", "RecoveryMixin")

_log = logging.getLogger(__name__)

#: Voice WebSocket close codes that mean "the connection was lost", not "you were removed".
VOICE_LOST_CODES = frozenset({4006, 4009, 4015})
#: Seconds a quiet voice leave (before a rebuild, at shutdown) may take.
LEAVE_TIMEOUT = 10.0


class RecoveryMixin:
    """Startup rehydration, rebuilding lost players, rejoining lost voice connections, restores."""

    bot: AnyBot
    settings: Settings
    manager: SessionManager
    owner: SessionOwner
    deploy: DeployController
    handover: Handover
    pacer: ShardPacer
    player_cls: type[wavelink.Player]
    _rehydration: asyncio.Task[list[RestoreReport]] | None
    _startup_guilds: list[int] | None
    _previous_heartbeat: float | None
    #: What the previous process of these shards left: its Lavalink session per node URI, its lease token.
    _previous_sessions: dict[str, str]
    _previous_lease_owner: str | None
    #: Per configuration problem (a key that is not configured...), how many live records it kept from restoring.
    _unreadable: dict[str, int]
    _waiting: dict[int, str]  # FailoverMixin's: guilds waiting for a node to move to
    _spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]]  # provided by the cog
    #: Count a restore in the metrics and the restore history (``started``: its ``time.monotonic()``).
    _observe_restore: Callable[[RestoreReport, RestorePath, float | None], None]  # provided by the cog

    async def _find_startup_guilds(self) -> None:
        """List the owned guilds with a live record and hold them (``pending``) until they are restored."""
        playing = {p.guild.id for p in self.owner.players() if p.guild is not None}
        records = [g for g in await self.manager.live_guilds() if g not in playing]
        # When the previous process last checkpointed: unchanged tracks played on until then.
        self._previous_heartbeat = await self.manager.read_heartbeat(self.owner.key)
        self._startup_guilds = self.owner.expect_restore(records)
        self._maybe_rehydrate()

    async def _find_startup_guilds_when_store_is_back(self) -> None:
        delay = 1.0
        while self._startup_guilds is None and not self.owner.closing:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
            try:
                await self._find_startup_guilds()
            except StoreError as exc:
                _log.debug("the store is still unavailable: %s", exc)
        if self._startup_guilds is not None:
            _log.info("the store is back: restoring %d guild(s)", len(self._startup_guilds))

    # -- startup rehydration ------------------------------------------------------------------------

    def _maybe_rehydrate(self) -> None:
        if self._rehydration is not None or not self.settings.restore.on_startup or self._startup_guilds is None:
            return
        if not self.bot.is_ready() or not any(
            n.status is wavelink.NodeStatus.CONNECTED for n in wavelink.Pool.nodes.values()
        ):
            return
        self._rehydration = self._spawn(self.rehydrate(self._startup_guilds))

    async def rehydrate(self, guild_ids: Iterable[int] | None = None) -> list[RestoreReport]:
        """Restore the live record of every ``pending`` guild (default: every owned guild with a live record).

        Each guild's lease is taken first: a guild another process holds (the old deployment, still
        shutting down) is waited for up to ``storage.lease_wait`` seconds, then skipped. Guilds of other
        shards are never touched; a guild where a new session started meanwhile is skipped.

        Each shard of the process restores ``restore.concurrency`` guilds at a time, and its voice joins
        are paced on its own gateway connection (:class:`~sonora_cog.pacing.ShardPacer`): the shards of
        an ``AutoShardedBot`` restore side by side and never wait for each other.

        A player that a resumed Lavalink session kept playing for a guild (see :mod:`sonora_cog.resume`)
        is adopted as it is when it plays the recorded track. A ghost that is not adopted is destroyed as
        soon as its guild's outcome is known, or as soon as its lease shows that another process took the
        guild, so two processes never both play it.
        """
        ids = await self.manager.live_guilds() if guild_ids is None else list(guild_ids)
        self.owner.expect_restore(g for g in ids if self.owner.phase(g) is Phase.idle)
        targets = [g for g in ids if self.owner.phase(g) is Phase.pending]
        nodes = list(wavelink.Pool.nodes.values())
        ghosts = await find_ghosts(nodes)
        for guild_id in [g for g in ghosts if g not in targets]:
            await self._drop_ghost(ghosts, guild_id, "no restore is pending for its guild here")
        # The previous process's sessions that this one did not resume, and their players.
        others = {n.uri: sid for n in nodes if (sid := self._previous_sessions.get(n.uri)) and sid != n.session_id}
        strays = await find_ghosts(nodes, sessions=others) if others else {}
        if not targets:
            _log.info("startup restore finished: nothing to restore")
            return []
        if ghosts:
            _log.info("the resumed Lavalink session still plays in %d guild(s)", len(ghosts))
        _log.info("restoring %d guild(s) from their live records", len(targets))
        # restore.concurrency per shard: a shard that waits for its join budget holds only its own slots,
        # so the guilds of the other shards (other gateway connections, other budgets) go on meanwhile.
        slots: dict[int, asyncio.Semaphore] = {}
        done = 0

        async def one(guild_id: int, lease: LeaseStatus | None, error: str | None = None) -> RestoreReport:
            nonlocal done
            if lease is not None and lease.acquired:
                shard = shard_id_of(guild_id, self.bot.shard_count)
                async with slots.setdefault(shard, asyncio.Semaphore(self.settings.restore.concurrency)):
                    try:
                        path = RestorePath.handover if guild_id in asked else RestorePath.startup
                        report = await self._restore_pending(
                            guild_id, ghosts.get(guild_id), strays.pop(guild_id, None), path
                        )
                    except Exception as exc:  # one guild's surprise never stops the others' restore
                        _log.exception("restore of guild %s failed unexpectedly", guild_id)
                        report = RestoreReport(guild_id, RestoreStatus.failed, reason=f"{type(exc).__name__}: {exc}")
                request = self.handover.request_for(guild_id) if guild_id in asked else None
                if request is not None:
                    await self.handover.report(request, report)
            else:
                reason = error or f"another process owns this guild ({lease.holder if lease else '?'})"
                self.owner.lose(guild_id, reason)
                report = RestoreReport(guild_id, RestoreStatus.skipped, reason=reason)
                self._dispatch_report(report, RestorePath.startup)
            if not report.adopted:
                await self._drop_ghost(ghosts, guild_id, report.reason or "it was restored")
            done += 1
            how = "adopted from the resumed Lavalink session" if report.adopted else report.reason
            _log.info(
                "restore %d/%d: guild %s %s%s",
                done,
                len(targets),
                guild_id,
                report.status.value,
                f" ({how})" if how else "",
            )
            return report

        def held_elsewhere(status: LeaseStatus) -> None:
            # The process whose Lavalink session this one resumed still holds the lease until it expires;
            # any other holder is alive and restores the guild itself: its ghost must go now.
            if status.guild_id in ghosts and status.holder != self._previous_lease_owner:
                self._spawn(self._drop_ghost(ghosts, status.guild_id, f"{status.holder} owns the guild"))

        tasks: dict[int, asyncio.Task[RestoreReport]] = {}
        asked: set[int] = set()
        try:
            held: dict[int, LeaseStatus] = {}
            async for lease in self.owner.leases.acquire_many(targets, on_held=held_elsewhere):
                if lease.acquired:
                    tasks[lease.guild_id] = self._spawn(one(lease.guild_id, lease))
                else:
                    held[lease.guild_id] = lease
            # Guilds another process holds: ask an older one to hand them over, or wait for their leases.
            asked, wait = await self.handover.ask(held)

            def still_held(status: LeaseStatus) -> None:
                held_elsewhere(status)
                self.handover.observe(status)

            async for lease in self.owner.leases.acquire_many(
                list(held), wait=wait, on_held=still_held, give_up=self.handover.kept
            ):
                tasks[lease.guild_id] = self._spawn(one(lease.guild_id, lease))
        except StoreError as exc:
            for guild_id in targets:
                if guild_id not in tasks:
                    tasks[guild_id] = self._spawn(one(guild_id, None, f"cannot take its lease: {exc}"))
        reports = await asyncio.gather(*tasks.values())
        restored = sum(r.ok for r in reports)
        _log.info("startup restore finished: %d restored, %d skipped or failed", restored, len(reports) - restored)
        for problem, count in sorted(self._unreadable.items()):
            _log.warning(
                "%d live record(s) are %s; they are kept and restored by a start that can read them", count, problem
            )
        self._unreadable.clear()
        await self.deploy.record_startup(reports)
        return list(reports)

    async def _drop_ghost(self, ghosts: dict[int, Ghost], guild_id: int, reason: str) -> None:
        ghost = ghosts.pop(guild_id, None)
        if ghost is not None:
            _log.debug("guild %s: destroying the player the resumed Lavalink session kept (%s)", guild_id, reason)
            await destroy_ghost(ghost)

    async def _restore_pending(
        self, guild_id: int, ghost: Ghost | None, stray: Ghost | None, path: RestorePath = RestorePath.startup
    ) -> RestoreReport:
        """Restore one guild from its live record, if it is still ``pending`` here."""
        phase = self.owner.phase(guild_id)
        if phase is not Phase.pending:
            return RestoreReport(guild_id, RestoreStatus.skipped, reason=f"its session is {phase.value} here now")
        return await self._restore_from_record(guild_id, "startup restore", ghost=ghost, stray=stray, path=path)

    async def _restore_from_record(
        self,
        guild_id: int,
        why: str,
        *,
        ghost: Ghost | None = None,
        stray: Ghost | None = None,
        path: RestorePath = RestorePath.startup,
    ) -> RestoreReport:
        """Restore one guild from its live record, inside its ``restoring`` phase.

        ``ghost`` is its player on a Lavalink session this process resumed (adopted if it plays the
        recorded track); ``stray`` its player on the previous process's session that another process
        resumed (destroyed before this process plays the guild).
        """
        started = time.monotonic()
        try:
            async with self.owner.restoring(guild_id, why):
                report = await self._restore_record_held(guild_id, ghost, stray)
        except RestoreError as exc:
            report = RestoreReport(guild_id, RestoreStatus.skipped, reason=str(exc))
        self._dispatch_report(report, path, started)
        return report

    async def _restore_record_held(self, guild_id: int, ghost: Ghost | None, stray: Ghost | None) -> RestoreReport:
        try:
            state = await self.manager.read_live(guild_id)
        except NotReadableHere as exc:  # a configuration problem: the record stays, a later start reads it
            problem = _configuration_problem(exc)
            self._unreadable[problem] = self._unreadable.get(problem, 0) + 1
            return RestoreReport(guild_id, RestoreStatus.skipped, reason=f"its live record is {problem}")
        except SonoraError as exc:
            return RestoreReport(guild_id, RestoreStatus.failed, reason=f"{type(exc).__name__}: {exc}")
        if state is None:
            return RestoreReport(guild_id, RestoreStatus.skipped, reason="no live record")
        # A record is only rewritten when something changes: the session was alive until the later of
        # its last write and the previous process's last checkpoint.
        age = time.time() - max(state.created_at, self._previous_heartbeat or 0.0)
        guild = self.bot.get_guild(guild_id)
        if age > self.settings.restore.max_age:
            return RestoreReport(
                guild_id, RestoreStatus.skipped, state=state, reason=f"the session is stale ({age / 60:.0f} min old)"
            )
        if guild is None:
            return RestoreReport(guild_id, RestoreStatus.skipped, state=state, reason="the guild is not available")
        if self._previous_heartbeat is not None:
            state = advance_position(state, self._previous_heartbeat)
        # A ghost that plays another track is replaced by the restore, not adopted.
        adopt = ghost if ghost is not None and adoptable(ghost, state) else None
        for other in (stray, None if adopt else ghost):  # never two players for one guild
            if other is not None:
                await destroy_ghost(other)
        return await self._restore_held(guild, state, ALL_PARTS, None, adopt)

    # -- restoring ----------------------------------------------------------------------------------

    async def restore(
        self,
        guild: discord.Guild,
        state: SessionState,
        *,
        parts: Iterable[str] = ALL_PARTS,
        backup: SessionState | None = None,
        pre_restore_label: str | None = None,
        path: RestorePath = RestorePath.command,
    ) -> RestoreReport:
        """Restore ``state`` in ``guild`` now (paced; the guild is ``restoring`` while it runs).

        Parameters
        ----------
        guild, state:
            Where and what.
        parts:
            Any of ``player``, ``queue``, ``filters``, ``autoplay``.
        backup:
            What to roll back to if the restore cannot be verified.
        pre_restore_label:
            When given and something plays, it is saved first as a ``pre-restore`` snapshot with this
            label and used as the backup (``report.backup`` is its metadata).
        path:
            How the restore is counted in the metrics and the restore history.

        Raises
        ------
        RestoreInProgress
            A restore already runs in this guild (checked before anything else happens).
        GuildNotOwned
            Another process owns the guild.
        RestoreError
            The bot is shutting down.
        """
        started = time.monotonic()
        async with self.owner.restoring(guild.id, "a restore was asked for"):
            meta = None
            if pre_restore_label is not None:
                current = self.current_state(guild, SnapshotKind.pre_restore)
                if current is not None and (current.queue.current is not None or current.queue.upcoming):
                    meta = await self.manager.save_snapshot(current, pre_restore_label)
                    backup = current
            report = await self._restore_held(guild, state, parts, backup, None)
            report.backup = meta
        self._observe_restore(report, path, started)
        return report

    async def _restore_held(
        self,
        guild: discord.Guild,
        state: SessionState,
        parts: Iterable[str],
        backup: SessionState | None,
        adopt: Ghost | None,
    ) -> RestoreReport:
        return await restore_state(
            guild,
            state,
            self.settings.restore,
            parts=parts,
            backup=backup,
            player_cls=self.player_cls,
            pacer=self.pacer,
            adopt=adopt,
        )

    def current_state(self, guild: discord.Guild, kind: SnapshotKind = SnapshotKind.manual) -> SessionState | None:
        """Capture the guild's player now, or ``None`` when the bot is not playing there."""
        player = self.owner.player(guild.id)
        return self.owner.capture(player, kind) if player is not None else None

    async def rebuild(
        self, player: wavelink.Player, reason: str, path: RestorePath = RestorePath.node_reconnect
    ) -> RestoreReport | None:
        """Rebuild a player whose Lavalink side or voice connection was lost, from its own state."""
        guild = player.guild
        if guild is None:
            return None
        started = time.monotonic()
        try:
            async with self.owner.restoring(guild.id, reason):
                state = self.owner.capture(player)
                _log.warning("guild %s: %s; rebuilding its player", guild.id, reason)
                await self._leave_quietly(player)
                report = await self._restore_held(guild, state, ALL_PARTS, None, None)
        except RestoreInProgress:
            _log.info("guild %s: %s, but a restore already runs there", guild.id, reason)
            return None
        except RestoreError as exc:
            _log.info("guild %s: %s; not rebuilt (%s)", guild.id, reason, exc)
            return None
        self._dispatch_report(report, path, started)
        return report

    async def _leave_quietly(self, player: wavelink.Player) -> None:
        """Leave voice without ending the session (the guild is ``restoring`` or ``closed``)."""
        guild = player.guild
        if guild is None:
            return
        try:
            async with asyncio.timeout(LEAVE_TIMEOUT):
                await leave_voice(player)
        except (TimeoutError, discord.DiscordException, wavelink.WavelinkException, OSError) as exc:
            _log.warning("leaving voice in guild %s failed (%r); going on", guild.id, exc)

    def _dispatch_report(
        self, report: RestoreReport, path: RestorePath | None = None, started: float | None = None
    ) -> None:
        """Tell the bot how a restore went; with ``path``, count it too (``restore()`` counts its own)."""
        if path is not None:
            self._observe_restore(report, path, started)
        if report.ok:
            self.bot.dispatch("sonora_session_restored", report)
        elif report.status is not RestoreStatus.skipped:
            guild = self.bot.get_guild(report.guild_id)
            self.bot.dispatch("sonora_restore_failed", guild, RestoreError(report.reason or "restore failed"))
        else:
            self.bot.dispatch("sonora_restore_skipped", report)

    # -- listeners ----------------------------------------------------------------------------------

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
            if guild is not None and guild.voice_client is None and self.owner.phase(guild_id) is Phase.live:
                orphaned.append(guild_id)
        if not orphaned:
            return []
        _log.warning("gateway session was re-identified; rejoining %d guild(s)", len(orphaned))
        return list(
            await asyncio.gather(
                *(
                    self._restore_from_record(g, "rejoining after a gateway re-identify", path=RestorePath.reidentify)
                    for g in orphaned
                )
            )
        )

    @commands.Cog.listener()
    async def on_wavelink_node_ready(self, payload: wavelink.NodeReadyEventPayload) -> None:
        self._maybe_rehydrate()
        if self.settings.restore.resume_lavalink_sessions:
            self._spawn(self._keep_lavalink_session(payload.node))
        if payload.resumed:
            self._spawn(self._destroy_unclaimed_ghosts(payload.node))
        if payload.resumed or not self.settings.restore.on_node_reconnect:
            return
        # Every player of the node, idle ones too: Lavalink lost their voice connections with them.
        # (Players that wait for a node to move to are moved by the failover.)
        lost = [
            p
            for p in self.owner.players()
            if p.node is payload.node and p.guild is not None and p.guild.id not in self._waiting
        ]
        for player in lost:
            self._spawn(self.rebuild(player, "the Lavalink node came back without its players"))

    async def _keep_lavalink_session(self, node: wavelink.Node) -> None:
        """Have Lavalink hold the node's session across a restart, and record its id for the next process."""
        await enable_resuming(node, self.settings.restore.lavalink_resume_timeout)
        sessions = {n.uri: n.session_id for n in wavelink.Pool.nodes.values() if n.session_id}
        try:
            await self.manager.write_lavalink_sessions(self.owner.key, sessions, lease_owner=self.owner.leases.owner)
        except StoreError as exc:
            _log.warning("cannot record the Lavalink session id of node %s: %s", node.identifier, exc)

    async def _destroy_unclaimed_ghosts(self, node: wavelink.Node) -> int:
        """Destroy the resumed node's players of guilds with no restore pending or running here.

        The others are decided by their guild's restore (adopted, or destroyed with its outcome).
        """
        ghosts = await find_ghosts([node])
        unclaimed = [g for g in ghosts.values() if not self.owner.session(g.guild_id).held]
        return sum([await destroy_ghost(ghost) for ghost in unclaimed])

    @commands.Cog.listener()
    async def on_wavelink_websocket_closed(self, payload: wavelink.WebsocketClosedEventPayload) -> None:
        player = payload.player
        code = payload.code.value  # wavelink gives a DiscordVoiceCloseType enum
        if player is None or code not in VOICE_LOST_CODES or not self.settings.restore.on_voice_lost:
            return
        self._spawn(self.rebuild(player, f"voice connection lost (code {code})", RestorePath.voice_lost))


def _configuration_problem(exc: NotReadableHere) -> str:
    """What keeps this process from reading a record, said so that records with the same problem group."""
    if isinstance(exc, WrongKeyError):
        if exc.key_id:
            return f"encrypted with a key that is not configured (key id {exc.key_id})"
        return "encrypted, and no key is configured"
    return f"from a newer sonora_cog release ({exc})"
