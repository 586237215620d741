"""Startup-restore pacing per shard connection, through the fakes: a real ``AutoShardedBot`` process
(discord.py + wavelink + sonora_cog, the demo's music bot) with four shards against FakeDiscord, which logs
every gateway frame per connection.

- the voice joins (op 4) of each shard stay within that shard's window (``restore.joins_per_window``);
- a shard that spent its window waits alone: the other shards restore all their guilds meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from sonora_cog.demo import DemoScenario
from sonora_cog.testing.fake_discord import most_in_window

Scenario = Callable[..., AsyncIterator[DemoScenario]]
SHARDS = 4
#: Guild i is on shard i % 4. Guilds 1-3 play nothing: shard 0 restores three guilds (0, 4, 8), shards 1-3
#: two each (5 and 9, 6 and 10, 7 and 11), and shard 0's third comes before the others' second.
GUILDS = 12
PLAYING = [0, 4, 5, 6, 7, 8, 9, 10, 11]
PER_WINDOW = 2


def restored_guilds(demo: DemoScenario) -> set[int]:
    """The guilds the bot logged as restored since its last start."""
    found = set()
    for line in demo.bot.lines_since_start():
        if "SONORA restored guild=" in line:
            found.add(int(line.split("SONORA restored guild=")[1].split()[0]))
    return found


async def test_each_shard_joins_within_its_window_and_no_shard_waits_for_another(scenario: Scenario) -> None:
    # Two joins per shard per window: shard 0's third guild must wait for its window (62 s); shards 1-3
    # fit theirs and must not wait for shard 0, though they restore one guild at a time and shard 0's
    # waiting guild is in line before their second ones.
    config = f"joins_per_window = {PER_WINDOW}\njoins_per_second = 0.05\nconcurrency = 1\n"
    async with scenario(guilds=GUILDS, shards=SHARDS, checkpoint_interval=1.0, extra_config=config) as demo:
        for index in PLAYING:
            await demo.play_one(index)
        await demo.wait_saved()
        first_new_frame = len(demo.discord.gateway.send_log)

        demo.bot.kill()
        await demo.bot.wait()
        await demo.start_bot()
        await demo.bot.wait_for_line(rf"restoring {len(PLAYING)} guild\(s\)", timeout=30)
        on_shard = {guild.id: index % SHARDS for index, (guild, *_rest) in enumerate(demo.world)}
        waiting = demo.world[8][0].id
        fit = {demo.world[index][0].id for index in PLAYING} - {waiting}
        deadline = time.monotonic() + 45  # well inside the 62 s shard 0's third join waits
        while not fit <= restored_guilds(demo):
            assert time.monotonic() < deadline, f"restored so far: {restored_guilds(demo)}"
            await asyncio.sleep(0.1)

        new_frames = demo.discord.gateway.send_log[first_new_frame:]
        shard_of_connection = demo.discord.gateway.connection_shards
        joins: dict[int, list[int]] = {}
        for frame in new_frames:
            if frame.op == 4:
                shard = shard_of_connection[frame.connection_id]
                assert shard is not None and shard[0] == on_shard[frame.guild_id]  # on the guild's connection
                joins.setdefault(shard[0], []).append(frame.guild_id)  # type: ignore[arg-type]
        # Shards 1-3 restored all their guilds while shard 0 waits for its window with its third guild.
        assert {shard: len(ids) for shard, ids in joins.items()} == dict.fromkeys(range(SHARDS), PER_WINDOW)
        assert waiting not in joins[0] and waiting not in restored_guilds(demo)
        assert restored_guilds(demo) == fit
        # Every new connection (one per shard) stayed within Discord's 120 sends in any 60 s, all frames.
        by_connection: dict[int, list[float]] = {}
        for frame in new_frames:
            by_connection.setdefault(frame.connection_id, []).append(frame.at)
        assert len(by_connection) == SHARDS
        assert all(most_in_window(times) <= 120 for times in by_connection.values())
        assert demo.discord.rate_limit_violations == []
