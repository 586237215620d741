"""``running``: a bot in the test's own process is ready inside the block and closed after it; a bot that
cannot start raises its own error at once, not a timeout."""

from __future__ import annotations

import discord
import pytest
from discord.ext import commands

from sonora_cog.testing import FakeDiscord, running


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
