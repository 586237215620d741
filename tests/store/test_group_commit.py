"""The filesystem store's group commit (``put_live_many`` / ``save_many``): fewer flushes, the same guarantees.

- every temp file of a batch is durable before any is published, and each directory is flushed once
  (or each filesystem once, with ``syncfs``), not once per record;
- one item's failure (disk full, fsync error, a link in the way) fails that item alone: its old record stays,
  the others are written, no temp file is left;
- a failure making the batch durable publishes nothing;
- a model of what each batch should leave (hypothesis, with random failures) matches the store after every step;
- a writer killed at random instants during batches leaves every record old or new, never torn or missing.
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from sonora_cog.codec import Codec
from sonora_cog.errors import DuplicateSnapshot, StoreError
from sonora_cog.meta import SnapshotKind, SnapshotMeta
from sonora_cog.store import FilesystemStore, fs_batch
from sonora_cog.store import filesystem as fs_module

GUILD_A = 111111111111111111
T0 = 1_790_000_000.0
RecordFactory = Callable[..., Any]  # conftest.make_record -> Record(meta, data)
LiveFactory = Callable[..., bytes]  # conftest.make_live
GUILDS = [GUILD_A + i for i in range(40)]


def encoded(guild_id: int, snapshot_id: str | None, marker: str) -> bytes:
    """A record the store accepts (its header names its key); the payload is irrelevant to the store."""
    meta = SnapshotMeta(
        id=snapshot_id or "live",
        guild_id=guild_id,
        created_at=T0,
        kind=SnapshotKind.manual if snapshot_id else SnapshotKind.live,
        label=None,
        track_count=0,
        current_title=marker,
        content_hash="",
    )
    return Codec().encode({"marker": marker}, meta).data


def temp_files(root: Path) -> list[Path]:
    return list(root.rglob(".*.tmp"))


class Counter:
    """Counts calls of a seam and can fail the n-th one."""

    def __init__(self, real: Callable[..., Any], fail_on: set[int] | None = None, err: int = errno.EIO) -> None:
        self.real, self.fail_on, self.err, self.calls = real, fail_on or set(), err, 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        if self.calls in self.fail_on:
            raise OSError(self.err, os.strerror(self.err))
        return self.real(*args)


@pytest.mark.parametrize("syncfs", [False, True], ids=["per-file-fsync", "syncfs"])
async def test_a_batch_flushes_each_directory_once(
    tmp_path: Path,
    make_live: LiveFactory,
    make_record: RecordFactory,
    monkeypatch: pytest.MonkeyPatch,
    syncfs: bool,
) -> None:
    monkeypatch.setattr(fs_batch, "_SYNCFS", object())  # counted below, not called: any system has it here
    store = FilesystemStore(tmp_path / "store", syncfs_batch_min=1 if syncfs else None)
    await store.open()
    fsync, fsync_dir = Counter(fs_module._fsync), Counter(lambda fd: None)
    monkeypatch.setattr(fs_module, "_fsync", fsync)
    monkeypatch.setattr(fs_module, "_fsync_dir", fsync_dir)
    sync_fs = Counter(lambda fd: None)
    monkeypatch.setattr(fs_batch, "_syncfs", sync_fs)
    assert (await store.put_live_many([(g, make_live(g)) for g in GUILDS])).ok
    if syncfs:  # one syncfs for the temp files, one for the renames: no fsync at all
        assert (sync_fs.calls, fsync.calls, fsync_dir.calls) == (2, 0, 0)
    else:  # one fsync per record, one of the directory
        assert (sync_fs.calls, fsync.calls, fsync_dir.calls) == (0, len(GUILDS), 1)
    assert await store.live_guilds() == GUILDS


async def test_a_failed_write_mid_batch_fails_that_item_alone(
    fs_store: FilesystemStore, make_live: LiveFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    olds = {g: make_live(g, marker="old") for g in GUILDS[:5]}
    for guild, data in olds.items():
        await fs_store.put_live(guild, data)
    monkeypatch.setattr(fs_module, "_write_all", Counter(fs_module._write_all, {3}, errno.ENOSPC))
    news = [(g, make_live(g, marker="new")) for g in GUILDS[:5]]
    result = await fs_store.put_live_many(news)
    assert [i for i, _ in result.failures()] == [2]
    error = result.errors[2]
    assert isinstance(error, StoreError) and "No space left" in str(error) and str(GUILDS[2]) in str(error)
    for i, (guild, data) in enumerate(news):
        assert await fs_store.get_live(guild) == (olds[guild] if i == 2 else data)
    assert temp_files(fs_store.root) == []


async def test_a_failed_fsync_fails_that_item_alone(
    tmp_path: Path, make_record: RecordFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FilesystemStore(tmp_path / "store", syncfs_batch_min=None)
    await store.open()
    earlier = [make_record(g) for g in GUILDS[:4]]
    assert (await store.save_many([(r.meta, r.data) for r in earlier])).ok  # the guild folders exist now
    records = [make_record(g) for g in GUILDS[:4]]
    monkeypatch.setattr(fs_module, "_fsync", Counter(fs_module._fsync, {2}))
    result = await store.save_many([(r.meta, r.data) for r in records])
    assert [i for i, _ in result.failures()] == [1] and "Input/output error" in str(result.errors[1])
    assert {m.id for m in await store.list()} == {r.meta.id for r in earlier} | {
        r.meta.id for i, r in enumerate(records) if i != 1
    }
    assert temp_files(store.root) == []
    again = await store.save_many([(records[1].meta, records[1].data)])  # the id was not burnt
    assert again.ok


async def test_a_failed_syncfs_publishes_nothing(
    tmp_path: Path, make_live: LiveFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FilesystemStore(tmp_path / "store", syncfs_batch_min=1)
    olds = [(g, make_live(g, marker="old")) for g in GUILDS[:3]]
    assert (await store.put_live_many(olds)).ok
    monkeypatch.setattr(fs_batch, "_SYNCFS", object())  # as if the system had syncfs
    monkeypatch.setattr(fs_batch, "_syncfs", Counter(lambda fd: None, {1}))
    result = await store.put_live_many([(g, make_live(g, marker="new")) for g in GUILDS[:3]])
    assert [i for i, _ in result.failures()] == [0, 1, 2]
    assert all("Input/output error" in str(e) for _, e in result.failures())
    assert [(g, await store.get_live(g)) for g, _ in olds] == olds
    assert temp_files(store.root) == []


async def test_a_failed_directory_fsync_fails_the_items_of_that_directory(
    tmp_path: Path, make_record: RecordFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Renamed but not known durable: reported as failed (a single write reports it the same way)."""
    store = FilesystemStore(tmp_path / "store", syncfs_batch_min=None)
    await store.open()
    assert (await store.save_many([(r.meta, r.data) for r in map(make_record, GUILDS[:3])])).ok  # folders made
    records = [make_record(g) for g in GUILDS[:3]]
    monkeypatch.setattr(fs_module, "_fsync_dir", Counter(fs_module._fsync_dir, {2}))
    result = await store.save_many([(r.meta, r.data) for r in records])
    assert [i for i, _ in result.failures()] == [1] and "Input/output error" in str(result.errors[1])
    assert await store.load(GUILDS[1], records[1].meta.id) == records[1].data  # renamed, yet not known durable


