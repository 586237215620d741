"""(g) shutdown of 1,000 and 10,000 players: does the final write fit a stop grace period?

The product path is the one ``cog_unload`` / SIGTERM runs: :meth:`SessionOwner.shutdown` over real
``SonoraPlayer`` objects whose live records were all written by a checkpoint just before, then some
guilds changed (queued a track, set the volume, marked dirty as SonoraPlayer does). Two cases per size:

* **10 % changed** — the assumption for a steady bot: with the checkpoint every 10 s, about one guild in
  ten changed (a track ended, something was queued) since the last one;
* **all changed** — the worst case: every live record is rewritten.

Beside each, measured in the same run, the **durable floor** for the bytes that actually change:
``orjson.dumps`` of each changed guild's state plus temp file, ``fsync``, ``rename``, directory
``fsync`` per record, plus the same durable write of one snapshot's bytes per player (the size of its
live record), all in one folder; and the same floor with each snapshot written into its guild's
folder (the store's layout: a snapshot folder per guild, which the floor's one folder does not pay
for). At 1,000 players, the shutdown as it was before group commit (every guild captured, its
live record and its shutdown snapshot each encoded and written one by one) runs too.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from sonora_cog.capture import capture_state
from sonora_cog.config import Settings, SnapshotSettings, StorageSettings
from sonora_cog.manager import SessionManager
from sonora_cog.meta import SnapshotKind
from sonora_cog.owner import SessionOwner

from ._util import LagProbe, open_store, ratio, sync_disks
from ._world import World, make_world
from .checkpoint import _change

__all__ = ("run_shutdown",)

#: Seconds a graceful stop spends after the final write at most (leaving voice, leases, closing the
#: store: ``HANDOVER_GRACE`` each), so the writes get the grace period less this.
TEARDOWN_S = 6.0
GRACE_PERIODS = {"docker_10s": 10.0, "kubernetes_30s": 30.0}


def _owner(world: World, path: Path) -> SessionOwner:
    settings = Settings(
        storage=StorageSettings(path=str(path), compression="none"),
        snapshots=SnapshotSettings(
            debounce=3600.0, checkpoint_interval=10.0, shutdown_timeout=600.0, auto_enabled=False
        ),
    )
    owner = SessionOwner(world.bot, SessionManager(settings))  # type: ignore[arg-type]
    for guild_id in world.guild_ids():
        owner.start(guild_id, "the benchmark plays here")
    return owner


def _durable(folder: int, name: str, data: bytes) -> None:
    tmp = f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600, dir_fd=folder)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
    os.fsync(folder)


def _floor(
    changed: list[tuple[int, dict[str, Any]]],
    snapshots: list[tuple[int, bytes]],
    path: Path,
    *,
    per_guild: bool = False,
) -> dict[str, Any]:
    """orjson.dumps + durable write per changed record, plus a durable write of each snapshot's bytes: all in
    one folder, or (``per_guild``) each snapshot in its guild's existing folder, as the store lays them out."""
    path.mkdir(parents=True)
    folder = os.open(path, os.O_RDONLY)
    guild_folders: dict[int, int] = {}
    if per_guild:
        for guild_id, _ in snapshots:
            os.mkdir(str(guild_id), 0o700, dir_fd=folder)
            guild_folders[guild_id] = os.open(str(guild_id), os.O_RDONLY, dir_fd=folder)
        os.sync()
    written = 0
    started = time.perf_counter()
    try:
        for guild_id, payload in changed:
            data = orjson.dumps(payload)
            _durable(folder, f"{guild_id}.json", data)
            written += len(data)
        for guild_id, data in snapshots:
            _durable(guild_folders.get(guild_id, folder), f"{guild_id}.snapshot", data)
            written += len(data)
    finally:
        os.close(folder)
        for fd in guild_folders.values():
            os.close(fd)
    return {"seconds": time.perf_counter() - started, "bytes": written}


async def _one_by_one(owner: SessionOwner) -> float:
    """The shutdown before group commit: each guild captured, written live, then snapshotted, one at a time."""
    manager = owner.manager
    started = time.perf_counter()
    for player in owner.players():
        state = owner.capture(player)
        await manager.write_live(state)
        await manager.save_snapshot(replace(state, kind=SnapshotKind.shutdown))
    return time.perf_counter() - started


