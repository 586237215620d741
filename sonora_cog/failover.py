"""Lavalink node failover and drain: a node's players go on on the other nodes.

A mixin of :class:`~sonora_cog.cog.SonoraCog`, next to :class:`~sonora_cog.recovery.RecoveryMixin`.

**Failover.** When a node's WebSocket drops, wavelink keeps trying to reconnect; the players of the node
go silent and their playback clocks stop (:meth:`SessionOwner.stall <sonora_cog.owner.SessionOwner.stall>`),
so the position written and restored is where listeners stopped hearing. If the node is still not back
after ``failover.grace_seconds``, or as soon as wavelink closes it (``Node.close()``, retries exhausted),
each of its players is moved to the best other node (:class:`~sonora_cog.nodes.NodeBoard`). A player the
bot still has (it stayed in voice) moves with ``wavelink.Player.switch_node``: same voice connection, same
queue, the track started again at the stalled position, paused if it was, filters and volume kept. A
guild with no player left is restored from its live record (the restore engine: it rejoins voice). The
lost node is asked once, for at most 2 s, to delete its player, and the player is taken off wavelink's
list of that node, so nothing waits for a host that never answers.

**Confirmation, no double players.** ``switch_node`` removes the player from the node it leaves before it
creates it on the target, and each move is confirmed by reading the player back from the target (track,
pause state, voice connected). A target that fails or cannot confirm has its player deleted and the next
best node is tried; when no node takes it and the node it left still works (a drain), it goes back there.
A failed try leaves the player holding its track at the position it had. The probe job destroys, on every
node that answers, the players of guilds that play elsewhere.

**Drain.** :meth:`FailoverMixin.drain_node` marks a node as taking no new players and moves its players in
paced batches with the same engine; :meth:`FailoverMixin.undrain_node` opens it again.

Moves run at most ``failover.concurrency`` at a time, and at most ``failover.per_node_concurrency`` onto
one node. Each gives a :class:`~sonora_cog.restore.RestoreReport` (path ``failover`` or ``drain``) and the
``on_sonora_session_restored`` event. Guilds with no node to go to wait, and move as soon as a node is
ready. A node that comes back does not take its players back: it takes new ones.

.. versionadded:: 0.4
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import discord
import wavelink
from discord.ext import commands

from ._typing import AnyBot
from .config import Settings
from .errors import NodeNotFound, RestoreError
from .outcomes import RestorePath
from .owner import SessionOwner
from .player import SonoraPlayer, delete_lavalink_player, forget_lavalink_player
from .restore import RestoreReport, RestoreStatus

if TYPE_CHECKING:
    from .resume import Ghost

__all__ = ("DrainReport", "FailoverMixin", "node_named")

_log = logging.getLogger(__name__)

#: Seconds one switch (leave a node, join another, play, confirm) may take before it counts as failed.
MOVE_TIMEOUT = 6.0
#: Seconds a node that wavelink closed is given before its players move: ``wavelink.Pool.close()`` closes
#: the nodes one after another, and a bot that closes them all at shutdown has nowhere to move them to.
CLOSED_SETTLE = 1.0
#: Seconds a target may take to connect a moved player to Discord's voice server, and between two looks.
CONFIRM_WAIT = 3.0
CONFIRM_POLL = 0.2
#: Seconds the probe's look for stray players on one node may take; seconds between two such looks;
#: seconds during which every probe looks, after a move to the node timed out (its requests may land late).
SWEEP_TIMEOUT = 5.0
SWEEP_INTERVAL = 60.0
SWEEP_WATCH = 120.0
#: Seconds between two tries of the players that found no node to move to.
RETRY_INTERVAL = 5.0


@dataclass(slots=True)
class DrainReport:
    """What :meth:`FailoverMixin.drain_node` did.

    Attributes
    ----------
    node:
        The drained node's identifier.
    reports:
        One :class:`~sonora_cog.restore.RestoreReport` per player it tried to move, in that order.
    left:
        Guilds whose player is still on the drained node when the drain ends (no other node took it, or
        the node was undrained meanwhile).
    """

    node: str
    reports: list[RestoreReport] = field(default_factory=list)
    left: list[int] = field(default_factory=list)

    @property
    def moved(self) -> int:
        """Players this drain moved to another node."""
        return sum(r.ok for r in self.reports)


class FailoverMixin:
    """Moving players off a node that died or is drained."""

    bot: AnyBot
    settings: Settings
    owner: SessionOwner
    _spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]]  # provided by the cog
    _dispatch_report: Callable[..., None]  # provided by RecoveryMixin
    _restore_record_held: Callable[[int, Ghost | None, Ghost | None], Coroutine[Any, Any, RestoreReport]]
    _destroy_unclaimed_ghosts: Callable[[wavelink.Node], Coroutine[Any, Any, int]]  # RecoveryMixin's
    #: Per node identifier: the task that fails the node over once its grace period is over.
    _node_watch: dict[str, asyncio.Task[None]]
    #: Guilds whose node died with no other node to go to, and that node's identifier.
    _waiting: dict[int, str]
    _move_slots: asyncio.Semaphore
    _node_slots: dict[str, asyncio.Semaphore]
    _retrying: asyncio.Task[None] | None
    #: One lock per node being drained: two drains of a node run one after the other.
    _drains: dict[str, asyncio.Lock]
    #: What a waiting guild played before its first try (wavelink forgets the track of a failed try).
    _playbacks: dict[int, _Playback]
    #: Per node: when the probe last looked for stray players, and until when it looks at every probe.
    _swept_at: dict[str, float]
    _sweep_watch: dict[str, float]

    def _init_failover(self) -> None:
        self._node_watch = {}
        self._waiting = {}
        self._move_slots = asyncio.Semaphore(self.settings.failover.concurrency)
        self._node_slots = {}
        self._retrying = None
        self._drains = {}
        self._playbacks = {}
        self._swept_at = {}
        self._sweep_watch = {}

    # -- listeners ----------------------------------------------------------------------------------

    @commands.Cog.listener("on_wavelink_node_disconnected")
    async def _on_node_disconnected(self, payload: wavelink.NodeDisconnectedEventPayload) -> None:
        self._node_lost(payload.node, "is disconnected")

    def _node_lost(self, node: wavelink.Node, how: str) -> None:
        """The node stopped working: its players' clocks stop, and they move if it is not back in time."""
        self.owner.nodes.forget(node.identifier)
        for player in self._players_on(node):
            assert player.guild is not None
            self.owner.stall(player.guild.id, player.position, paused=player.paused)
        if not self.settings.failover.enabled or node.identifier in self._node_watch:
            return
        grace = self.settings.failover.grace_seconds
        _log.warning(
            "Lavalink node %s %s; its players move to another node if it is not back in %gs",
            node.identifier,
            how,
            grace,
        )
        self._watch(node, grace, f"Lavalink node {node.identifier} was unreachable for {grace:g}s")

    async def probe_nodes(self) -> None:
        """The probe job: ask every connected node for its stats; one that stops answering is lost."""
        try:
            await self._probe_each()
        except asyncio.CancelledError:
            if not self.owner.closing:
                raise
            _log.debug("the node probe was cancelled by the shutdown")

    async def _probe_each(self) -> None:
        for node in list(wavelink.Pool.nodes.values()):
            if node.status is not wavelink.NodeStatus.CONNECTED:
                continue
            was_alive = self.owner.nodes.alive(node)
            answers = await self.owner.nodes.probe(node)
            if answers and self._sweep_due(node, was_alive):
                await self._sweep(node)
            if was_alive and not answers:
                self._node_lost(node, "does not answer (its WebSocket may look connected)")
            elif answers and not was_alive:
                _log.info("Lavalink node %s answers again", node.identifier)
                watch = self._node_watch.pop(node.identifier, None)
                if watch is not None:
                    watch.cancel()

    def _sweep_due(self, node: wavelink.Node, was_alive: bool) -> bool:
        """Whether the probe looks for stray players on ``node`` now: when it answers again, at every probe
        for :data:`SWEEP_WATCH` seconds after a move to it timed out, and otherwise every
        :data:`SWEEP_INTERVAL` seconds (a node's player list is big on a big bot)."""
        now = time.monotonic()
        identifier = node.identifier
        if was_alive and now < self._sweep_watch.get(identifier, 0.0):
            due = True
        else:
            due = not was_alive or now - self._swept_at.get(identifier, 0.0) >= SWEEP_INTERVAL
        if due:
            self._swept_at[identifier] = now
        return due

    async def _sweep(self, node: wavelink.Node) -> None:
        """Destroy what the node plays for a guild whose player is elsewhere, or nowhere, here.

        A request to a hung node that a move gave up on may still land there later and create a player;
        the probe finds it (one ``GET .../players`` of the node; see :meth:`_sweep_due` for when). Guilds
        being restored or moved are left alone.
        """
        try:
            async with asyncio.timeout(SWEEP_TIMEOUT):
                destroyed = await self._destroy_unclaimed_ghosts(node)
        except TimeoutError:
            return
        if destroyed:
            _log.warning(
                "Lavalink node %s held %d player(s) of guilds that play elsewhere; destroyed",
                node.identifier,
                destroyed,
            )

    @commands.Cog.listener("on_wavelink_node_closed")
    async def _on_node_closed(self, node: wavelink.Node, _disconnected: list[wavelink.Player]) -> None:
        if not self.settings.failover.enabled or self.owner.closing:
            return
        watch = self._node_watch.pop(node.identifier, None)
        if watch is not None:
            watch.cancel()
        self._watch(node, CLOSED_SETTLE, f"Lavalink node {node.identifier} was closed")

    @commands.Cog.listener("on_wavelink_node_ready")
    async def _on_node_back(self, payload: wavelink.NodeReadyEventPayload) -> None:
        node = payload.node
        self.owner.nodes.reachable(node.identifier)
        watch = self._node_watch.pop(node.identifier, None)
        if watch is not None:
            watch.cancel()
            _log.info("Lavalink node %s is back within its grace period; its players stay", node.identifier)
        # Guilds that waited for a node move now. A resumed node kept its players: those on it stay.
        if payload.resumed:
            for player in self._players_on(node):
                assert player.guild is not None
                self._waiting.pop(player.guild.id, None)
        waiting = list(self._waiting)
        if waiting and self.settings.failover.enabled:
            _log.info("Lavalink node %s is ready: moving %d waiting player(s) to it", node.identifier, len(waiting))
            self._spawn(self._move_all(waiting, "a Lavalink node is ready again", RestorePath.failover))

    def _watch(self, node: wavelink.Node, delay: float, reason: str) -> None:
        async def fail_over_later() -> None:
            await asyncio.sleep(delay)
            if self._node_watch.get(node.identifier) is not asyncio.current_task():
                return
            del self._node_watch[node.identifier]
            if self.owner.nodes.alive(node):
                return
            await self.fail_over(node, reason)

        self._node_watch[node.identifier] = self._spawn(fail_over_later())

    # -- public API -----------------------------------------------------------------------------------

    async def fail_over(self, node: wavelink.Node, reason: str | None = None) -> list[RestoreReport]:
        """Move every player of ``node`` to the other nodes now (the node is treated as dead).

        Returns one report per player moved (guilds with nowhere to go wait and have none yet).
        """
        guilds = [p.guild.id for p in self._players_on(node) if p.guild is not None]
        if not guilds:
            return []
        why = reason or f"Lavalink node {node.identifier} was given up"
        _log.warning("%s: moving its %d player(s) to other nodes", why, len(guilds))
        return await self._move_all(guilds, why, RestorePath.failover)

    async def drain_node(
        self, identifier: str, *, batch_size: int | None = None, pause: float | None = None
    ) -> DrainReport:
        """Move every player off the node ``identifier`` and give it no new ones (until :meth:`undrain_node`).

        Players move ``batch_size`` at a time (``failover.drain_batch_size``), ``pause`` seconds apart
        (``failover.drain_pause``), each with at most one re-buffer; a player that no other node takes
        stays where it is and is listed in :attr:`DrainReport.left`.

        Raises
        ------
        NodeNotFound
            ``wavelink.Pool`` has no node with this identifier.
        """
        node = node_named(identifier)
        settings = self.settings.failover
        size = batch_size or settings.drain_batch_size
        gap = settings.drain_pause if pause is None else pause
        if self.owner.nodes.drain(identifier):
            _log.info("Lavalink node %s is drained: it takes no new players", identifier)
        report = DrainReport(identifier)
        async with self._drains.setdefault(identifier, asyncio.Lock()):  # a second drain waits for the first
            tried: set[int] = set()
            total = len(self._players_on(node))
            while batch := [g for g in self._guilds_on(node) if g not in tried][:size]:
                if tried:
                    await asyncio.sleep(gap)
                if identifier not in self.owner.nodes.drained:
                    _log.info("Lavalink node %s was undrained; the drain stops", identifier)
                    break
                batch = [g for g in batch if g in self._guilds_on(node)]  # a failover may have moved some
                tried.update(batch)
                reason = f"Lavalink node {identifier} is drained"
                report.reports += await self._move_all(batch, reason, RestorePath.drain)
                _log.info("drain of %s: %d/%d player(s) moved", identifier, report.moved, total)
            report.left = self._guilds_on(node)
        if report.left and identifier in self.owner.nodes.drained:
            _log.warning(
                "drain of %s: %d player(s) could not move and play there still (they move as soon as "
                "another node takes them): %s",
                identifier,
                len(report.left),
                ", ".join(map(str, report.left)),
            )
            for guild_id in report.left:
                self._wait_for_node(guild_id, identifier)
        return report

    def undrain_node(self, identifier: str) -> bool:
        """Let the node take new players again; return whether it was drained. Players do not move back."""
        if self.owner.nodes.undrain(identifier):
            _log.info("Lavalink node %s takes new players again", identifier)
            for guild_id, source in list(self._waiting.items()):  # the players its drain left stay there
                player = self.owner.player(guild_id)
                if source == identifier and player is not None and self.owner.nodes.alive(player.node):
                    del self._waiting[guild_id]
            return True
        return False

    # -- moving ---------------------------------------------------------------------------------------

    def _players_on(self, node: wavelink.Node) -> list[wavelink.Player]:
        return [p for p in self.owner.players() if p.node.identifier == node.identifier]

    def _guilds_on(self, node: wavelink.Node) -> list[int]:
        return [p.guild.id for p in self._players_on(node) if p.guild is not None]

    async def _move_all(self, guilds: list[int], reason: str, path: RestorePath) -> list[RestoreReport]:
        reports = await asyncio.gather(*(self._move_guild(g, reason, path) for g in guilds))
        done = [r for r in reports if r is not None]
        moved = sum(r.ok for r in done)
        if done:
            _log.info("%s: %d of %d player(s) moved", reason, moved, len(done))
        return done

    async def _move_guild(self, guild_id: int, reason: str, path: RestorePath) -> RestoreReport | None:
        """Move one guild's player (``None``: it waits for a node, or has nothing to move)."""
        async with self._move_slots:
            started = time.monotonic()
            source = self._source_of(guild_id)
            if source is not None and not self.owner.nodes.available(exclude=[source.identifier]):
                early = self._nowhere_to_go(guild_id, source)  # nothing to try: the guild is not held for it
                if early is not None:
                    self._dispatch_report(early, path, started)
                return early
            try:
                async with self.owner.restoring(guild_id, reason):
                    report = await self._move_held(guild_id, source)
            except RestoreError as exc:
                report = RestoreReport(guild_id, RestoreStatus.skipped, reason=str(exc))
            if report is None:
                return None
            if report.ok or report.status is RestoreStatus.rolled_back:  # it plays somewhere: no more waiting
                self._waiting.pop(guild_id, None)
                self._playbacks.pop(guild_id, None)
            self._dispatch_report(report, path, started)
            return report

    def _source_of(self, guild_id: int) -> wavelink.Node | None:
        player = self.owner.player(guild_id)
        return player.node if player is not None else None

    async def _move_held(self, guild_id: int, source: wavelink.Node | None) -> RestoreReport | None:
        player = self.owner.player(guild_id)
        if player is None:  # nothing left in voice: the restore engine rejoins from the live record
            if not self.owner.nodes.available():
                self._wait_for_node(guild_id, source.identifier if source is not None else "")
                return None
            return await self._restore_record_held(guild_id, None, None)
        assert source is not None
        playback = self._playbacks.pop(guild_id, None) or _Playback.of(player)
        tried = {source.identifier}
        while (target := await self.owner.nodes.pick(exclude=tried)) is not None:
            tried.add(target.identifier)
            problem = await self._switch(player, target, playback)
            if problem is None:
                return _report(player, target)
            _log.warning("guild %s: moving to Lavalink node %s failed (%s)", guild_id, target.identifier, problem)
            playback.hold(player, self.owner)  # nothing plays: the track stands where it was
            if not player.connected:  # wavelink gave the voice connection up: rejoin from the live record
                return await self._restore_record_held(guild_id, None, None)
        if self.owner.nodes.alive(source) and player.node is not source:
            problem = await self._switch(player, source, playback)
            report = _report(player, source)
            if problem is None:
                report.status = RestoreStatus.rolled_back
                report.reason = "no other Lavalink node took the player; it stays where it was"
                return report
            # Nothing plays it now: it keeps its track and waits, like a guild whose node died.
            playback.hold(player, self.owner)
            self._playbacks[guild_id] = playback
            self._wait_for_node(guild_id, source.identifier)
            report.status = RestoreStatus.failed
            report.reason = f"no other Lavalink node took the player, and going back failed ({problem}); it waits"
            return report
        if self.owner.nodes.alive(source):
            return self._nowhere_to_go(guild_id, source)
        if player.node is not source:
            # wavelink points the player at the last node it tried; it plays nowhere, and waits as a
            # player of the node it lost, so that the next try may go to any other node again.
            player._node = source
        self._playbacks[guild_id] = playback
        self._wait_for_node(guild_id, source.identifier)
        return None

    def _nowhere_to_go(self, guild_id: int, source: wavelink.Node) -> RestoreReport | None:
        """No other node takes players: a player on a working node stays there (``skipped``); one on a
        lost node waits (``None``)."""
        if self.owner.nodes.alive(source):
            return RestoreReport(
                guild_id, RestoreStatus.skipped, reason="no other Lavalink node takes players; it stays where it was"
            )
        self._wait_for_node(guild_id, source.identifier)
        return None

    def _wait_for_node(self, guild_id: int, source: str) -> None:
        """The guild found no node: it moves when a node is ready, or at the next retry."""
        if guild_id not in self._waiting:
            _log.warning(
                "guild %s: no other Lavalink node takes its player now; it moves as soon as one does", guild_id
            )
        self._waiting[guild_id] = source
        if self._retrying is None or self._retrying.done():
            self._retrying = self._spawn(self._retry_waiting())

    async def _retry_waiting(self) -> None:
        while self._waiting and not self.owner.closing:
            await asyncio.sleep(RETRY_INTERVAL)
            if self._waiting and self.owner.nodes.available():
                await self._move_all(
                    list(self._waiting), "moving players that found no node before", RestorePath.failover
                )

    async def _switch(self, player: wavelink.Player, target: wavelink.Node, playback: _Playback) -> str | None:
        """Move ``player`` to ``target`` and confirm it there; return the problem, or ``None``."""
        guild = player.guild
        assert guild is not None
        source = player.node
        if not self.owner.nodes.alive(source):
            # wavelink's own DELETE would wait as long as a dead host takes to fail. Lavalink may still
            # play the player (a node that only lost its WebSocket keeps a resumable session playing):
            # it is asked once, bounded, and the player is taken off wavelink's list of the node.
            await delete_lavalink_player(source, guild.id)
        slots = self._node_slots.setdefault(
            target.identifier, asyncio.Semaphore(self.settings.failover.per_node_concurrency)
        )
        # A SonoraPlayer holds the bot's own calls until the move is done; a plain one cannot.
        holding = player.moving() if isinstance(player, SonoraPlayer) else contextlib.nullcontext()
        async with slots, holding:
            if not self.owner.nodes.alive(target):  # lost while this move waited for its turn
                return "the node was lost meanwhile"
            try:
                async with asyncio.timeout(MOVE_TIMEOUT):
                    await player.switch_node(target)
                    await playback.keep(player)
                    problem = await _confirm(player, target, playback)
            except TimeoutError:
                problem = f"no answer within {MOVE_TIMEOUT:g}s"
                self.owner.nodes.unreachable(target.identifier)  # the other moves do not wait for it too
                self._sweep_watch[target.identifier] = time.monotonic() + SWEEP_WATCH  # what lands late
            except (
                RuntimeError,
                discord.DiscordException,
                wavelink.WavelinkException,
                aiohttp.ClientError,
                OSError,
            ) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if problem is not None:
                await self._delete_player(target, guild.id)
            elif source is not target:
                await self._delete_player(source, guild.id)  # whatever a call in between left on the node it left
        return problem

    async def _delete_player(self, node: wavelink.Node, guild_id: int) -> None:
        """Delete the guild's player on ``node`` if it works (a failed move leaves nothing playing there);
        on a node that does not, only forget it (the probe destroys it once the node answers)."""
        if self.owner.nodes.alive(node):
            await delete_lavalink_player(node, guild_id)
        else:
            forget_lavalink_player(node, guild_id)