async def test_snapshots_are_never_overwritten_in_a_batch(
    fs_store: FilesystemStore, make_record: RecordFactory
) -> None:
    first = make_record(GUILD_A, titles=("First",))
    assert (await fs_store.save_many([(first.meta, first.data)])).ok
    clash = make_record(GUILD_A, titles=("Clash",), snapshot_id=first.meta.id)
    other = make_record(GUILD_A + 1)
    result = await fs_store.save_many([(clash.meta, clash.data), (other.meta, other.data)])
    assert isinstance(result.errors[0], DuplicateSnapshot) and result.errors[1] is None
    assert await fs_store.load(GUILD_A, first.meta.id) == first.data
    assert temp_files(fs_store.root) == []


async def test_a_batch_holds_every_guilds_lock(fs_store: FilesystemStore, make_live: LiveFactory) -> None:
    """A single write of a guild in the batch waits for the batch (writes of one guild stay in call order)."""
    batch = asyncio.create_task(fs_store.put_live_many([(g, make_live(g, marker="batch")) for g in GUILDS[:10]]))
    await asyncio.sleep(0)  # the batch takes its locks first
    single = asyncio.create_task(fs_store.put_live(GUILDS[5], make_live(GUILDS[5], marker="after")))
    assert (await batch).ok
    await single
    assert await fs_store.get_live(GUILDS[5]) == make_live(GUILDS[5], marker="after")


