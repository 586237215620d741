"""(e) Startup rehydration of many guilds through the fakes, against the gateway's floor, for 1 and 4 shards.

A real bot process plays one track in each of ``guilds`` guilds, is SIGKILLed and started again; its
startup restore rejoins every voice channel and resumes playback. The time is read from the bot's own
log, from ``restoring N guild(s)`` to ``startup restore finished``. Two layouts: a plain ``Bot`` (one
shard) and an ``AutoShardedBot`` with ``shard_ids=[0, 1, 2, 3]`` in one process (guild ``i`` on shard
``i % 4``), each against FakeDiscord, which logs every gateway frame per connection.

Each voice join is one gateway send (op 4 VOICE_STATE_UPDATE) on the connection of the guild's shard.
Discord allows 120 sends per connection in any 60 s, heartbeats included, so:

* **window floor** = the extra windows the busiest shard needs: 0 s when each shard's joins fit one
  window (120 - heartbeats per 60 s - the IDENTIFY), else 60 s per further window;
* **unpaced** = the same restore (same ``concurrency``) with the pacing lifted (``joins_per_window`` 110,
  ``joins_per_second`` 1000): sonora's own cost;
* **floor** = the larger of the two; the shipped pacing is reported as a ratio to it.

Per run, FakeDiscord's log of the new process's connections gives each shard's joins and the most sends
(every frame, as Discord counts) and the most joins in any 60 s. Runs: ``unpaced`` and, unless
``--quick``, ``default`` (the shipped ``[restore]`` settings).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sonora_cog.config import RestoreSettings
from sonora_cog.demo import DemoScenario
from sonora_cog.pacing import DISCORD_GATEWAY_SENDS, DISCORD_GATEWAY_WINDOW_S, DISCORDPY_GATEWAY_SENDS
from sonora_cog.testing.fake_discord import GatewaySend, most_in_window

from ._scenario import restart_and_time, set_restore_config
from ._util import ratio

__all__ = ("SHARD_LAYOUTS", "run_rehydrate", "window_floor")

#: Shards of the two layouts: a plain Bot, and an AutoShardedBot running four shards in one process.
SHARD_LAYOUTS = (1, 4)
#: The target: product at most 1.5x the floor, or within 3 s of it when the floor is under 5 s.
TARGET_RATIO = 1.5
TARGET_SLACK_S = 3.0
SMALL_FLOOR_S = 5.0


def window_floor(joins_per_shard: Iterable[int], heartbeat_interval_s: float) -> float:
    """Seconds Discord's window forces on the busiest shard (module docstring)."""
    heartbeats = math.ceil(DISCORD_GATEWAY_WINDOW_S / heartbeat_interval_s)
    per_window = DISCORD_GATEWAY_SENDS - heartbeats - 1  # - the IDENTIFY
    extra = max((math.ceil(joins / per_window) - 1 for joins in joins_per_shard if joins), default=0)
    return extra * DISCORD_GATEWAY_WINDOW_S


def _restore_lines(per_window: int, rate: float, concurrency: int) -> str:
    # Rebuilt from the live records, not adopted from a resumed Lavalink session: the path that does
    # the most work per guild (both join voice once, which is what the floor counts).
    return (
        f"joins_per_window = {per_window}\njoins_per_second = {rate}\nconcurrency = {concurrency}\n"
        "resume_lavalink_sessions = false\n"
    )


def _per_shard(frames: list[GatewaySend], shards_of: dict[int, tuple[int, int] | None]) -> dict[str, Any]:
    """Joins, the most sends and the most joins in any 60 s, per shard (its connection of this run)."""
    sends: dict[int, list[float]] = defaultdict(list)
    joins: dict[int, list[float]] = defaultdict(list)
    for frame in frames:
        shard = shards_of.get(frame.connection_id)
        shard_id = shard[0] if shard else 0
        sends[shard_id].append(frame.at)
        if frame.op == 4:
            joins[shard_id].append(frame.at)
    return {
        str(shard): {
            "joins": len(joins[shard]),
            "max_sends_in_60s": most_in_window(sends[shard]),
            "max_joins_in_60s": most_in_window(joins[shard]),
        }
        for shard in sorted(sends)
    }


async def _run_layout(workdir: Path, guilds: int, shards: int, runs: list[tuple[str, int, float]]) -> dict[str, Any]:
    concurrency = RestoreSettings().concurrency
    result: dict[str, Any] = {"shards": shards, "guilds": guilds, "concurrency": concurrency}
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    demo = DemoScenario(
        workdir,
        guilds=guilds,
        checkpoint_interval=1.0,
        extra_config=_restore_lines(DISCORDPY_GATEWAY_SENDS, 1000.0, concurrency),
        shards=shards if shards > 1 else 0,
        explicit_shard_ids=True,
    )
    async with demo:
        await demo.start_bot()
        started = time.perf_counter()
        for index in range(guilds):
            await demo.play_one(index)
        result["setup_s"] = round(time.perf_counter() - started, 2)
        heartbeat_s = demo.discord.heartbeat_interval_ms / 1000.0
        result["heartbeat_interval_s"] = heartbeat_s
        for name, per_window, rate in runs:
            await demo.wait_saved()
            set_restore_config(demo, _restore_lines(per_window, rate, concurrency))
            first = len(demo.discord.gateway.send_log)
            timing = await restart_and_time(demo, guilds, timeout=max(180.0, guilds / rate * 2 + 60))
            per_shard = _per_shard(demo.discord.gateway.send_log[first:], demo.discord.gateway.connection_shards)
            result[name] = {
                "joins_per_window": per_window,
                "joins_per_second": rate,
                "seconds": timing["seconds"],
                "restored": timing["restored"],
                "ms_per_guild": round(timing["seconds"] / guilds * 1e3, 1),
                "per_shard": per_shard,
                "max_sends_in_60s": max(s["max_sends_in_60s"] for s in per_shard.values()),
                "window_floor_s": window_floor((s["joins"] for s in per_shard.values()), heartbeat_s),
                "summary_line": timing["summary_line"],
                "outcomes": timing["outcomes"],
            }
            await asyncio.sleep(1.0)
        result["gateway_rate_limit_violations"] = len(demo.discord.rate_limit_violations)
    unpaced = result["unpaced"]
    for name, *_rest in runs:
        row = result[name]
        floor = max(row["window_floor_s"], unpaced["seconds"])
        row["floor_s"] = floor
        row["ratio_vs_floor"] = ratio(row["seconds"], floor)
        within = row["seconds"] <= TARGET_RATIO * floor or (
            floor < SMALL_FLOOR_S and row["seconds"] <= floor + TARGET_SLACK_S
        )
        row["met"] = bool(
            within and row["max_sends_in_60s"] <= DISCORD_GATEWAY_SENDS and not result["gateway_rate_limit_violations"]
        )
    return result


async def run_rehydrate(workdir: Path, guilds: int = 100, *, default_run: bool = True) -> dict[str, Any]:
    """Run (e) for each layout of :data:`SHARD_LAYOUTS`; return its results."""
    runs: list[tuple[str, int, float]] = [("unpaced", DISCORDPY_GATEWAY_SENDS, 1000.0)]
    if default_run:
        shipped = RestoreSettings()
        runs.append(("default", shipped.joins_per_window, shipped.joins_per_second))
    layouts = {}
    for shards in SHARD_LAYOUTS:
        layouts[str(shards)] = await _run_layout(workdir / f"shards-{shards}", guilds, shards, runs)
    return {"guilds": guilds, "layouts": layouts}