def _report(player: wavelink.Player, node: wavelink.Node) -> RestoreReport:
    guild = player.guild
    assert guild is not None
    current = player.current
    return RestoreReport(
        guild.id,
        RestoreStatus.restored,
        track=current.title if current else None,
        position=player.position if current else None,
        queue_length=len(player.queue),
        volume=player.volume,
        player=player,
        node=node.identifier,
    )


@dataclass(slots=True)
class _Playback:
    """What a player played before its move, kept apart from the player: wavelink forgets the current
    track when a node refuses to play it, and adds it to the history again at each ``switch_node``."""

    track: wavelink.Playable | None
    position: int
    paused: bool
    history: int

    @classmethod
    def of(cls, player: wavelink.Player) -> _Playback:
        history = player.queue.history
        return cls(player.current, player.position, player.paused, len(history) if history is not None else 0)

    def hold(self, player: wavelink.Player, owner: SessionOwner) -> None:
        """After a failed try: the player holds its track again (what the live record keeps), and its
        clock stands at the position it had before the try, however far the failed node played it."""
        if self.track is not None and player.current is None:
            player._current = self.track  # wavelink has no public way to put it back
        if player.guild is not None:
            owner.stall(player.guild.id, self.position, paused=self.paused, force=True)

    async def keep(self, player: wavelink.Player) -> None:
        """After a ``switch_node``: play the track again if a failed node made wavelink forget it, and
        take back the history entry ``switch_node`` added."""
        if self.track is not None and player.current is None:
            await player.play(
                self.track,
                replace=True,
                start=self.position,
                volume=player.volume,
                paused=self.paused,
                add_history=False,
            )
        history = player.queue.history
        while (
            history is not None
            and len(history) > self.history
            and self.track is not None
            and history[-1].identifier == self.track.identifier
        ):
            history.delete(len(history) - 1)


