"""A process owns the guilds of the shards it runs: real discord.py bot objects, no connection."""

from __future__ import annotations

from pathlib import Path

import discord
import pytest
from discord.ext import commands

from sonora_cog.config import Settings, StorageSettings
from sonora_cog.manager import SessionManager
from sonora_cog.owner import SessionOwner
from sonora_cog.session import Phase


def guild_on_shard(shard: int, count: int) -> int:
    return next(g << 22 for g in range(1, 10_000) if g % count == shard)


def owner_for(bot: commands.Bot, tmp_path: Path) -> SessionOwner:
    return SessionOwner(bot, SessionManager(Settings(storage=StorageSettings(path=str(tmp_path)))))


def intents() -> discord.Intents:
    return discord.Intents.default()


def test_unsharded_bot_owns_everything(tmp_path: Path) -> None:
    owner = owner_for(commands.Bot(command_prefix="!", intents=intents()), tmp_path)
    assert owner.shard_ids() is None
    assert all(owner.owns(guild_on_shard(s, 4)) for s in range(4))
    assert owner.key.endswith("-all")


@pytest.mark.parametrize("shard_count", [4, None])
def test_auto_sharded_bot_without_ids_owns_every_shard_it_launches(tmp_path: Path, shard_count: int | None) -> None:
    # discord.py launches range(shard_count) when no shard_ids are given (shard_ids stays None), one shard
    # after another, and learns the count from Discord then when none is given.
    bot = commands.AutoShardedBot(command_prefix="!", intents=intents(), shard_count=shard_count)
    assert bot.shard_ids is None
    owner = owner_for(bot, tmp_path)
    key = owner.key
    assert owner.shard_ids() is None
    assert key.endswith("-all")
    bot.shard_count = 4  # launching: the count is known, the first shards are up and the others not yet
    assert all(owner.owns(guild_on_shard(s, 4)) for s in range(4))
    assert owner.key == key  # the Lavalink sessions and the heartbeat are found again at the next start


def test_auto_sharded_process_with_ids_owns_only_its_shards(tmp_path: Path) -> None:
    bot = commands.AutoShardedBot(command_prefix="!", intents=intents(), shard_count=4, shard_ids=[0, 2])
    owner = owner_for(bot, tmp_path)
    assert owner.owns(guild_on_shard(0, 4)) and owner.owns(guild_on_shard(2, 4))
    assert not owner.owns(guild_on_shard(1, 4)) and not owner.owns(guild_on_shard(3, 4))


def test_single_shard_process(tmp_path: Path) -> None:
    owner = owner_for(commands.Bot(command_prefix="!", intents=intents(), shard_id=1, shard_count=3), tmp_path)
    assert owner.owns(guild_on_shard(1, 3))
    assert not owner.owns(guild_on_shard(0, 3))


@pytest.mark.parametrize("shard", [1, 3])
def test_a_guild_of_another_shard_is_never_held_written_or_ended(tmp_path: Path, shard: int) -> None:
    bot = commands.AutoShardedBot(command_prefix="!", intents=intents(), shard_count=4, shard_ids=[0, 2])
    owner = owner_for(bot, tmp_path)
    theirs, ours = guild_on_shard(shard, 4), guild_on_shard(0, 4)
    assert owner.expect_restore([theirs, ours]) == [ours]
    assert owner.phase(theirs) is Phase.foreign and owner.phase(ours) is Phase.pending
    assert not owner.start(theirs, "test") and not owner.end(theirs, "test")
    owner.mark_dirty(theirs)
    assert not owner.is_dirty(theirs) and theirs not in {s.guild_id for s in owner.sessions()}
