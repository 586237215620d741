"""(e) Startup rehydration of many guilds through the fakes, against the gateway's floor.

A real bot process plays one track in each of ``guilds`` guilds, is SIGKILLed and started again; its
startup restore rejoins every voice channel and resumes playback. The time is read from the bot's own
log, from ``restoring N guild(s)`` to ``startup restore finished``.

Each voice join is one gateway send (op 4 VOICE_STATE_UPDATE). Discord allows 120 sends per connection
per rolling 60 s, heartbeats included, so:

* **gateway sustained floor** = joins / ((120 - heartbeats per 60 s) / 60 s): the time to rejoin at the
  highest rate Discord allows for long;
* **gateway window floor**: joins that fit in one fresh 60-s window (≤ 120 - heartbeats - identify) can
  all be sent at once: 0 s;
* **token-bucket floor** = max(0, joins - join_burst) / joins_per_second: what ``[restore]`` pacing
  itself imposes.

Runs: ``unpaced`` (joins_per_second = 1000, burst 60, concurrency 10: sonora's own cost), and, unless
``--quick``, ``default`` (the shipped ``[restore]`` settings: 1 join/s, burst 5, concurrency 2).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from sonora_cog.config import RestoreSettings
from sonora_cog.demo import DemoScenario

from ._scenario import restart_and_time, set_restore_config
from ._util import ratio

__all__ = ("gateway_floors", "run_rehydrate")

GATEWAY_SENDS_PER_WINDOW = 120
GATEWAY_WINDOW_S = 60.0


def gateway_floors(joins: int, heartbeat_interval_s: float, rate: float, burst: int) -> dict[str, float]:
    """The floors described in the module docstring, in seconds."""
    heartbeats = GATEWAY_WINDOW_S / heartbeat_interval_s
    per_second = (GATEWAY_SENDS_PER_WINDOW - heartbeats) / GATEWAY_WINDOW_S
    fits_one_window = joins <= GATEWAY_SENDS_PER_WINDOW - heartbeats - 1  # - identify
    return {
        "gateway_sustained_floor_s": round(joins / per_second, 2),
        "gateway_window_floor_s": 0.0 if fits_one_window else round((joins - (120 - heartbeats - 1)) / per_second, 2),
        "token_bucket_floor_s": round(max(0, joins - burst) / rate, 2),
    }


def _restore_lines(rate: float, burst: int, concurrency: int) -> str:
    # Rebuilt from the live records, not adopted from a resumed Lavalink session: the path that does
    # the most work per guild (both join voice once, which is what the gateway floor counts).
    return (f"joins_per_second = {rate}\njoin_burst = {burst}\nconcurrency = {concurrency}\n"
            "resume_lavalink_sessions = false\n")


async def run_rehydrate(workdir: Path, guilds: int = 100, *, default_run: bool = True) -> dict[str, Any]:
    """Run (e); return its results."""
    runs = [("unpaced", 1000.0, 60, 10)]
    if default_run:
        shipped = RestoreSettings()
        runs.append(("default", shipped.joins_per_second, shipped.join_burst, shipped.concurrency))
    result: dict[str, Any] = {"guilds": guilds}
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    demo = DemoScenario(workdir, guilds=guilds, checkpoint_interval=1.0, extra_config=_restore_lines(1000.0, 60, 10))
    async with demo:
        await demo.start_bot()
        started = time.perf_counter()
        for index in range(guilds):
            await demo.play_one(index)
        result["setup_s"] = round(time.perf_counter() - started, 2)
        heartbeat_s = demo.discord.heartbeat_interval_ms / 1000.0
        result["heartbeat_interval_s"] = heartbeat_s
        for name, rate, burst, concurrency in runs:
            await demo.wait_saved()
            set_restore_config(demo, _restore_lines(rate, burst, concurrency))
            timing = await restart_and_time(demo, guilds, timeout=max(120.0, guilds / rate * 2 + 60))
            floors = gateway_floors(guilds, heartbeat_s, rate, burst)
            result[name] = {
                "joins_per_second": rate,
                "join_burst": burst,
                "concurrency": concurrency,
                "seconds": timing["seconds"],
                "restored": timing["restored"],
                "ms_per_guild": round(timing["seconds"] / guilds * 1e3, 1),
                **floors,
                "ratio_vs_gateway_sustained_floor": ratio(timing["seconds"], floors["gateway_sustained_floor_s"]),
                "ratio_vs_token_bucket_floor": ratio(timing["seconds"], floors["token_bucket_floor_s"]),
                "summary_line": timing["summary_line"],
                "outcomes": timing["outcomes"],
            }
            await asyncio.sleep(1.0)
        result["gateway_rate_limit_violations"] = len(demo.discord.rate_limit_violations)
    return result
