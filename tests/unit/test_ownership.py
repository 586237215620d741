"""A sharded process restores only the guilds its own shards own."""

from __future__ import annotations

from types import SimpleNamespace

from sonora_cog.cog import SonoraCog


def owns(bot: object, guild_id: int) -> bool:
    return SonoraCog.owns(SimpleNamespace(bot=bot), guild_id)  # type: ignore[arg-type]


def guild_on_shard(shard: int, count: int) -> int:
    return next(g << 22 for g in range(1, 10_000) if g % count == shard)


def test_unsharded_bot_owns_everything() -> None:
    bot = SimpleNamespace(shard_count=None, shard_id=None)
    assert owns(bot, guild_on_shard(3, 4))


def test_auto_sharded_process_owns_only_its_shards() -> None:
    bot = SimpleNamespace(shard_count=4, shard_ids=[0, 2], shard_id=None)
    assert owns(bot, guild_on_shard(0, 4)) and owns(bot, guild_on_shard(2, 4))
    assert not owns(bot, guild_on_shard(1, 4)) and not owns(bot, guild_on_shard(3, 4))


def test_single_shard_process() -> None:
    bot = SimpleNamespace(shard_count=3, shard_id=1)
    assert owns(bot, guild_on_shard(1, 3))
    assert not owns(bot, guild_on_shard(0, 3))
