"""Several bot processes sharing one Redis, end to end: real discord.py + wavelink + sonora_cog processes
against FakeDiscord and FakeLavalink, and a real ``redis-server`` started on a free loopback port.

- a new deployment (same shard) restores the guild of a process that was killed;
- two processes racing for one guild: exactly one restores it;
- two processes started together right after a crash: no guild ever plays on two Lavalink sessions, and
  a resumed player of a guild another process owns is destroyed as soon as the lease says so;
- blue-green: the new process waits for the old one's lease and takes over after its shutdown snapshot;
- Redis killed mid-session and restarted: the music keeps playing, no record is lost, nothing crashes;
- Redis down when a process starts: it plays anyway and restores once Redis is back.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sonora_cog.config import Settings, StorageSettings
from sonora_cog.demo import POSITION_TOLERANCE_MS, DemoScenario
from sonora_cog.manager import SessionManager
from sonora_cog.meta import SnapshotKind
from sonora_cog.model import SessionState
from sonora_cog.testing.botproc import BotProcess
from sonora_cog.testing.redis_server import RedisServer

PREFIX = "e2e"


class RedisScenario(DemoScenario):
    """The demo world with ``[storage] backend = "redis"``, and more bot processes on demand."""

    def __init__(self, workdir: Path, guilds: int, server: RedisServer, **storage: Any) -> None:
        super().__init__(workdir, guilds)
        self.server = server
        self.storage = {
            "lease_ttl": 3.0,
            "lease_renew_interval": 1.0,
            "lease_wait": 10.0,
            "redis_timeout": 1.0,
            **storage,
        }
        self.processes: list[BotProcess] = []

    async def __aenter__(self) -> RedisScenario:
        await super().__aenter__()
        options = "".join(f"{key} = {value!r}\n" for key, value in self.storage.items())
        self.config_path.write_text(
            f'[storage]\nbackend = "redis"\nredis_url = "{self.server.url}"\nredis_prefix = "{PREFIX}"\n{options}'
            "[snapshots]\ndebounce = 0.2\ncheckpoint_interval = 1.0\n"
            "[restore]\nrewind_seconds = 1.0\n"
        )
        self.processes.append(self.bot)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for process in self.processes:
            if process.running:
                process.kill()
                await process.wait()
        await super().__aexit__(*exc)

    def new_process(self, name: str, extra_config: str = "") -> BotProcess:
        """Another process of the same bot (same token, shard, config + ``extra_config`` lines, appended to
        its last section, ``[restore]``): the next deployment."""
        env = dict(self.bot.env)
        if extra_config:
            config = self.workdir / f"{name}.toml"
            config.write_text(self.config_path.read_text() + extra_config)
            env["SONORA_CONFIG"] = str(config)
        process = BotProcess(self.bot.script, env=env, log_file=self.workdir / f"{name}.log", name=name)
        self.processes.append(process)
        return process

    def manager(self) -> SessionManager:
        storage = StorageSettings(backend="redis", redis_url=self.server.url, redis_prefix=PREFIX)
        return SessionManager(Settings(storage=storage))

    async def live(self, index: int = 0) -> SessionState | None:
        manager = self.manager()
        try:
            return await manager.read_live(self.world[index][0].id)
        finally:
            await manager.close()


@pytest.fixture
async def scenario(tmp_path: Path, private_redis_server: RedisServer) -> AsyncIterator[Any]:
    def make(guilds: int = 1, **storage: Any) -> RedisScenario:
        return RedisScenario(tmp_path, guilds, private_redis_server, **storage)

    yield make


async def start(process: BotProcess) -> None:
    await process.start()
    await process.wait_for_line(r"SONORA ready", timeout=30)


def restored(process: BotProcess, guild_id: int) -> list[str]:
    return [line for line in process.lines_since_start() if f"SONORA restored guild={guild_id}" in line]


def assert_same_session(before: SessionState, after: SessionState) -> None:
    assert before.queue.current is not None and after.queue.current is not None
    assert after.channel_id == before.channel_id
    assert after.queue.current.encoded == before.queue.current.encoded
    assert [t.encoded for t in after.queue.upcoming] == [t.encoded for t in before.queue.upcoming]
    assert after.player.volume == before.player.volume
    assert after.filters.filter_config == before.filters.filter_config
    assert after.queue.loop_mode == before.queue.loop_mode
    assert abs(after.player.position - before.player.position) <= POSITION_TOLERANCE_MS


async def test_new_deployment_restores_the_guild_of_a_killed_process(scenario: Any) -> None:
    async with scenario(guilds=1) as demo:
        guild, _text, voice, _user = demo.world[0]
        await start(demo.bot)
        await demo.play_everywhere()
        await demo.wait_saved()
        before = await demo.live()
        assert before is not None
        demo.bot.kill()  # process A crashes: its lease stays until it expires
        await demo.bot.wait()

        b = demo.new_process("bot-b")
        await start(b)
        await b.wait_for_line("startup restore finished", timeout=30)
        assert restored(b, guild.id), b.tail()
        assert demo.discord.bot_voice_channel(guild.id) == voice.id
        await demo.wait_saved()
        after = await demo.live()
        assert after is not None
        assert_same_session(before, after)
        player = demo.lavalink.player(guild.id)
        assert player is not None and player.track is not None
        assert player.track["info"]["title"] == before.queue.current.title  # type: ignore[union-attr]
        store = demo.manager().store
        try:
            holder = await store.lease_holder(guild.id)  # type: ignore[attr-defined]
        finally:
            await store.close()
        assert holder is not None and f":{b.pid}:" in holder


async def test_two_processes_racing_for_a_guild_exactly_one_restores_it(scenario: Any) -> None:
    async with scenario(guilds=1, lease_wait=3.0) as demo:
        guild, _text, voice, _user = demo.world[0]
        await start(demo.bot)
        await demo.play_one(0)
        await demo.wait_saved()
        demo.bot.kill()
        await demo.bot.wait()
        await asyncio.sleep(3.5)  # A's lease expires: the guild is free for whoever is first

        b, c = demo.new_process("bot-b"), demo.new_process("bot-c")
        await asyncio.gather(start(b), start(c))
        await asyncio.gather(*(p.wait_for_line("startup restore finished", timeout=30) for p in (b, c)))
        winners = [p for p in (b, c) if restored(p, guild.id)]
        assert len(winners) == 1, f"{b.tail()}\n----\n{c.tail()}"
        loser = c if winners[0] is b else b
        assert any("another process owns this guild" in line for line in loser.lines_since_start())
        assert demo.discord.bot_voice_channel(guild.id) == voice.id
        await asyncio.sleep(2)
        assert (await demo.live()) is not None  # still there: the loser neither wrote nor deleted it


async def crash_with_four_guilds_playing(demo: RedisScenario) -> None:
    await start(demo.bot)
    for index in range(4):
        await demo.play_one(index)
    await demo.wait_saved()
    demo.bot.kill()
    await demo.bot.wait()


def audible(demo: RedisScenario) -> Counter[str]:
    """Per guild, the Lavalink players (on any session) that produce audio: a track, not paused, voice up.

    Discord admits one voice connection per bot user and guild (FakeLavalink displaces the older one as
    Discord does), so "two processes play a guild" means two such players at the same instant.
    """
    return Counter(p.guild_id for p in demo.lavalink.players() if p.track is not None and p.connected and not p.paused)


@pytest.mark.parametrize("run", range(2))
async def test_two_processes_started_together_after_a_crash_never_play_a_guild_twice(scenario: Any, run: int) -> None:
    # C is SIGKILLed; D and E (same shard) start at once. One resumes C's Lavalink session, whose players
    # play on; the leases decide who plays each guild. Every fake player is polled during the whole race.
    async with scenario(guilds=4, lease_wait=4.0) as demo:
        await crash_with_four_guilds_playing(demo)
        worst: Counter[str] = Counter()
        racing = True

        async def poll() -> None:
            while racing:
                for guild_id, count in audible(demo).items():
                    worst[guild_id] = max(worst[guild_id], count)
                await asyncio.sleep(0.005)

        poller = asyncio.create_task(poll())
        d, e = demo.new_process("bot-d"), demo.new_process("bot-e")
        try:
            await asyncio.gather(start(d), start(e))
            await asyncio.gather(*(p.wait_for_line("startup restore finished", timeout=40) for p in (d, e)))
            await asyncio.sleep(1.5)
        finally:
            racing = False
            await poller
        logs = f"{d.tail()}\n----\n{e.tail()}"
        assert max(worst.values(), default=0) == 1, (dict(worst), logs)
        assert audible(demo) == {str(guild.id): 1 for guild, *_ in demo.world}, logs
        with_track = Counter(p.guild_id for p in demo.lavalink.players() if p.track is not None)
        assert with_track == {str(guild.id): 1 for guild, *_ in demo.world}, logs  # no ghost left behind
        assert all(any(restored(p, g.id) for p in (d, e)) for g, *_ in demo.world), logs


async def test_a_resumed_ghost_of_a_guild_another_process_owns_is_destroyed_at_once(scenario: Any) -> None:
    # E (which does not resume) starts first after C's crash and takes every guild; its joins displace the
    # voice of C's players, which the Lavalink session C left keeps. D then resumes that session and finds
    # those players: another live process holds each guild's lease, so D destroys them at once, not after
    # its own startup restore (which waits lease_wait = 20 s for the guilds E holds).
    async with scenario(guilds=4, lease_wait=20.0) as demo:
        await crash_with_four_guilds_playing(demo)
        await asyncio.sleep(3.5)  # C's leases expire
        e = demo.new_process("bot-e", extra_config="resume_lavalink_sessions = false\n")  # [restore] is last
        await start(e)
        await e.wait_for_line("startup restore finished: 4 restored", timeout=30)
        assert audible(demo) == {str(guild.id): 1 for guild, *_ in demo.world}
        ghosts = [p for p in demo.lavalink.players() if p.track is not None and not p.connected]
        assert len(ghosts) == 4  # C's players: still there, silent
        d = demo.new_process("bot-d")
        await start(d)
        await d.wait_for_line(r"the resumed Lavalink session still plays in 4 guild\(s\)", timeout=20)
        resumed = ghosts[0].session_id
        await demo.lavalink.wait_for(lambda: not demo.lavalink.players(resumed), timeout=5)
        assert not any("startup restore finished" in line for line in d.lines_since_start())  # still waiting
        assert audible(demo) == {str(guild.id): 1 for guild, *_ in demo.world}


async def test_blue_green_the_new_process_takes_over_after_the_old_ones_shutdown(scenario: Any) -> None:
    # a long ttl: the takeover must come from the old process releasing its lease, not from expiry
    async with scenario(guilds=1, lease_ttl=30.0, lease_renew_interval=5.0, lease_wait=60.0) as demo:
        guild, _text, voice, _user = demo.world[0]
        await start(demo.bot)
        await demo.play_everywhere()
        await demo.wait_saved()

        green = demo.new_process("bot-green")
        await start(green)
        await green.wait_for_line(r"waiting up to \d+s for 1 guild\(s\) held by", timeout=30)
        await asyncio.sleep(1.5)
        assert not restored(green, guild.id)  # the old process still owns it and keeps playing
        assert demo.discord.bot_voice_channel(guild.id) == voice.id

        stopped_at = time.monotonic()
        demo.bot.terminate()  # blue goes: shutdown snapshot, leave voice, release the lease
        assert await demo.bot.wait() == 0
        before = await demo.live()
        assert before is not None
        await green.wait_for_line(rf"SONORA restored guild={guild.id}", timeout=20)
        assert time.monotonic() - stopped_at < 15
        await demo.discord.wait_until(lambda: demo.discord.bot_voice_channel(guild.id) == voice.id, timeout=10)
        manager = demo.manager()
        try:
            kinds = [m.kind for m in await manager.list_snapshots(guild.id)]
        finally:
            await manager.close()
        assert SnapshotKind.shutdown in kinds
        await demo.wait_saved()
        after = await demo.live()
        assert after is not None
        assert_same_session(before, after)
        assert green.running


async def test_redis_killed_mid_session_loses_nothing(scenario: Any, private_redis_server: RedisServer) -> None:
    async with scenario(guilds=1) as demo:
        guild, *_ = demo.world[0]
        await start(demo.bot)
        await demo.play_everywhere()
        await demo.wait_saved()
        manager = demo.manager()
        try:
            await manager.save_snapshot((await demo.live()) or pytest.fail("no live record"), label="before")
        finally:
            await manager.close()

        private_redis_server.kill()
        await demo.bot.wait_for_line("Redis at .* is unreachable", timeout=15)
        # the bot keeps playing and answering meanwhile; its writes wait in memory
        assert "Volume 42" in await demo.command(0, "volume", value=42)
        assert "Queued" in await demo.command(0, "play", query="run the numbers")
        position = demo.lavalink.player(guild.id).position  # type: ignore[union-attr]
        await asyncio.sleep(2.5)
        assert demo.lavalink.player(guild.id).position > position  # type: ignore[union-attr]

        await asyncio.to_thread(private_redis_server.start)
        await demo.bot.wait_for_line("reachable again", timeout=30)
        await demo.wait_saved()
        after = await demo.live()
        assert after is not None
        assert after.player.volume == 42
        assert "run the numbers" in [t.title.lower() for t in after.queue.upcoming]
        manager = demo.manager()
        try:
            labels = [m.label for m in await manager.list_snapshots(guild.id)]
        finally:
            await manager.close()
        assert "before" in labels
        assert demo.bot.running
        assert not any("Traceback" in line for line in demo.bot.lines), demo.bot.tail()


async def test_redis_down_at_startup_plays_then_restores_when_it_is_back(
    scenario: Any, private_redis_server: RedisServer
) -> None:
    async with scenario(guilds=2) as demo:
        (old_guild, _t, old_voice, _u), (new_guild, _t2, new_voice, _u2) = demo.world
        await start(demo.bot)
        await demo.play_one(0)
        await demo.wait_saved()
        demo.bot.kill()
        await demo.bot.wait()
        private_redis_server.kill()

        await start(demo.bot)  # the next deployment starts while Redis is down
        await demo.bot.wait_for_line("cannot list the live records", timeout=15)
        # The previous Lavalink session id cannot be read either: a new session, no crash.
        await demo.bot.wait_for_line("cannot read the previous Lavalink session ids", timeout=15)
        await demo.play_one(1, query="paper boats")  # music works meanwhile
        assert demo.discord.bot_voice_channel(new_guild.id) == new_voice.id
        player = demo.lavalink.player(new_guild.id)
        assert player is not None and player.track is not None
        await asyncio.sleep(2)

        await asyncio.to_thread(private_redis_server.start)
        await demo.bot.wait_for_line(rf"SONORA restored guild={old_guild.id}", timeout=60)
        assert demo.discord.bot_voice_channel(old_guild.id) == old_voice.id
        await demo.wait_saved()
        assert (await demo.live(1)) is not None  # the session started during the outage was stored
        assert (await demo.live(0)) is not None
        assert not restored(demo.bot, new_guild.id)  # never "restored" over the session it was playing
        log = "\n".join(demo.bot.lines)
        assert not re.search(r"Traceback", log), demo.bot.tail()
