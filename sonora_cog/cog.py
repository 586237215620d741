"""SonoraCog: wires Discord and wavelink to the session owner, the jobs and the restore engine.

Load it with ``await bot.load_extension("sonora_cog")`` (settings found as :func:`load_settings`
describes), or build it yourself: ``await bot.add_cog(SonoraCog(bot, settings=..., manager=...))``.

The cog is composed: this module is the lifecycle; every guild's session is owned by
:class:`~sonora_cog.owner.SessionOwner` (which listens to the player events itself); recovery (startup
rehydration, rebuilds, rejoins, restores) is :class:`~sonora_cog.recovery.RecoveryMixin`; moving players
off a dead or drained Lavalink node is :class:`~sonora_cog.failover.FailoverMixin`; the
``/snapshot`` commands are the :class:`~sonora_cog.commands.SnapshotCommands` group cog, added and
removed with this one.

``cog_load`` either completes or undoes everything it started (listeners, leases, jobs, the SIGTERM
handler, the commands); ``cog_unload`` undoes it all in reverse, after writing the final state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Iterable
from types import FrameType
from typing import Any

import wavelink
from discord.ext import commands

from ._typing import AnyBot
from .config import Settings, load_settings
from .deploy import process_name
from .deployer import DeployController
from .errors import StoreError
from .failover import FailoverMixin
from .handover import Handover
from .jobs import build_scheduler
from .manager import SessionManager
from .metrics import Metrics
from .node_controller import NodeController
from .outcomes import RestorePath
from .owner import SessionOwner
from .pacing import ShardPacer
from .player import SonoraPlayer
from .recovery import RecoveryMixin
from .restore import RestoreReport
from .restore_history import RestoreRecorder
from .resume import resume_sessions

__all__ = ("COG_NAME", "SonoraCog")

_log = logging.getLogger(__name__)

#: The name the cog registers under (``bot.get_cog(COG_NAME)``).
COG_NAME = "Sonora"
DEPLOY_POLL_JOB = "sonora-deploy-poll"
NODE_PROBE_JOB = "sonora-node-probe"
NODES_POLL_JOB = "sonora-nodes-poll"
#: Seconds ``connect_nodes`` waits for the nodes to connect before the bot goes on without the slow ones.
NODE_CONNECT_WAIT = 10.0
#: Seconds the handover steps of a stop may take after the final state is written (voice leave, leases, store).
HANDOVER_GRACE = 2.0


class SonoraCog(RecoveryMixin, FailoverMixin, commands.Cog, name=COG_NAME):
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
    metrics_registry:
        The ``prometheus_client.CollectorRegistry`` to register the metrics in when ``[metrics] enabled``
        (default: prometheus_client's ``REGISTRY``). See the README's "Metrics".

    Attributes
    ----------
    owner:
        The :class:`~sonora_cog.owner.SessionOwner` of every guild's session in this process.
    deploy:
        The :class:`~sonora_cog.deployer.DeployController`: deploy tags and rollbacks.
    node_controller:
        The :class:`~sonora_cog.node_controller.NodeController`: node drains asked through the store, and
        this process's view of its nodes.
    metrics:
        The :class:`~sonora_cog.metrics.Metrics` (a no-op unless ``[metrics] enabled``); its ``registry``
        holds the metrics.
    restore_history:
        The :class:`~sonora_cog.restore_history.RestoreRecorder` that appends this process's restores to
        the store's history (``snapshots stats``).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        bot: AnyBot,
        *,
        settings: Settings | None = None,
        manager: SessionManager | None = None,
        player_cls: type[wavelink.Player] = SonoraPlayer,
        metrics_registry: Any = None,
    ) -> None:
        self.bot = bot
        self.settings = settings or (manager.settings if manager is not None else load_settings())
        #: Prometheus metrics (:class:`~sonora_cog.metrics.Metrics`; a no-op unless ``[metrics] enabled``).
        self.metrics = Metrics(self.settings.metrics, registry=metrics_registry)
        self.manager = manager or SessionManager(self.settings)
        self.manager.metrics = self.metrics  # its writes and store errors are this cog's
        #: This process's restores, appended to the store's history (``snapshots stats``).
        self.restore_history = RestoreRecorder(self.manager, by=process_name())
        self.player_cls = player_cls
        self.owner = SessionOwner(bot, self.manager)
        #: Deploy tags and rollbacks (:class:`~sonora_cog.deployer.DeployController`).
        self.deploy = DeployController(self)
        #: Canary handover between processes on a shared store (:class:`~sonora_cog.handover.Handover`).
        self.handover = Handover(self)
        self.scheduler = build_scheduler(self.owner, self.settings)
        self.scheduler.add_job(
            self.deploy.poll,
            "interval",
            seconds=self.settings.deploy.poll_interval,
            id=DEPLOY_POLL_JOB,
            name="deploy requests and presence",
        )
        if self.settings.failover.enabled and self.settings.failover.probe_interval > 0:
            self.scheduler.add_job(
                self.probe_nodes,
                "interval",
                seconds=self.settings.failover.probe_interval,
                id=NODE_PROBE_JOB,
                name="Lavalink node probe",
            )
        #: Node drains asked through the store (:class:`~sonora_cog.node_controller.NodeController`).
        self.node_controller = NodeController(self)
        self.scheduler.add_job(
            self.node_controller.poll,
            "interval",
            seconds=self.settings.deploy.poll_interval,
            id=NODES_POLL_JOB,
            name="drained nodes and node view",
        )
        restore = self.settings.restore
        #: Paces every voice join of a restore, per shard connection (:class:`~sonora_cog.pacing.ShardPacer`).
        self.pacer = ShardPacer(restore.joins_per_window, restore.joins_per_second)
        self._rehydration: asyncio.Task[list[RestoreReport]] | None = None
        self._init_failover()
        #: Owned guilds with a live record found at startup; ``None`` until the store could be listed.
        self._startup_guilds: list[int] | None = None
        self._previous_heartbeat: float | None = None
        self._previous_sessions: dict[str, str] = {}
        self._previous_lease_owner: str | None = None
        self._unreadable: dict[str, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._undo = contextlib.AsyncExitStack()
        self._stopping_on_signal = False

    # -- lifecycle ----------------------------------------------------------------------------------

    async def cog_load(self) -> None:
        """Own the sessions, hold every guild with a live record, start the jobs, add ``/snapshot``.

        If any step fails, the steps already taken are undone before the error propagates (discord.py
        then does not add the cog).
        """
        async with contextlib.AsyncExitStack() as stack:
            self.owner.attach()
            stack.callback(self.owner.detach)
            await self.metrics.open(self.manager.store)
            stack.push_async_callback(self.metrics.close)
            stack.push_async_callback(self.restore_history.close)
            self.owner.leases.start()
            stack.push_async_callback(self._close_leases)
            stack.push_async_callback(self._cancel_tasks)
            if self.settings.restore.on_startup:
                try:
                    await self._find_startup_guilds()
                except StoreError as exc:
                    _log.error("cannot list the live records (%s); the guilds are restored once the store is back", exc)
                    self._spawn(self._find_startup_guilds_when_store_is_back())
            self.scheduler.start()
            stack.callback(self.scheduler.shutdown, wait=False)
            stack.push_async_callback(self.deploy.stop)
            stack.push_async_callback(self.handover.stop)
            stack.push_async_callback(self.node_controller.stop)
            self._spawn(self.deploy.poll())  # announce this process now, not one interval later
            self._spawn(self.node_controller.poll())  # drained nodes take no player of the startup restore
            self._install_sigterm(stack)
            if self.settings.commands.enabled:
                from .commands import SnapshotCommands

                commands_cog = SnapshotCommands(self)
                await self.bot.add_cog(commands_cog)  # discord.py adds /snapshot with it, atomically
                stack.push_async_callback(self._remove_commands, commands_cog)
            if self.settings.deploy.owner_command:
                from .commands_deploy import DeployCommands

                deploy_cog = DeployCommands(self)
                await self.bot.add_cog(deploy_cog)
                stack.push_async_callback(self._remove_commands, deploy_cog)
            if self.settings.failover.owner_command:
                from .commands_nodes import NodeCommands

                nodes_cog = NodeCommands(self)
                await self.bot.add_cog(nodes_cog)
                stack.push_async_callback(self._remove_commands, nodes_cog)
            self._undo = stack.pop_all()
        self._maybe_rehydrate()

    async def cog_unload(self) -> None:
        """Write the live record and a ``shutdown`` snapshot of every player, then undo ``cog_load``.

        Bounded in time whatever the store does: ``snapshots.shutdown_timeout`` for the writes, then a
        couple of seconds each for leaving voice (on SIGTERM), releasing the leases and closing the store.
        """
        if self._rehydration is not None and not self._rehydration.done():
            self._rehydration.cancel()
        await self.owner.shutdown()
        if self._stopping_on_signal:
            await self._leave_voice_for_handover()
        await self._undo.aclose()  # commands, SIGTERM handler, jobs, tasks, leases, listeners: in reverse
        try:
            async with asyncio.timeout(HANDOVER_GRACE):
                await self.manager.close()
        except TimeoutError:
            _log.warning("the store did not close within %gs", HANDOVER_GRACE)
        if self.owner.shutdown_complete:
            _log.info("sonora_cog unloaded; every player's state is saved")
        else:
            _log.warning("sonora_cog unloaded; the final write did not finish (see above for what was written)")

    async def connect_nodes(self, nodes: Iterable[wavelink.Node], **options: Any) -> dict[str, wavelink.Node]:
        """Connect wavelink's node pool, resuming the Lavalink sessions of the previous process.

        Use it in place of ``wavelink.Pool.connect(nodes=nodes, client=bot, ...)`` (``options`` are passed
        on: ``cache_capacity`` and so on), after the cog is loaded, in ``setup_hook``. Each node whose URI
        had a session in the previous process asks Lavalink for it again; if Lavalink still holds it
        (``restore.lavalink_resume_timeout``, 60 s by default), its players never stopped playing and
        the startup restore adopts them without re-buffering. Otherwise the node gets a new session and
        the startup restore plays every guild from its live record, as it does without this method.
        Either way, before the startup restore plays a guild, it destroys that guild's player on a
        previous session this process did not resume (another process resumed it, or resuming is off),
        so a guild never plays twice.

        Each node connects on its own: a node that does not answer within 10 s does not hold the bot
        (``wavelink.Pool.connect`` would wait for it forever); it goes on trying in the background and
        joins the pool when its Lavalink is up, while the startup restore uses the nodes that are.

        Returns the nodes of ``wavelink.Pool`` connected by then.
        """
        nodes = list(nodes)
        if self.bot.user is None:
            _log.warning("connect_nodes() before the bot logged in (use setup_hook): not resuming Lavalink sessions")
            return await wavelink.Pool.connect(nodes=nodes, client=self.bot, **options)
        try:  # read even when not resuming: the startup restore destroys what those sessions still play
            self._previous_sessions = await self.manager.read_lavalink_sessions(self.owner.key)
            self._previous_lease_owner = await self.manager.read_lavalink_lease_owner(self.owner.key)
        except StoreError as exc:
            _log.warning("cannot read the previous Lavalink session ids (%s); starting new sessions", exc)
        if self.settings.restore.resume_lavalink_sessions:
            for node in resume_sessions(nodes, self._previous_sessions):
                _log.info("Lavalink node %s: asking to resume session %s", node.identifier, node.session_id)
        return await self._connect_each(nodes, options)

    async def _connect_each(self, nodes: list[wavelink.Node], options: dict[str, Any]) -> dict[str, wavelink.Node]:
        """Connect the nodes side by side; wait at most :data:`NODE_CONNECT_WAIT` seconds for the slow ones.

        ``wavelink.Pool.connect`` connects its nodes one after another and waits, retrying forever, for
        one that does not answer: a node that is down would keep the bot from starting, and the nodes
        after it from connecting. Each node connects on its own here; one that is not up in time goes on
        trying in the background and joins the pool when its Lavalink answers.
        """
        tasks = {
            node.identifier: self._spawn(wavelink.Pool.connect(nodes=[node], client=self.bot, **options))
            for node in nodes
        }
        _done, pending = await asyncio.wait(tasks.values(), timeout=NODE_CONNECT_WAIT)
        for identifier, task in tasks.items():
            if task in pending:
                _log.warning(
                    "Lavalink node %s does not answer yet; the bot starts without it, and it joins the "
                    "pool when it does",
                    identifier,
                )
            elif task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        return wavelink.Pool.nodes

    # -- the steps cog_load takes and cog_unload undoes ---------------------------------------------

    def _install_sigterm(self, stack: contextlib.AsyncExitStack) -> None:
        """Save and close on SIGTERM, chained to the handler that was there; restored on unload.

        A handler the host installed with ``signal.signal`` is called after ours; one it installed with
        ``loop.add_signal_handler`` keeps running too (asyncio dispatches it from its wakeup fd).
        """
        loop = asyncio.get_running_loop()
        previous = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            loop.call_soon_threadsafe(self._sigterm_received)
            if callable(previous):
                previous(signum, frame)

        try:
            signal.signal(signal.SIGTERM, on_sigterm)
        except ValueError:
            return  # not the main thread (or no signals here): bot.close() still saves everything

        def restore_previous() -> None:
            if signal.getsignal(signal.SIGTERM) is on_sigterm:
                signal.signal(signal.SIGTERM, previous)
            else:
                _log.debug("the SIGTERM handler was replaced after sonora_cog's; leaving it")

        stack.callback(restore_previous)

    def _sigterm_received(self) -> None:
        _log.info("SIGTERM: saving every player's state and closing the bot")
        self._stopping_on_signal = True
        self._spawn(self.bot.close())

    async def _remove_commands(self, commands_cog: commands.Cog) -> None:
        if self.bot.get_cog(commands_cog.qualified_name) is commands_cog:
            await self.bot.remove_cog(commands_cog.qualified_name)

    async def _close_leases(self) -> None:
        await self.owner.leases.close(grace=HANDOVER_GRACE)  # after the last writes: a waiting process takes over

    async def _cancel_tasks(self) -> None:
        tasks = [t for t in self._tasks if not t.done() and t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=HANDOVER_GRACE)

    async def _leave_voice_for_handover(self) -> None:
        """Leave voice before releasing the leases, so a late leave never disconnects the next process."""
        leaving = [asyncio.ensure_future(self._leave_quietly(p)) for p in self.owner.players()]
        if leaving:
            _done, late = await asyncio.wait(leaving, timeout=HANDOVER_GRACE)
            for task in late:
                task.cancel()

    def _observe_restore(self, report: RestoreReport, path: RestorePath, started: float | None = None) -> None:
        """Count one guild's restore in the metrics and the store's restore history (never raises)."""
        self.metrics.restore(report, path, None if started is None else time.monotonic() - started)
        self.restore_history.record(report, path)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("background task %s failed", task.get_coro(), exc_info=task.exception())
