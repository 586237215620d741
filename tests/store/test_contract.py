"""The store contract: every backend in ``conftest.BACKENDS`` must pass this file unchanged."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sonora_cog.errors import (
    DuplicateSnapshot,
    InvalidIdentifier,
    SnapshotCorrupted,
    SnapshotNotFound,
)
from sonora_cog.meta import SnapshotKind, SnapshotMeta, new_snapshot_id
from sonora_cog.store import RecordRef, SnapshotStore, StoreStats, plan_prune
from sonora_cog.store.base import EXPENDABLE_KINDS

# Same values as in conftest.py (test modules do not import conftest).
GUILD_A = 111111111111111111
GUILD_B = 222222222222222222
T0 = 1_790_000_000.0
DAY = 86400.0
Backend = Any  # conftest.Backend: .store, .read_location(location) -> bytes
RecordFactory = Callable[..., Any]  # conftest.make_record -> Record(meta, data)
LiveFactory = Callable[..., bytes]  # conftest.make_live
BAD_GUILDS = [0, -1, True, "111", 1.5, 2**64]
BAD_IDS = ["../../etc/passwd", "..", "", "live", "20260101T000000000-abcdef/../x", "20260101T000000000-ABCDEF"]


def test_backend_satisfies_protocol(store: SnapshotStore) -> None:
    assert isinstance(store, SnapshotStore)


# --- live records -------------------------------------------------------------------------------------
async def test_live_put_get_overwrite_delete(store: SnapshotStore, make_live: LiveFactory) -> None:
    assert await store.get_live(GUILD_A) is None
    assert await store.live_guilds() == []
    first, second = make_live(GUILD_A, marker="one"), make_live(GUILD_A, marker="two")
    await store.put_live(GUILD_A, first)
    assert await store.get_live(GUILD_A) == first
    await store.put_live(GUILD_A, second)
    assert await store.get_live(GUILD_A) == second
    await store.put_live(GUILD_B, make_live(GUILD_B))
    assert await store.live_guilds() == [GUILD_A, GUILD_B]
    assert await store.delete_live(GUILD_A) is True
    assert await store.delete_live(GUILD_A) is False
    assert await store.get_live(GUILD_A) is None
    assert await store.live_guilds() == [GUILD_B]


async def test_live_record_of_another_guild_is_refused(store: SnapshotStore, make_live: LiveFactory) -> None:
    with pytest.raises(InvalidIdentifier):
        await store.put_live(GUILD_A, make_live(GUILD_B))
    assert await store.get_live(GUILD_A) is None


async def test_garbage_is_refused(store: SnapshotStore, make_record: RecordFactory) -> None:
    with pytest.raises(SnapshotCorrupted):
        await store.put_live(GUILD_A, b"not a sonora record at all, just bytes")
    with pytest.raises(SnapshotCorrupted):
        await store.save(make_record().meta, b"\x00" * 3)
    assert await store.live_guilds() == []
    assert await store.list() == []


async def test_live_records_are_not_snapshots(store: SnapshotStore, make_live: LiveFactory) -> None:
    await store.put_live(GUILD_A, make_live())
    assert await store.list() == []
    assert await store.list(GUILD_A) == []


async def test_quarantine_moves_the_live_record_aside(backend: Backend, make_live: LiveFactory) -> None:
    store = backend.store
    data = make_live(GUILD_A, marker="bad")
    await store.put_live(GUILD_A, data)
    await store.put_live(GUILD_B, make_live(GUILD_B))
    location = await store.quarantine_live(GUILD_A, "ChecksumMismatch: flipped bit")
    assert isinstance(location, str) and location
    assert await store.get_live(GUILD_A) is None
    assert await store.live_guilds() == [GUILD_B]
    assert await backend.read_location(location) == data
    assert await store.quarantine_live(GUILD_A, "again") is None
    # a new live record can be written after a quarantine, and quarantined records are not scanned
    await store.put_live(GUILD_A, make_live(GUILD_A, marker="fresh"))
    assert {ref.guild_id for ref in [r async for r in store.scan()] if ref.is_live} == {GUILD_A, GUILD_B}


# --- snapshots ------------------------------------------------------------------------------------------
async def test_save_load_list_newest_first(store: SnapshotStore, make_record: RecordFactory) -> None:
    old = make_record(kind=SnapshotKind.auto, created_at=T0)
    new = make_record(
        kind=SnapshotKind.manual, created_at=T0 + 60, label="before the raid", titles=("Now playing", "Next", "After")
    )
    for record in (old, new):
        await store.save(record.meta, record.data)
    assert await store.load(GUILD_A, old.meta.id) == old.data
    assert await store.load(GUILD_A, new.meta.id) == new.data
    listed = await store.list(GUILD_A)
    assert [m.id for m in listed] == [new.meta.id, old.meta.id]
    top = listed[0]
    assert top == new.meta.with_size(len(new.data))
    assert top.size == len(new.data)
    assert top.track_count == 3
    assert top.current_title == "Now playing"
    assert top.label == "before the raid"
    assert top.kind is SnapshotKind.manual
    assert top.created_at == T0 + 60
    assert top.guild_id == GUILD_A
    assert listed[1].kind is SnapshotKind.auto and listed[1].label is None


async def test_duplicate_id_is_refused_and_original_kept(store: SnapshotStore, make_record: RecordFactory) -> None:
    first = make_record()
    await store.save(first.meta, first.data)
    same_id = make_record(snapshot_id=first.meta.id, created_at=first.meta.created_at, titles=("Other",))
    assert same_id.data != first.data
    with pytest.raises(DuplicateSnapshot):
        await store.save(same_id.meta, same_id.data)
    assert await store.load(GUILD_A, first.meta.id) == first.data
    assert len(await store.list(GUILD_A)) == 1


async def test_header_must_match_meta(store: SnapshotStore, make_record: RecordFactory) -> None:
    record = make_record(GUILD_A)
    with pytest.raises(InvalidIdentifier):
        await store.save(replace(record.meta, guild_id=GUILD_B), record.data)
    with pytest.raises(InvalidIdentifier):
        await store.save(replace(record.meta, id=new_snapshot_id(T0)), record.data)
    assert await store.list() == []


async def test_not_found(store: SnapshotStore) -> None:
    missing = new_snapshot_id(T0)
    with pytest.raises(SnapshotNotFound):
        await store.load(GUILD_A, missing)
    assert await store.delete(GUILD_A, missing) is False


async def test_guilds_are_isolated(store: SnapshotStore, make_record: RecordFactory) -> None:
    a = make_record(GUILD_A)
    b = make_record(GUILD_B)
    for record in (a, b):
        await store.save(record.meta, record.data)
    assert [m.id for m in await store.list(GUILD_A)] == [a.meta.id]
    assert [m.id for m in await store.list(GUILD_B)] == [b.meta.id]
    assert {m.id for m in await store.list()} == {a.meta.id, b.meta.id}
    assert [m.id for m in await store.list()] == [b.meta.id, a.meta.id]  # newest first across guilds
    with pytest.raises(SnapshotNotFound):
        await store.load(GUILD_B, a.meta.id)
    assert await store.delete(GUILD_B, a.meta.id) is False
    assert await store.load(GUILD_A, a.meta.id) == a.data


async def test_delete(store: SnapshotStore, make_record: RecordFactory) -> None:
    keep, drop = make_record(), make_record()
    for record in (keep, drop):
        await store.save(record.meta, record.data)
    assert await store.delete(GUILD_A, drop.meta.id) is True
    assert await store.delete(GUILD_A, drop.meta.id) is False
    assert [m.id for m in await store.list(GUILD_A)] == [keep.meta.id]
    with pytest.raises(SnapshotNotFound):
        await store.load(GUILD_A, drop.meta.id)
    # the id is free again once deleted
    await store.save(drop.meta, drop.data)
    assert await store.load(GUILD_A, drop.meta.id) == drop.data


@pytest.mark.parametrize("guild_id", BAD_GUILDS)
async def test_bad_guild_ids_are_refused(store: SnapshotStore, guild_id: object) -> None:
    sid = new_snapshot_id(T0)
    bad: int = guild_id  # type: ignore[assignment]
    calls = [
        store.put_live(bad, b"x"),
        store.get_live(bad),
        store.delete_live(bad),
        store.quarantine_live(bad, "x"),
        store.load(bad, sid),
        store.delete(bad, sid),
        store.list(bad),
    ]
    for call in calls:
        with pytest.raises(InvalidIdentifier):
            await call


@pytest.mark.parametrize("snapshot_id", BAD_IDS)
async def test_bad_snapshot_ids_are_refused(store: SnapshotStore, make_record: RecordFactory, snapshot_id: str) -> None:
    record = make_record()
    for call in (
        store.load(GUILD_A, snapshot_id),
        store.delete(GUILD_A, snapshot_id),
        store.save(replace(record.meta, id=snapshot_id), record.data),
    ):
        with pytest.raises(InvalidIdentifier):
            await call
    with pytest.raises(InvalidIdentifier):
        RecordRef(GUILD_A, snapshot_id, "x", 1)


# --- retention ------------------------------------------------------------------------------------------
async def test_prune_by_count_drops_oldest_auto_first(
    store: SnapshotStore, make_record: RecordFactory, make_live: LiveFactory
) -> None:
    kinds = [
        SnapshotKind.manual,
        SnapshotKind.auto,
        SnapshotKind.shutdown,
        SnapshotKind.auto,
        SnapshotKind.manual,
        SnapshotKind.auto,
    ]
    records = [make_record(kind=kind, created_at=T0 + i) for i, kind in enumerate(kinds)]
    other = make_record(GUILD_B, kind=SnapshotKind.auto, created_at=T0)
    for record in [*records, other]:
        await store.save(record.meta, record.data)
    await store.put_live(GUILD_A, make_live())

    deleted = await store.prune(max_per_guild=4, max_age_days=None, now=T0 + 10)
    assert {m.id for m in deleted} == {records[1].meta.id, records[3].meta.id}
    assert all(m.size > 0 for m in deleted)

    deleted = await store.prune(max_per_guild=2, max_age_days=None, now=T0 + 10)
    # the last auto goes first, then the oldest of the others
    assert {m.id for m in deleted} == {records[5].meta.id, records[0].meta.id}
    assert [m.id for m in await store.list(GUILD_A)] == [records[4].meta.id, records[2].meta.id]
    assert [m.id for m in await store.list(GUILD_B)] == [other.meta.id]
    assert await store.get_live(GUILD_A) is not None

    assert await store.prune(max_per_guild=2, max_age_days=None, now=T0 + 10) == []


async def test_prune_keeps_the_newest_deploy_tags(store: SnapshotStore, make_record: RecordFactory) -> None:
    now = T0 + 90 * DAY
    tags = [make_record(kind=SnapshotKind.pre_deploy, label=f"v{i}", created_at=T0 + i * DAY) for i in range(4)]
    manual = [make_record(kind=SnapshotKind.manual, created_at=T0 + 10 * DAY + i) for i in range(3)]
    for record in [*tags, *manual]:
        await store.save(record.meta, record.data)
    deleted = await store.prune(max_per_guild=1, max_age_days=30, now=now, keep_deploy_tags=2)
    # the two newest tags survive both limits and do not count against max_per_guild; the rest is old
    assert {m.id for m in deleted} == {r.meta.id for r in [*tags[:2], *manual]}
    assert {m.label for m in await store.list(GUILD_A)} == {"v2", "v3"}


async def test_prune_by_age_any_kind(store: SnapshotStore, make_record: RecordFactory, make_live: LiveFactory) -> None:
    now = T0 + 30 * DAY
    old_manual = make_record(kind=SnapshotKind.manual, created_at=now - 10 * DAY)
    old_auto = make_record(kind=SnapshotKind.auto, created_at=now - 8 * DAY)
    young = make_record(kind=SnapshotKind.auto, created_at=now - 6 * DAY)
    for record in (old_manual, old_auto, young):
        await store.save(record.meta, record.data)
    await store.put_live(GUILD_A, make_live())
    deleted = await store.prune(max_per_guild=None, max_age_days=7, now=now)
    assert {m.id for m in deleted} == {old_manual.meta.id, old_auto.meta.id}
    assert [m.id for m in await store.list()] == [young.meta.id]
    assert await store.live_guilds() == [GUILD_A]
    assert await store.prune(max_per_guild=None, max_age_days=None, now=now) == []


def test_plan_prune_treats_pre_change_snapshots_like_auto_ones() -> None:
    now = T0 + DAY
    kinds = [
        SnapshotKind.manual,
        SnapshotKind.pre_change,
        SnapshotKind.auto,
        SnapshotKind.pre_restore,
        SnapshotKind.pre_change,
    ]
    metas = [
        SnapshotMeta(new_snapshot_id(now - 100 + i), GUILD_A, now - 100 + i, kind, None, 0, None, "")
        for i, kind in enumerate(kinds)
    ]
    doomed = plan_prune(metas, max_per_guild=2, max_age_days=None, now=now)
    # the three expendable ones go, oldest first, before the older manual and pre-restore snapshots
    assert [m.kind for m in doomed] == [SnapshotKind.pre_change, SnapshotKind.auto, SnapshotKind.pre_change]


async def test_prune_refuses_negative_limits(store: SnapshotStore) -> None:
    with pytest.raises(ValueError, match="max_per_guild"):
        await store.prune(max_per_guild=-1, max_age_days=None)
    with pytest.raises(ValueError, match="max_age_days"):
        await store.prune(max_per_guild=None, max_age_days=-0.5)


_KINDS = st.sampled_from(list(SnapshotKind)).filter(lambda k: k is not SnapshotKind.live)


@given(
    ages=st.lists(st.tuples(st.sampled_from([GUILD_A, GUILD_B]), _KINDS, st.floats(0, 60)), max_size=30),
    max_per_guild=st.none() | st.integers(0, 10),
    max_age_days=st.none() | st.floats(0, 60),
)
def test_plan_prune_properties(
    ages: list[tuple[int, SnapshotKind, float]], max_per_guild: int | None, max_age_days: float | None
) -> None:
    now = T0 + 100 * DAY
    metas = [
        SnapshotMeta(new_snapshot_id(now - age * DAY), guild, now - age * DAY, kind, None, 0, None, "")
        for guild, kind, age in ages
    ]
    doomed = plan_prune(metas, max_per_guild=max_per_guild, max_age_days=max_age_days, now=now)
    doomed_ids = {m.id for m in doomed}
    assert len(doomed_ids) == len(doomed)
    kept = [m for m in metas if m.id not in doomed_ids]
    for guild in (GUILD_A, GUILD_B):
        mine = [m for m in kept if m.guild_id == guild]
        young = [
            m
            for m in metas
            if m.guild_id == guild and (max_age_days is None or m.created_at >= now - max_age_days * DAY)
        ]
        # exactly the expired ones plus the excess go: nothing more
        expected = len(young) if max_per_guild is None else min(len(young), max_per_guild)
        assert len(mine) == expected
        by_count = [m for m in doomed if m.guild_id == guild and m in young]
        if any(m.kind not in EXPENDABLE_KINDS for m in by_count):
            assert not any(m.kind in EXPENDABLE_KINDS for m in mine)  # autos and pre-changes went first
        for gone in by_count:  # within a kind class, the oldest go first
            same_class = [m for m in mine if (m.kind in EXPENDABLE_KINDS) == (gone.kind in EXPENDABLE_KINDS)]
            assert all((gone.created_at, gone.id) <= (m.created_at, m.id) for m in same_class)


# --- tools ------------------------------------------------------------------------------------------------
async def test_stats(store: SnapshotStore, make_record: RecordFactory, make_live: LiveFactory) -> None:
    assert await store.stats() == StoreStats()
    records = [
        make_record(GUILD_A, created_at=T0),
        make_record(GUILD_A, created_at=T0 + 5),
        make_record(GUILD_B, created_at=T0 + 2),
    ]
    for record in records:
        await store.save(record.meta, record.data)
    live = make_live(GUILD_B)
    await store.put_live(GUILD_B, live)
    stats = await store.stats()
    assert stats.snapshots == 3
    assert stats.live_records == 1
    assert stats.total_bytes == sum(len(r.data) for r in records) + len(live)
    assert dict(stats.per_guild) == {GUILD_A: 2, GUILD_B: 1}
    assert stats.oldest_created_at == T0
    assert stats.newest_created_at == T0 + 5


async def test_scan_and_replace(store: SnapshotStore, make_record: RecordFactory, make_live: LiveFactory) -> None:
    record = make_record(GUILD_A)
    await store.save(record.meta, record.data)
    live = make_live(GUILD_B)
    await store.put_live(GUILD_B, live)
    refs = [ref async for ref in store.scan()]
    assert {(r.guild_id, r.snapshot_id) for r in refs} == {(GUILD_A, record.meta.id), (GUILD_B, None)}
    sizes = {(r.guild_id, r.snapshot_id): r.size for r in refs}
    assert sizes[(GUILD_A, record.meta.id)] == len(record.data)
    assert sizes[(GUILD_B, None)] == len(live)
    assert all(isinstance(r.location, str) and r.location for r in refs)

    # re-encode both (here: compressed) and write them back in place, as `rekey` does
    snap_ref = next(r for r in refs if not r.is_live)
    live_ref = next(r for r in refs if r.is_live)
    recompressed = make_record(
        GUILD_A, snapshot_id=record.meta.id, created_at=record.meta.created_at, compression="zstd"
    )
    assert recompressed.data != record.data
    await store.replace(snap_ref, recompressed.data)
    assert await store.load(GUILD_A, record.meta.id) == recompressed.data
    new_live = make_live(GUILD_B, marker="rekeyed")
    await store.replace(live_ref, new_live)
    assert await store.get_live(GUILD_B) == new_live
    [listed] = await store.list(GUILD_A)
    assert listed.size == len(recompressed.data)

    # replace never creates a record and never lets a header move to another key
    with pytest.raises(SnapshotNotFound):
        await store.replace(RecordRef(GUILD_A, new_snapshot_id(T0), "nowhere", 0), record.data)
    with pytest.raises(SnapshotNotFound):
        await store.replace(RecordRef(GUILD_A, None, "nowhere", 0), make_live(GUILD_A))
    with pytest.raises(InvalidIdentifier):
        await store.replace(live_ref, make_live(GUILD_A))
    assert await store.get_live(GUILD_B) == new_live


# --- concurrency ------------------------------------------------------------------------------------------
async def test_concurrent_saves_and_puts_are_never_torn_or_lost(
    store: SnapshotStore, make_record: RecordFactory, make_live: LiveFactory
) -> None:
    records = [make_record(GUILD_A, padding=2000 + i, kind=SnapshotKind.auto) for i in range(50)]
    lives = [make_live(GUILD_A, marker=str(i), padding=3000 + i) for i in range(50)]
    await asyncio.gather(
        *(store.save(r.meta, r.data) for r in records),
        *(store.put_live(GUILD_A, data) for data in lives),
    )
    for record in records:
        assert await store.load(GUILD_A, record.meta.id) == record.data
    assert {m.id for m in await store.list(GUILD_A)} == {r.meta.id for r in records}
    assert await store.get_live(GUILD_A) == lives[-1]  # the last write wins, intact


async def test_concurrent_duplicate_saves_store_exactly_one(store: SnapshotStore, make_record: RecordFactory) -> None:
    record = make_record()
    results = await asyncio.gather(*(store.save(record.meta, record.data) for _ in range(20)), return_exceptions=True)
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, DuplicateSnapshot) for r in results if r is not None)
    assert await store.load(GUILD_A, record.meta.id) == record.data


# --- auxiliary records --------------------------------------------------------------------------------
async def test_aux_put_get_overwrite(store: SnapshotStore) -> None:
    assert await store.get_aux("heartbeat-1") is None
    await store.put_aux("heartbeat-1", b'{"at": 1}')
    await store.put_aux("heartbeat-1", b'{"at": 2}')
    await store.put_aux("lavalink-session_main", b"abc")
    assert await store.get_aux("heartbeat-1") == b'{"at": 2}'
    assert await store.get_aux("lavalink-session_main") == b"abc"
    assert await store.live_guilds() == []  # auxiliary records are not guilds
    assert await store.list() == []


@pytest.mark.parametrize("key", ["../../etc/passwd", "", "UPPER", "a/b", "x" * 65, "-lead"])
async def test_aux_bad_keys_are_refused(store: SnapshotStore, key: str) -> None:
    with pytest.raises(InvalidIdentifier):
        await store.put_aux(key, b"x")
    with pytest.raises(InvalidIdentifier):
        await store.get_aux(key)


async def test_aux_oversized_is_refused(store: SnapshotStore) -> None:
    with pytest.raises(InvalidIdentifier, match="larger than"):
        await store.put_aux("big", b"x" * (64 * 1024 + 1))


async def test_aux_keys_and_delete(store: SnapshotStore) -> None:
    for key in ("process-b", "process-a", "deploy-request", "process_x"):
        await store.put_aux(key, b"1")
    assert await store.aux_keys("process-") == ["process-a", "process-b"]
    assert await store.aux_keys("") == ["deploy-request", "process-a", "process-b", "process_x"]
    assert await store.delete_aux("process-a") is True
    assert await store.delete_aux("process-a") is False
    assert await store.get_aux("process-a") is None
    assert await store.aux_keys("process-") == ["process-b"]


# --- journals ---------------------------------------------------------------------------------------------
async def test_journal_append_read_list_delete(store: SnapshotStore) -> None:
    assert await store.read_journal("deploy-1") == []
    await store.append_journal("deploy-1", [b'{"a": 1}', b'{"a": 2}'])
    await store.append_journal("deploy-1", [b'{"a": 3}'])
    await store.append_journal("deploy-2", [b"x"])
    await store.append_journal("deploy-3", [])  # nothing to append: no journal either
    assert await store.read_journal("deploy-1") == [b'{"a": 1}', b'{"a": 2}', b'{"a": 3}']
    assert await store.journal_names() == ["deploy-1", "deploy-2"]
    assert await store.delete_journal("deploy-1") is True
    assert await store.delete_journal("deploy-1") is False
    assert await store.read_journal("deploy-1") == []
    assert await store.journal_names() == ["deploy-2"]
    assert await store.aux_keys("") == []  # journals are not auxiliary records


@pytest.mark.parametrize("entry", [b"two\nlines", b"", b"x" * 4097])
async def test_journal_bad_entries_are_refused_and_nothing_appended(store: SnapshotStore, entry: bytes) -> None:
    with pytest.raises(InvalidIdentifier):
        await store.append_journal("deploy-1", [b"fine", entry])
    assert await store.read_journal("deploy-1") == []


async def test_concurrent_journal_appends_are_never_lost_or_interleaved(store: SnapshotStore) -> None:
    entries = [f'{{"writer": {w}, "n": {n}, "pad": "{"x" * 900}"}}'.encode() for w in range(8) for n in range(25)]
    await asyncio.gather(*(store.append_journal("deploy-1", [e]) for e in entries))
    assert sorted(await store.read_journal("deploy-1")) == sorted(entries)


# --- group commit -------------------------------------------------------------------------------------
GUILDS = [GUILD_A + i for i in range(40)]  # over FilesystemStore's syncfs threshold (32)


async def test_put_live_many_writes_every_record(store: SnapshotStore, make_live: LiveFactory) -> None:
    for guild in GUILDS[:3]:
        await store.put_live(guild, make_live(guild, marker="old"))
    new = [(guild, make_live(guild, marker="new")) for guild in GUILDS]
    result = await store.put_live_many(new)
    assert result.ok and result.written == len(GUILDS) and result.failures() == []
    assert await store.live_guilds() == GUILDS
    for guild, data in new:
        assert await store.get_live(guild) == data
    assert (await store.put_live_many([])).errors == ()


async def test_put_live_many_fails_bad_items_alone(store: SnapshotStore, make_live: LiveFactory) -> None:
    old = make_live(GUILD_A, marker="old")
    await store.put_live(GUILD_A, old)
    items = [
        (GUILD_A, make_live(GUILD_B)),  # the header names another guild: refused, the old record stays
        (GUILD_B, make_live(GUILD_B, marker="new")),
        (0, make_live(GUILD_B)),  # not a guild id
        (GUILD_B + 1, b"not a record"),
    ]
    result = await store.put_live_many(items)
    assert [type(e).__name__ if e else None for e in result.errors] == [
        "InvalidIdentifier",
        None,
        "InvalidIdentifier",
        "TruncatedSnapshot",
    ]
    assert [i for i, _ in result.failures()] == [0, 2, 3] and result.written == 1
    assert await store.get_live(GUILD_A) == old
    assert await store.get_live(GUILD_B) == items[1][1]
    assert await store.live_guilds() == [GUILD_A, GUILD_B]


async def test_save_many_stores_every_snapshot_and_never_overwrites(
    store: SnapshotStore, make_record: RecordFactory
) -> None:
    existing = make_record(GUILD_A, titles=("Kept",))
    await store.save(existing.meta, existing.data)
    records = [make_record(guild) for guild in GUILDS]
    clash = make_record(GUILD_A, titles=("Clash",), snapshot_id=existing.meta.id)
    result = await store.save_many([(r.meta, r.data) for r in records] + [(clash.meta, clash.data)])
    assert result.written == len(GUILDS)
    assert [(i, type(e)) for i, e in result.failures()] == [(len(GUILDS), DuplicateSnapshot)]
    assert await store.load(GUILD_A, existing.meta.id) == existing.data
    for record in records:
        assert await store.load(record.meta.guild_id, record.meta.id) == record.data
    assert {m.id for m in await store.list()} == {existing.meta.id, *(r.meta.id for r in records)}


async def test_save_many_refuses_a_record_filed_under_another_id(
    store: SnapshotStore, make_record: RecordFactory
) -> None:
    good, other = make_record(GUILD_A), make_record(GUILD_B)
    wrong = replace(other.meta, id=new_snapshot_id(T0 + 99))
    result = await store.save_many([(wrong, other.data), (good.meta, good.data)])
    assert isinstance(result.errors[0], InvalidIdentifier) and result.errors[1] is None
    assert [m.id for m in await store.list()] == [good.meta.id]
