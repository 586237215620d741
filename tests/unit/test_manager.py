"""SessionManager over the real codec and filesystem store: save/load/list/delete/validate/import/live."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from factories import sample_state

from sonora_cog.codec import Keyring
from sonora_cog.config import Secret, Settings, StorageSettings
from sonora_cog.errors import (
    DuplicateSnapshot,
    ForeignGuildError,
    InvalidIdentifier,
    InvalidSnapshot,
    SnapshotNotFound,
    SnapshotTooLarge,
)
from sonora_cog.manager import SessionManager
from sonora_cog.meta import SnapshotKind
from sonora_cog.model import SessionState

GUILD, OTHER = 111111111111111111, 444444444444444444


@pytest.fixture
def manager(tmp_path: Path) -> SessionManager:
    return SessionManager(Settings(storage=StorageSettings(path=str(tmp_path / "store"))))


async def test_save_load_list_delete(manager: SessionManager, state: SessionState) -> None:
    meta = await manager.save_snapshot(state, label="before the party")
    assert meta.kind is SnapshotKind.manual and meta.label == "before the party"
    assert meta.track_count == 5 and meta.current_title == "Track 0" and meta.size > 0
    loaded = await manager.load_snapshot(meta.id, GUILD)
    assert loaded == dataclasses.replace(state, label="before the party")
    listed = await manager.list_snapshots(GUILD)
    assert [m.id for m in listed] == [meta.id]
    await manager.delete_snapshot(meta.id, GUILD)
    assert await manager.list_snapshots(GUILD) == []
    with pytest.raises(SnapshotNotFound):
        await manager.delete_snapshot(meta.id, GUILD)


async def test_a_guild_cannot_load_another_guilds_snapshot(manager: SessionManager, state: SessionState) -> None:
    meta = await manager.save_snapshot(state)
    with pytest.raises(SnapshotNotFound):
        await manager.load_snapshot(meta.id, OTHER)
    assert await manager.list_snapshots(OTHER) == []


async def test_snapshot_file_moved_into_another_guilds_folder_is_refused(
    manager: SessionManager, state: SessionState, tmp_path: Path
) -> None:
    meta = await manager.save_snapshot(state)
    source = next((tmp_path / "store").rglob(f"{meta.id}*"))
    target_dir = source.parent.parent / str(OTHER)
    target_dir.mkdir(mode=0o700, exist_ok=True)
    source.replace(target_dir / source.name)
    result = await manager.validate_snapshot(meta.id, OTHER)
    assert not result.ok
    assert result.error_type in {"ForeignGuildError", "SnapshotNotFound", "InvalidIdentifier"}
    with pytest.raises((ForeignGuildError, SnapshotNotFound)):
        await manager.load_snapshot(meta.id, OTHER)


async def test_bad_ids_and_labels(manager: SessionManager, state: SessionState) -> None:
    with pytest.raises(InvalidIdentifier):
        await manager.load_snapshot("../../etc/passwd", GUILD)
    with pytest.raises(InvalidIdentifier):
        await manager.save_snapshot(state, label="../../etc/passwd")
    with pytest.raises(InvalidIdentifier):
        await manager.save_snapshot(state, label="x" * 101)


async def test_live_record_write_read_end(manager: SessionManager, state: SessionState) -> None:
    assert await manager.read_live(GUILD) is None
    await manager.write_live(state)
    live = await manager.read_live(GUILD)
    assert live == dataclasses.replace(state, kind=SnapshotKind.live)
    assert await manager.live_guilds() == [GUILD]
    assert await manager.end_live(GUILD)
    assert await manager.read_live(GUILD) is None


async def test_unreadable_live_record_is_quarantined_not_deleted(manager: SessionManager, state: SessionState) -> None:
    await manager.write_live(state)
    good = await manager.store.get_live(GUILD)
    assert good is not None
    await manager.store.put_live(GUILD, good[: len(good) // 2])
    await manager.write_live(sample_state(guild_id=OTHER))
    with pytest.raises(Exception) as info:
        await manager.read_live(GUILD)
    assert type(info.value).__name__ == "TruncatedSnapshot"
    assert await manager.store.get_live(GUILD) is None
    assert (await manager.read_live(OTHER)) is not None  # the other guild still restores


async def test_import_validates_and_refuses_duplicates(manager: SessionManager, state: SessionState) -> None:
    exported = manager.export_json(state)
    meta = await manager.import_snapshot(manager.parse_export(exported))
    assert meta.kind is SnapshotKind.imported and meta.guild_id == GUILD
    with pytest.raises(DuplicateSnapshot, match=meta.id):
        await manager.import_snapshot(manager.parse_export(exported))
    with pytest.raises(ForeignGuildError):
        await manager.import_snapshot(manager.parse_export(exported), guild_id=OTHER)
    with pytest.raises(InvalidSnapshot):
        manager.parse_export(b"{not json")
    with pytest.raises(SnapshotTooLarge):
        manager.parse_export(exported, max_bytes=10)


async def test_retention_and_analyze(manager: SessionManager) -> None:
    for i in range(4):
        await manager.save_snapshot(sample_state(created_at=1_000_000.0 + i, kind=SnapshotKind.auto))
    await manager.save_snapshot(sample_state(guild_id=OTHER, created_at=2_000_000.0))
    analysis = await manager.analyze()
    assert analysis.total_snapshots == 5 and analysis.per_guild == {GUILD: 4, OTHER: 1}
    assert analysis.oldest == 1_000_000.0 and analysis.newest == 2_000_000.0
    assert analysis.average_size > 0
    removed = await manager.cleanup_old_snapshots(max_age_days=1)
    assert removed == 5  # all of them are decades old


async def test_encrypted_store_needs_the_key(tmp_path: Path, state: SessionState) -> None:
    key = Keyring.generate_key_text()
    settings = Settings(
        storage=StorageSettings(path=str(tmp_path / "s"), compression="zstd"),
        encryption=dataclasses.replace(Settings().encryption, enabled=True),
        encryption_key=Secret(key),
    )
    manager = SessionManager(settings)
    meta = await manager.save_snapshot(state)
    assert (await manager.load_snapshot(meta.id, GUILD)).queue == state.queue
    raw = await manager.store.load(GUILD, meta.id)
    assert b"Track 1" not in raw  # upcoming titles are encrypted (the header only names the current one)
    keyless = SessionManager(Settings(storage=StorageSettings(path=str(tmp_path / "s"))))
    result = await keyless.validate_snapshot(meta.id, GUILD)
    assert not result.ok and result.error_type == "WrongKeyError"


def test_importing_the_package_does_no_io(tmp_path: Path) -> None:
    code = "import sonora_cog, sys; m = sonora_cog.SessionManager(); print('ok')"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
    assert list(tmp_path.iterdir()) == []  # no store directory was created


async def test_lavalink_session_ids_round_trip_per_process(manager: SessionManager) -> None:
    await manager.write_lavalink_sessions("1-all", {"http://a:2333": "abc123"})
    await manager.write_lavalink_sessions("1-0", {"http://a:2333": "shard0"})
    assert await manager.read_lavalink_sessions("1-all") == {"http://a:2333": "abc123"}
    assert await manager.read_lavalink_sessions("1-0") == {"http://a:2333": "shard0"}
    assert await manager.read_lavalink_sessions("2-all") == {}


async def test_a_long_shard_list_still_gets_its_own_records(manager: SessionManager) -> None:
    many, others = "1-" + "-".join(map(str, range(64))), "1-" + "-".join(map(str, range(1, 65)))
    await manager.write_lavalink_sessions(many, {"http://a:2333": "many"})
    await manager.write_heartbeat(many, at=123.0)
    assert await manager.read_lavalink_sessions(many) == {"http://a:2333": "many"}
    assert await manager.read_heartbeat(many) == 123.0
    assert await manager.read_lavalink_sessions(others) == {}


@pytest.mark.parametrize("damaged", [b"not json", b"[1, 2]", b'{"sessions": "x"}', b'{"sessions": {"u": 5}}'])
async def test_a_damaged_lavalink_session_record_reads_as_none(manager: SessionManager, damaged: bytes) -> None:
    await manager.store.put_aux("lavalink-1-all", damaged)
    assert await manager.read_lavalink_sessions("1-all") == {}


@pytest.mark.parametrize("paused", [False, True], ids=["playing", "paused"])
async def test_a_snapshot_rewrapped_from_a_live_record_reads_as_its_meta_names_it(
    manager: SessionManager, state: SessionState, paused: bool
) -> None:
    """A ``shutdown`` snapshot made from a current live record's bytes (no second encode): the payload says
    ``live`` and the time of the last change; loading it gives the snapshot's kind and time, and a playing
    track moved on to the snapshot's time at the timescale's speed (1.25 here), as a restore would count it."""
    live_state = dataclasses.replace(
        state, kind=SnapshotKind.live, label=None, player=dataclasses.replace(state.player, paused=paused)
    )
    await manager.write_live(live_state)
    data = await manager.store.get_live(GUILD)
    assert data is not None
    later = live_state.created_at + 10.0
    record = manager.codec.rewrap(data, id="20261130T080000000-abcdef", kind=SnapshotKind.shutdown, created_at=later)
    await manager.store.save(record.meta, record.data)
    loaded = await manager.load_snapshot(record.meta.id, GUILD)
    assert (loaded.kind, loaded.label, loaded.created_at) == (SnapshotKind.shutdown, None, later)
    moved = 0 if paused else int(10.0 * 1000 * 1.25)
    assert loaded.player.position == live_state.player.position + moved
    assert loaded.queue == live_state.queue and loaded.extras == live_state.extras


@pytest.mark.parametrize("syncfs", [True, False])
def test_storage_syncfs_chooses_how_a_group_commit_is_made_durable(tmp_path: Path, syncfs: bool) -> None:
    from sonora_cog.manager import build_store
    from sonora_cog.store.filesystem import DEFAULT_SYNCFS_BATCH_MIN, FilesystemStore

    store = build_store(Settings(storage=StorageSettings(path=str(tmp_path), syncfs=syncfs)))
    assert isinstance(store, FilesystemStore)
    assert store.syncfs_batch_min == (DEFAULT_SYNCFS_BATCH_MIN if syncfs else None)


async def test_an_import_stored_by_a_format_1_release_is_still_a_duplicate(
    manager: SessionManager, state: SessionState
) -> None:
    """The first import was stored by a release before envelope format 2 (its meta holds the SHA-256 of the
    payload JSON, format 2's the XXH3-128): importing the same export again is refused all the same."""
    import hashlib
    import struct

    import orjson

    from sonora_cog.meta import new_snapshot_id

    def blake(data: bytes, size: int) -> bytes:
        return hashlib.blake2b(data, digest_size=size).digest()

    imported = dataclasses.replace(state, kind=SnapshotKind.imported)
    payload = orjson.dumps(imported.to_json())
    meta = dataclasses.replace(
        manager._meta_for(imported, new_snapshot_id()), content_hash=hashlib.sha256(payload).hexdigest()
    )
    meta_json = orjson.dumps(meta.to_json())
    fixed = struct.pack(">4sBBIQQ", b"SNRA", 1, 0, len(meta_json), len(payload), len(payload))
    header = fixed + blake(fixed, 8) + meta_json
    header += blake(header, 16)
    await manager.store.save(meta, header + payload + blake(header + hashlib.sha256(payload).digest(), 16))
    assert (await manager.load_snapshot(meta.id, GUILD)).queue == state.queue  # a format-1 record, read

    with pytest.raises(DuplicateSnapshot, match=meta.id):
        await manager.import_snapshot(state)
    other = await manager.import_snapshot(dataclasses.replace(state, extras={"dj": "someone else"}))
    assert other.content_hash != meta.content_hash and len(await manager.list_snapshots(GUILD)) == 2
