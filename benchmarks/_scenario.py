"""Running the real bot process against FakeDiscord / FakeLavalink (``sonora_cog.demo.DemoScenario``)
and reading timings from the bot's own log lines (``%(asctime)s`` has millisecond resolution)."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime
from typing import Any

from sonora_cog.demo import DemoScenario

__all__ = ("log_time", "restart_and_time", "set_restore_config")

_STAMP = re.compile(r"^(?:\[\w+\] )?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def log_time(line: str) -> float:
    """The Unix time at the start of a bot log line."""
    match = _STAMP.match(line)
    if match is None:
        raise ValueError(f"no timestamp in {line!r}")
    return datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def set_restore_config(demo: DemoScenario, restore: str) -> None:
    """Rewrite the bot's config file with these ``[restore]`` lines (read at the next start)."""
    demo.config_path.write_text(
        f'[storage]\npath = "{demo.store_path}"\n'
        f"[snapshots]\ndebounce = 0.2\ncheckpoint_interval = {demo.checkpoint_interval}\n"
        "[restore]\nrewind_seconds = 1.0\n" + restore
    )


async def restart_and_time(demo: DemoScenario, guilds: int, timeout: float = 600.0) -> dict[str, Any]:  # noqa: ASYNC109
    """SIGKILL the bot, start it again, wait for its startup restore; time it from the bot's log."""
    demo.bot.kill()
    await demo.bot.wait()
    demo.lavalink.clear_log()
    await demo.start_bot()
    await demo.bot.wait_for_line(r"startup restore finished", timeout=timeout)
    lines = demo.bot.lines_since_start()
    begin = next(line for line in lines if re.search(r"restoring \d+ guild\(s\) from their live records", line))
    end = next(line for line in lines if "startup restore finished" in line)
    done = [line for line in lines if re.search(r"restore \d+/\d+: guild \d+ ", line)]
    restored = [line for line in done if re.search(r"restore \d+/\d+: guild \d+ restored", line)]
    start_t = log_time(begin)
    outcomes: Counter[str] = Counter()
    for line in done:
        match = re.search(r"restore \d+/\d+: guild \d+ (.*)$", line)
        if match:
            outcomes[re.sub(r"\d{3,}", "N", match[1])[:160]] += 1
    return {
        "outcomes": dict(outcomes),
        "guilds": guilds,
        "restored": len(restored),
        "seconds": round(log_time(end) - start_t, 3),
        "per_guild_done_s": [round(log_time(line) - start_t, 3) for line in done],
        "summary_line": end.split(": ", 1)[-1],
    }
