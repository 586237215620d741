"""Prometheus metrics: a small observer the rest of sonora_cog reports to, and the ``/metrics`` server.

The cog owns one :class:`Metrics` (``cog.metrics``) and gives it to its manager (``manager.metrics``);
the code that checkpoints, writes records, restores and deploys calls its few methods
(:meth:`Metrics.checkpoint_started`, :meth:`Metrics.record_written`, :meth:`Metrics.restore`...). When
``[metrics] enabled`` is false, or ``prometheus-client`` is not installed (``pip install
"sonora-cog[metrics]"``), every method returns at once and nothing is imported or allocated. A metrics
failure never reaches the caller: it is logged once and the metric is left as it was, so persistence
never depends on metrics.

The metrics are registered in a registry (the one given as ``SonoraCog(..., metrics_registry=...)``, else
prometheus_client's default ``REGISTRY``) when the cog loads and unregistered when it unloads; with
``[metrics] port`` > 0 the cog also serves that registry at ``http://<address>:<port>/metrics`` (an
aiohttp server on the bot's event loop: no thread, stopped with the cog). The README's "Metrics" lists
every metric.

.. versionadded:: 0.3
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import time
from collections.abc import Callable
from enum import StrEnum
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from .config import MetricsSettings
from .errors import StoreError
from .meta import SnapshotKind
from .outcomes import RestorePath, outcome_of, path_of, reason_category

if TYPE_CHECKING:
    from aiohttp import web

    from .restore import RestoreReport

__all__ = ("STORE_OPERATIONS", "CheckpointSpan", "HandoverOutcome", "Metrics", "MetricsServer")

_log = logging.getLogger(__name__)

#: Buckets (seconds) of the checkpoint duration histogram.
CHECKPOINT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Buckets (bytes) of the bytes one checkpoint wrote.
BYTES_BUCKETS = (0, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
#: Buckets (seconds) of one guild's restore.
RESTORE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
#: The ``operation`` label values of ``sonora_store_errors_total`` (the store methods the bot calls).
STORE_OPERATIONS = (
    "put_live",
    "get_live",
    "delete_live",
    "live_guilds",
    "save",
    "load",
    "list",
    "prune",
    "put_aux",
    "append_journal",
)

P = ParamSpec("P")
R = TypeVar("R")


class HandoverOutcome(StrEnum):
    """What happened to one guild of a canary handover (the ``outcome`` label of ``sonora_handover_guilds_total``)."""

    restored = "restored"
    """The new process took the guild over and verified it."""
    rolled_back = "rolled_back"
    """Its restore failed in the new process and it was rolled back to its handover state."""
    failed = "failed"
    """Its restore failed and could not be rolled back."""
    left = "left"
    """The handover stopped before it: the guild stays with the old process."""
    other = "other"
    """Anything else the caller reported."""


def _load_prometheus() -> ModuleType | None:
    """``prometheus_client``, or ``None`` when it is not installed (the seam tests use to simulate that)."""
    try:
        import prometheus_client
    except ImportError:
        return None
    return prometheus_client


#: The checkpoint running in this task, if any (its writes add to its bytes).
_CURRENT_CHECKPOINT: contextvars.ContextVar[CheckpointSpan | None] = contextvars.ContextVar(
    "sonora_checkpoint", default=None
)


class CheckpointSpan:
    """One checkpoint being measured: :meth:`Metrics.checkpoint_started` opens it, :meth:`finish` observes it.

    The live records written by the task that opened it (and only that task) add to its :attr:`bytes`.
    """

    __slots__ = ("_metrics", "_started", "_task", "_token", "bytes", "records")

    def __init__(self, metrics: Metrics | None) -> None:
        self._metrics = metrics
        self._started = time.perf_counter()
        self._task = _current_task()
        self.bytes = 0
        self.records = 0
        self._token = _CURRENT_CHECKPOINT.set(self) if metrics is not None else None

    def add(self, nbytes: int) -> None:
        """Count one record of ``nbytes`` written by the checkpoint (ignored from another task)."""
        if self._metrics is not None and _current_task() is self._task:
            self.bytes += nbytes
            self.records += 1

    def finish(self) -> None:
        """Observe the checkpoint's duration and bytes (once; later calls do nothing)."""
        metrics, self._metrics = self._metrics, None
        if metrics is None:
            return
        if self._token is not None:
            with contextlib.suppress(ValueError):  # finished in another context than it started in
                _CURRENT_CHECKPOINT.reset(self._token)
        metrics.checkpoint(time.perf_counter() - self._started, self.bytes)


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


