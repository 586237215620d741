"""sonora_cog.metrics: the observer, with a private CollectorRegistry (never the global one)."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from factories import sample_state
from prometheus_client import CollectorRegistry, Counter

from sonora_cog import metrics as metrics_module
from sonora_cog.config import MetricsSettings, Settings, StorageSettings
from sonora_cog.errors import SnapshotNotFound, StoreError
from sonora_cog.manager import SessionManager
from sonora_cog.meta import SnapshotKind
from sonora_cog.metrics import HandoverOutcome, Metrics
from sonora_cog.outcomes import RestorePath, reason_category
from sonora_cog.restore import RestoreReport, RestoreStatus
from sonora_cog.store.filesystem import FilesystemStore
from sonora_cog.store.redis import RedisStore

GUILD = 111111111111111111
ON = MetricsSettings(enabled=True)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def metrics(registry: CollectorRegistry) -> Any:
    observer = Metrics(ON, registry=registry)
    await observer.open()
    yield observer
    await observer.close()


def report(status: RestoreStatus, reason: str | None = None, *, adopted: bool = False) -> RestoreReport:
    return RestoreReport(GUILD, status, reason=reason, adopted=adopted)


# -- off, or prometheus-client missing: nothing happens, nothing breaks --------------------------------


async def test_off_by_default_never_loads_prometheus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def boom() -> None:
        raise AssertionError("prometheus_client must not be loaded when metrics are off")

    monkeypatch.setattr(metrics_module, "_load_prometheus", boom)
    observer = Metrics()
    assert not observer.enabled and observer.registry is None
    await observer.open(FilesystemStore(tmp_path / "s"))
    span = observer.checkpoint_started()
    observer.record_written(SnapshotKind.live, 100)
    span.finish()
    observer.restore(report(RestoreStatus.failed, "boom"), RestorePath.startup, 1.0)
    observer.handover_progress(1, 2)
    observer.handover_guild("restored")
    observer.deploy_rollback(1, 1)
    with pytest.raises(StoreError), observer.store_operation("put_live"):
        raise StoreError("disk full")
    await observer.close()
    # and a manager without metrics (the CLI's) writes as before
    manager = SessionManager(Settings(storage=StorageSettings(path=str(tmp_path / "store"))))
    await manager.write_live(sample_state())
    assert await manager.read_live(GUILD) is not None
    assert not manager.metrics.enabled


async def test_prometheus_missing_is_a_warning_and_a_no_op(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.setattr(metrics_module, "_load_prometheus", lambda: None)  # as if it were not installed
    registry = CollectorRegistry()
    with caplog.at_level(logging.WARNING, "sonora_cog.metrics"):
        observer = Metrics(MetricsSettings(enabled=True, port=free_port()), registry=registry)
    assert "prometheus-client is not installed" in caplog.text and "sonora-cog[metrics]" in caplog.text
    assert not observer.enabled
    await observer.open()
    assert observer.server is None  # nothing served either
    manager = SessionManager(Settings(storage=StorageSettings(path=str(tmp_path / "store"))), metrics=observer)
    await manager.write_live(sample_state())
    await manager.save_snapshot(sample_state())
    assert list(registry.collect()) == []
    await observer.close()


# -- what is counted ----------------------------------------------------------------------------------


async def test_records_and_bytes_by_kind_through_the_manager(
    metrics: Metrics, registry: CollectorRegistry, tmp_path: Path
) -> None:
    manager = SessionManager(Settings(storage=StorageSettings(path=str(tmp_path / "store"))), metrics=metrics)
    assert sample(registry, "sonora_records_written_total", kind="auto") == 0.0  # bounded labels start at 0
    await manager.write_live(sample_state())
    await manager.write_live(sample_state())
    meta = await manager.save_snapshot(sample_state(kind=SnapshotKind.auto))
    await manager.save_snapshot(sample_state(kind=SnapshotKind.pre_deploy), "v1")
    assert sample(registry, "sonora_records_written_total", kind="live") == 2.0
    assert sample(registry, "sonora_records_written_total", kind="auto") == 1.0
    assert sample(registry, "sonora_records_written_total", kind="pre-deploy") == 1.0
    assert sample(registry, "sonora_record_bytes_written_total", kind="auto") == meta.size > 0
    live_size = (tmp_path / "store" / "live" / f"{GUILD}.snr").stat().st_size
    assert sample(registry, "sonora_record_bytes_written_total", kind="live") == 2 * live_size


async def test_a_checkpoint_counts_its_own_task_s_live_bytes_only(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    span = metrics.checkpoint_started()
    metrics.record_written(SnapshotKind.live, 1000)
    metrics.record_written(SnapshotKind.auto, 5000)  # not a live record: not the checkpoint's

    async def elsewhere() -> None:  # another task (an auto snapshot job, a debounced flush) writing meanwhile
        metrics.record_written(SnapshotKind.live, 7000)

    await asyncio.get_running_loop().create_task(elsewhere())
    metrics.record_written(SnapshotKind.live, 24)
    span.finish()
    span.finish()  # once only
    assert sample(registry, "sonora_checkpoint_duration_seconds_count") == 1.0
    assert sample(registry, "sonora_checkpoint_bytes_sum") == 1024.0
    assert sample(registry, "sonora_checkpoint_bytes_bucket", le="1024.0") == 1.0
    assert sample(registry, "sonora_checkpoint_bytes_bucket", le="0.0") == 0.0
    metrics.record_written(SnapshotKind.live, 1)  # after the checkpoint: no longer its
    assert sample(registry, "sonora_checkpoint_bytes_sum") == 1024.0


async def test_restores_by_path_outcome_and_bounded_reason(metrics: Metrics, registry: CollectorRegistry) -> None:
    metrics.restore(report(RestoreStatus.restored), RestorePath.startup, 0.3)
    metrics.restore(report(RestoreStatus.restored, adopted=True), RestorePath.startup, 0.1)
    metrics.restore(
        report(RestoreStatus.skipped, "voice channel 987654321 no longer exists"), RestorePath.startup, 0.01
    )
    metrics.restore(
        report(RestoreStatus.skipped, "voice channel 123456789 no longer exists"), RestorePath.startup, 0.01
    )
    metrics.restore(report(RestoreStatus.skipped, "another process owns this guild (x:1)"), RestorePath.startup)
    metrics.restore(
        report(RestoreStatus.rolled_back, "verification failed: volume is 3, expected 4"), RestorePath.command, 2.0
    )
    metrics.restore(report(RestoreStatus.failed, "TimeoutError: gave up after 60 s"), RestorePath.voice_lost, 60.0)
    counted = "sonora_restores_total"
    assert sample(registry, counted, path="startup", outcome="restored", reason="none") == 1.0
    assert sample(registry, counted, path="adopted", outcome="restored", reason="none") == 1.0
    assert sample(registry, counted, path="startup", outcome="skipped", reason="channel_gone") == 2.0  # one series
    assert sample(registry, counted, path="startup", outcome="skipped", reason="owned_elsewhere") == 1.0
    assert sample(registry, counted, path="command", outcome="rolled_back", reason="verification") == 1.0
    assert sample(registry, counted, path="voice_lost", outcome="failed", reason="timeout") == 1.0
    duration = "sonora_restore_duration_seconds_count"
    assert sample(registry, duration, path="startup", outcome="skipped") == 2.0  # the lease skip had no duration
    assert sample(registry, "sonora_restore_duration_seconds_sum", path="voice_lost", outcome="failed") == 60.0


@pytest.mark.parametrize(
    ("reason", "category"),
    [
        (None, "none"),
        ("another process owns this guild (host:12)", "owned_elsewhere"),
        ("guild 5 is owned by another process (lease)", "owned_elsewhere"),
        ("cannot take its lease: StoreError: down", "lease_unavailable"),
        ("its session is live here now", "session_changed"),
        ("a restore is already running in guild 5", "in_progress"),
        ("guild 5 cannot be restored now: the bot is shutting down", "shutting_down"),
        ("its live record is encrypted with a key that is not configured (key id ab12)", "not_readable"),
        ("its live record is from a newer sonora_cog release (schema 9)", "not_readable"),
        ("no live record", "no_record"),
        ("the session is stale (400 min old)", "stale"),
        ("the guild is not available", "guild_unavailable"),
        ("the record has no voice channel", "no_channel"),
        ("voice channel 42 no longer exists", "channel_gone"),
        ("channel 'general' is not a voice channel", "not_voice_channel"),
        ("missing CONNECT/SPEAK permission in 'Lounge'", "missing_permission"),
        ("nobody is listening in 'Lounge'", "empty_channel"),
        ("the state belongs to guild 7", "foreign_state"),
        ("verification failed: queue has 1 tracks, expected 2", "verification"),
        ("TimeoutError: gave up after 60 s", "timeout"),
        ("StoreError: disk full", "store"),
        ("BufferFull: the write buffer is full", "store"),
        ("ChecksumMismatch: bad", "record"),
        ("ForeignGuildError: live record of guild 1 belongs to guild 2", "record"),
        ("LavalinkException: 500", "lavalink"),
        ("HTTPException: 503 Service Unavailable", "discord"),
        ("ZeroDivisionError: division by zero", "error"),
        ("something nobody wrote yet", "other"),
    ],
)
def test_free_text_reasons_map_to_a_fixed_set(reason: str | None, category: str) -> None:
    assert reason_category(reason) == category


async def test_store_errors_by_operation_only_for_store_errors(metrics: Metrics, registry: CollectorRegistry) -> None:
    with pytest.raises(StoreError), metrics.store_operation("put_live"):
        raise StoreError("disk full")
    with pytest.raises(SnapshotNotFound), metrics.store_operation("load"):
        raise SnapshotNotFound("no such snapshot")  # not a store failure
    with metrics.store_operation("load"):
        pass
    assert sample(registry, "sonora_store_errors_total", operation="put_live") == 1.0
    assert sample(registry, "sonora_store_errors_total", operation="load") == 0.0


async def test_redis_buffer_depth_and_a_full_buffer(registry: CollectorRegistry) -> None:
    """Against a Redis that is not there: writes wait in the buffer (the gauge), a full buffer is a store error."""
    metrics = Metrics(ON, registry=registry)
    store = RedisStore(
        f"redis://127.0.0.1:{free_port()}/0", timeout=0.2, retry_initial=5.0, retry_max=5.0, buffer_max_records=1
    )
    manager = SessionManager(Settings(), store=store, metrics=metrics)
    await metrics.open(store)
    try:
        assert sample(registry, "sonora_redis_buffered_writes") == 0.0
        await manager.write_live(sample_state())
        assert store.buffered == 1
        assert sample(registry, "sonora_redis_buffered_writes") == 1.0
        with pytest.raises(StoreError):
            await manager.write_live(sample_state(guild_id=222222222222222222))
        assert sample(registry, "sonora_store_errors_total", operation="put_live") == 1.0
    finally:
        await metrics.close()
        await asyncio.wait_for(store.close(), 10)


async def test_the_filesystem_store_has_no_buffer(
    metrics: Metrics, registry: CollectorRegistry, tmp_path: Path
) -> None:
    metrics.watch_buffer(FilesystemStore(tmp_path / "s"))
    assert sample(registry, "sonora_redis_buffered_writes") == 0.0


async def test_deploy_rollback_and_handover_api(metrics: Metrics, registry: CollectorRegistry) -> None:
    metrics.deploy_rollback(4, 1)
    metrics.deploy_rollback(1, 0)
    assert sample(registry, "sonora_deploy_rollback_guilds_total", outcome="rolled_back") == 5.0
    assert sample(registry, "sonora_deploy_rollback_guilds_total", outcome="failed") == 1.0
    metrics.handover_progress(0, 20)
    assert sample(registry, "sonora_handover_planned_guilds") == 20.0
    assert sample(registry, "sonora_handover_done_guilds") == 0.0
    metrics.handover_progress(5, 20)
    assert sample(registry, "sonora_handover_done_guilds") == 5.0
    for outcome in (HandoverOutcome.restored, "restored", "rolled_back", "left", "whatever a caller says"):
        metrics.handover_guild(outcome)
    assert sample(registry, "sonora_handover_guilds_total", outcome="restored") == 2.0
    assert sample(registry, "sonora_handover_guilds_total", outcome="rolled_back") == 1.0
    assert sample(registry, "sonora_handover_guilds_total", outcome="left") == 1.0
    assert sample(registry, "sonora_handover_guilds_total", outcome="failed") == 0.0
    assert sample(registry, "sonora_handover_guilds_total", outcome="other") == 1.0


# -- failures of metrics never reach the caller --------------------------------------------------------


async def test_a_broken_metric_is_logged_once_and_never_raises(
    metrics: Metrics, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: Any) -> Any:
        raise RuntimeError("collector exploded")

    assert metrics._c is not None
    monkeypatch.setattr(metrics._c.restores, "labels", broken)
    with caplog.at_level(logging.WARNING, "sonora_cog.metrics"):
        for _ in range(3):
            metrics.restore(report(RestoreStatus.restored), RestorePath.startup, 0.1)
    assert caplog.text.count("recording restore failed") == 1


async def test_a_registry_that_already_has_the_names_turns_metrics_off(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    Counter("sonora_restores", "someone else's", registry=registry)
    observer = Metrics(ON, registry=registry)
    with caplog.at_level(logging.ERROR, "sonora_cog.metrics"):
        await observer.open()
    assert "cannot register" in caplog.text
    assert not observer.enabled
    observer.restore(report(RestoreStatus.restored), RestorePath.startup, 0.1)  # a no-op now
    assert sample(registry, "sonora_records_written_total", kind="live") is None  # nothing half-registered
    await observer.close()


async def test_close_unregisters_so_a_reloaded_cog_registers_again(registry: CollectorRegistry) -> None:
    first = Metrics(ON, registry=registry)
    await first.open()
    first.record_written("live", 10)
    await first.close()
    assert sample(registry, "sonora_records_written_total", kind="live") is None
    second = Metrics(ON, registry=registry)
    await second.open()
    assert second.enabled
    assert sample(registry, "sonora_records_written_total", kind="live") == 0.0
    await second.close()


# -- the /metrics server ---------------------------------------------------------------------------------


async def test_serves_metrics_over_http_and_stops_cleanly(registry: CollectorRegistry) -> None:
    port = free_port()
    observer = Metrics(MetricsSettings(enabled=True, port=port, address="127.0.0.1"), registry=registry)
    await observer.open()
    assert observer.server is not None and observer.server.url == f"http://127.0.0.1:{port}/metrics"
    observer.restore(report(RestoreStatus.restored), RestorePath.command, 0.2)
    async with aiohttp.ClientSession() as http:
        async with http.get(observer.server.url) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
        async with http.get(f"http://127.0.0.1:{port}/other") as response:
            assert response.status == 404
        async with http.get(observer.server.url, headers={"Accept": "application/openmetrics-text"}) as response:
            assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert 'sonora_restores_total{outcome="restored",path="command",reason="none"} 1.0' in text
    assert "# TYPE sonora_checkpoint_duration_seconds histogram" in text
    await observer.close()
    with pytest.raises(OSError):  # nothing listens any more
        await asyncio.open_connection("127.0.0.1", port)
    with socket.socket() as sock:  # and the port is free again
        sock.bind(("127.0.0.1", port))


async def test_a_port_in_use_is_logged_and_the_metrics_stay_in_the_registry(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        observer = Metrics(MetricsSettings(enabled=True, port=port), registry=registry)
        with caplog.at_level(logging.ERROR, "sonora_cog.metrics"):
            await observer.open()
    assert f"cannot serve /metrics on 127.0.0.1:{port}" in caplog.text
    assert observer.server is None and observer.enabled
    observer.record_written("manual", 5)
    assert sample(registry, "sonora_records_written_total", kind="manual") == 1.0
    await observer.close()


async def test_the_readme_lists_every_metric_and_label_value(metrics: Metrics, registry: CollectorRegistry) -> None:
    from sonora_cog.outcomes import REASONS

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("## Metrics") : readme.index("## Guarantees")]
    names = {m.name for m in registry.collect()}
    assert names
    for name in names:
        exposed = f"{name}_total" if f"`{name}_total`" in section else name
        assert f"`{exposed}`" in section, name
    for value in [*REASONS, *(p.value for p in RestorePath), *(o.value for o in HandoverOutcome)]:
        assert f"`{value}`" in section, value
