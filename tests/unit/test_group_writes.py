"""The writer's group commits: the checkpoint in batches, and the shutdown that writes only what changed.

Real ``SonoraPlayer`` objects, offline (as the benchmarks build them: ``benchmarks/_world.py``), a real
session owner, manager and filesystem store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import wavelink

from benchmarks._world import World, lavalink_track, make_world
from sonora_cog import batching
from sonora_cog.batching import BATCH_SIZE
from sonora_cog.config import Settings, SnapshotSettings, StorageSettings
from sonora_cog.errors import StoreError
from sonora_cog.manager import SessionManager
from sonora_cog.meta import SnapshotKind
from sonora_cog.owner import SessionOwner
from sonora_cog.restore import advance_position
from sonora_cog.store.base import BatchResult


@pytest.fixture
async def world() -> AsyncIterator[World]:
    made = make_world(6, 5)
    yield made
    await made.close()


def owner_for(world: World, path: Path) -> SessionOwner:
    settings = Settings(
        storage=StorageSettings(path=str(path)), snapshots=SnapshotSettings(debounce=3600.0, auto_enabled=False)
    )
    owner = SessionOwner(world.bot, SessionManager(settings))  # type: ignore[arg-type]
    for guild_id in world.guild_ids():
        owner.start(guild_id, "the test plays here")
    return owner


class Spy:
    """Wraps an object's coroutine method and records each call's first argument."""

    def __init__(self, target: Any, name: str, fail: Any = None) -> None:
        self.calls: list[Any] = []
        self.real = getattr(target, name)
        self.fail = fail
        setattr(target, name, self)

    async def __call__(self, items: Any) -> BatchResult:
        """The real call, except for the items ``fail`` gives an error for (not written: that error)."""
        items = list(items)
        self.calls.append(items)
        refused = [self.fail(item) if self.fail is not None else None for item in items]
        result = await self.real([item for item, error in zip(items, refused, strict=True) if error is None])
        errors = iter(result.errors)
        return BatchResult(tuple(error if error is not None else next(errors) for error in refused))


def change(world: World, owner: SessionOwner, index: int) -> int:
    player = world.players[index]
    player.queue.put(wavelink.Playable(lavalink_track(99)))  # type: ignore[arg-type]
    assert player.guild is not None
    owner.mark_dirty(player.guild.id)
    return player.guild.id


async def test_a_checkpoint_writes_in_batches_and_settles_each_guild(tmp_path: Path) -> None:
    world = make_world(BATCH_SIZE + 5, 2)
    try:
        owner = owner_for(world, tmp_path)
        spy = Spy(owner.manager.store, "put_live_many")
        assert await owner.checkpoint() == BATCH_SIZE + 5
        assert [len(c) for c in spy.calls] == [BATCH_SIZE, 5]  # two group commits
        assert world.bot.dispatched == BATCH_SIZE + 5  # sonora_state_saved, per guild
        assert await owner.manager.live_guilds() == sorted(world.guild_ids())
        assert not any(owner.is_dirty(g) for g in world.guild_ids())
        assert await owner.checkpoint() == 0  # every signature recorded
    finally:
        await world.close()


async def test_one_guild_failing_in_a_batch_stays_dirty_alone(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    owner = owner_for(world, tmp_path)
    failing = world.guild_ids()[2]
    Spy(owner.manager.store, "put_live_many", fail=lambda item: StoreError("disk full") if item[0] == failing else None)
    with caplog.at_level(logging.ERROR):
        assert await owner.checkpoint() == len(world.players) - 1
    assert f"could not save the live record of guild {failing}: StoreError: disk full" in caplog.text
    assert [g for g in world.guild_ids() if owner.is_dirty(g)] == [failing]
    assert world.bot.dispatched == len(world.players) - 1


async def test_a_guild_ended_while_its_batch_is_in_the_store_is_taken_back(world: World, tmp_path: Path) -> None:
    owner = owner_for(world, tmp_path)
    ending = world.guild_ids()[1]
    real = owner.manager.store.put_live_many

    async def ends_meanwhile(items: Any) -> BatchResult:
        owner.end(ending, "/stop while the batch was written")
        return await real(items)

    owner.manager.store.put_live_many = ends_meanwhile  # type: ignore[method-assign]
    assert await owner.checkpoint() == len(world.players) - 1
    assert ending not in await owner.manager.live_guilds()


async def test_the_checkpoint_loop_runs_between_encodes(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batching, "SLICE_SECONDS", 0.0)
    owner = owner_for(world, tmp_path)
    ticks = 0
    encoding = True

    async def other_task() -> None:
        nonlocal ticks
        while encoding:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(other_task())
    outcomes = await owner.manager.write_live_many([owner.capture(p) for p in world.players])
    encoding = False
    await task
    assert all(o.ok for o in outcomes)
    assert ticks >= len(world.players)  # it ran after each encode, not once for the whole batch


# --- shutdown -------------------------------------------------------------------------------------------
async def test_shutdown_writes_only_changed_live_records_and_a_snapshot_of_every_player(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    owner = owner_for(world, tmp_path)
    manager = owner.manager
    assert await owner.checkpoint() == len(world.players)
    before = {g: await manager.store.get_live(g) for g in world.guild_ids()}
    changed = {change(world, owner, i) for i in (0, 3)}
    lives = Spy(manager.store, "put_live_many")
    saves = Spy(manager.store, "save_many")
    captured: list[int] = []
    real_capture = owner.capture
    owner.capture = lambda player, kind=SnapshotKind.live: (  # type: ignore[method-assign]
        captured.append(player.guild.id) or real_capture(player, kind)
    )
    with caplog.at_level(logging.INFO):
        await owner.shutdown()
    assert owner.shutdown_complete
    assert [sorted(g for g, _ in call) for call in lives.calls] == [sorted(changed)]  # one group commit
    assert sorted(captured) == sorted(changed)  # the current guilds are neither captured nor encoded
    assert len(saves.calls) == 1 and sorted(m.guild_id for m, _ in saves.calls[0]) == sorted(world.guild_ids())
    assert "wrote 2 changed live record(s) (4 current, kept) and 6 shutdown snapshot(s)" in caplog.text
    assert await manager.read_heartbeat(owner.key) is not None
    for guild_id in world.guild_ids():
        live = await manager.store.get_live(guild_id)
        assert (live != before[guild_id]) == (guild_id in changed)
        metas = await manager.list_snapshots(guild_id)
        assert [m.kind for m in metas] == [SnapshotKind.shutdown]
        snapshot = await manager.load_snapshot(metas[0].id, guild_id)
        _, state = manager.decode(live or b"")
        # The live record's state, its playing track moved on to the snapshot's time (as a restore from the
        # live record counts it with the heartbeat written at shutdown).
        played_on = advance_position(state, snapshot.created_at)
        assert snapshot.queue == state.queue and snapshot.player == played_on.player and snapshot.extras == state.extras
        assert snapshot.kind is SnapshotKind.shutdown and snapshot.created_at == metas[0].created_at


async def test_shutdown_captures_a_guild_whose_live_record_is_gone(world: World, tmp_path: Path) -> None:
    owner = owner_for(world, tmp_path)
    assert await owner.checkpoint() == len(world.players)
    gone = world.guild_ids()[4]
    await owner.manager.store.delete_live(gone)  # behind the writer's back (an operator's tool)
    await owner.shutdown()
    assert owner.shutdown_complete
    assert [m.kind for m in await owner.manager.list_snapshots(gone)] == [SnapshotKind.shutdown]


async def test_shutdown_failures_are_per_guild(world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    owner = owner_for(world, tmp_path)
    ids = world.guild_ids()
    for i in range(len(ids)):
        change(world, owner, i)
    no_live, no_snapshot = ids[1], ids[2]
    Spy(owner.manager.store, "put_live_many", fail=lambda item: StoreError("full") if item[0] == no_live else None)
    Spy(
        owner.manager.store,
        "save_many",
        fail=lambda item: StoreError("full") if item[0].guild_id == no_snapshot else None,
    )
    with caplog.at_level(logging.ERROR):
        await owner.shutdown()
    assert owner.shutdown_complete  # every guild settled: written, or its failure logged
    assert f"shutdown save of guild {no_live} failed: StoreError: full" in caplog.text
    assert f"shutdown snapshot of guild {no_snapshot} failed: StoreError: full" in caplog.text
    assert await owner.manager.store.get_live(no_live) is None
    assert sorted(await owner.manager.live_guilds()) == sorted(set(ids) - {no_live})
    snapshotted = {m.guild_id for m in await owner.manager.list_snapshots()}
    assert snapshotted == set(ids) - {no_snapshot}  # the guild whose live write failed has its snapshot


async def test_a_shutdown_snapshot_is_a_rewrap_of_the_live_record(world: World, tmp_path: Path) -> None:
    owner = owner_for(world, tmp_path)
    manager = owner.manager
    assert await owner.checkpoint() == len(world.players)
    guild_id = world.guild_ids()[0]
    live = await manager.store.get_live(guild_id)
    assert live is not None
    record = manager.snapshot_from_live_bytes(live, created_at=2_000_000_000.0)
    live_meta, _ = manager.decode(live)
    meta, _ = manager.decode(record.data)
    assert (meta.kind, meta.guild_id, meta.created_at) == (SnapshotKind.shutdown, guild_id, 2_000_000_000.0)
    assert (meta.track_count, meta.current_title) == (live_meta.track_count, live_meta.current_title)
    assert meta.id != "live" and record.meta.id == meta.id


@pytest.mark.parametrize("stuck", ["put_live_many", "save_many"])
async def test_a_shutdown_out_of_time_says_what_was_written(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture, stuck: str
) -> None:
    """The store hangs on the live records (nothing of the changed guilds is written) or on the snapshots
    (the live records are): the log line counts each as it is, not every guild as lost."""
    settings = Settings(
        storage=StorageSettings(path=str(tmp_path)),
        snapshots=SnapshotSettings(debounce=3600.0, auto_enabled=False, shutdown_timeout=0.5),
    )
    owner = SessionOwner(world.bot, SessionManager(settings))  # type: ignore[arg-type]
    for guild_id in world.guild_ids():
        owner.start(guild_id, "the test plays here")
    assert await owner.checkpoint() == len(world.players)
    changed = {change(world, owner, i) for i in (1, 4)}

    async def hang(items: Any) -> BatchResult:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    setattr(owner.manager.store, stuck, hang)
    with caplog.at_level(logging.ERROR):
        await owner.shutdown()
    assert not owner.shutdown_complete
    written = 0 if stuck == "put_live_many" else len(changed)
    assert (
        f"{written} of 2 changed live record(s) written, 4 current, 0 not compared yet: up to "
        f"{2 - written} guild(s) keep their last checkpoint"
    ) in caplog.text
    assert "0 of 6 shutdown snapshot(s) written" in caplog.text
    await owner.manager.close()