class _StoreOperation:
    """Counts a :class:`~sonora_cog.errors.StoreError` raised inside it; never swallows anything."""

    __slots__ = ("_metrics", "_operation")

    def __init__(self, metrics: Metrics, operation: str) -> None:
        self._metrics = metrics
        self._operation = operation

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None and issubclass(exc_type, StoreError):
            self._metrics.store_error(self._operation)


_NO_CONTEXT: contextlib.nullcontext[None] = contextlib.nullcontext()


def _guarded(method: Callable[Concatenate[Metrics, P], None]) -> Callable[Concatenate[Metrics, P], None]:
    """Make a recording method a no-op when metrics are off, and never let it raise."""

    def wrapper(metrics: Metrics, /, *args: P.args, **kwargs: P.kwargs) -> None:
        if metrics._c is None:
            return
        try:
            method(metrics, *args, **kwargs)
        except Exception:  # a metric must never break persistence
            metrics._report_failure(method.__name__)

    functools.update_wrapper(wrapper, method)
    return wrapper


class _Collectors:
    """The prometheus_client metric objects (created unregistered)."""

    def __init__(self, prom: ModuleType) -> None:
        counter, gauge, histogram = prom.Counter, prom.Gauge, prom.Histogram
        self.checkpoint_duration = histogram(
            "sonora_checkpoint_duration_seconds",
            "Time one checkpoint took (compare, encode, write, heartbeat)",
            buckets=CHECKPOINT_BUCKETS,
            registry=None,
        )
        self.checkpoint_bytes = histogram(
            "sonora_checkpoint_bytes",
            "Bytes of live records one checkpoint wrote",
            buckets=BYTES_BUCKETS,
            registry=None,
        )
        self.records = counter(
            "sonora_records_written", "Records written to the store, by kind", ["kind"], registry=None
        )
        self.record_bytes = counter(
            "sonora_record_bytes_written", "Bytes of records written to the store, by kind", ["kind"], registry=None
        )
        self.restores = counter(
            "sonora_restores",
            "Guild restores by path, outcome and reason",
            ["path", "outcome", "reason"],
            registry=None,
        )
        self.restore_duration = histogram(
            "sonora_restore_duration_seconds",
            "Time one guild's restore took, by path and outcome",
            ["path", "outcome"],
            buckets=RESTORE_BUCKETS,
            registry=None,
        )
        self.store_errors = counter(
            "sonora_store_errors",
            "Store operations that failed (StoreError), by operation",
            ["operation"],
            registry=None,
        )
        self.buffered = gauge(
            "sonora_redis_buffered_writes",
            "Writes waiting in memory for Redis (0 with the filesystem store)",
            registry=None,
        )
        self.rollback_guilds = counter(
            "sonora_deploy_rollback_guilds",
            "Guilds a deploy rollback handled in this process, by outcome",
            ["outcome"],
            registry=None,
        )
        self.handover_planned = gauge(
            "sonora_handover_planned_guilds", "Guilds the current canary handover is to move", registry=None
        )
        self.handover_done = gauge(
            "sonora_handover_done_guilds", "Guilds of the current canary handover handled so far", registry=None
        )
        self.handover_guilds = counter(
            "sonora_handover_guilds", "Guilds a canary handover handled, by outcome", ["outcome"], registry=None
        )
        for kind in SnapshotKind:  # bounded label sets start at 0, so rate() sees their first increase
            self.records.labels(kind.value)
            self.record_bytes.labels(kind.value)
        for operation in STORE_OPERATIONS:
            self.store_errors.labels(operation)
        for outcome in ("rolled_back", "failed"):
            self.rollback_guilds.labels(outcome)
        for handover in HandoverOutcome:
            self.handover_guilds.labels(handover.value)

    def all(self) -> list[Any]:
        return list(vars(self).values())


