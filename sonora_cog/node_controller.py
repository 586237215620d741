"""Node drains asked through the store, inside a running bot (``cog.node_controller``).

Every ``deploy.poll_interval`` seconds (an APScheduler job) the bot process reads the ``nodes-drained``
record (:mod:`sonora_cog.node_control`) and brings its own ``wavelink.Pool`` in line with it:

* a node newly listed takes no new players here at once, and once the startup restore is done its
  players are moved off with :meth:`~sonora_cog.failover.FailoverMixin.drain_node`, once per listing
  (never two drains of one node at a time);
* a node taken off the list is undrained (:meth:`~sonora_cog.failover.FailoverMixin.undrain_node`).

Only what the record asked is undone by the record: a node drained by bot code calling ``cog.drain_node``
stays drained until bot code undrains it. The same poll publishes this process's view of its nodes
(status, players, drained), which ``nodes status`` and ``nodes drain --wait`` read; the view is withdrawn
when the process stops. The owner command ``sonora-nodes`` drains and undrains through :meth:`drain` and
:meth:`undrain`: here at once, and in the store for every other process.

.. versionadded:: 0.4
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import wavelink

from . import node_control
from .errors import NodeNotFound, SonoraError
from .failover import DrainReport, node_named
from .node_control import NodeState, NodeSummary, NodeView, ViewPublisher

if TYPE_CHECKING:
    from .cog import SonoraCog

__all__ = ("NodeController", "NodeStatusReport")

_log = logging.getLogger(__name__)

_STATES = {
    wavelink.NodeStatus.CONNECTED: NodeState.connected,
    wavelink.NodeStatus.CONNECTING: NodeState.connecting,
    wavelink.NodeStatus.DISCONNECTED: NodeState.disconnected,
}


@dataclass(frozen=True, slots=True)
class NodeStatusReport:
    """Every node of every running process (:meth:`NodeController.status`).

    Attributes
    ----------
    nodes:
        One summary per node a process knows or the store lists as drained.
    processes:
        The names of the processes whose view was read.
    """

    nodes: list[NodeSummary]
    processes: list[str]


class NodeController:
    """The drained-nodes record and the node view of one bot process (``cog.node_controller``).

    .. versionadded:: 0.4
    """

    def __init__(self, cog: SonoraCog) -> None:
        self.cog = cog
        self.manager = cog.manager
        self.views = ViewPublisher(cog.manager, cog.deploy.token, cog.deploy.presence_ttl)
        #: Identifiers of the record applied here (drained because the store lists them).
        self._listed: set[str] = set()
        #: Listed identifiers whose players were moved off (once per listing).
        self._started: set[str] = set()
        #: Drains running now, by node.
        self._running: dict[str, asyncio.Task[DrainReport]] = {}
        self._lock = asyncio.Lock()
        self._store_failing = False

    # -- the poll -----------------------------------------------------------------------------------

    async def poll(self) -> None:
        """The poll job: apply the drained record, publish this process's node view. A store error is
        logged (once per outage) and the next poll tries again."""
        problems = []
        async with self._lock:
            try:
                self._apply(set(await node_control.read_drained(self.manager)))
            except SonoraError as exc:
                problems.append(f"cannot read the drained nodes ({exc})")
            try:
                await self.views.publish(self.view())
            except SonoraError as exc:
                problems.append(f"cannot publish this process's node view ({exc})")
        if problems and not self._store_failing:
            _log.warning("nodes: %s; trying again at every poll", "; ".join(problems))
        elif not problems and self._store_failing:
            _log.info("nodes: the store answers again")
        self._store_failing = bool(problems)

    def _apply(self, listed: set[str]) -> None:
        board = self.cog.owner.nodes
        for identifier in sorted(listed - self._listed):
            self._listed.add(identifier)
            if board.drain(identifier):
                _log.info("Lavalink node %s is drained through the store: it takes no new players", identifier)
        for identifier in sorted(self._listed - listed):
            self._listed.discard(identifier)
            self._started.discard(identifier)
            self.cog.undrain_node(identifier)
        rehydration = self.cog._rehydration
        if not self.cog.bot.is_ready() or (rehydration is not None and not rehydration.done()):
            return  # the startup restore places no player on them; what it adopted there moves after it
        for identifier in sorted(self._listed - self._started):
            if identifier in wavelink.Pool.nodes and identifier not in self._running:
                self._start(identifier)

    def _start(self, identifier: str) -> asyncio.Task[DrainReport]:
        self._started.add(identifier)
        task = self.cog._spawn(self._drain(identifier))
        self._running[identifier] = task

        def finished(done: asyncio.Task[DrainReport]) -> None:
            if self._running.get(identifier) is done:
                del self._running[identifier]

        task.add_done_callback(finished)
        return task

    async def _drain(self, identifier: str) -> DrainReport:
        try:
            return await self.cog.drain_node(identifier)
        except NodeNotFound:  # it left the pool meanwhile: drained when it is back
            self._started.discard(identifier)
            return DrainReport(identifier)

    def view(self) -> dict[str, NodeView]:
        """This process's view of its nodes: status, its players on each, drained or not.

        A node the store lists counts as drained here only once this process's drain of it has run: until
        then (the startup restore still runs, or the drain is under way) its player count may still grow,
        and ``nodes drain --wait`` must not take it for done.
        """
        players = Counter(p.node.identifier for p in self.cog.owner.players())
        unfinished = (self._listed - self._started) | set(self._running)
        drained = self.cog.owner.nodes.drained - unfinished
        return {
            node.identifier: NodeView(
                _STATES.get(node.status, NodeState.disconnected), players[node.identifier], node.identifier in drained
            )
            for node in wavelink.Pool.nodes.values()
        }

    async def stop(self) -> None:
        """Withdraw this process's node view (drains in progress are the cog's tasks: cancelled with them)."""
        try:
            await self.views.retire()
        except SonoraError as exc:
            _log.debug("nodes: could not withdraw the node view: %s", exc)

    # -- the owner command's API --------------------------------------------------------------------

    async def drain(self, identifier: str, *, by: str) -> tuple[DrainReport, str | None]:
        """Drain the node here now and list it in the store, so every other process drains it too.

        Returns the drain's report (of the drain already running, if one was) and, when the store could
        not be written, why (the node is then drained in this process only).

        Raises
        ------
        NodeNotFound
            This process has no node with this identifier (nothing is written).
        InvalidIdentifier
            ``identifier`` cannot name a node.
        """
        node_control.validate_identifier(identifier)
        node_named(identifier)
        problem = None
        async with self._lock:  # the poll must not read the record between this drain and its write
            task = self._running.get(identifier) or self._start(identifier)
            self._listed.add(identifier)
            try:
                await node_control.drain(self.manager, identifier, by=by)
            except SonoraError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                self._listed.discard(identifier)  # drained here only: no poll undoes it
        return await asyncio.shield(task), problem

    async def undrain(self, identifier: str) -> tuple[bool, str | None]:
        """Let the node take new players here now, and take it out of the store's drained record.

        Returns whether it was drained (here or in the store) and, when the store could not be written,
        why (the other processes keep it drained).
        """
        node_control.validate_identifier(identifier)
        async with self._lock:
            here = self.cog.undrain_node(identifier)
            try:
                listed = await node_control.undrain(self.manager, identifier)
            except SonoraError as exc:
                return here, f"{type(exc).__name__}: {exc}"  # still listed: the poll does not drain it again
            self._listed.discard(identifier)
            self._started.discard(identifier)
        return here or listed, None

    async def status(self) -> NodeStatusReport:
        """Every node of every running process, with this process's view brought up to date first.

        Raises
        ------
        StoreError
            The store cannot be read.
        """
        async with self._lock:
            await self.views.publish(self.view())
        drained = await node_control.read_drained(self.manager)
        views = await node_control.read_views(self.manager)
        return NodeStatusReport(node_control.summarize(drained, views), [v.name for v in views])