async def _case(world: World, workdir: Path, share: float, salt: int) -> dict[str, Any]:
    n = len(world.players)
    owner = _owner(world, workdir / "store")
    await open_store(owner)
    started = time.perf_counter()
    await owner.checkpoint()  # every live record written and current
    checkpoint_s = time.perf_counter() - started
    # A bot that has played a while has each guild's snapshot folder already (its first auto snapshot
    # made it): the shutdown writes into existing folders, as the floor writes into an existing one.
    snapshots = workdir / "store" / "snapshots"
    for guild_id in world.guild_ids():
        (snapshots / str(guild_id)).mkdir(mode=0o700, parents=True, exist_ok=True)
    changed_ids = set(await _change(world, owner, max(1, round(n * share)), salt))
    store = owner.manager.store
    counts = {"live": 0, "snapshots": 0}
    live_many, save_many = store.put_live_many, store.save_many

    async def count_live(items: Any) -> Any:
        counts["live"] += len(items)
        return await live_many(items)

    async def count_saves(items: Any) -> Any:
        counts["snapshots"] += len(items)
        return await save_many(items)

    store.put_live_many = count_live  # type: ignore[method-assign]
    store.save_many = count_saves  # type: ignore[method-assign]
    # the floor's input, from the same players: changed states' JSON, and every live record's size of bytes
    changed = [
        (p.guild.id, capture_state(p).to_json())
        for p in world.players
        if p.guild is not None and p.guild.id in changed_ids
    ]
    snapshot_bytes = [(g, await _live_bytes(store, g)) for g in world.guild_ids()]
    gc.collect()
    sync_disks()
    probe = LagProbe()
    started = time.perf_counter()
    async with probe:
        await owner.shutdown()
    seconds = time.perf_counter() - started
    assert owner.shutdown_complete
    await owner.manager.close()
    sync_disks()
    floor = _floor(changed, snapshot_bytes, workdir / "floor")
    sync_disks()
    layout_floor = _floor(changed, snapshot_bytes, workdir / "floor-per-guild", per_guild=True)
    del changed, snapshot_bytes
    per_guild = seconds / n
    return {
        "players": n,
        "changed": len(changed_ids),
        "first_checkpoint_s": round(checkpoint_s, 3),
        "product": {
            "seconds": round(seconds, 3),
            "us_per_player": round(per_guild * 1e6, 1),
            "live_records_written": counts["live"],
            "snapshots_written": counts["snapshots"],
            "loop_lag": probe.summary(),
        },
        "floor_durable": {
            "seconds": round(floor["seconds"], 3),
            "bytes": floor["bytes"],
            "us_per_player": round(floor["seconds"] / n * 1e6, 1),
        },
        "ratio_product_vs_floor": ratio(seconds, floor["seconds"]),
        "floor_durable_per_guild_folders": {"seconds": round(layout_floor["seconds"], 3)},
        "ratio_product_vs_per_guild_floor": ratio(seconds, layout_floor["seconds"]),
        "players_fitting": {name: int((grace - TEARDOWN_S) / per_guild) for name, grace in GRACE_PERIODS.items()}
        | {"shutdown_timeout_8s": int(8.0 / per_guild)},
    }


async def _live_bytes(store: Any, guild_id: int) -> bytes:
    return await store.get_live(guild_id) or b""


async def run_shutdown(workdir: Path, sizes: tuple[int, ...] = (1_000, 10_000), tracks: int = 50) -> dict[str, Any]:
    """Run (g) for each size; return the results."""
    result: dict[str, Any] = {
        "tracks_per_player": tracks,
        "changed_share_assumed": 0.10,
        "teardown_s": TEARDOWN_S,
        "rows": [],
    }
    for n in sizes:
        world = make_world(n, tracks)
        try:
            for name, share, salt in (("10% changed", 0.10, 11), ("all changed", 1.0, 12)):
                row = await _case(world, workdir / f"{n}-{salt}", share, salt)
                row["case"] = name
                result["rows"].append(row)
                gc.collect()
            if n <= 1_000:
                owner = _owner(world, workdir / f"{n}-one-by-one")
                await open_store(owner)
                sync_disks()
                seconds = await _one_by_one(owner)
                await owner.manager.close()
                result["before_group_commit"] = {
                    "players": n,
                    "seconds": round(seconds, 3),
                    "us_per_player": round(seconds / n * 1e6, 1),
                }
        finally:
            await world.close()
        gc.collect()
        await asyncio.sleep(0)
    return result
