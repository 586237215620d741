"""Canary handover between two real bot processes on Redis, through FakeDiscord and FakeLavalink.

An old process plays 20 guilds; a new one starts and asks for them; the old one hands them over in
batches of 5. FakeLavalink makes the new process's players fail for chosen guilds (``fail_player``, in
every session but the old one's), so a failed restore is given back and the old process takes it back;
a batch that fails as a whole stops the handover and the old process keeps the rest. A ``kill -9`` of
either side in the middle leaves every guild owned (lease) and played by exactly one process within
``storage.lease_ttl``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import orjson
from test_redis import RedisScenario, start

from sonora_cog.deploy import GuildDeployStatus, Step
from sonora_cog.testing.botproc import BotProcess
from sonora_cog.testing.redis_server import RedisServer

GUILDS = 20
HANDOVER = (
    "[deploy]\npoll_interval = 0.5\nhandover_batch_size = 5\nhandover_pause = 1.0\nhandover_timeout = 45.0\n"
    "max_failure_ratio = 0.5\n"
)


class HandoverScenario(RedisScenario):
    """20 guilds on Redis; the old process ("blue") runs and plays them all."""

    async def __aenter__(self) -> HandoverScenario:
        await super().__aenter__()
        self.config_path.write_text(self.config_path.read_text() + HANDOVER)
        return self

    def guild_ids(self) -> list[int]:
        return sorted(guild.id for guild, *_ in self.world)

    def sessions_of(self, process: BotProcess, before: set[str]) -> set[str]:
        """The Lavalink sessions opened since ``before`` was taken (a process's own)."""
        del process
        return {s.session_id for s in self.lavalink.sessions if s.connected} - before

    def playing_in(self, session_ids: set[str]) -> set[int]:
        return {int(p.guild_id) for p in self.lavalink.players() if p.session_id in session_ids and p.track}

    async def holders(self) -> dict[int, str | None]:
        manager = self.manager()
        try:
            return {g: await manager.store.lease_holder(g) for g in self.guild_ids()}  # type: ignore[attr-defined]
        finally:
            await manager.close()

    async def journal(self) -> list[GuildDeployStatus]:
        manager = self.manager()
        try:
            names = [n for n in await manager.store.journal_names() if n.startswith("handover-")]
            entries = []
            for name in names:
                for line in await manager.store.read_journal(name):
                    entry = GuildDeployStatus.from_json(orjson.loads(line))
                    assert entry is not None
                    entries.append(entry)
            return sorted(entries, key=lambda e: e.at)
        finally:
            await manager.close()


async def owned_by(demo: HandoverScenario, process: BotProcess) -> set[int]:
    return {g for g, holder in (await demo.holders()).items() if holder and f":{process.pid}:" in holder}


async def wait_until(check: Any, timeout: float, what: str) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.25)


async def begin(tmp_path: Path, server: RedisServer) -> tuple[HandoverScenario, set[str]]:
    demo = HandoverScenario(tmp_path, GUILDS, server)
    await demo.__aenter__()
    await start(demo.bot)
    await demo.play_everywhere()
    await demo.wait_saved()
    blue_sessions = {s.session_id for s in demo.lavalink.sessions if s.connected}
    assert demo.playing_in(blue_sessions) == set(demo.guild_ids())
    return demo, blue_sessions


async def test_a_guild_the_new_process_cannot_restore_is_taken_back_the_others_move_in_batches(
    tmp_path: Path, private_redis_server: RedisServer
) -> None:
    demo, blue_sessions = await begin(tmp_path, private_redis_server)
    try:
        guilds = demo.guild_ids()
        broken = guilds[7]
        demo.lavalink.fail_player(broken, except_sessions=blue_sessions)
        green = demo.new_process("bot-green")
        await start(green)
        await demo.bot.wait_for_line(r"handover to .* finished", timeout=90)
        green_sessions = demo.sessions_of(green, blue_sessions)

        assert await owned_by(demo, green) == set(guilds) - {broken}
        assert await owned_by(demo, demo.bot) == {broken}
        await demo.lavalink.wait_for(lambda: demo.playing_in(green_sessions) == set(guilds) - {broken}, timeout=10)
        await demo.lavalink.wait_for(lambda: demo.playing_in(blue_sessions) == {broken}, timeout=10)

        entries = await demo.journal()
        steps = {g: [e.step for e in entries if e.guild_id == g] for g in guilds}
        assert sorted(steps[broken]) == sorted([Step.handed_over, Step.handover_failed, Step.taken_back])
        assert all(sorted(steps[g]) == sorted([Step.handed_over, Step.taken_over]) for g in guilds if g != broken)
        handed = [e.at for e in entries if e.step is Step.handed_over]
        batch_starts = [handed[i] for i in range(0, GUILDS, 5)]
        assert all(b - a >= 1.0 for a, b in itertools.pairwise(batch_starts))  # paced
        assert any("giving it back" in line for line in green.lines_since_start())
        assert any(f"guild {broken} taken back" in line for line in demo.bot.lines_since_start())
    finally:
        await demo.__aexit__(None, None, None)


