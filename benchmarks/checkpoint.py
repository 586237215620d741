"""(a) checkpoint cycle vs its floor, (b) event-loop lag during it, (c) the incremental second cycle.

The product path is the one the cog runs: :meth:`SessionOwner.checkpoint` over real ``SonoraPlayer``
objects (each guild captured and encoded on the loop, one at a time; every 128 guilds, one group commit
of the filesystem store in a worker thread, overlapping the capture of the next batch). Beside it,
measured in the same run:

* **plain floor** — ``orjson.dumps`` of the same state JSON plus one plain ``open/write/close`` per
  guild (what the issue asks for: no capture, no envelope, no durability);
* **durable floor** — the same plus what the store's atomicity guarantee (DESIGN.md) costs at the
  least: write to a temp file, ``fsync``, ``rename``, ``fsync`` of the directory;
* **product, fsync off** — the product path with the store's two ``fsync`` seams stubbed out, so it
  can be set against the plain floor like for like;
* a CPU-only breakdown (capture, encode) with no I/O at all.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import io
import os
import pstats
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import orjson
import wavelink

import sonora_cog.store.filesystem as fs_store
import sonora_cog.store.fs_batch as fs_batch
from sonora_cog.capture import capture_state
from sonora_cog.config import Settings, SnapshotSettings, StorageSettings
from sonora_cog.manager import SessionManager
from sonora_cog.owner import SessionOwner
from sonora_cog.store.base import BatchResult, check_header
from sonora_cog.store.filesystem import FilesystemStore

from ._util import LagProbe, dir_bytes, open_store, ratio, sync_disks
from ._world import World, lavalink_track, make_world
from .original import run_original

__all__ = ("run_checkpoint",)


def _settings(path: Path) -> Settings:
    return Settings(
        storage=StorageSettings(path=str(path), compression="none"),
        # No scheduler runs here (the benchmark calls checkpoint() itself); the interval is the default one,
        # which sets how many unchanged guilds each checkpoint compares (a sixth: each once a minute).
        snapshots=SnapshotSettings(debounce=3600.0, checkpoint_interval=10.0),
    )


@contextmanager
def _no_fsync() -> Iterator[None]:
    """Stub the filesystem store's fsync seams (benchmark only: shows the cost of everything else)."""
    saved = fs_store._fsync, fs_store._fsync_dir, fs_batch._syncfs
    fs_store._fsync = lambda fd: None
    fs_store._fsync_dir = lambda dir_fd: None
    fs_batch._syncfs = lambda fd: None
    try:
        yield
    finally:
        fs_store._fsync, fs_store._fsync_dir, fs_batch._syncfs = saved


def _count_writes(manager: SessionManager) -> Callable[[], int]:
    """Wrap the store's ``put_live`` and ``put_live_many`` to count the records they write."""
    store = manager.store
    original, original_many = store.put_live, store.put_live_many
    count = 0

    async def counting(guild_id: int, data: bytes) -> None:
        nonlocal count
        count += 1
        await original(guild_id, data)

    async def counting_many(items: Sequence[tuple[int, bytes]]) -> BatchResult:
        nonlocal count
        result = await original_many(items)
        count += result.written
        return result

    store.put_live = counting  # type: ignore[method-assign]
    store.put_live_many = counting_many  # type: ignore[method-assign]
    return lambda: count


def _owner(world: World, path: Path) -> SessionOwner:
    """A session owner over the world with every guild live and dirty: the first checkpoint after they all
    started playing."""
    owner = SessionOwner(world.bot, SessionManager(_settings(path)))  # type: ignore[arg-type]
    for guild_id in world.guild_ids():
        owner.start(guild_id, "the benchmark plays here")
    return owner


def _floor_plain(payloads: list[tuple[int, dict[str, Any]]], folder: Path) -> dict[str, Any]:
    folder.mkdir(parents=True)
    written = 0
    started = time.perf_counter()
    for guild_id, payload in payloads:
        data = orjson.dumps(payload)
        with (folder / f"{guild_id}.json").open("wb") as f:
            f.write(data)
        written += len(data)
    return {"seconds": time.perf_counter() - started, "bytes": written}


def _floor_durable(payloads: list[tuple[int, dict[str, Any]]], folder: Path) -> dict[str, Any]:
    folder.mkdir(parents=True)
    written = 0
    started = time.perf_counter()
    for guild_id, payload in payloads:
        data = orjson.dumps(payload)
        final = folder / f"{guild_id}.json"
        tmp = folder / f".{guild_id}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(final)
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        written += len(data)
    return {"seconds": time.perf_counter() - started, "bytes": written}


