"""What only the filesystem backend promises: layout, permissions, atomic writes, no escape, headers only."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import random
import shutil
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from sonora_cog.errors import DuplicateSnapshot, InvalidIdentifier, SnapshotNotFound, StoreError
from sonora_cog.meta import SnapshotKind, new_snapshot_id
from sonora_cog.store import FilesystemStore, RecordRef, read_meta_from_stream
from sonora_cog.store import filesystem as fs_module

GUILD_A = 111111111111111111
GUILD_B = 222222222222222222
T0 = 1_790_000_000.0
RecordFactory = Callable[..., Any]  # conftest.make_record -> Record(meta, data)
LiveFactory = Callable[..., bytes]  # conftest.make_live


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def temp_files(root: Path) -> list[Path]:
    return list(root.rglob(".*.tmp"))


def files_outside(top: Path, root: Path) -> list[Path]:
    return sorted(p for p in top.rglob("*") if not p.is_relative_to(root))


# --- layout and permissions ---------------------------------------------------------------------------------
async def test_layout_and_owner_only_permissions(
    tmp_path: Path, make_record: RecordFactory, make_live: LiveFactory
) -> None:
    old_umask = os.umask(0)  # the most permissive umask: modes must still be owner-only
    try:
        store = FilesystemStore(tmp_path / "deep" / "store")
        record = make_record(GUILD_A)
        await store.save(record.meta, record.data)  # opens the store on first use
        await store.put_live(GUILD_A, make_live(GUILD_A))
        await store.put_live(GUILD_B, make_live(GUILD_B))
        quarantined = Path(str(await store.quarantine_live(GUILD_B, "test")))
    finally:
        os.umask(old_umask)
    root = store.root
    live = root / "live" / f"{GUILD_A}.snr"
    snapshot = root / "snapshots" / str(GUILD_A) / f"{record.meta.id}.snr"
    assert live.read_bytes() == make_live(GUILD_A)
    assert snapshot.read_bytes() == record.data
    assert quarantined.parent == root / "quarantine"
    for directory in (root, root / "live", root / "snapshots", root / "snapshots" / str(GUILD_A), root / "quarantine"):
        assert mode(directory) == 0o700, directory
    for file in (live, snapshot, quarantined, quarantined.with_suffix(".json")):
        assert mode(file) == 0o600, file


async def test_quarantine_keeps_bytes_and_reason(fs_store: FilesystemStore, make_live: LiveFactory) -> None:
    data = make_live(GUILD_A)
    await fs_store.put_live(GUILD_A, data)
    location = Path(str(await fs_store.quarantine_live(GUILD_A, "ChecksumMismatch: bad sector")))
    assert await asyncio.to_thread(location.read_bytes) == data
    assert location.is_relative_to(fs_store.root / "quarantine")
    note = json.loads(location.with_suffix(".json").read_text())
    assert note["reason"] == "ChecksumMismatch: bad sector"
    assert note["guild_id"] == str(GUILD_A)
    assert not (fs_store.root / "live" / f"{GUILD_A}.snr").exists()


# --- atomic writes and failures ---------------------------------------------------------------------------
def _fail(err: int) -> Callable[..., None]:
    def boom(*args: object, **kwargs: object) -> None:
        raise OSError(err, os.strerror(err))

    return boom


@pytest.mark.parametrize(
    ("seam", "err"),
    [("_write_all", errno.ENOSPC), ("_fsync", errno.EIO), ("_replace", errno.EACCES)],
)
async def test_failed_live_write_keeps_old_record(
    fs_store: FilesystemStore, make_live: LiveFactory, monkeypatch: pytest.MonkeyPatch, seam: str, err: int
) -> None:
    old = make_live(GUILD_A, marker="old")
    await fs_store.put_live(GUILD_A, old)
    monkeypatch.setattr(fs_module, seam, _fail(err))
    with pytest.raises(StoreError, match=os.strerror(err)) as caught:
        await fs_store.put_live(GUILD_A, make_live(GUILD_A, marker="new"))
    assert str(GUILD_A) in str(caught.value)
    monkeypatch.undo()
    assert await fs_store.get_live(GUILD_A) == old
    assert temp_files(fs_store.root) == []


async def test_disk_full_half_way_leaves_no_trace(
    fs_store: FilesystemStore, make_record: RecordFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write

    def half_then_full(fd: int, data: bytes) -> None:
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    record = make_record(GUILD_A, padding=10_000)
    monkeypatch.setattr(fs_module, "_write_all", half_then_full)
    with pytest.raises(StoreError, match="No space left"):
        await fs_store.save(record.meta, record.data)
    monkeypatch.undo()
    assert temp_files(fs_store.root) == []
    assert await fs_store.list() == []
    with pytest.raises(SnapshotNotFound):
        await fs_store.load(GUILD_A, record.meta.id)
    await fs_store.save(record.meta, record.data)  # the id was not burnt
    assert await fs_store.load(GUILD_A, record.meta.id) == record.data


async def test_save_without_hard_links_still_refuses_duplicates(
    fs_store: FilesystemStore, make_record: RecordFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fs_module, "_link", _fail(errno.EPERM))
    record = make_record(GUILD_A)
    await fs_store.save(record.meta, record.data)
    assert await fs_store.load(GUILD_A, record.meta.id) == record.data
    with pytest.raises(DuplicateSnapshot):
        await fs_store.save(record.meta, record.data)
    assert temp_files(fs_store.root) == []


async def test_permission_denied_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    store = FilesystemStore(blocker / "store")  # a directory cannot be created under a file
    with pytest.raises(StoreError, match="the store directories under"):
        await store.live_guilds()


async def test_stale_temp_files_are_ignored_then_cleaned_on_open(
    tmp_path: Path, make_record: RecordFactory, make_live: LiveFactory
) -> None:
    store = FilesystemStore(tmp_path / "store")
    record = make_record(GUILD_A)
    await store.save(record.meta, record.data)
    await store.put_live(GUILD_A, make_live(GUILD_A))
    root = store.root
    # what a crash between "write temp" and "rename" leaves behind, torn
    stale = [
        root / "live" / f".{GUILD_B}.snr.0123456789ab.tmp",
        root / "snapshots" / str(GUILD_A) / f".{new_snapshot_id(T0)}.snr.0123456789ab.tmp",
    ]
    for path in stale:
        path.write_bytes(make_live(GUILD_B)[:20])
        os.utime(path, (T0, T0))
    fresh = root / "live" / f".{GUILD_B}.snr.ba9876543210.tmp"  # a write in progress elsewhere
    fresh.write_bytes(b"partial")

    assert await store.live_guilds() == [GUILD_A]
    assert [m.id for m in await store.list()] == [record.meta.id]
    assert [(r.guild_id, r.snapshot_id) async for r in store.scan()] == [(GUILD_A, None), (GUILD_A, record.meta.id)]

    async with FilesystemStore(root) as reopened:
        assert not any(path.exists() for path in stale)
        assert fresh.exists()
        assert await reopened.load(GUILD_A, record.meta.id) == record.data


async def test_kill_9_mid_write_never_tears_the_live_record(tmp_path: Path, make_live: LiveFactory) -> None:
    """A writer process killed at a random instant leaves the old record or the new one, never a mix."""
    versions = [make_live(GUILD_A, marker=str(i), padding=200_000 + i) for i in range(2)]
    for i, data in enumerate(versions):
        (tmp_path / f"v{i}").write_bytes(data)
    root = tmp_path / "store"
    script = textwrap.dedent(f"""
        import asyncio, pathlib, sys
        from sonora_cog.store import FilesystemStore
        async def main():
            store = FilesystemStore({str(root)!r})
            versions = [pathlib.Path({str(tmp_path)!r}, f"v{{i}}").read_bytes() for i in range(2)]
            await store.put_live({GUILD_A}, versions[0])
            print("ready", flush=True)
            i = 0
            while True:
                i += 1
                await store.put_live({GUILD_A}, versions[i % 2])
        asyncio.run(main())
    """)
    for _ in range(3):
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=subprocess.PIPE)
        try:
            assert proc.stdout is not None
            assert await proc.stdout.readline() == b"ready\n"
            await asyncio.sleep(0.2)  # let it rewrite the record many times; then kill it mid-write
        finally:
            proc.kill()  # SIGKILL
            await proc.wait()
        async with FilesystemStore(root) as store:
            assert await store.get_live(GUILD_A) in versions


# --- no escape ------------------------------------------------------------------------------------------------
async def test_identifiers_are_checked_before_any_io(
    fs_store: FilesystemStore, monkeypatch: pytest.MonkeyPatch, make_record: RecordFactory
) -> None:
    def no_io(*args: object) -> None:
        raise AssertionError("touched the filesystem")

    monkeypatch.setattr(fs_module, "_open_read", no_io)
    monkeypatch.setattr(asyncio, "to_thread", no_io)
    for snapshot_id in ("../../etc/passwd", "../live/1", "/etc/passwd", "20260101T000000000-abcdef/.."):
        with pytest.raises(InvalidIdentifier):
            await fs_store.load(GUILD_A, snapshot_id)
        with pytest.raises(InvalidIdentifier):
            await fs_store.delete(GUILD_A, snapshot_id)
    for guild in (-1, 0, "../..", "1/../2"):
        with pytest.raises(InvalidIdentifier):
            await fs_store.get_live(guild)  # type: ignore[arg-type]
        with pytest.raises(InvalidIdentifier):
            await fs_store.list(guild)  # type: ignore[arg-type]


async def test_nothing_is_written_outside_root(
    tmp_path: Path, fs_store: FilesystemStore, make_record: RecordFactory
) -> None:
    before = await asyncio.to_thread(files_outside, tmp_path, fs_store.root)
    record = make_record(GUILD_A)
    for bad in (
        replace(record.meta, id="../../../escaped"),
        replace(record.meta, guild_id=-5),
        replace(record.meta, id="..", guild_id=0),
    ):
        with pytest.raises(InvalidIdentifier):
            await fs_store.save(bad, record.data)
    after = await asyncio.to_thread(files_outside, tmp_path, fs_store.root)
    assert after == before


async def test_symlinks_are_not_followed(tmp_path: Path, fs_store: FilesystemStore, make_record: RecordFactory) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"outside the store")
    record = make_record(GUILD_A)
    await fs_store.save(record.meta, record.data)
    link_id = new_snapshot_id(T0)
    (fs_store.root / "snapshots" / str(GUILD_A) / f"{link_id}.snr").symlink_to(secret)
    assert [m.id for m in await fs_store.list(GUILD_A)] == [record.meta.id]
    with pytest.raises(StoreError):
        await fs_store.load(GUILD_A, link_id)


# --- listing --------------------------------------------------------------------------------------------------
async def test_listing_reads_only_headers(
    fs_store: FilesystemStore, make_record: RecordFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = make_record(GUILD_A, padding=5 * 1024 * 1024)
    assert len(big.data) > 5 * 1024 * 1024
    await fs_store.save(big.meta, big.data)
    read = {"bytes": 0, "opens": 0}
    real_open = fs_module._open_read

    class Counting:
        def __init__(self, stream: BinaryIO) -> None:
            self._stream = stream

        def read(self, n: int = -1) -> bytes:
            chunk = self._stream.read(n)
            read["bytes"] += len(chunk)
            return chunk

        def fileno(self) -> int:
            return self._stream.fileno()

        def __enter__(self) -> Counting:
            return self

        def __exit__(self, *exc: object) -> None:
            self._stream.close()

    def counting_open(name: str, dir_fd: int) -> Any:
        read["opens"] += 1
        return Counting(real_open(name, dir_fd))

    monkeypatch.setattr(fs_module, "_open_read", counting_open)
    [meta] = await fs_store.list(GUILD_A)
    assert meta.size == len(big.data)
    assert meta == big.meta.with_size(len(big.data))
    assert read["opens"] == 1
    assert 0 < read["bytes"] < 4096
    await fs_store.stats()
    assert read["bytes"] < 8192
    assert await fs_store.load(GUILD_A, big.meta.id) == big.data  # the counter sees whole reads
    assert read["bytes"] > 5 * 1024 * 1024


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "flipped"])
async def test_unreadable_header_is_skipped_in_list_but_scanned(
    fs_store: FilesystemStore, make_record: RecordFactory, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    good = make_record(GUILD_A, created_at=T0)
    bad = make_record(GUILD_A, created_at=T0 + 1)
    await fs_store.save(good.meta, good.data)
    damaged = {
        "garbage": b"this is not a record" * 10,
        "truncated": bad.data[:20],
        "empty": b"",
        "flipped": bad.data[:40] + bytes([bad.data[40] ^ 0xFF]) + bad.data[41:],
    }[damage]
    bad_path = fs_store.root / "snapshots" / str(GUILD_A) / f"{bad.meta.id}.snr"
    bad_path.write_bytes(damaged)
    with caplog.at_level(logging.WARNING, logger=fs_module.__name__):
        assert [m.id for m in await fs_store.list(GUILD_A)] == [good.meta.id]
    assert bad.meta.id in caplog.text
    refs = [ref async for ref in fs_store.scan()]
    assert RecordRef(GUILD_A, bad.meta.id, str(bad_path), len(damaged)) in refs
    assert (await fs_store.stats()).snapshots == 1
    assert await fs_store.load(GUILD_A, bad.meta.id) == damaged  # bytes stay reachable for tools


async def test_snapshot_filed_under_another_guild_is_refused_but_scanned(
    fs_store: FilesystemStore, make_record: RecordFactory, caplog: pytest.LogCaptureFixture
) -> None:
    record = make_record(GUILD_A)
    await fs_store.save(record.meta, record.data)
    foreign_dir = fs_store.root / "snapshots" / str(GUILD_B)
    foreign_dir.mkdir(mode=0o700)
    shutil.copy(fs_store.root / "snapshots" / str(GUILD_A) / f"{record.meta.id}.snr", foreign_dir)
    with caplog.at_level(logging.WARNING, logger=fs_module.__name__):
        assert await fs_store.list(GUILD_B) == []
        assert [m.guild_id for m in await fs_store.list()] == [GUILD_A]
    assert f"names guild {GUILD_A}, not guild {GUILD_B}" in caplog.text
    scanned = {(r.guild_id, r.snapshot_id) async for r in fs_store.scan()}
    assert scanned == {(GUILD_A, record.meta.id), (GUILD_B, record.meta.id)}
    # the store does not decode on load: the caller's decode sees guild A in a guild-B request
    assert await fs_store.load(GUILD_B, record.meta.id) == record.data


async def test_stray_files_and_folders_are_ignored(
    fs_store: FilesystemStore, make_record: RecordFactory, make_live: LiveFactory
) -> None:
    record = make_record(GUILD_A)
    await fs_store.save(record.meta, record.data)
    await fs_store.put_live(GUILD_A, make_live(GUILD_A))
    root = fs_store.root
    (root / "snapshots" / str(GUILD_A) / "notes.txt").write_text("hi")
    (root / "snapshots" / "lost+found").mkdir()
    (root / "snapshots" / "0").mkdir()
    (root / "live" / "README").write_text("hi")
    (root / "live" / "0.snr").write_bytes(b"")
    assert await fs_store.live_guilds() == [GUILD_A]
    assert [m.id for m in await fs_store.list()] == [record.meta.id]
    assert len([r async for r in fs_store.scan()]) == 2


# --- the event loop ---------------------------------------------------------------------------------------
async def test_blocking_io_runs_off_the_event_loop(
    tmp_path: Path, make_record: RecordFactory, make_live: LiveFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_thread = threading.get_ident()
    seen: dict[str, set[int]] = {}

    def probe(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any) -> Any:
            seen.setdefault(name, set()).add(threading.get_ident())
            return real(*args)

        return wrapped

    for seam in ("_open_read", "_write_all", "_fsync", "_replace", "_link"):
        monkeypatch.setattr(fs_module, seam, probe(seam, getattr(fs_module, seam)))
    reader = probe("read_header", read_meta_from_stream)
    store = FilesystemStore(tmp_path / "store", read_header=reader)
    record = make_record(GUILD_A)
    await store.save(record.meta, record.data)
    await store.put_live(GUILD_A, make_live(GUILD_A))
    await store.get_live(GUILD_A)
    await store.load(GUILD_A, record.meta.id)
    await store.list()
    await store.stats()
    [ref async for ref in store.scan()]
    await store.quarantine_live(GUILD_A, "probe")
    await store.prune(max_per_guild=0, max_age_days=None)
    assert set(seen) == {"_open_read", "_write_all", "_fsync", "_replace", "_link", "read_header"}
    assert all(loop_thread not in threads for threads in seen.values()), seen


async def test_cancelled_write_keeps_the_guild_lock_until_its_thread_ends(
    fs_store: FilesystemStore, make_live: LiveFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = threading.Event(), threading.Event()
    real_write = fs_module._write_all
    order: list[str] = []

    def slow_write(fd: int, data: bytes) -> None:
        if b"Live first" in data:
            entered.set()
            release.wait(10)
        order.append("first" if b"Live first" in data else "second")
        real_write(fd, data)

    monkeypatch.setattr(fs_module, "_write_all", slow_write)
    first = asyncio.create_task(fs_store.put_live(GUILD_A, make_live(GUILD_A, marker="first")))
    await asyncio.to_thread(entered.wait, 10)
    first.cancel()
    second = asyncio.create_task(fs_store.put_live(GUILD_A, make_live(GUILD_A, marker="second")))
    await asyncio.sleep(0.05)
    assert not second.done() and order == []  # still waiting for the first write's thread
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await first
    await second
    assert order == ["first", "second"]
    assert await fs_store.get_live(GUILD_A) == make_live(GUILD_A, marker="second")


async def test_writes_to_one_guild_are_serialised_in_call_order(
    fs_store: FilesystemStore, make_live: LiveFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = fs_module._write_all
    jitter = random.Random(7)

    def jittery_write(fd: int, data: bytes) -> None:
        time.sleep(jitter.random() / 200)  # threads would finish out of order if they overlapped
        real_write(fd, data)

    monkeypatch.setattr(fs_module, "_write_all", jittery_write)
    lives = [make_live(GUILD_A, marker=str(i)) for i in range(20)]
    await asyncio.gather(*(fs_store.put_live(GUILD_A, data) for data in lives))
    assert await fs_store.get_live(GUILD_A) == lives[-1]


async def test_closed_store_refuses_calls(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "store")
    await store.open()
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.live_guilds()
    assert "FilesystemStore" in repr(store)


async def test_kinds_survive_the_round_trip(fs_store: FilesystemStore, make_record: RecordFactory) -> None:
    kinds = [k for k in SnapshotKind if k is not SnapshotKind.live]
    for i, kind in enumerate(kinds):
        record = make_record(GUILD_A, kind=kind, created_at=T0 + i)
        await fs_store.save(record.meta, record.data)
    assert [m.kind for m in await fs_store.list(GUILD_A)] == kinds[::-1]