class Metrics:
    """The metrics of one cog (``cog.metrics``); every method is safe to call whether metrics are on or off.

    Parameters
    ----------
    settings:
        ``[metrics]`` settings; omitted or ``enabled = false``: a no-op observer.
    registry:
        A ``prometheus_client.CollectorRegistry`` to register in (default: prometheus_client's ``REGISTRY``).

    Attributes
    ----------
    registry:
        The registry the metrics are registered in (``None`` when metrics are off).

    .. versionadded:: 0.3
    """

    def __init__(self, settings: MetricsSettings | None = None, *, registry: Any = None) -> None:
        self.settings = settings or MetricsSettings()
        self.registry: Any = None
        self._c: _Collectors | None = None
        self._registered: list[Any] = []
        self._failures: set[str] = set()
        self.server: MetricsServer | None = None
        if not self.settings.enabled:
            return
        prom = _load_prometheus()
        if prom is None:
            _log.warning(
                "metrics.enabled is true but prometheus-client is not installed "
                '(pip install "sonora-cog[metrics]"); metrics are off'
            )
            return
        try:
            self._c = _Collectors(prom)
        except Exception:  # an incompatible prometheus_client: metrics off, the bot goes on
            _log.exception("metrics: cannot create the metrics; metrics are off")
            return
        self.registry = registry if registry is not None else prom.REGISTRY

    @property
    def enabled(self) -> bool:
        """Whether metrics are collected (enabled in the settings and prometheus-client installed)."""
        return self._c is not None

    # -- lifecycle (the cog's cog_load / cog_unload) --------------------------------------------------

    async def open(self, store: object = None) -> None:
        """Register the metrics, watch ``store``'s Redis write buffer, and serve ``/metrics`` if a port is set.

        Never raises: a registry that already holds these names, or a port that cannot be bound, is
        logged and the bot goes on (without that part of metrics).
        """
        if self._c is None:
            return
        self.watch_buffer(store)
        try:
            for collector in self._c.all():
                self.registry.register(collector)
                self._registered.append(collector)
        except Exception as exc:
            _log.error("metrics: cannot register sonora_cog's metrics in the registry (%s); metrics are off", exc)
            self._unregister()
            self._c = None
            return
        if self.settings.port:
            server = MetricsServer(self.registry)
            try:
                await server.start(self.settings.address, self.settings.port)
            except OSError as exc:
                _log.error(
                    "metrics: cannot serve /metrics on %s:%d (%s); the metrics stay in the registry",
                    self.settings.address,
                    self.settings.port,
                    exc.strerror or exc,
                )
                return
            self.server = server
            _log.info("metrics: serving %s", server.url)

    async def close(self) -> None:
        """Stop the ``/metrics`` server and unregister the metrics (a reloaded cog registers them again)."""
        server, self.server = self.server, None
        if server is not None:
            await server.stop()
        self._unregister()

    def _unregister(self) -> None:
        while self._registered:
            collector = self._registered.pop()
            with contextlib.suppress(Exception):
                self.registry.unregister(collector)

    def _report_failure(self, what: str) -> None:
        if what not in self._failures:  # once per method: a broken metric must not flood the log
            self._failures.add(what)
            _log.warning("metrics: recording %s failed; the bot goes on", what, exc_info=True)

    # -- what the rest of sonora_cog reports ------------------------------------------------------------

    def checkpoint_started(self) -> CheckpointSpan:
        """Start measuring a checkpoint; call :meth:`CheckpointSpan.finish` when it is done.

        The live records the calling task writes until then count as the checkpoint's bytes.
        """
        return CheckpointSpan(self if self._c is not None else None)

    @_guarded
    def checkpoint(self, duration: float, nbytes: int) -> None:
        """Observe one checkpoint: ``duration`` seconds, ``nbytes`` bytes of live records written."""
        assert self._c is not None
        self._c.checkpoint_duration.observe(max(0.0, duration))
        self._c.checkpoint_bytes.observe(max(0, nbytes))

    @_guarded
    def record_written(self, kind: SnapshotKind | str, nbytes: int) -> None:
        """Count one record of ``kind`` (``live``, ``auto``, ``manual``...) and its ``nbytes`` bytes."""
        assert self._c is not None
        label = SnapshotKind(kind).value
        self._c.records.labels(label).inc()
        self._c.record_bytes.labels(label).inc(max(0, nbytes))
        span = _CURRENT_CHECKPOINT.get()
        if span is not None and label == SnapshotKind.live.value:
            span.add(nbytes)

    def store_operation(self, operation: str) -> contextlib.AbstractContextManager[None]:
        """``with metrics.store_operation("put_live"): ...`` counts a :class:`StoreError` raised inside."""
        if self._c is None:
            return _NO_CONTEXT
        return _StoreOperation(self, operation)

    @_guarded
    def store_error(self, operation: str) -> None:
        """Count one failed store operation (one of :data:`STORE_OPERATIONS`)."""
        assert self._c is not None
        self._c.store_errors.labels(operation if operation in STORE_OPERATIONS else "other").inc()

    @_guarded
    def restore(self, report: RestoreReport, path: RestorePath, duration: float | None = None) -> None:
        """Count one guild's restore by path, outcome and reason category, and observe its duration.

        ``duration`` is omitted for a guild skipped before its restore began (its lease is elsewhere).
        """
        assert self._c is not None
        counted = path_of(report, RestorePath(path)).value
        outcome = outcome_of(report)
        self._c.restores.labels(counted, outcome, reason_category(report.reason)).inc()
        if duration is not None:
            self._c.restore_duration.labels(counted, outcome).observe(max(0.0, duration))

    @_guarded
    def deploy_rollback(self, rolled_back: int, failed: int) -> None:
        """Count the guilds of one rollback batch: ``rolled_back`` rolled back, ``failed`` not."""
        assert self._c is not None
        self._c.rollback_guilds.labels("rolled_back").inc(max(0, rolled_back))
        self._c.rollback_guilds.labels("failed").inc(max(0, failed))

    @_guarded
    def handover_progress(self, done: int, total: int) -> None:
        """Set the progress of the current canary handover: ``done`` of ``total`` guilds handled.

        Call it when a handover starts (``done = 0``), after each batch, and when it ends or stops.
        """
        assert self._c is not None
        self._c.handover_planned.set(max(0, total))
        self._c.handover_done.set(max(0, done))

    @_guarded
    def handover_guild(self, outcome: HandoverOutcome | str) -> None:
        """Count one guild of a canary handover by outcome (a :class:`HandoverOutcome`; anything else is ``other``)."""
        assert self._c is not None
        values = {o.value for o in HandoverOutcome}
        label = str(outcome.value if isinstance(outcome, HandoverOutcome) else outcome)
        self._c.handover_guilds.labels(label if label in values else HandoverOutcome.other.value).inc()

    @_guarded
    def watch_buffer(self, store: object) -> None:
        """Read ``sonora_redis_buffered_writes`` from ``store`` (a RedisStore's ``buffered``; 0 for others)."""
        assert self._c is not None
        from .store.redis import RedisStore  # importing it does not import the Redis driver

        if isinstance(store, RedisStore):
            self._c.buffered.set_function(lambda: float(store.buffered))
        else:
            self._c.buffered.set(0)


class MetricsServer:
    """``GET /metrics`` over HTTP for one registry: an aiohttp server on the running event loop.

    Runs no thread; :meth:`stop` closes its socket and every open connection.
    """

    def __init__(self, registry: Any) -> None:
        self.registry = registry
        self._runner: web.AppRunner | None = None
        #: The bound address and port (the port the OS chose, when started with port 0).
        self.address: tuple[str, int] | None = None

    @property
    def url(self) -> str:
        """``http://host:port/metrics``."""
        if self.address is None:
            return "(not serving)"
        host, port = self.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"

    async def start(self, host: str, port: int) -> None:
        """Bind ``host:port`` and serve. Raises :class:`OSError` when the port cannot be bound."""
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound = runner.addresses  # the port the OS chose, when asked for port 0
        self.address = (str(bound[0][0]), int(bound[0][1])) if bound else (host, port)

    async def stop(self) -> None:
        """Stop serving: close the listening socket and the open connections."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        from aiohttp import web
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encoder(self.registry)
        return web.Response(body=body, headers={"Content-Type": content_type})
