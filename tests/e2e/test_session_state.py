"""State a user sets must survive, and a process restores only what it really runs: a real bot process
(discord.py + wavelink + sonora_cog, the demo's music bot) against FakeDiscord and FakeLavalink.

- ``player.extras`` changed while playing survives a SIGKILL (it is written at once, not at the next
  checkpoint);
- a pause between two of Lavalink's ``playerUpdate`` s (5 s apart, timescale 1.25) records the position
  Lavalink froze, and a crash of the bot and Lavalink brings the track back there, not seconds earlier;
- a paused player restarted three times does not move (a paused player is never rewound);
- an ``AutoShardedBot`` with 4 shards and no explicit ids restores the guilds of every shard, and the
  dead process's voice states timing out in the middle of the restore end no session.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from conftest import live_states

from sonora_cog.demo import DemoScenario
from sonora_cog.model import SessionState

Scenario = Callable[..., AsyncIterator[DemoScenario]]
#: How close a restored paused position must be to the one Lavalink froze (the issue's bound).
PAUSED_TOLERANCE_MS = 250


async def wait_record(
    demo: DemoScenario,
    guild_id: int,
    check: Callable[[SessionState], bool],
    timeout: float = 10.0,  # noqa: ASYNC109
) -> SessionState:
    """Poll the guild's live record until ``check`` holds; return it."""
    deadline = time.monotonic() + timeout
    while True:
        state = (await live_states(demo))[guild_id]
        if state is not None and check(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"the live record of guild {guild_id} never matched; last: {state!r}")
        await asyncio.sleep(0.1)


async def crash(demo: DemoScenario, *, lavalink_too: bool) -> None:
    demo.bot.kill()
    await demo.bot.wait()
    if lavalink_too:
        await demo.lavalink.restart()  # every Lavalink session and player is gone
    await demo.start_bot()


@pytest.mark.parametrize("resume", [True, False], ids=["lavalink-session-resumed", "rehydrated"])
async def test_extras_set_while_playing_survive_sigkill(scenario: Scenario, resume: bool) -> None:
    # No checkpoint in the window: the extras must be written because they changed, within the debounce.
    config = "" if resume else "resume_lavalink_sessions = false\n"
    async with scenario(guilds=1, checkpoint_interval=120.0, extra_config=config) as demo:
        guild_id = demo.world[0][0].id
        await demo.play_one(0)
        await wait_record(demo, guild_id, lambda s: s.queue.current is not None)
        assert await demo.command(0, "note", text="Ana's birthday set") == "Noted."
        before = await wait_record(demo, guild_id, lambda s: s.extras.get("note") == "Ana's birthday set")
        assert set(before.extras) == {"announce_channel_id", "note"}

        await crash(demo, lavalink_too=False)
        await demo.wait_restored(1)
        restarted = time.time()
        # The restored player holds the extras again: the new process writes them from the player.
        after = await wait_record(demo, guild_id, lambda s: s.created_at >= restarted - 1, timeout=15)
        assert after.extras == before.extras


@pytest.mark.parametrize("instant", [1.3, 3.9], ids=["early", "late"])
async def test_a_pause_between_player_updates_keeps_the_position_lavalink_froze(
    scenario: Scenario, instant: float
) -> None:
    # Lavalink reports positions every 5 s; under a 1.25x timescale the last report is up to 6.25 s of
    # track time behind. The pause must record where Lavalink froze, and a crash of the bot *and*
    # Lavalink (a rebuild from the record) must bring the track back exactly there, paused.
    async with scenario(guilds=1, player_update_interval=5.0, checkpoint_interval=120.0) as demo:
        guild_id = demo.world[0][0].id
        await demo.play_one(0)
        assert await demo.command(0, "filter", preset="speedup") == "Filter speedup."
        await asyncio.sleep(instant)
        assert await demo.command(0, "pause") == "Paused."
        lavalink = demo.lavalink.player(guild_id)
        assert lavalink is not None and lavalink.paused
        frozen = lavalink.position
        record = await wait_record(demo, guild_id, lambda s: s.player.paused)
        assert abs(record.player.position - frozen) <= PAUSED_TOLERANCE_MS, (record.player.position, frozen)

        await crash(demo, lavalink_too=True)
        await demo.wait_restored(1)
        restored = demo.lavalink.player(guild_id)
        assert restored is not None and restored.paused and restored.track is not None
        assert abs(restored.position - frozen) <= PAUSED_TOLERANCE_MS, (restored.position, frozen)