async def test_a_batch_that_fails_as_a_whole_stops_the_handover_and_the_old_process_keeps_the_rest(
    tmp_path: Path, private_redis_server: RedisServer
) -> None:
    demo, blue_sessions = await begin(tmp_path, private_redis_server)
    try:
        guilds = demo.guild_ids()
        for guild_id in guilds[5:10]:  # the whole second batch
            demo.lavalink.fail_player(guild_id, except_sessions=blue_sessions)
        green = demo.new_process("bot-green")
        await start(green)
        await demo.bot.wait_for_line(r"handover: stopped: 5 of 5 guilds of batch 2 failed", timeout=90)
        await green.wait_for_line(r"stopped handing over .*; 10 guild\(s\) stay there", timeout=10)
        await green.wait_for_line(r"startup restore finished", timeout=60)  # it stops waiting for those

        await wait_until(lambda: _owns(demo, demo.bot, set(guilds[5:])), 15, "the old process owns the rest")
        assert await owned_by(demo, green) == set(guilds[:5])
        green_sessions = demo.sessions_of(green, blue_sessions)
        await demo.lavalink.wait_for(lambda: demo.playing_in(blue_sessions) == set(guilds[5:]), timeout=10)
        assert demo.playing_in(green_sessions) == set(guilds[:5])
        steps = {e.guild_id: e.step for e in await demo.journal()}
        assert [steps[g] for g in guilds[10:]] == [Step.kept] * 10
        assert [steps[g] for g in guilds[5:10]] == [Step.taken_back] * 5
    finally:
        await demo.__aexit__(None, None, None)


async def _owns(demo: HandoverScenario, process: BotProcess, guilds: set[int]) -> bool:
    return await owned_by(demo, process) == guilds


async def test_kill_9_of_the_old_process_mid_handover_leaves_every_guild_with_the_new_one(
    tmp_path: Path, private_redis_server: RedisServer
) -> None:
    demo, blue_sessions = await begin(tmp_path, private_redis_server)
    try:
        green = demo.new_process("bot-green")
        await start(green)
        await wait_until(lambda: _taken(demo, 5), 60, "the first batch taken over")
        demo.bot.kill()
        await demo.bot.wait()
        killed_at = time.monotonic()
        await wait_until(lambda: _owns(demo, green, set(demo.guild_ids())), 30, "the new process owns every guild")
        assert time.monotonic() - killed_at < demo.storage["lease_ttl"] + 10
        green_sessions = demo.sessions_of(green, blue_sessions)
        await demo.lavalink.wait_for(lambda: demo.playing_in(green_sessions) == set(demo.guild_ids()), timeout=20)
    finally:
        await demo.__aexit__(None, None, None)


async def test_kill_9_of_the_new_process_mid_handover_leaves_every_guild_with_the_old_one(
    tmp_path: Path, private_redis_server: RedisServer
) -> None:
    demo, blue_sessions = await begin(tmp_path, private_redis_server)
    try:
        green = demo.new_process("bot-green", extra_config="")
        await start(green)
        await wait_until(lambda: _taken(demo, 5), 60, "the first batch taken over")
        green.kill()
        await green.wait()
        killed_at = time.monotonic()
        await wait_until(lambda: _owns(demo, demo.bot, set(demo.guild_ids())), 40, "the old process owns every guild")
        took = time.monotonic() - killed_at
        await demo.lavalink.wait_for(lambda: demo.playing_in(blue_sessions) == set(demo.guild_ids()), timeout=20)
        assert took < demo.storage["lease_ttl"] + 10
    finally:
        await demo.__aexit__(None, None, None)


async def _taken(demo: HandoverScenario, count: int) -> bool:
    return sum(e.step is Step.taken_over for e in await demo.journal()) >= count
