"""(d) Restore of a 10,000-track queue through FakeLavalink: time and Lavalink requests.

A real bot process (``sonora_cog.testing.music_bot`` with the cog) plays a 10-track playlist in one
guild and a 10,000-track playlist in another, is SIGKILLed, and started again, twice; its startup
restore brings both back (one at a time, ``concurrency = 1``, so each guild's time is its own):

* ``adopted``: the shipped settings; the bot resumes its Lavalink session and adopts the players;
* ``rebuilt``: ``resume_lavalink_sessions = false``; every player is rebuilt from its live record.

FakeLavalink records every REST request, so the requests of each guild's restore are counted by path:
the number must not grow with the queue. Beside it, the CPU parts of restoring the big queue, in process: decode
the record, validate it (``SessionState.from_json``), rebuild 10,000 ``wavelink.Playable``.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sonora_cog.capture import capture_state, to_playable
from sonora_cog.config import Settings, StorageSettings
from sonora_cog.demo import DemoScenario
from sonora_cog.manager import SessionManager
from sonora_cog.model import SessionState

from ._scenario import restart_and_time, set_restore_config
from ._world import FakeBot, lavalink_track, make_player, offline_node

__all__ = ("run_restore",)

_FAST_JOINS = "joins_per_window = 110\njoins_per_second = 1000.0\n"


def _cpu_parts(tracks: int, repeat: int = 3) -> dict[str, Any]:
    """Encode, decode, validate and rebuild ``tracks`` tracks in process (no network): median ms."""

    async def build() -> dict[str, Any]:
        node, session = offline_node()
        try:
            player = make_player(node, FakeBot(), 800_000_000_000_000_001, tracks)
            state = capture_state(player)
        finally:
            await node.close()
            await session.close()
        manager = SessionManager(Settings(storage=StorageSettings(path="/nonexistent-unused")))
        runs: list[dict[str, float]] = []
        for _ in range(repeat):
            times: dict[str, float] = {}
            started = time.perf_counter()
            record = manager.codec.encode(state.to_json(), manager._meta_for(state, "live"))
            times["encode_ms"] = (time.perf_counter() - started) * 1e3
            started = time.perf_counter()
            payload = manager.codec.decode(record.data).payload
            times["decode_ms"] = (time.perf_counter() - started) * 1e3
            started = time.perf_counter()
            restored = SessionState.from_json(payload, manager.limits)
            times["validate_ms"] = (time.perf_counter() - started) * 1e3
            started = time.perf_counter()
            playables = [to_playable(t) for t in restored.queue.upcoming]
            times["to_playable_ms"] = (time.perf_counter() - started) * 1e3
            runs.append(times)
        out: dict[str, Any] = {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0]}
        out["record_bytes"] = len(record.data)
        out["tracks"] = len(playables) + 1
        out["repeats"] = repeat
        return out

    return asyncio.run(build())  # in a worker thread: its own loop


async def _cpu_parts_async(tracks: int) -> dict[str, Any]:
    return await asyncio.to_thread(_cpu_parts, tracks)


def _per_guild_requests(requests: list[Any], guild_id: int) -> Counter[str]:
    marker = f"/players/{guild_id}"
    return Counter(f"{r.method} {r.route}" for r in requests if r.path.endswith(marker))


async def run_restore(workdir: Path, *, big: int = 10_000, small: int = 10) -> dict[str, Any]:
    """Run (d); return its results."""
    result: dict[str, Any] = {"queue_tracks": big, "baseline_tracks": small}
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    demo = DemoScenario(workdir, guilds=2, checkpoint_interval=1.0, extra_config=_FAST_JOINS + "concurrency = 1\n")
    async with demo:
        await demo.start_bot()
        urls = []
        for size in (small, big):
            url = f"https://bench.example/playlist/{size}"
            demo.lavalink.add_playlist(f"Bench {size}", [lavalink_track(i) for i in range(size)], url)
            urls.append(url)
        for index, url in enumerate(urls):
            await demo.play_one(index, query=url)
        await demo.wait_saved()
        await asyncio.sleep(1.0)
        guild_ids = [guild.id for guild, *_ in demo.world]
        manager = SessionManager(Settings(storage=StorageSettings(path=str(demo.store_path))))
        try:
            stored = [await manager.read_live(g) for g in guild_ids]
        finally:
            await manager.close()
        result["stored_queue_lengths"] = [len(s.queue.upcoming) + 1 if s else None for s in stored]
        for mode, extra in (("adopted", ""), ("rebuilt", "resume_lavalink_sessions = false\n")):
            set_restore_config(demo, _FAST_JOINS + "concurrency = 1\n" + extra)
            timing = await restart_and_time(demo, 2, timeout=120)
            result[mode] = _per_guild_timings(demo, timing, guild_ids, (small, big))
            result[f"{mode}_restart_total"] = timing
            result[f"{mode}_all_lavalink_requests"] = dict(demo.lavalink.request_counts)
            await demo.wait_saved()
        after = await demo.views()
        result["after"] = [{"track": v.track, "queue": v.queue, "volume": v.volume} for v in after]
    result["cpu_parts"] = await _cpu_parts_async(big)
    result["target"] = "a constant number of Lavalink requests (not per track), well under a second"
    result["met"] = all(
        (big_row := result[mode].get(str(big)))
        and big_row["lavalink_requests"] == result[mode].get(str(small), {}).get("lavalink_requests")
        and big_row["seconds"] < 1.0
        for mode in ("adopted", "rebuilt")
    )
    return result


def _per_guild_timings(
    demo: DemoScenario, timing: dict[str, Any], guild_ids: list[int], sizes: tuple[int, int]
) -> dict[str, Any]:
    """Each guild's restore time (they run one at a time) and its Lavalink requests, by queue size."""
    per_guild = {}
    previous = 0.0
    for guild_id, size, done in zip(guild_ids, sizes, sorted(timing["per_guild_done_s"]), strict=False):
        counts = _per_guild_requests(demo.lavalink.requests, guild_id)
        per_guild[str(size)] = {
            "seconds": round(done - previous, 3),
            "lavalink_requests": sum(counts.values()),
            "by_route": dict(counts),
        }
        previous = done
    return per_guild
