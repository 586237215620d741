"""Metrics of a real bot: scraped over HTTP while it restores its guilds, and the restore history after.

The demo's music bot runs as a subprocess against FakeDiscord and FakeLavalink with ``[metrics]`` on and
a port; it is SIGKILLed mid-track and started again, and a scraper reads ``/metrics`` the whole time the
new process restores (voice joins paced to one a second, so the restore is spread over a few seconds).
An in-process bot shows the ``command`` path through ``/snapshot restore``.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from conftest import StartBot
from test_commands import ask, buttons, create

from sonora_cog.config import MetricsSettings
from sonora_cog.demo import DemoScenario

GUILDS = 3
RESTORED = re.compile(r'^sonora_restores_total\{outcome="restored",path="(\w+)",reason="none"\} (\S+)$', re.M)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def value(text: str, name: str, **labels: str) -> float | None:
    """One sample of a scrape (labels in the exposition's sorted order), or ``None``."""
    inside = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = "^" + re.escape(f"{name}{{{inside}}}" if labels else name) + r" (\S+)$"
    found = re.search(pattern, text, re.M)
    return float(found[1]) if found else None


def restored_by_path(text: str) -> dict[str, float]:
    return {path: float(count) for path, count in RESTORED.findall(text)}


async def scrape(http: aiohttp.ClientSession, url: str) -> str | None:
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
            return await response.text() if response.status == 200 else None
    except (aiohttp.ClientError, OSError, TimeoutError):
        return None  # not serving yet (the process is starting)


async def test_metrics_scraped_over_http_during_a_restore(scenario: Callable[..., Any]) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    config = f"[metrics]\nenabled = true\nport = {port}\n[deploy]\npoll_interval = 30.0\n"
    demo: DemoScenario
    async with scenario(GUILDS, extra_config=config) as demo, aiohttp.ClientSession() as http:
        await demo.play_everywhere()
        await demo.wait_saved()
        first = await scrape(http, url)
        assert first is not None, "the first process serves /metrics"
        assert (value(first, "sonora_records_written_total", kind="live") or 0) > 0
        assert value(first, "sonora_store_errors_total", operation="put_live") == 0.0

        # slow the next start's restore down (one guild at a time, Discord answering each voice join after
        # 0.5 s), so that scrapes land in the middle of it
        demo.config_path.write_text(demo.config_path.read_text().replace("[restore]\n", "[restore]\nconcurrency = 1\n"))
        demo.discord.voice_latency = 0.5
        demo.bot.kill()
        await demo.bot.wait()
        scrapes: list[str] = []
        done = asyncio.Event()

        async def scraper() -> None:
            while not done.is_set():
                text = await scrape(http, url)
                if text is not None:
                    scrapes.append(text)
                await asyncio.sleep(0.05)

        task = asyncio.create_task(scraper())
        try:
            await demo.start_bot()
            await demo.wait_restored(GUILDS)
            await demo.lavalink.wait_for(
                lambda: scrapes and sum(restored_by_path(scrapes[-1]).values()) == GUILDS, timeout=10
            )
        finally:
            done.set()
            await task

        # during: some scrape saw the restore under way (some guilds counted, not all)
        progress = [sum(restored_by_path(text).values()) for text in scrapes]
        assert any(0 < seen < GUILDS for seen in progress), progress
        assert progress == sorted(progress), "a counter never goes back"
        # after: the resumed Lavalink session kept the players: every guild was adopted, none rebuilt or skipped
        last = scrapes[-1]
        assert restored_by_path(last) == {"adopted": float(GUILDS)}
        counted = re.findall(r"^sonora_restores_total\{.*$", last, re.M)
        assert len(counted) == 1 and 'outcome="restored"' in counted[0], counted
        assert value(last, "sonora_restore_duration_seconds_count", outcome="restored", path="adopted") == GUILDS
        assert (
            value(last, "sonora_restore_duration_seconds_bucket", le="+Inf", outcome="restored", path="adopted")
            == GUILDS
        )
        # the new process writes the restored guilds' live records again: the checkpoint histogram fills
        text = await demo.lavalink.wait_for(lambda: _checkpointed(scrape(http, url)), timeout=10)
        assert "# TYPE sonora_checkpoint_duration_seconds histogram" in text
        assert value(text, "sonora_records_written_total", kind="live")
        assert value(text, "sonora_redis_buffered_writes") == 0.0  # a filesystem store has no buffer

        # and the store's own history says the same, for `snapshots stats`
        stats = await demo.lavalink.wait_for(lambda: _stats_with(demo, GUILDS), timeout=15)
        assert stats["by_path"]["adopted"] == {"restored": GUILDS}
        assert stats["last_failures"] == []


async def _checkpointed(text_coro: Any) -> str | None:
    text = await text_coro
    if text is not None and (value(text, "sonora_checkpoint_duration_seconds_count") or 0) >= 1:
        return text
    return None


async def _stats_with(demo: DemoScenario, restored: int) -> dict[str, Any] | None:
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "sonora_cog", "snapshots", "stats", "--json", "--config", str(demo.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    restores: dict[str, Any] = json.loads(out.stdout)["restores"]
    return restores if restores["by_outcome"]["restored"] >= restored else None


@pytest.mark.parametrize("served", [False, True])
async def test_a_slash_command_restore_is_counted_in_the_bot_s_own_registry(start_bot: StartBot, served: bool) -> None:
    """``port = 0``: registered in the registry only (prometheus_client's default here); with a port: served too."""
    port = free_port() if served else 0
    running = await start_bot(metrics=MetricsSettings(enabled=True, port=port))
    registry = running.cog.metrics.registry
    assert registry is not None
    await running.play("clair de lune")
    snapshot_id = await create(running, "before")
    message = await ask(running, "restore", {"snapshot": snapshot_id})
    assert set(buttons(message)) == {"sonora:confirm:yes", "sonora:confirm:no"}  # something plays: confirm
    await running.fake.click_button(message, "sonora:confirm:yes", running.world.admin.id)
    sample = registry.get_sample_value
    await running.wait_for(
        lambda: sample("sonora_restores_total", {"path": "command", "outcome": "restored", "reason": "none"}) == 1.0
    )
    assert sample("sonora_records_written_total", {"kind": "manual"}) == 1.0
    assert sample("sonora_records_written_total", {"kind": "pre-restore"}) == 1.0
    assert (sample("sonora_records_written_total", {"kind": "live"}) or 0) >= 1
    if served:
        async with aiohttp.ClientSession() as http:
            text = await scrape(http, f"http://127.0.0.1:{port}/metrics")
        assert text is not None
        assert value(text, "sonora_restores_total", outcome="restored", path="command", reason="none") == 1.0
    else:
        assert running.cog.metrics.server is None
    await running.stop()
    assert sample("sonora_restores_total", {"path": "command", "outcome": "restored", "reason": "none"}) is None
