"""The filesystem store under hostile layouts and failing disks: it touches only what it created.

Each test plants what an attacker, a careless operator or a full disk would (a symbolic link where a store
folder or record belongs, group-writable folders, a read-only mount, a tiny tmpfs) and checks that the
store refuses with a clear error naming the path, and that nothing outside it was read, written,
chmodded, moved or deleted. Tests that need to mount a tmpfs run as root only (skipped with the reason
otherwise).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from factories import sample_state

from sonora_cog.config import Settings, StorageSettings
from sonora_cog.errors import StoreError
from sonora_cog.manager import SessionManager
from sonora_cog.meta import SnapshotKind
from sonora_cog.store.filesystem import FilesystemStore

GUILD = 111111111111111111


def fingerprint(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file and folder below ``folder``: its mode and (for files) the hash of its bytes."""
    seen = {".": (stat.S_IMODE(folder.lstat().st_mode), "")}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        seen[str(path.relative_to(folder))] = (stat.S_IMODE(info.st_mode), digest)
    return seen


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside the store with files a careless link could expose: one named like a record."""
    folder = tmp_path / "outside"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    (folder / f"{GUILD}.snr").write_bytes(b"not yours")
    (folder / ".cache.tmp").write_bytes(b"an old temp file of somebody else")
    old = 1_000_000_000
    os.utime(folder / ".cache.tmp", (old, old))
    (folder / "20250101T000000000-abcdef.snr").write_bytes(b"looks like a snapshot")
    return folder


def manager_for(store: Path) -> SessionManager:
    return SessionManager(Settings(storage=StorageSettings(path=str(store))))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sonora_cog", *args], capture_output=True, text=True, timeout=120)


async def test_a_symlinked_guild_folder_is_refused_and_nothing_outside_is_touched(
    tmp_path: Path, outside: Path
) -> None:
    store = tmp_path / "store"
    manager = manager_for(store)
    try:
        await manager.save_snapshot(sample_state(guild_id=GUILD))
        folder = store / "snapshots" / str(GUILD)
        for child in folder.iterdir():
            child.unlink()
        folder.rmdir()
        folder.symlink_to(outside, target_is_directory=True)
        before = fingerprint(outside)

        assert await manager.list_snapshots() == []  # every guild's listing: that folder skipped, with a warning
        with pytest.raises(StoreError, match=f"refusing {folder}: it is a symbolic link"):
            await manager.list_snapshots(GUILD)  # that guild's own listing: a clear error
        assert await manager.store.prune(max_per_guild=0, max_age_days=0) == []
        with pytest.raises(StoreError, match=f"refusing {folder}: it is a symbolic link"):
            await manager.save_snapshot(sample_state(guild_id=GUILD))
    finally:
        await manager.close()
    prune = run_cli("snapshots", "prune", "--store", str(store), "--max-per-guild", "0")
    assert prune.returncode == 0, prune.stderr
    assert fingerprint(outside) == before


async def test_a_symlinked_live_folder_is_refused_and_nothing_outside_is_touched(tmp_path: Path, outside: Path) -> None:
    store = tmp_path / "store"
    manager = manager_for(store)
    await manager.save_snapshot(sample_state(guild_id=GUILD))
    await manager.close()
    (store / "live").rmdir()
    (store / "live").symlink_to(outside, target_is_directory=True)
    before = fingerprint(outside)

    listed = run_cli("snapshots", "list", "--store", str(store), "--json")  # used to chmod and clean `outside`
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 1

    manager = manager_for(store)
    try:
        with pytest.raises(StoreError, match="is a symbolic link or not a directory"):
            await manager.live_guilds()  # the startup restore's listing: a clear error, not someone's files
        with pytest.raises(StoreError):
            await manager.read_live(GUILD)  # refused, and never quarantined (it is not our file)
        with pytest.raises(StoreError):
            await manager.write_live(sample_state(guild_id=GUILD, kind=SnapshotKind.live))
    finally:
        await manager.close()
    assert fingerprint(outside) == before
    assert not any((store / "quarantine").iterdir())


async def test_a_symlinked_record_is_refused(tmp_path: Path, outside: Path) -> None:
    store = tmp_path / "store"
    manager = manager_for(store)
    try:
        await manager.write_live(sample_state(guild_id=GUILD, kind=SnapshotKind.live))
        record = store / "live" / f"{GUILD}.snr"
        record.unlink()
        record.symlink_to(outside / f"{GUILD}.snr")
        before = fingerprint(outside)
        with pytest.raises(StoreError, match="symbolic link"):
            await manager.read_live(GUILD)
        with pytest.raises(StoreError, match="symbolic link"):
            await manager.write_live(sample_state(guild_id=GUILD, kind=SnapshotKind.live))
        with pytest.raises(StoreError, match="symbolic link"):
            await manager.end_live(GUILD)
        assert fingerprint(outside) == before and record.is_symlink()
    finally:
        await manager.close()


async def test_only_the_stores_own_temp_files_are_cleaned(tmp_path: Path) -> None:
    store = tmp_path / "store"
    manager = manager_for(store)
    await manager.write_live(sample_state(guild_id=GUILD, kind=SnapshotKind.live))
    await manager.close()
    ours = store / "live" / f".{GUILD}.snr.0123456789ab.tmp"
    theirs = store / "live" / ".cache.tmp"
    for path in (ours, theirs):
        path.write_bytes(b"x")
        os.utime(path, (1_000_000_000, 1_000_000_000))
    fresh = FilesystemStore(store)
    await fresh.open()
    assert not ours.exists() and theirs.exists()
    assert await fresh.live_guilds() == [GUILD]


async def test_unsafe_modes_are_reported_and_left_as_they_are(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = tmp_path / "store"
    manager = manager_for(store)
    await manager.write_live(sample_state(guild_id=GUILD, kind=SnapshotKind.live))
    await manager.close()
    (store / "live").chmod(0o777)
    (store / "live" / f"{GUILD}.snr").chmod(0o666)
    manager = manager_for(store)
    try:
        assert await manager.read_live(GUILD) is not None
    finally:
        await manager.close()
    assert "unsafe permissions on" in caplog.text and "world-writable (mode 777)" in caplog.text
    assert stat.S_IMODE((store / "live").stat().st_mode) == 0o777  # reported, never silently changed
    validate = run_cli("snapshots", "validate", "--store", str(store), "--json")
    assert validate.returncode == 1
    unsafe = {u["path"]: u["problem"] for u in json.loads(validate.stdout)["unsafe"]}
    assert str(store / "live") in unsafe and str(store / "live" / f"{GUILD}.snr") in unsafe


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A fresh tmpfs mounted at ``where`` (root only); skipped with the reason when it cannot be mounted."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (run the suite as root, as CI does)")
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): needs CAP_SYS_ADMIN")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


async def test_a_read_only_store_can_be_listed_shown_validated_and_exported(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "4m") as mount:
        store = mount / "store"
        manager = manager_for(store)
        try:
            meta = await manager.save_snapshot(sample_state(guild_id=GUILD))
            await manager.write_live(sample_state(guild_id=GUILD, kind=SnapshotKind.live))
        finally:
            await manager.close()
        remount = subprocess.run(["mount", "-o", "remount,ro", str(mount)], capture_output=True, text=True)  # noqa: ASYNC221
        assert remount.returncode == 0, remount.stderr
        listed = run_cli("snapshots", "list", "--store", str(store), "--json")
        assert listed.returncode == 0, listed.stderr
        assert [r["id"] for r in json.loads(listed.stdout)] == [meta.id]
        assert run_cli("snapshots", "show", meta.id, "--store", str(store)).returncode == 0
        assert run_cli("snapshots", "validate", "--store", str(store)).returncode == 0
        export = tmp_path / "out.json"
        assert run_cli("snapshots", "export", meta.id, "--out", str(export), "--store", str(store)).returncode == 0
        assert json.loads(export.read_text())["guild_id"] == str(GUILD)
        manager = manager_for(store)
        try:
            assert await manager.read_live(GUILD) is not None
            with pytest.raises(StoreError, match="Read-only file system"):
                await manager.write_live(sample_state(guild_id=GUILD, kind=SnapshotKind.live))
        finally:
            await manager.close()


async def test_a_full_disk_keeps_the_old_record_and_leaves_no_temp_file(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "256k") as mount:
        store = mount / "store"
        manager = manager_for(store)
        try:
            old = sample_state(guild_id=GUILD, kind=SnapshotKind.live, tracks=3)
            await manager.write_live(old)
            huge = sample_state(guild_id=GUILD, kind=SnapshotKind.live, tracks=1_500)  # ~1 MB: does not fit
            with pytest.raises(StoreError, match="No space left on device"):
                await manager.write_live(huge)
            back = await manager.read_live(GUILD)
            assert back is not None and back.track_count == old.track_count
            assert not [p for p in (store / "live").iterdir() if p.name.endswith(".tmp")]
        finally:
            await manager.close()


async def test_a_wrong_redis_password_is_a_configuration_error_not_an_outage(tmp_path: Path) -> None:
    from sonora_cog.config import Secret
    from sonora_cog.errors import ConfigError
    from sonora_cog.testing.redis_server import RedisServer, require_redis_server

    require_redis_server()
    server = RedisServer(password="the-right-one", persistent=False)
    server.start()
    settings = Settings(
        storage=StorageSettings(backend="redis", redis_url=server.url, redis_prefix="auth", redis_timeout=1.0),
        redis_password=Secret("a-wrong-one"),
    )
    manager = SessionManager(settings)
    try:
        with pytest.raises(ConfigError, match="refused the credentials") as raised:
            await manager.live_guilds()  # loud at once: not "unreachable", no retry loop
        message = str(raised.value)
        assert "a-wrong-one" not in message and "the-right-one" not in message
        assert "storage.redis_password_env" in message
        with pytest.raises(ConfigError):
            await manager.write_live(sample_state(guild_id=GUILD, kind=SnapshotKind.live))
        assert len(manager.store._link.buffer) == 0  # type: ignore[attr-defined]  # nothing acknowledged into memory
    finally:
        await manager.close()
        server.cleanup()


# --- group commit -----------------------------------------------------------------------------------------------
async def test_a_disk_filling_up_mid_batch_keeps_every_old_record(tmp_path: Path) -> None:
    """A real full disk during a group commit: what fits is written, what does not keeps its old record,
    each failure says which guild, and no temp file is left."""
    guilds = [GUILD + i for i in range(40)]
    with tmpfs(tmp_path / "mnt", "1m") as mount:
        store = mount / "store"
        manager = manager_for(store)
        try:
            olds = [sample_state(guild_id=g, kind=SnapshotKind.live, tracks=1) for g in guilds]
            assert all(o.ok for o in await manager.write_live_many(olds))
            bigger = [sample_state(guild_id=g, kind=SnapshotKind.live, tracks=60) for g in guilds]  # ~40 KB each
            outcomes = await manager.write_live_many(bigger)
            failed = [o for o in outcomes if not o.ok]
            assert failed and len(failed) < len(guilds)  # some fit, the disk filled up, the rest did not
            for outcome in failed:
                assert isinstance(outcome.error, StoreError) and "No space left on device" in str(outcome.error)
                assert str(outcome.guild_id) in str(outcome.error)
            for outcome in outcomes:
                back = await manager.read_live(outcome.guild_id)
                assert back is not None and back.track_count == (60 if outcome.ok else 1)
            assert not list(store.rglob(".*.tmp"))
        finally:
            await manager.close()


@pytest.mark.parametrize("kind", ["live", "snapshot"])
async def test_a_link_planted_during_a_batch_is_refused_and_the_rest_written(
    tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Between writing the temp files and publishing them, a link appears where one record goes: that record
    is refused (the link and what it points to are untouched), the others are written."""
    from sonora_cog.store import filesystem as fs_module

    guilds = [GUILD + i for i in range(3)]
    store = FilesystemStore(tmp_path / "store")
    manager = SessionManager(Settings(storage=StorageSettings(path=str(store.root))), store=store)
    before = fingerprint(outside)
    victim = guilds[1]
    planted: list[Path] = []
    real_write_all = fs_module._write_all

    def plant_then_write(fd: int, data: bytes) -> None:
        if not planted:
            if kind == "live":
                target = store.root / "live" / f"{victim}.snr"
            else:
                snapshot_id = next(m.id for m, _ in pending if m.guild_id == victim)
                target = store.root / "snapshots" / str(victim) / f"{snapshot_id}.snr"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(outside / f"{GUILD}.snr")
            planted.append(target)
        real_write_all(fd, data)

    try:
        states = [sample_state(guild_id=g, kind=SnapshotKind.live) for g in guilds]
        pending: list[tuple[object, bytes]] = []
        if kind == "live":
            monkeypatch.setattr(fs_module, "_write_all", plant_then_write)
            outcomes = await manager.write_live_many(states)
        else:
            records = [await manager.encode_snapshot(replace(s, kind=SnapshotKind.shutdown)) for s in states]
            pending.extend((r.meta, r.data) for r in records)
            monkeypatch.setattr(fs_module, "_write_all", plant_then_write)
            outcomes = await manager.save_records_many(guilds, records)
        monkeypatch.undo()
        assert [o.ok for o in outcomes] == [True, False, True]
        assert str(planted[0]) in str(outcomes[1].error) or "already exists" in str(outcomes[1].error)
        assert planted[0].is_symlink()  # left where it is, never followed
        assert fingerprint(outside) == before
        for guild in (guilds[0], guilds[2]):
            if kind == "live":
                assert await manager.read_live(guild) is not None
            else:
                assert len(await manager.list_snapshots(guild)) == 1
        assert not list(store.root.rglob(".*.tmp"))
    finally:
        await manager.close()
