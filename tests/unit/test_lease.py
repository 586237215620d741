"""The lease manager over the in-process backend (the Redis backend is tested in tests/store/test_redis_store.py)."""

from __future__ import annotations

import asyncio

import pytest

from sonora_cog.lease import LeaseManager, LocalLeases, new_owner_token
from sonora_cog.store import FilesystemStore

GUILD = 111111111111111111


async def test_filesystem_store_gets_local_leases(tmp_path: object) -> None:
    manager = LeaseManager.for_store(FilesystemStore(str(tmp_path)))
    assert isinstance(manager.backend, LocalLeases)
    assert (await manager.acquire(GUILD)).acquired and manager.holds(GUILD)
    assert await manager.ensure(GUILD)
    assert await manager.release(GUILD) and not manager.holds(GUILD)


async def test_one_holder_at_a_time_and_release_all() -> None:
    backend = LocalLeases()
    first, second = LeaseManager(backend, owner="a", ttl=5, renew_interval=1), LeaseManager(backend, owner="b")
    assert (await first.acquire(GUILD)).acquired
    status = await second.acquire(GUILD)
    assert not status.acquired and status.holder == "a"
    assert not await second.ensure(GUILD)
    first.start()
    await first.close()  # releases everything
    assert (await second.acquire(GUILD)).acquired


async def test_waiting_for_a_release() -> None:
    backend = LocalLeases()
    old = LeaseManager(backend, owner="old", ttl=5, renew_interval=1)
    new = LeaseManager(backend, owner="new", ttl=5, renew_interval=1, poll_interval=0.02)
    await old.acquire(GUILD)
    waiter = asyncio.create_task(new.acquire(GUILD, wait=2))
    await asyncio.sleep(0.1)
    assert not waiter.done()
    await old.release(GUILD)
    assert (await waiter).acquired


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="below its ttl"):
        LeaseManager(LocalLeases(), ttl=5, renew_interval=5)
    assert new_owner_token() != new_owner_token()


def test_config_refuses_a_renew_interval_not_below_the_ttl(tmp_path: object) -> None:
    from pathlib import Path

    from sonora_cog.config import load_settings
    from sonora_cog.errors import ConfigError

    config = Path(str(tmp_path)) / "sonora.toml"
    config.write_text("[storage]\nlease_ttl = 5\nlease_renew_interval = 5\n")
    with pytest.raises(ConfigError, match=r"storage\.lease_renew_interval: must be below storage\.lease_ttl"):
        load_settings(config, env={})