async def _product_cycle(owner: SessionOwner, store_root: Path, *, lag: bool) -> dict[str, Any]:
    writes = _count_writes(owner.manager)
    probe = LagProbe()
    started = time.perf_counter()
    if lag:
        async with probe:
            written = await owner.checkpoint()
    else:
        written = await owner.checkpoint()
    seconds = time.perf_counter() - started
    files, size = dir_bytes(store_root / "live")
    out: dict[str, Any] = {
        "seconds": seconds,
        "guilds_written": written,
        "writes": writes(),
        "files": files,
        "bytes": size,
    }
    if lag:
        out["loop_lag"] = probe.summary()
    return out


def _cpu_breakdown(world: World, manager: SessionManager) -> dict[str, Any]:
    """Capture and encode every guild with no I/O, one guild at a time as the owner does, then
    ``orjson.dumps`` of every guild's state JSON in a pass of its own.

    Each pass goes through every guild, so each guild's objects are out of the CPU's caches when its
    turn comes, in both: the bare dumps is not timed right after the encode has read the same objects
    (that would time it warm: ~30% faster here). The states' JSON for the dumps pass is built first and
    the garbage collector is frozen meanwhile (holding every state at once would otherwise time the
    collector walking them). Encode includes fitting to the limits, as the manager does."""
    clock = time.perf_counter
    states = [capture_state(p).to_json() for p in world.players]
    gc.collect()
    gc.freeze()
    try:
        capture_s = encode_s = 0.0
        total = 0
        for player in world.players:
            t0 = clock()
            state = capture_state(player)
            t1 = clock()
            record = manager._encode_fitted(state, "live", [])
            t2 = clock()
            capture_s += t1 - t0
            encode_s += t2 - t1
            total += len(record.data)
        started = clock()
        for payload in states:
            orjson.dumps(payload)
        dumps_s = clock() - started
    finally:
        gc.unfreeze()
    n = len(world.players)
    return {
        "capture_us_per_guild": round(capture_s / n * 1e6, 1),
        "encode_us_per_guild": round(encode_s / n * 1e6, 1),
        "orjson_dumps_us_per_guild": round(dumps_s / n * 1e6, 1),
        "ratio_capture_encode_vs_dumps": ratio(capture_s + encode_s, dumps_s),
        "record_bytes_per_guild": total // n,
    }


def profile_hot_path(world: World, workdir: Path, out_dir: Path | None, top: int = 12) -> dict[str, Any]:
    """Profile one checkpoint's work for every guild, run synchronously in one thread so the profiler
    sees all of it (capture → to_json → codec.encode → the store's check + atomic write, real fsync).

    Returns the top functions by own time (cProfile); writes pyinstrument's call tree too if it is
    installed (``pip install -e .[bench]``).
    """
    manager = SessionManager(_settings(workdir / "profile-store"))
    store = cast(FilesystemStore, manager.store)  # the default store: its own synchronous write path
    store._setup_sync()

    def one_cycle() -> None:
        for player in world.players:
            state = capture_state(player)
            record = manager.codec.encode(state.to_json(), manager._meta_for(state, "live"))
            check_header(store._header(record.data), state.guild_id, None)
            store._write(("live",), store._live_name(state.guild_id), record.data, mode="replace", what="live")

    result: dict[str, Any] = {}
    profiler = cProfile.Profile()
    profiler.enable()
    one_cycle()
    profiler.disable()
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    total = sum(row[2] for row in stats.stats.values())  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]  # type: ignore[attr-defined]
    result["cprofile_total_s"] = round(total, 3)
    result["top_self_time"] = [
        {
            "function": f"{Path(file).name}:{line}({name})" if file != "~" else name,
            "calls": calls,
            "self_s": round(tottime, 4),
            "share": round(tottime / total, 3) if total else None,
        }
        for (file, line, name), (_cc, calls, tottime, _ct, _callers) in rows
    ]
    try:
        from pyinstrument import Profiler
    except ImportError:
        result["pyinstrument"] = "not installed (pip install -e .[bench])"
        return result
    sampler = Profiler(interval=0.0005, async_mode="disabled")
    sampler.start()
    one_cycle()
    sampler.stop()
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / "profile-checkpoint.txt"
        target.write_text(sampler.output_text(unicode=True, color=False, show_all=False))
        result["pyinstrument"] = str(target)
    return result


