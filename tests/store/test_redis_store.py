"""What only the Redis backend does: its key layout, the codec envelope kept byte for byte, the write
buffer during an outage (a real ``redis-server`` killed and restarted), leases and fencing, migration.

The contract itself (``test_contract.py``) runs on this backend through ``conftest.BACKENDS``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from sonora_cog.codec import Codec, Keyring
from sonora_cog.config import Settings, StorageSettings
from sonora_cog.errors import DuplicateSnapshot, SnapshotNotFound, StoreError
from sonora_cog.lease import LeaseConflict, LeaseManager
from sonora_cog.manager import SessionManager, build_store
from sonora_cog.meta import SnapshotKind
from sonora_cog.migrate import migrate, migrate_locations
from sonora_cog.store import FilesystemStore
from sonora_cog.store.redis import BufferFull, RedisStore, redact_url
from sonora_cog.testing.redis_server import RedisServer, require_redis_server

# Same values as in conftest.py (test modules do not import conftest).
GUILD_A = 111111111111111111
GUILD_B = 222222222222222222
T0 = 1_790_000_000.0
RecordFactory = Callable[..., Any]
LiveFactory = Callable[..., bytes]


@pytest.fixture
def own_server(private_redis_server: RedisServer) -> RedisServer:
    """A server of this test alone (the plugin's ``private_redis_server``)."""
    return private_redis_server


@pytest.fixture
async def fast_store(own_server: RedisServer) -> AsyncIterator[RedisStore]:
    """A store on ``own_server`` that notices an outage quickly and retries often."""
    store = RedisStore(own_server.url, prefix="fast", timeout=1.0, retry_initial=0.05, retry_max=0.2)
    await store.open()
    yield store
    await store.close()


# --- layout ---------------------------------------------------------------------------------------------
async def test_key_layout(redis_store: RedisStore, make_record: RecordFactory, make_live: LiveFactory) -> None:
    client, p = redis_store._client, redis_store.prefix
    record = make_record(GUILD_A, created_at=T0 + 7)
    await redis_store.save(record.meta, record.data)
    await redis_store.put_live(GUILD_B, make_live(GUILD_B))
    assert await client.get(f"{p}:snap:{GUILD_A}:{record.meta.id}") == record.data
    assert await client.zrange(f"{p}:idx:{GUILD_A}", 0, -1, withscores=True) == [(record.meta.id.encode(), T0 + 7)]
    info = orjson.loads(await client.hget(f"{p}:meta:{GUILD_A}", record.meta.id))
    assert info["size"] == len(record.data) and info["id"] == record.meta.id
    assert await client.smembers(f"{p}:guilds") == {str(GUILD_A).encode()}
    assert await client.smembers(f"{p}:live-guilds") == {str(GUILD_B).encode()}
    assert await client.get(f"{p}:live:{GUILD_B}") == make_live(GUILD_B)
    # deleting the last snapshot of a guild removes the guild from the set, and the index entries
    assert await redis_store.delete(GUILD_A, record.meta.id)
    assert await client.smembers(f"{p}:guilds") == set()
    assert await client.exists(f"{p}:idx:{GUILD_A}", f"{p}:meta:{GUILD_A}") == 0


async def test_list_reads_metadata_only(redis_store: RedisStore, make_record: RecordFactory) -> None:
    record = make_record(GUILD_A, label="kept")
    await redis_store.save(record.meta, record.data)
    # garbage where the record was: a listing that read records would notice, this one does not
    await redis_store._client.set(f"{redis_store.prefix}:snap:{GUILD_A}:{record.meta.id}", b"garbage")
    [meta] = await redis_store.list(GUILD_A)
    assert meta.label == "kept" and meta.size == len(record.data)


async def test_bad_metadata_is_skipped_with_a_warning(
    redis_store: RedisStore, make_record: RecordFactory, caplog: pytest.LogCaptureFixture
) -> None:
    good, bad = make_record(GUILD_A), make_record(GUILD_A)
    for record in (good, bad):
        await redis_store.save(record.meta, record.data)
    await redis_store._client.hset(f"{redis_store.prefix}:meta:{GUILD_A}", bad.meta.id, b"{not json")
    with caplog.at_level(logging.WARNING):
        assert [m.id for m in await redis_store.list(GUILD_A)] == [good.meta.id]
    assert "bad metadata" in caplog.text


@pytest.mark.parametrize("compression", ["none", "zstd"])
async def test_compressed_and_encrypted_envelopes_round_trip(
    make_redis_store: Callable[..., RedisStore], compression: str
) -> None:
    from factories import sample_state

    key = Keyring.generate_key_text()
    codec = Codec(compression=compression, keyring=Keyring.from_text(key, []), encrypt=True)  # type: ignore[arg-type]
    store = make_redis_store()
    manager = SessionManager(store=store, codec=codec)
    try:
        state = sample_state()
        meta = await manager.save_snapshot(state)
        raw = await store.load(state.guild_id, meta.id)
        assert b"\x00" in raw or len(raw) > 0  # stored as bytes, not text
        loaded = await manager.load_snapshot(meta.id, state.guild_id)
        assert loaded.queue == state.queue
        await manager.write_live(state)
        assert (await manager.read_live(state.guild_id)) is not None
    finally:
        await manager.close()


def test_build_store_from_settings_and_redacted_url(redis_server: RedisServer) -> None:
    settings = Settings(storage=StorageSettings(backend="redis", redis_url=redis_server.url, redis_prefix="cfg"))
    store = build_store(settings)
    assert isinstance(store, RedisStore) and store.prefix == "cfg"
    assert redact_url("rediss://user:hunter2@example.org:6380/1") == "rediss://user:***@example.org:6380/1"
    assert "hunter2" not in repr(RedisStore("redis://:hunter2@127.0.0.1:1/0"))


async def test_password_from_settings(make_live: LiveFactory) -> None:
    require_redis_server()
    from sonora_cog.config import load_settings

    with RedisServer(password="s3cret-pass", persistent=False) as server:
        config = Path(server.directory) / "sonora.toml"
        config.write_text(f'[storage]\nbackend = "redis"\nredis_url = "{server.url}"\n')
        settings = load_settings(config, env={"SONORA_REDIS_PASSWORD": "s3cret-pass"})
        store = RedisStore.from_settings(settings)
        try:
            await store.put_live(GUILD_A, make_live())
            assert await store.get_live(GUILD_A) == make_live()
            assert "s3cret" not in repr(store)
        finally:
            await store.close()


# --- outages --------------------------------------------------------------------------------------------
async def test_writes_during_an_outage_are_buffered_and_flushed(
    own_server: RedisServer,
    fast_store: RedisStore,
    make_record: RecordFactory,
    make_live: LiveFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = fast_store
    before = make_record(GUILD_A)
    await store.save(before.meta, before.data)
    await store.put_live(GUILD_A, make_live(GUILD_A, marker="before"))
    await store.put_live(GUILD_B, make_live(GUILD_B))

    own_server.kill()
    during = [make_record(GUILD_A), make_record(GUILD_B)]
    with caplog.at_level(logging.WARNING):
        for record in during:
            await store.save(record.meta, record.data)  # no exception: buffered
        for i in range(5):
            await store.put_live(GUILD_A, make_live(GUILD_A, marker=f"during {i}"))
        assert await store.delete_live(GUILD_B) is True
        await store.put_aux("heartbeat-1", b'{"at": 1}')
        await store.put_aux("heartbeat-1", b'{"at": 2}')
        # one live write (coalesced), one delete, two snapshots, one auxiliary record (coalesced)
        assert not store.available and store.buffered == 5
        assert await store.get_aux("heartbeat-1") == b'{"at": 2}'
        # reads: what is buffered is served, anything else says clearly that Redis is down
        assert await store.get_live(GUILD_A) == make_live(GUILD_A, marker="during 4")
        assert await store.get_live(GUILD_B) is None
        assert await store.load(GUILD_A, during[0].meta.id) == during[0].data
        with pytest.raises(StoreError, match="unreachable"):
            await store.load(GUILD_A, before.meta.id)
        with pytest.raises(StoreError, match="unreachable"):
            await store.list()
        with pytest.raises(DuplicateSnapshot):
            await store.save(during[0].meta, during[0].data)
        assert "is unreachable" in caplog.text
        await asyncio.sleep(0.5)  # retries with backoff meanwhile, without raising anywhere

        own_server.start()
        assert await store.wait_available(timeout=10)
    assert "reachable again" in caplog.text
    assert store.buffered == 0
    fresh = RedisStore(own_server.url, prefix="fast")
    try:
        assert await fresh.get_live(GUILD_A) == make_live(GUILD_A, marker="during 4")
        assert await fresh.get_live(GUILD_B) is None
        assert await fresh.live_guilds() == [GUILD_A]
        assert await fresh.get_aux("heartbeat-1") == b'{"at": 2}'
        assert {m.id for m in await fresh.list()} == {before.meta.id, *(r.meta.id for r in during)}
    finally:
        await fresh.close()


async def test_redis_down_at_startup(make_live: LiveFactory, make_record: RecordFactory) -> None:
    require_redis_server()
    server = RedisServer(persistent=True)  # not started yet
    store = RedisStore(server.url, prefix="boot", timeout=0.5, retry_initial=0.05, retry_max=0.2)
    try:
        await store.open()  # logged, not raised
        assert not store.available
        with pytest.raises(StoreError, match="unreachable"):
            await store.live_guilds()
        await store.put_live(GUILD_A, make_live())
        record = make_record()
        await store.save(record.meta, record.data)
        server.start()
        assert await store.wait_available(timeout=10)
        assert await store.live_guilds() == [GUILD_A]
        assert await store.load(GUILD_A, record.meta.id) == record.data
    finally:
        await store.close()
        server.cleanup()


async def test_a_full_buffer_refuses_loudly(
    own_server: RedisServer, make_live: LiveFactory, make_record: RecordFactory, caplog: pytest.LogCaptureFixture
) -> None:
    store = RedisStore(own_server.url, prefix="full", timeout=0.5, buffer_max_records=2, retry_initial=0.05)
    try:
        await store.open()
        own_server.kill()
        await store.put_live(GUILD_A, make_live())
        await store.put_live(GUILD_A, make_live(marker="again"))  # same guild: coalesced, still 1
        record = make_record()
        await store.save(record.meta, record.data)
        with caplog.at_level(logging.ERROR), pytest.raises(BufferFull, match="NOT stored"):
            await store.put_live(GUILD_B, make_live(GUILD_B))
        assert "NOT stored" in caplog.text
        assert isinstance(BufferFull("x"), StoreError)
        own_server.start()
        assert await store.wait_available(timeout=10)
        assert await store.live_guilds() == [GUILD_A]
    finally:
        await store.close()


async def test_closing_with_writes_redis_never_got_logs_them(
    own_server: RedisServer, make_live: LiveFactory, caplog: pytest.LogCaptureFixture
) -> None:
    store = RedisStore(own_server.url, prefix="close", timeout=0.3)
    await store.open()
    own_server.kill()
    await store.put_live(GUILD_A, make_live())
    with caplog.at_level(logging.ERROR):
        await store.close()
    assert "never received" in caplog.text and f"live record of guild {GUILD_A}" in caplog.text


async def test_closing_is_bounded_when_redis_stops_answering(
    own_server: RedisServer, make_live: LiveFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # A frozen Redis (SIGSTOP: connections stay open, nothing answers) must not hang a shutdown: the retry
    # loop, the last flush and the disconnect each get a bounded time.
    store = RedisStore(own_server.url, prefix="frozen", timeout=0.3)
    await store.open()
    assert own_server.process is not None
    own_server.process.send_signal(signal.SIGSTOP)
    try:
        await store.put_live(GUILD_A, make_live())  # times out, then buffered; the retry loop starts
        loop = asyncio.get_running_loop()
        started = loop.time()
        with caplog.at_level(logging.ERROR):
            await asyncio.wait_for(store.close(), 20)
        assert loop.time() - started < 8
        assert "never received" in caplog.text
    finally:
        own_server.process.send_signal(signal.SIGCONT)


# --- leases ---------------------------------------------------------------------------------------------
async def test_live_writes_are_fenced_by_the_lease(redis_store: RedisStore, make_live: LiveFactory) -> None:
    other = LeaseManager(redis_store, owner="other-process")
    assert (await other.acquire(GUILD_A)).acquired
    redis_store.set_lease_owner("this-process")
    with pytest.raises(LeaseConflict, match="other-process"):
        await redis_store.put_live(GUILD_A, make_live())
    with pytest.raises(LeaseConflict):
        await redis_store.delete_live(GUILD_A)
    await redis_store.put_live(GUILD_B, make_live(GUILD_B))  # nobody owns guild B: allowed
    assert await redis_store.get_live(GUILD_A) is None
    await other.release(GUILD_A)
    await redis_store.put_live(GUILD_A, make_live())
    assert await redis_store.lease_holder(GUILD_A) is None


async def test_racing_processes_exactly_one_gets_the_guild(make_redis_store: Callable[..., RedisStore]) -> None:
    store = make_redis_store()
    managers = [LeaseManager(store, owner=f"process-{i}", ttl=5, renew_interval=1) for i in range(8)]
    try:
        results = await asyncio.gather(*(m.acquire(GUILD_A) for m in managers))
        winners = [s.holder for s in results if s.acquired]
        assert len(winners) == 1
        assert all(s.holder == winners[0] for s in results)
        assert await store.lease_holder(GUILD_A) == winners[0]
    finally:
        await store.close()


async def test_lease_renewal_expiry_and_takeover(redis_store: RedisStore) -> None:
    lost: list[int] = []
    old = LeaseManager(redis_store, owner="old", ttl=0.6, renew_interval=0.2, on_lost=lost.append)
    new = LeaseManager(redis_store, owner="new", ttl=0.6, renew_interval=0.2, poll_interval=0.05)
    old.start()
    assert (await old.acquire(GUILD_A)).acquired
    await asyncio.sleep(1.0)  # longer than the ttl: renewals keep it
    status = await new.acquire(GUILD_A)
    assert not status.acquired and status.holder == "old" and 0 < status.ttl <= 0.6
    # blue-green: the new process waits; the old one releases after its shutdown snapshot
    waiter = asyncio.create_task(new.acquire(GUILD_A, wait=5))
    await asyncio.sleep(0.3)
    assert not waiter.done()
    await old.close()
    assert (await waiter).acquired and new.holds(GUILD_A)
    # a crashed holder (never renews) loses the guild when its ttl runs out
    assert (await new.acquire(GUILD_B)).acquired
    third = LeaseManager(redis_store, owner="third", ttl=0.6, renew_interval=0.2, poll_interval=0.05)
    assert (await third.acquire(GUILD_B, wait=3)).acquired
    # the crashed one, if it comes back, finds the guild gone and says so
    new.on_lost = lost.append
    await new.renew()
    assert lost == [GUILD_B] and not new.holds(GUILD_B) and new.holds(GUILD_A)
    await new.close()
    await third.close()


async def test_waiting_gives_up_after_lease_wait(redis_store: RedisStore) -> None:
    holder = LeaseManager(redis_store, owner="holder", ttl=5, renew_interval=1)
    waiter = LeaseManager(redis_store, owner="waiter", ttl=5, renew_interval=1, poll_interval=0.05)
    assert (await holder.acquire(GUILD_A)).acquired
    statuses = [s async for s in waiter.acquire_many([GUILD_A, GUILD_B], wait=0.3)]
    assert {(s.guild_id, s.acquired) for s in statuses} == {(GUILD_A, False), (GUILD_B, True)}
    assert not await waiter.ensure(GUILD_A)
    assert await waiter.ensure(GUILD_B)
    await holder.close()
    await waiter.close()


# --- migration ------------------------------------------------------------------------------------------
async def test_migrate_filesystem_to_redis_and_back(
    tmp_path: Path, redis_server: RedisServer, make_record: RecordFactory, make_live: LiveFactory
) -> None:
    source = FilesystemStore(tmp_path / "fs")
    records = [make_record(GUILD_A, kind=SnapshotKind.auto), make_record(GUILD_A), make_record(GUILD_B)]
    for record in records:
        await source.save(record.meta, record.data)
    await source.put_live(GUILD_A, make_live(GUILD_A))
    await source.close()
    settings = Settings(storage=StorageSettings(redis_prefix="migrated"))
    seen: list[tuple[int, int]] = []
    report = await migrate_locations(
        str(tmp_path / "fs"), redis_server.url, settings, progress=lambda done, total: seen.append((done, total))
    )
    assert report.ok and report.copied == 4 and report.total == 4, report
    assert seen[-1] == (4, 4)
    # running it again copies nothing and still checks out
    again = await migrate_locations(str(tmp_path / "fs"), redis_server.url, settings)
    assert again.ok and again.copied == 0 and again.already_present == 4

    back = await migrate_locations(redis_server.url, str(tmp_path / "back"), settings)
    assert back.ok and back.copied == 4
    restored = FilesystemStore(tmp_path / "back")
    assert await restored.get_live(GUILD_A) == make_live(GUILD_A)
    for record in records:
        assert await restored.load(record.meta.guild_id, record.meta.id) == record.data
    with pytest.raises(SnapshotNotFound):
        await restored.load(GUILD_B, records[0].meta.id)


async def test_migrate_reports_conflicts_and_refuses_unreachable(
    redis_store: RedisStore, tmp_path: Path, make_record: RecordFactory, make_live: LiveFactory
) -> None:
    source = FilesystemStore(tmp_path / "fs")
    await source.put_live(GUILD_A, make_live(GUILD_A, marker="source"))
    record = make_record()
    await source.save(record.meta, record.data)
    await redis_store.put_live(GUILD_A, make_live(GUILD_A, marker="target"))
    report = await migrate(source, redis_store)
    assert not report.ok and report.conflicts == [f"{GUILD_A}/live"] and report.copied == 1
    assert await redis_store.get_live(GUILD_A) == make_live(GUILD_A, marker="target")
    report = await migrate(source, redis_store, overwrite_live=True)
    assert report.ok and await redis_store.get_live(GUILD_A) == make_live(GUILD_A, marker="source")
    with pytest.raises(StoreError, match="cannot reach"):
        await migrate_locations(
            str(tmp_path / "fs"), "redis://127.0.0.1:1/0", Settings(storage=StorageSettings(redis_timeout=0.5))
        )


# --- group commit -------------------------------------------------------------------------------------------
async def test_a_batch_is_one_round_trip_and_fenced_per_guild(
    redis_store: RedisStore, make_live: LiveFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = LeaseManager(redis_store, owner="other-process")
    assert (await other.acquire(GUILD_A)).acquired
    redis_store.set_lease_owner("this-process")
    round_trips = 0
    real_pipeline = redis_store._client.pipeline

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal round_trips
        round_trips += 1
        return real_pipeline(*args, **kwargs)

    monkeypatch.setattr(redis_store._client, "pipeline", counting)
    guilds = [GUILD_A, *(GUILD_B + i for i in range(20))]
    result = await redis_store.put_live_many([(g, make_live(g)) for g in guilds])
    assert round_trips == 1
    assert [i for i, _ in result.failures()] == [0] and isinstance(result.errors[0], LeaseConflict)
    assert "other-process" in str(result.errors[0])
    assert await redis_store.get_live(GUILD_A) is None  # fenced: not written
    assert await redis_store.live_guilds() == guilds[1:]


async def test_a_batch_during_an_outage_is_buffered_then_written(
    own_server: RedisServer, fast_store: RedisStore, make_record: RecordFactory, make_live: LiveFactory
) -> None:
    store = fast_store
    own_server.kill()
    lives = [(GUILD_A, make_live(GUILD_A, marker="x")), (GUILD_B, make_live(GUILD_B, marker="y"))]
    records = [make_record(GUILD_A), make_record(GUILD_B)]
    assert (await store.put_live_many(lives)).ok  # buffered: no error
    assert (await store.save_many([(r.meta, r.data) for r in records])).ok
    assert store.buffered == 4 and not store.available
    again = await store.save_many([(records[0].meta, records[0].data)])
    assert isinstance(again.errors[0], DuplicateSnapshot)  # the buffer refuses an id twice
    own_server.start()
    assert await store.wait_available(timeout=10)
    assert [await store.get_live(g) for g, _ in lives] == [d for _, d in lives]
    assert {m.id for m in await store.list()} == {r.meta.id for r in records}


async def test_a_batch_whose_round_trip_breaks_is_buffered_and_retried(
    redis_store: RedisStore, make_record: RecordFactory, make_live: LiveFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection breaks after Redis applied the batch: the retry finds its own snapshot and succeeds."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    record = make_record(GUILD_A)
    real_apply_many = redis_store._apply_many

    async def applied_then_broken(items: Any) -> Any:
        await real_apply_many(items)
        raise RedisConnectionError("connection reset after the reply was sent")

    monkeypatch.setattr(redis_store, "_apply_many", applied_then_broken)
    assert (await redis_store.save_many([(record.meta, record.data)])).ok
    assert (await redis_store.put_live_many([(GUILD_B, make_live(GUILD_B))])).ok
    assert await redis_store.wait_available(timeout=10)
    assert redis_store.buffered == 0
    assert await redis_store.load(GUILD_A, record.meta.id) == record.data
    assert await redis_store.get_live(GUILD_B) == make_live(GUILD_B)
