"""``running``: a bot in the test's own process is ready inside the block and closed after it; a bot that
cannot start raises its own error at once, not a timeout."""

from __future__ import annotations

import asyncio
import gc
import warnings

import discord
import pytest
from discord.ext import commands

from sonora_cog.testing import FakeDiscord, running
from sonora_cog.testing import inprocess as running_module


async def test_the_bot_is_ready_inside_and_closed_after(fake_discord: FakeDiscord, point_discord: FakeDiscord) -> None:
    fake_discord.add_guild("Guild")
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.default())
    async with running(bot, fake_discord.token) as same:
        assert same is bot and bot.is_ready() and [g.name for g in bot.guilds] == ["Guild"]
    assert bot.is_closed()


async def test_a_wrong_token_raises_the_login_error(fake_discord: FakeDiscord, point_discord: FakeDiscord) -> None:
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.default())
    with pytest.raises(discord.LoginFailure):
        async with running(bot, "not-the-token", ready_timeout=10):
            pytest.fail("the block ran without a bot")
    assert bot.is_closed()


async def test_a_bot_closed_before_is_refused(fake_discord: FakeDiscord, point_discord: FakeDiscord) -> None:
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.default())
    async with running(bot, fake_discord.token):
        pass
    with pytest.raises(RuntimeError, match="cannot be started twice"):
        async with running(bot, fake_discord.token):
            pytest.fail("the block ran with a closed bot")


async def test_an_auto_sharded_bot_not_ready_in_time_times_out_and_stops(
    fake_discord: FakeDiscord, point_discord: FakeDiscord
) -> None:
    # FakeDiscord lets the second shard identify 5 s after the first, as Discord does
    bot = commands.AutoShardedBot(command_prefix="!", intents=discord.Intents.default(), shard_count=2)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(running_module.STOP_WAIT + 20) as guard:  # the test's own bound: never hang
            async with running(bot, fake_discord.token, ready_timeout=1):
                pytest.fail("the bot was not ready yet")
    assert not guard.expired()  # the TimeoutError is running()'s, not the guard's
    assert bot.is_closed()
    # discord.py's shard launcher, cancelled half way, leaves its half-open gateway connection to the
    # garbage collector: collected here, in the test that caused it, rather than in a later one
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
