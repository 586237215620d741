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


class StuckBackend(LocalLeases):
    """A backend whose renewals hang and swallow cancellation, as redis-py's ``wait_for`` does on 3.11."""

    def __init__(self) -> None:
        super().__init__()
        self.stuck = False
        self.unstick = asyncio.Event()
        self.renewals_started = 0
        self.swallowed = 0

    async def lease_acquire(self, guild_ids, owner, ttl):  # type: ignore[no-untyped-def]
        if self.stuck:
            self.renewals_started += 1
            while not self.unstick.is_set():
                try:
                    await self.unstick.wait()
                except asyncio.CancelledError:
                    self.swallowed += 1  # swallowed: the task goes on
        return await super().lease_acquire(guild_ids, owner, ttl)


async def test_close_returns_while_a_renewal_hangs_and_swallows_cancellation() -> None:
    backend = StuckBackend()
    manager = LeaseManager(backend, owner="a", ttl=5, renew_interval=0.001)
    await manager.acquire(GUILD)
    manager.start()
    backend.stuck = True
    while backend.renewals_started == 0:  # noqa: ASYNC110 - polling a counter the backend bumps
        await asyncio.sleep(0.001)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        await asyncio.wait_for(manager.close(grace=0.2), 5)  # before the fix: hung here forever
        assert loop.time() - started < 2
        assert not manager.held
        # close() does not wait for the cancelled renewal: the cancellation reaches it on its next step
        # (on 3.11 that step ran inside wait_for's own task; from 3.12 wait_for runs close() in this one)
        async with asyncio.timeout(2):
            while backend.swallowed == 0:  # noqa: ASYNC110 - polling a counter the backend bumps
                await asyncio.sleep(0.001)
    finally:
        backend.unstick.set()  # the abandoned renewal finishes; the loop sees the stop flag and ends
    await asyncio.sleep(0.05)
    assert backend.renewals_started == 1
    assert (await LeaseManager(backend, owner="b").acquire(GUILD)).acquired  # the late renewal gave it back


async def test_the_renew_loop_stops_on_its_flag_between_renewals() -> None:
    backend = LocalLeases()
    manager = LeaseManager(backend, owner="a", ttl=5, renew_interval=0.001)
    await manager.acquire(GUILD)
    manager.start()
    renewer = manager._renewer
    await asyncio.sleep(0.02)
    await manager.close()
    assert renewer is not None and renewer.done() and not renewer.cancelled()  # it ended by itself
    assert (await LeaseManager(backend, owner="b").acquire(GUILD)).acquired
