"""Crash recovery end to end: a real bot process (discord.py + wavelink + sonora_cog) against the fakes.

Each test runs :mod:`sonora_cog.testing.music_bot` as a subprocess through
:class:`~sonora_cog.demo.DemoScenario`, drives it with slash commands like a user would, and kills,
restarts or disconnects it. Nothing in discord.py or wavelink is patched.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from conftest import kill_and_restart, live_states, manager_for, track_starts

from sonora_cog.demo import POSITION_TOLERANCE_MS, DemoScenario
from sonora_cog.meta import SnapshotKind
from sonora_cog.model import SessionState
from sonora_cog.restore import advance_position


def assert_same_session(before: SessionState, after: SessionState, *, position: bool = True) -> None:
    assert after.channel_id == before.channel_id
    assert before.queue.current is not None and after.queue.current is not None
    assert after.queue.current.encoded == before.queue.current.encoded
    assert after.queue.current.user_data == before.queue.current.user_data  # the requester came back
    assert [t.encoded for t in after.queue.upcoming] == [t.encoded for t in before.queue.upcoming]
    assert [t.encoded for t in after.queue.history] == [t.encoded for t in before.queue.history]
    assert after.queue.loop_mode == before.queue.loop_mode
    assert after.player.volume == before.player.volume
    assert after.player.paused == before.player.paused
    assert after.filters.filter_config == before.filters.filter_config
    assert after.autoplay.mode == before.autoplay.mode
    assert after.extras == before.extras
    if position:
        assert abs(after.player.position - before.player.position) <= POSITION_TOLERANCE_MS


@pytest.mark.parametrize(
    ("resume", "shards"),
    [(True, 0), (False, 0), (True, 2)],
    ids=["lavalink-session-resumed", "rehydrated", "lavalink-session-resumed-auto-sharded"],
)
async def test_kill_9_mid_track_restores_every_part(
    scenario: Callable[..., AsyncIterator[DemoScenario]], resume: bool, shards: int
) -> None:
    # Resumed: the new process resumes the Lavalink session, whose players played on, and adopts them.
    # Rehydrated: a new Lavalink session; every player is started again from its live record.
    # Auto-sharded: an AutoShardedBot with 2 shards and no shard ids (one guild on each) resumes too: the
    # session is recorded when the node is ready, while the shards are still being launched one by one.
    config = "" if resume else "resume_lavalink_sessions = false\n"
    async with scenario(guilds=2, shards=shards, extra_config=config) as demo:
        await demo.play_everywhere()
        await demo.command(1, "pause")
        await demo.command(0, "autoplay", mode="partial")
        await asyncio.sleep(2)
        await demo.wait_saved()
        before = await live_states(demo)
        views_before = await demo.views()
        views_at = time.monotonic()
        starts_before = track_starts(demo)

        await kill_and_restart(demo, restored=2)
        await demo.wait_saved()
        after = await live_states(demo)
        views_after = await demo.views()

        for guild, *_ in demo.world:
            b, a = before[guild.id], after[guild.id]
            assert b is not None and a is not None
            assert_same_session(b, a, position=False)
            # Adopted players played on while the bot was down; rehydrated ones restart where recorded.
            expected = advance_position(b, a.player.position_at).player.position if resume else b.player.position
            assert abs(a.player.position - expected) <= POSITION_TOLERANCE_MS
        adopted = [line for line in demo.bot.lines_since_start() if "adopted from the resumed Lavalink" in line]
        if resume:
            assert track_starts(demo) == starts_before  # nothing was played again: no re-buffering
            assert len(adopted) == 2
        else:
            assert all(track_starts(demo)[g] > starts_before[g] for g in starts_before)
            assert adopted == []
        assert after[demo.world[1][0].id].player.paused is True  # a paused player comes back paused
        played_ms = int((time.monotonic() - views_at) * 1000) if resume else 0
        for (guild, *_), b, a in zip(demo.world, views_before, views_after, strict=True):
            paused = before[guild.id].player.paused  # type: ignore[union-attr]
            assert b.same_as(a, 0 if paused else played_ms) == []
        paused = demo.lavalink.player(demo.world[1][0].id)
        assert paused is not None and paused.paused


async def test_a_resumed_player_nobody_restores_is_destroyed(
    scenario: Callable[..., AsyncIterator[DemoScenario]],
) -> None:
    async with scenario(guilds=2) as demo:
        for index in range(2):
            await demo.play_one(index)
        await demo.wait_saved()
        kept, ended = demo.world[0][0].id, demo.world[1][0].id
        demo.bot.kill()
        await demo.bot.wait()
        manager = manager_for(demo)
        try:
            assert await manager.end_live(ended)  # its session ended: nothing may bring it back
        finally:
            await manager.close()
        ghost = demo.lavalink.player(ended)
        assert ghost is not None and ghost.track is not None  # the Lavalink session plays on meanwhile
        await demo.start_bot()
        await demo.wait_restored(1)
        await demo.bot.wait_for_line(f"guild {ended}: destroyed a Lavalink player nobody controls", timeout=10)
        assert demo.lavalink.player(ended) is None
        adopted = demo.lavalink.player(kept)
        assert adopted is not None and adopted.track is not None and adopted.connected


async def test_an_expired_lavalink_session_falls_back_to_rehydration(
    scenario: Callable[..., AsyncIterator[DemoScenario]],
) -> None:
    async with scenario(guilds=1, extra_config="lavalink_resume_timeout = 1\n") as demo:
        await demo.play_one(0)
        await demo.wait_saved()
        guild_id = demo.world[0][0].id
        before = (await live_states(demo))[guild_id]
        starts = track_starts(demo)[guild_id]
        demo.bot.kill()
        await demo.bot.wait()
        await asyncio.sleep(2.5)  # longer than the session is kept: Lavalink destroys its players
        assert demo.lavalink.sessions == []
        await demo.start_bot()
        await demo.wait_restored(1)
        log = "\n".join(demo.bot.lines_since_start())
        assert "asking to resume session" in log and "adopted" not in log
        player = demo.lavalink.player(guild_id)
        assert player is not None and player.track is not None and before is not None
        assert (
            before.queue.current is not None
            and player.track["info"]["identifier"] == before.queue.current.info["identifier"]
        )
        assert track_starts(demo)[guild_id] == starts + 1  # played again from its live record


async def test_restarting_twice_in_a_row_keeps_the_queue(scenario: Callable[..., AsyncIterator[DemoScenario]]) -> None:
    async with scenario(guilds=1) as demo:
        await demo.play_everywhere()
        await demo.wait_saved()
        before = (await live_states(demo))[demo.world[0][0].id]
        assert before is not None and len(before.queue.upcoming) == 2
        demo.bot.kill()
        await demo.bot.wait()
        await demo.start_bot()  # killed again right after start, before anything could be restored
        demo.bot.kill()
        await demo.bot.wait()
        await demo.start_bot()
        await demo.wait_restored(1)
        await demo.wait_saved()
        after = (await live_states(demo))[demo.world[0][0].id]
        assert after is not None
        assert [t.encoded for t in after.queue.upcoming] == [t.encoded for t in before.queue.upcoming]


async def test_moderator_disconnect_ends_the_session_even_after_restart(
    scenario: Callable[..., AsyncIterator[DemoScenario]],
) -> None:
    async with scenario(guilds=2) as demo:
        for index in range(2):
            await demo.play_one(index)
        await demo.wait_saved()
        kicked = demo.world[0][0].id
        await demo.discord.disconnect_bot_from_voice(kicked)
        await asyncio.sleep(1.5)
        assert demo.discord.bot_voice_channel(kicked) is None
        states = await live_states(demo)
        assert states[kicked] is None and states[demo.world[1][0].id] is not None
        await kill_and_restart(demo, restored=1)
        await asyncio.sleep(1)
        assert demo.discord.bot_voice_channel(kicked) is None
        assert demo.discord.bot_voice_channel(demo.world[1][0].id) == demo.world[1][2].id


async def test_stop_command_ends_the_session(scenario: Callable[..., AsyncIterator[DemoScenario]]) -> None:
    async with scenario(guilds=1) as demo:
        await demo.play_one(0)
        await demo.wait_saved()
        assert "Stopped" in await demo.command(0, "stop")
        await asyncio.sleep(1)
        assert (await live_states(demo))[demo.world[0][0].id] is None
        await kill_and_restart(demo, restored=0)
        await demo.bot.wait_for_line("SONORA ready", timeout=10)
        await asyncio.sleep(2)
        assert demo.discord.bot_voice_channel(demo.world[0][0].id) is None
        assert (
            demo.lavalink.player(demo.world[0][0].id) is None or demo.lavalink.player(demo.world[0][0].id).track is None
        )


async def test_deleted_channel_is_skipped_with_a_reason_and_others_restore(
    scenario: Callable[..., AsyncIterator[DemoScenario]],
) -> None:
    async with scenario(guilds=2) as demo:
        for index in range(2):
            await demo.play_one(index)
        await demo.wait_saved()
        demo.bot.kill()
        await demo.bot.wait()
        gone_guild, _text, gone_voice, _user = demo.world[0]
        await demo.discord.delete_channel(gone_guild.id, gone_voice.id)
        await demo.start_bot()
        await demo.wait_restored(1)
        log = "\n".join(demo.bot.lines_since_start())
        assert f"guild {gone_guild.id} skipped (voice channel {gone_voice.id} no longer exists)" in log
        assert demo.discord.bot_voice_channel(demo.world[1][0].id) == demo.world[1][2].id
        assert (await live_states(demo))[gone_guild.id] is not None  # the record is kept


async def test_stale_sessions_are_not_revived(scenario: Callable[..., AsyncIterator[DemoScenario]]) -> None:
    async with scenario(guilds=1, extra_config="max_age = 2\n") as demo:
        await demo.play_one(0)
        await demo.wait_saved()
        demo.bot.kill()
        await demo.bot.wait()
        await asyncio.sleep(3)
        await demo.start_bot()
        await demo.bot.wait_for_line("startup restore finished", timeout=20)
        assert "skipped (the session is stale" in "\n".join(demo.bot.lines_since_start())


async def test_lavalink_restart_rebuilds_players(scenario: Callable[..., AsyncIterator[DemoScenario]]) -> None:
    async with scenario(guilds=2) as demo:
        await demo.play_everywhere()
        await demo.wait_saved()
        await demo.lavalink.restart()  # a Lavalink crash: every session and player is gone
        await demo.lavalink.wait_for(
            lambda: all((p := demo.lavalink.player(g.id)) is not None and p.track is not None for g, *_ in demo.world),
            timeout=30,
        )
        for guild, *_ in demo.world:
            player = demo.lavalink.player(guild.id)
            assert player is not None and player.connected


async def test_rebuild_waits_for_discord_to_confirm_the_leave(
    scenario: Callable[..., AsyncIterator[DemoScenario]],
) -> None:
    # A rebuild leaves voice and joins again. If the join goes out before Discord's "left" update
    # comes back, that late update reaches the new player and wavelink destroys it.
    async with scenario(guilds=1) as demo:
        await demo.play_one(0)
        await demo.wait_saved()
        guild_id = demo.world[0][0].id
        demo.discord.voice_latency = 0.3
        await demo.lavalink.restart()
        await demo.bot.wait_for_line("SONORA restored", timeout=30)
        player = await demo.lavalink.wait_for(
            lambda: (p := demo.lavalink.player(guild_id)) is not None and p.connected and p.track is not None and p,
            timeout=10,
        )
        assert player.track is not None
        assert demo.discord.bot_voice_channel(guild_id) == demo.world[0][2].id


async def test_lost_voice_connection_is_rejoined(scenario: Callable[..., AsyncIterator[DemoScenario]]) -> None:
    async with scenario(guilds=1) as demo:
        await demo.play_one(0)
        await demo.wait_saved()
        guild_id = demo.world[0][0].id
        before = demo.lavalink.player(guild_id)
        assert before is not None and before.track is not None
        await demo.lavalink.close_voice(guild_id, code=4006)
        await demo.bot.wait_for_line(r"voice connection lost \(code 4006\)", timeout=10)
        await demo.lavalink.wait_for(
            lambda: (p := demo.lavalink.player(guild_id)) is not None and p.connected and p.track is not None,
            timeout=40,
        )
        assert demo.discord.bot_voice_channel(guild_id) == demo.world[0][2].id


async def test_sigterm_writes_a_shutdown_snapshot(scenario: Callable[..., AsyncIterator[DemoScenario]]) -> None:
    async with scenario(guilds=1) as demo:
        await demo.play_one(0)
        await demo.wait_saved()
        demo.bot.terminate()
        assert await demo.bot.wait() == 0
        manager = manager_for(demo)
        try:
            kinds = [m.kind for m in await manager.list_snapshots(demo.world[0][0].id)]
        finally:
            await manager.close()
        assert SnapshotKind.shutdown in kinds


OPEN_SESSIONS_AT_EXIT = """
import atexit, gc, sys