# --- a model of what survives ------------------------------------------------------------------------------
class GroupCommitModel(RuleBasedStateMachine):
    """Batches of live records and snapshots, each write failing at random: the store always equals the model
    (a failed item keeps its old record, a written one holds its new bytes, a snapshot id is never reused)."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp: Path | None = None

    @initialize(syncfs=st.booleans())
    def open_store(self, syncfs: bool) -> None:
        import tempfile

        self.tmp = Path(tempfile.mkdtemp(prefix="sonora-gc-"))
        self.store = FilesystemStore(self.tmp / "store", syncfs_batch_min=2 if syncfs else None)
        self.store._setup_sync()
        self.live: dict[int, bytes] = {}
        self.snapshots: dict[tuple[int, str], bytes] = {}
        self.version = 0

    def teardown(self) -> None:
        import shutil

        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _commit(self, items: list[fs_batch.BatchItem], mode: str, failing: set[int]) -> dict[int, Exception]:
        real = fs_module._write_all
        calls = 0

        def write_all(fd: int, data: bytes) -> None:
            nonlocal calls
            calls += 1
            if calls in failing:
                real(fd, data[: len(data) // 2])  # torn, then the disk is full
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real(fd, data)

        fs_module._write_all = write_all
        try:
            return fs_batch.group_commit(self.store, items, mode)  # type: ignore[arg-type]
        finally:
            fs_module._write_all = real

    @rule(
        guilds=st.lists(st.sampled_from(GUILDS[:6]), min_size=1, max_size=6, unique=True),
        failing=st.sets(st.integers(1, 6), max_size=3),
    )
    def put_live_batch(self, guilds: list[int], failing: set[int]) -> None:
        self.version += 1
        items = [
            fs_batch.BatchItem(i, g, None, ("live",), f"{g}.snr", encoded(g, None, f"v{self.version}"), "live")
            for i, g in enumerate(guilds)
        ]
        errors = self._commit(items, "replace", failing)
        assert set(errors) == {i - 1 for i in failing if i <= len(items)}
        for item in items:
            if item.index not in errors:
                self.live[item.guild_id] = item.data

    @rule(
        guilds=st.lists(st.sampled_from(GUILDS[:6]), min_size=1, max_size=6),
        failing=st.sets(st.integers(1, 6), max_size=3),
        reuse=st.booleans(),
    )
    def save_batch(self, guilds: list[int], failing: set[int], reuse: bool) -> None:
        items, expected_dup = [], set()
        for i, guild in enumerate(guilds):
            taken = [sid for (g, sid) in self.snapshots if g == guild]
            if reuse and taken and i == 0:
                snapshot_id = taken[0]
                expected_dup.add(i)
            else:
                self.version += 1
                snapshot_id = f"20260101T000000{self.version % 1000:03d}-{self.version:06x}"
            data = encoded(guild, snapshot_id, f"v{self.version}")
            items.append(
                fs_batch.BatchItem(
                    i, guild, snapshot_id, ("snapshots", str(guild)), f"{snapshot_id}.snr", data, "snapshot"
                )
            )
        errors = self._commit(items, "new", failing)
        assert {i for i in expected_dup if i + 1 not in failing} <= set(errors)
        for item in items:
            assert item.snapshot_id is not None
            if item.index not in errors:
                assert (item.guild_id, item.snapshot_id) not in self.snapshots
                self.snapshots[(item.guild_id, item.snapshot_id)] = item.data

    @invariant()
    def store_equals_model(self) -> None:
        if self.tmp is None:
            return
        root = self.store.root
        found_live = {int(p.stem): p.read_bytes() for p in (root / "live").glob("*.snr")}
        assert found_live == self.live
        found = {(int(p.parent.name), p.stem): p.read_bytes() for p in (root / "snapshots").glob("*/*.snr")}
        assert found == self.snapshots
        assert temp_files(root) == []


TestGroupCommitModel = settings(max_examples=40, stateful_step_count=8, deadline=None)(GroupCommitModel).TestCase


# --- kill -9 ------------------------------------------------------------------------------------------------
async def test_kill_9_mid_batch_leaves_every_record_old_or_new(tmp_path: Path, make_live: LiveFactory) -> None:
    """A writer killed at random instants during group commits (syncfs and per-file fsync alike): every record
    is one of the versions written, never torn, never missing, and no snapshot is half there."""
    guilds = GUILDS[:40]
    versions = {g: [make_live(g, marker=f"{v}", padding=20_000 + v) for v in range(3)] for g in guilds}
    for g, datas in versions.items():
        for v, data in enumerate(datas):
            (tmp_path / f"{g}-{v}").write_bytes(data)
    root = tmp_path / "store"
    script = textwrap.dedent(f"""
        import asyncio, pathlib, sys
        from sonora_cog.store import FilesystemStore
        async def main():
            store = FilesystemStore({str(root)!r}, syncfs_batch_min=int(sys.argv[1]) or None)
            guilds = {guilds!r}
            versions = {{g: [pathlib.Path({str(tmp_path)!r}, f"{{g}}-{{v}}").read_bytes() for v in range(3)]
                        for g in guilds}}
            result = await store.put_live_many([(g, versions[g][0]) for g in guilds])
            assert result.ok, result.failures()
            print("ready", flush=True)
            i = 0
            while True:
                i += 1
                result = await store.put_live_many([(g, versions[g][i % 3]) for g in guilds])
                assert result.ok, result.failures()
        asyncio.run(main())
    """)
    import random

    rng = random.Random(20261130)
    for kill in range(12):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, "32" if kill % 2 else "0", stdout=subprocess.PIPE
        )
        try:
            assert proc.stdout is not None
            assert await proc.stdout.readline() == b"ready\n"
            await asyncio.sleep(rng.uniform(0.0, 0.15))
        finally:
            proc.kill()  # SIGKILL, at a random instant of a batch
            await proc.wait()
        async with FilesystemStore(root) as store:
            assert await store.live_guilds() == guilds
            for g in guilds:
                assert await store.get_live(g) in versions[g], f"kill {kill}: guild {g} torn"


async def test_new_guild_folders_are_flushed_once_with_the_batch(
    tmp_path: Path, make_record: RecordFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FilesystemStore(tmp_path / "store", syncfs_batch_min=None)
    await store.open()
    fsync_dir = Counter(lambda fd: None)
    monkeypatch.setattr(fs_module, "_fsync_dir", fsync_dir)
    records = [make_record(g) for g in GUILDS[:10]]  # ten guilds without a snapshot folder yet
    assert (await store.save_many([(r.meta, r.data) for r in records])).ok
    assert fsync_dir.calls == 10 + 1  # each new guild folder once, and snapshots/ once for all ten made in it