async def test_a_paused_player_restarted_three_times_does_not_move(scenario: Scenario) -> None:
    async with scenario(guilds=1) as demo:
        guild_id = demo.world[0][0].id
        await demo.play_one(0)
        await asyncio.sleep(1.5)
        assert await demo.command(0, "pause") == "Paused."
        lavalink = demo.lavalink.player(guild_id)
        assert lavalink is not None
        frozen = lavalink.position
        await wait_record(demo, guild_id, lambda s: s.player.paused and s.player.position == frozen)
        # First the bot alone (the resumed Lavalink session's paused player is adopted), then twice the bot
        # and Lavalink (rebuilt from the record, where rewind_seconds used to be subtracted every time).
        for lavalink_too in (False, True, True):
            await crash(demo, lavalink_too=lavalink_too)
            await demo.wait_restored(1)
            player = demo.lavalink.player(guild_id)
            assert player is not None and player.paused
            assert player.position == frozen, (lavalink_too, player.position, frozen)
            record = await wait_record(demo, guild_id, lambda s: s.player.paused)
            assert record.player.position == frozen


async def test_an_auto_sharded_bot_restores_every_shard_and_old_voice_states_end_nothing(scenario: Scenario) -> None:
    # AutoShardedBot(shard_count=4) with no shard_ids: discord.py runs all four shards in this process.
    # The restore is slowed down (one guild per shard at a time, Discord answering each voice join after
    # 1 s) so that most guilds still wait for their restore when the dead process's gateway sessions time
    # out and Discord says "the bot left voice" in each of their guilds.
    config = "concurrency = 1\nskip_empty_channels = true\n"
    async with scenario(guilds=12, shards=4, checkpoint_interval=1.0, extra_config=config) as demo:
        for index in range(12):
            await demo.play_one(index)
        empty_guild, _text, _voice, listener = demo.world[11]
        await demo.discord.member_leave_voice(empty_guild.id, listener.id)  # its restore will be skipped
        for guild, *_ in demo.world:
            await wait_record(demo, guild.id, lambda s: s.queue.current is not None)
        old_sessions = demo.discord.gateway.live_sessions()
        assert len(old_sessions) == 4  # one gateway session per shard

        demo.bot.kill()
        await demo.bot.wait()
        demo.discord.voice_latency = 1.0
        joins_before = sum(demo.discord.voice_state_update_counts.values())
        await demo.start_bot()
        await demo.bot.wait_for_line(r"restoring 12 guild\(s\)", timeout=30)
        # Discord gives up on the dead process's sessions while the first join of every shard is on its
        # way: each shard's "the bot left voice" reaches a player that is still connecting.
        deadline = time.monotonic() + 30
        while sum(demo.discord.voice_state_update_counts.values()) < joins_before + 4:
            assert time.monotonic() < deadline, "the bot never sent a join on every shard"
            await asyncio.sleep(0.01)
        for session in old_sessions:
            await demo.discord.gateway.end_session(session)
        await demo.wait_restored(11, timeout=60)

        log = "\n".join(demo.bot.lines_since_start())
        assert f"guild {empty_guild.id} skipped (nobody is listening" in log
        for guild, _text, voice, _user in demo.world[:11]:
            assert demo.discord.bot_voice_channel(guild.id) == voice.id
            player = demo.lavalink.player(guild.id)
            assert player is not None and player.track is not None
        states = await live_states(demo)
        assert all(state is not None for state in states.values()), [g for g, s in states.items() if s is None]
        assert "ended (disconnected from voice)" not in log