def report():
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is not None:
        gc.collect()
        kinds = (aiohttp.ClientSession, aiohttp.BaseConnector)
        left = [o for o in gc.get_objects() if isinstance(o, kinds) and not o.closed]
        print(f"aiohttp objects open at exit: {left!r}", file=sys.stderr, flush=True)


atexit.register(report)
"""


async def test_a_graceful_stop_leaves_no_aiohttp_session_open(
    scenario: Callable[..., AsyncIterator[DemoScenario]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Python does not report a session still referenced at exit (wavelink.Pool keeps the node's), so the
    # bot process reports what is open from an atexit hook that a sitecustomize module installs.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(OPEN_SESSIONS_AT_EXIT)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    async with scenario(guilds=1) as demo:
        await demo.play_one(0)
        demo.bot.terminate()
        assert await demo.bot.wait() == 0
        assert "aiohttp objects open at exit: []" in demo.bot.output, demo.bot.tail()


async def test_fifty_guilds_restore_within_the_gateway_limit(
    scenario: Callable[..., AsyncIterator[DemoScenario]],
) -> None:
    async with scenario(guilds=50, extra_config="concurrency = 5\n") as demo:  # the default pacing
        for index in range(50):
            await demo.play_one(index, query="paper boats")
        await demo.wait_saved()
        await kill_and_restart(demo, restored=50)
        for guild, _text, voice, _user in demo.world:
            assert demo.discord.bot_voice_channel(guild.id) == voice.id
        assert demo.discord.rate_limit_violations == []


async def test_gateway_reidentify_rejoins_voice(scenario: Callable[..., AsyncIterator[DemoScenario]]) -> None:
    async with scenario(guilds=1) as demo:
        await demo.play_everywhere()
        await demo.wait_saved()
        guild, _text, voice, _user = demo.world[0]
        before = (await live_states(demo))[guild.id]
        await demo.discord.invalidate_session(resumable=False)  # op 9: discord.py must identify again
        await demo.bot.wait_for_line("gateway session was re-identified; rejoining 1 guild", timeout=30)
        await demo.discord.wait_until(lambda: demo.discord.bot_voice_channel(guild.id) == voice.id, timeout=20)
        await demo.wait_saved()
        after = (await live_states(demo))[guild.id]
        assert before is not None and after is not None
        assert_same_session(before, after, position=False)  # the track kept playing while it rejoined