async def _confirm(player: wavelink.Player, target: wavelink.Node, playback: _Playback) -> str | None:
    """Read the player back from ``target``: it must hold it, with the current track and pause state, and
    be connected to Discord's voice server (Lavalink connects a moment after the voice update: a few
    reads, :data:`CONFIRM_WAIT` seconds at most)."""
    guild = player.guild
    assert guild is not None
    deadline = time.monotonic() + CONFIRM_WAIT
    while True:
        info = await target.fetch_player_info(guild.id)
        if info is None:
            return "the node holds no player for the guild"
        track = playback.track
        if track is not None and (info.track is None or info.track.identifier != track.identifier):
            return "the node does not play the track"
        if track is not None and info.paused != playback.paused:
            return f"paused is {info.paused} there, expected {playback.paused}"
        if info.state.connected:
            return None
        if time.monotonic() > deadline:
            return "the node did not connect to the voice channel"
        await asyncio.sleep(CONFIRM_POLL)


def node_named(identifier: str) -> wavelink.Node:
    """The node of ``wavelink.Pool`` with this identifier.

    Raises
    ------
    NodeNotFound
        The pool has no such node (the message lists the nodes it has).
    """
    try:
        return wavelink.Pool.get_node(identifier)
    except wavelink.InvalidNodeException:
        known = ", ".join(sorted(wavelink.Pool.nodes)) or "none"
        raise NodeNotFound(f"no Lavalink node is named {identifier!r} (nodes: {known})") from None
