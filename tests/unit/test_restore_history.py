"""sonora_cog.restore_history: the store's journal of restores, its retention, and ``snapshots stats``."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import orjson
import pytest
from test_cli import run

from sonora_cog.config import Settings, StorageSettings
from sonora_cog.errors import StoreError
from sonora_cog.manager import SessionManager
from sonora_cog.outcomes import RestorePath
from sonora_cog.restore import RestoreReport, RestoreStatus
from sonora_cog.restore_history import (
    FAILURES_PER_ENTRY,
    RestoreRecorder,
    _encode_entries,
    journal_name,
    prune_journals,
    read_history,
)
from sonora_cog.store.base import MAX_JOURNAL_ENTRY_BYTES

GUILDS = [111111111111111111 + i for i in range(10)]


@pytest.fixture
def manager(tmp_path: Path) -> SessionManager:
    return SessionManager(Settings(storage=StorageSettings(path=str(tmp_path / "store"))))


def report(guild: int, status: RestoreStatus, reason: str | None = None, *, adopted: bool = False) -> RestoreReport:
    return RestoreReport(guild, status, reason=reason, adopted=adopted)


def record_a_startup(recorder: RestoreRecorder) -> None:
    recorder.record(report(GUILDS[0], RestoreStatus.restored), RestorePath.startup)
    recorder.record(report(GUILDS[1], RestoreStatus.restored, adopted=True), RestorePath.startup)
    recorder.record(report(GUILDS[2], RestoreStatus.skipped, "voice channel 42 no longer exists"), RestorePath.startup)
    recorder.record(report(GUILDS[3], RestoreStatus.skipped, "the session is stale (400 min old)"), RestorePath.startup)
    recorder.record(report(GUILDS[4], RestoreStatus.failed, "StoreError: disk full"), RestorePath.startup)
    recorder.record(
        report(GUILDS[5], RestoreStatus.rolled_back, "verification failed: volume is 1, expected 2"),
        RestorePath.command,
    )


async def test_recorded_restores_are_read_back_by_outcome_path_and_reason(manager: SessionManager) -> None:
    recorder = RestoreRecorder(manager, by="host:1")
    record_a_startup(recorder)
    assert recorder.pending == 6
    assert await recorder.flush()
    assert recorder.pending == 0
    assert await manager.store.journal_names() == [journal_name(time.time())]
    history = await read_history(manager)
    assert history.total == 6 and history.days == 1
    assert history.by_outcome() == {"restored": 2, "skipped": 2, "failed": 1, "rolled_back": 1}
    assert history.by_path() == {
        "adopted": {"restored": 1},
        "command": {"rolled_back": 1},
        "startup": {"failed": 1, "restored": 1, "skipped": 2},
    }
    assert history.by_reason("skipped") == {"channel_gone": 1, "stale": 1}
    assert [(f.guild_id, f.outcome, f.reason, f.detail) for f in history.failures] == [
        (GUILDS[5], "rolled_back", "verification", "verification failed: volume is 1, expected 2"),
        (GUILDS[4], "failed", "store", "StoreError: disk full"),
    ]
    assert json.loads(orjson.dumps(history.to_json()))["failure_reasons"] == {"store": 1}


async def test_a_burst_is_one_bounded_entry(manager: SessionManager) -> None:
    recorder = RestoreRecorder(manager, by="host:1")
    for i in range(2_000):
        recorder.record(
            report(i + 1, RestoreStatus.failed, f"ChecksumMismatch: record {i} {'x' * 400}"), RestorePath.startup
        )
        recorder.record(report(i + 1, RestoreStatus.restored), RestorePath.startup)
    await recorder.flush()
    lines = await manager.store.read_journal(journal_name(time.time()))
    assert len(lines) == 1 and len(lines[0]) <= MAX_JOURNAL_ENTRY_BYTES
    history = await read_history(manager, failures=100)
    assert history.by_outcome()["failed"] == 2_000 and history.by_outcome()["restored"] == 2_000
    assert len(history.failures) == FAILURES_PER_ENTRY  # the newest few, with a reason cut to size
    assert history.failures[0].guild_id == 2_000 and len(history.failures[0].detail) == 200


def test_an_entry_too_large_for_the_journal_is_split_and_nothing_is_lost() -> None:
    counts = [[f"path{i}", "skipped", f"reason{i}", i + 1] for i in range(300)]
    failures = [
        {"at": 1.0, "guild": "1", "path": "startup", "outcome": "failed", "reason": "store", "detail": "d" * 200}
    ] * 5
    lines = _encode_entries(1.0, "h" * 100, counts, failures)
    assert len(lines) > 1 and all(len(line) <= MAX_JOURNAL_ENTRY_BYTES for line in lines)
    entries = [orjson.loads(line) for line in lines]
    assert sum(row[3] for e in entries for row in e["counts"]) == sum(range(1, 301))
    assert sum(len(e["failures"]) for e in entries) == 5


async def test_the_recorder_appends_by_itself_shortly_after_a_restore(manager: SessionManager) -> None:
    recorder = RestoreRecorder(manager, by="host:1", delay=0.05)
    record_a_startup(recorder)
    name = journal_name(time.time())
    async with asyncio.timeout(5):
        while not await manager.store.read_journal(name):  # noqa: ASYNC110 - polling the store the recorder appends to
            await asyncio.sleep(0.02)
    record_a_startup(recorder)
    await recorder.close()  # appends what is pending
    assert (await read_history(manager)).total == 12
    record_a_startup(recorder)  # after close: counted, never scheduled
    await asyncio.sleep(0.1)
    assert (await read_history(manager)).total == 12


async def test_a_store_failure_keeps_the_counts_for_the_next_append(
    manager: SessionManager, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = RestoreRecorder(manager, by="host:1", delay=3600)
    real = manager.store.append_journal

    async def down(name: str, entries: list[bytes]) -> None:
        raise StoreError("the disk is full")

    monkeypatch.setattr(manager.store, "append_journal", down)
    record_a_startup(recorder)
    with caplog.at_level(logging.WARNING, "sonora_cog.restore_history"):
        assert not await recorder.flush()
        record_a_startup(recorder)
        assert not await recorder.flush()
    assert caplog.text.count("could not append the restore history") == 1
    assert recorder.pending == 12
    monkeypatch.setattr(manager.store, "append_journal", real)
    assert await recorder.flush()
    history = await read_history(manager)
    assert history.total == 12 and len(history.failures) == 4
    await recorder.close()


async def test_retention_deletes_the_days_older_than_max_age(manager: SessionManager) -> None:
    now = time.time()
    entry = _encode_entries(now, "h:1", [["startup", "restored", "none", 1]], [])
    for days in (0, 10, 29, 31, 400):
        await manager.store.append_journal(journal_name(now - days * 86_400), entry)
    await manager.store.append_journal("deploy-abc", [b"{}"])
    await manager.store.append_journal("restores-notadate", [b"{}"])
    assert await prune_journals(manager, 30, now=now) == 2
    assert sorted(await manager.store.journal_names()) == sorted(
        [journal_name(now - d * 86_400) for d in (0, 10, 29)] + ["deploy-abc", "restores-notadate"]
    )
    assert (await read_history(manager)).total == 3


async def test_damaged_lines_are_skipped(manager: SessionManager) -> None:
    name = journal_name(time.time())
    good = _encode_entries(
        time.time(),
        "h:1",
        [["startup", "restored", "none", 2], ["x", "exploded", "none", 9], ["startup", "skipped", "invented", 1]],
        [{"at": "never"}],
    )
    await manager.store.append_journal(name, [b"not json", b"[]", b'{"at": "soon"}', *good])
    history = await read_history(manager)
    assert history.by_outcome() == {"restored": 2, "skipped": 1, "failed": 0, "rolled_back": 0}
    assert history.by_reason("skipped") == {"other": 1} and history.failures == []


async def test_snapshots_stats_shows_the_restore_history(tmp_path: Path) -> None:
    store = tmp_path / "store"
    manager = SessionManager(Settings(storage=StorageSettings(path=str(store))))
    recorder = RestoreRecorder(manager, by="host:1")
    record_a_startup(recorder)
    await recorder.flush()
    await manager.close()

    out = await asyncio.to_thread(run, "snapshots", "stats", "--store", str(store), "--json")
    assert out.returncode == 0, out.stderr
    restores = json.loads(out.stdout)["restores"]
    assert restores["total"] == 6
    assert restores["by_outcome"] == {"restored": 2, "skipped": 2, "failed": 1, "rolled_back": 1}
    assert restores["by_path"]["startup"] == {"failed": 1, "restored": 1, "skipped": 2}
    assert restores["skip_reasons"] == {"channel_gone": 1, "stale": 1}
    assert [f["guild"] for f in restores["last_failures"]] == [str(GUILDS[5]), str(GUILDS[4])]

    table = await asyncio.to_thread(run, "snapshots", "stats", "--store", str(store), "--failures", "1")
    assert table.returncode == 0, table.stderr
    assert "restores" in table.stdout and "restored: 2" in table.stdout and "rolled back: 1" in table.stdout
    assert "channel_gone: 1" in table.stdout
    assert "last 1 failed restores" in table.stdout and str(GUILDS[5]) in table.stdout
    assert str(GUILDS[4]) not in table.stdout

    empty = await asyncio.to_thread(run, "snapshots", "stats", "--store", str(tmp_path / "empty"), "--json")
    assert json.loads(empty.stdout)["restores"]["total"] == 0


async def test_snapshots_prune_deletes_old_restore_history(tmp_path: Path) -> None:
    store = tmp_path / "store"
    manager = SessionManager(Settings(storage=StorageSettings(path=str(store))))
    now = time.time()
    entry = _encode_entries(now, "h:1", [["startup", "restored", "none", 1]], [])
    for days in (0, 45):
        await manager.store.append_journal(journal_name(now - days * 86_400), entry)
    await manager.close()
    out = await asyncio.to_thread(run, "snapshots", "prune", "--store", str(store), "--max-age-days", "30", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["restore_history_days_removed"] == 1
    manager = SessionManager(Settings(storage=StorageSettings(path=str(store))))
    assert await manager.store.journal_names() == [journal_name(now)]
    await manager.close()