async def _change(world: World, owner: SessionOwner, count: int, salt: int) -> list[int]:
    """Change ``count`` guilds the way commands do (queue a track, set the volume) and mark them dirty."""
    step = max(1, len(world.players) // max(count, 1))
    changed = []
    for player in world.players[::step][:count]:
        player.queue.put(wavelink.Playable(lavalink_track(salt)))  # type: ignore[arg-type]
        player._volume = 50 + salt % 50
        assert player.guild is not None
        owner.mark_dirty(player.guild.id)
        changed.append(player.guild.id)
    return changed


async def run_checkpoint(guilds: int, tracks: int, workdir: Path, *, profile_dir: Path | None = None) -> dict[str, Any]:
    """Run (a), (b) and (c); return their results."""
    world = make_world(guilds, tracks)
    result: dict[str, Any] = {
        "guilds": guilds,
        "tracks_per_guild": tracks,
        "world_build_s": round(world.build_seconds, 2),
    }
    try:
        # -- the floors, from the same data --------------------------------------------------------
        payloads = [(p.guild.id, capture_state(p).to_json()) for p in world.players]  # type: ignore[union-attr]
        gc.collect()
        sync_disks()
        plain = _floor_plain(payloads, workdir / "floor-plain")
        sync_disks()
        durable = _floor_durable(payloads, workdir / "floor-durable")
        del payloads
        gc.collect()
        sync_disks()
        original = run_original(world.players, workdir / "original-sonora")  # type: ignore[arg-type]
        gc.collect()

        # -- (a)+(b): the product's checkpoint, as shipped, with the loop-lag probe running -----------
        idle = LagProbe()
        async with idle:
            await asyncio.sleep(0.5)
        sync_disks()
        owner = _owner(world, workdir / "store")
        await open_store(owner)
        product = await _product_cycle(owner, workdir / "store", lag=True)

        # -- the same with fsync stubbed: like for like with the plain floor ---------------------------
        sync_disks()
        nosync_owner = _owner(world, workdir / "store-nofsync")
        await open_store(nosync_owner)
        with _no_fsync():
            nosync = await _product_cycle(nosync_owner, workdir / "store-nofsync", lag=False)
        await nosync_owner.manager.close()

        cpu = _cpu_breakdown(world, owner.manager)

        # -- (c): a second cycle with 1% of the guilds changed ----------------------------------------
        changed_count = max(1, guilds // 100)
        await _change(world, owner, changed_count, salt=1)
        sync_disks()
        second = await _product_cycle(owner, workdir / "store", lag=True)
        # What a dirty-only checkpoint would do (the owner's debounced flush: owner.flush()).
        await _change(world, owner, changed_count, salt=2)
        sync_disks()
        writes = _count_writes(owner.manager)
        started = time.perf_counter()
        dirty_written = await owner.flush()
        dirty_seconds = time.perf_counter() - started
        if owner._flush_handle is not None:
            owner._flush_handle.cancel()
        await owner.manager.close()
        if profile_dir is not None:
            result["profile"] = profile_hot_path(world, workdir, profile_dir)

        n = guilds
        result["a_checkpoint"] = {
            "product": {**product, "us_per_guild": round(product["seconds"] / n * 1e6, 1)},
            "product_fsync_off": {**nosync, "us_per_guild": round(nosync["seconds"] / n * 1e6, 1)},
            "floor_plain": {**plain, "us_per_guild": round(plain["seconds"] / n * 1e6, 1)},
            "floor_durable": {**durable, "us_per_guild": round(durable["seconds"] / n * 1e6, 1)},
            "cpu_only": cpu,
            "original_sonora": {**original, "ratio_product_vs_original": ratio(product["seconds"], original["seconds"])}
            if "seconds" in original
            else original,
            "ratio_product_vs_plain_floor": ratio(product["seconds"], plain["seconds"]),
            "ratio_product_vs_durable_floor": ratio(product["seconds"], durable["seconds"]),
            "ratio_fsync_off_vs_plain_floor": ratio(nosync["seconds"], plain["seconds"]),
            "ratio_bytes_vs_plain_floor": ratio(product["bytes"], plain["bytes"]),
            "target": "product <= 1.2x the durable floor, compression off",
        }
        result["b_loop_lag"] = {
            "during_checkpoint": product["loop_lag"],
            "idle_baseline": idle.summary(),
            "target": "p99 < 20 ms",
            "met": product["loop_lag"]["p99_ms"] < 20.0,
        }
        result["c_incremental"] = {
            "changed_guilds": changed_count,
            "checkpoint_as_shipped": {
                "writes": second["writes"],
                "seconds": second["seconds"],
                "loop_lag": second["loop_lag"],
                "ratio_vs_first_cycle": ratio(second["seconds"], product["seconds"]),
            },
            "dirty_only_flush": {"writes": writes(), "guilds_written": dirty_written, "seconds": dirty_seconds},
            "target": "writes = changed guilds only",
            "met": second["writes"] == changed_count,
        }
    finally:
        await world.close()
    return result
