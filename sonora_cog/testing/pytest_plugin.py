"""pytest fixtures for sonora_cog's fakes; enable with ``pytest_plugins = ["sonora_cog.testing.pytest_plugin"]``.

Fixtures
--------
``fake_discord``
    A started :class:`~sonora_cog.testing.fake_discord.FakeDiscord` with an empty world (build guilds
    with ``fake_discord.add_guild(...)``), heartbeat 1 s.
``discord_world``
    ``fake_discord`` plus a ready-made guild: ``world.guild``, ``world.text``, ``world.voice``,
    ``world.user`` (see :class:`World`).
``point_discord``
    Points the in-process discord.py at ``fake_discord`` and points it back afterwards.
``fake_lavalink``
    A started ``FakeLavalink`` (from :mod:`sonora_cog.testing.fake_lavalink`, imported lazily).
``bot_process``
    A factory ``bot_process(script, env=..., ...) -> BotProcess`` (not started); every process is
    killed at teardown and its log is attached to the report of a failed test.

.. versionadded:: 0.1
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
import pytest_asyncio

from sonora_cog.testing.botproc import BotProcess
from sonora_cog.testing.discord_client import point_discord_at, point_discord_back
from sonora_cog.testing.fake_discord import FakeDiscord
from sonora_cog.testing.fake_discord_guild import FakeGuild
from sonora_cog.testing.fake_discord_models import FakeChannel, FakeMember

__all__ = (
    "BotProcessFactory",
    "World",
    "bot_process",
    "discord_world",
    "fake_discord",
    "fake_lavalink",
    "point_discord",
    "private_redis_server",
)

_PROCESSES_KEY = pytest.StashKey[list[BotProcess]]()


class BotProcessFactory(Protocol):
    """The ``bot_process`` fixture: makes a :class:`BotProcess` (not started) that is killed at teardown."""

    def __call__(
        self,
        script: str | os.PathLike[str],
        *,
        env: Mapping[str, str] | None = ...,
        args: Sequence[str] = ...,
        cwd: str | os.PathLike[str] | None = ...,
        log_file: str | os.PathLike[str] | None = ...,
        name: str | None = ...,
    ) -> BotProcess: ...


@dataclass(slots=True)
class World:
    """A small ready-made world: one guild with a text channel, a voice channel and a member."""

    fake: FakeDiscord
    guild: FakeGuild
    text: FakeChannel
    voice: FakeChannel
    user: FakeMember

    @property
    def env(self) -> dict[str, str]:
        """Environment for a bot subprocess pointing at this fake."""
        return {"FAKE_DISCORD_URL": self.fake.base_url, "DISCORD_TOKEN": self.fake.token}


@pytest_asyncio.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    """A started FakeDiscord with an empty world."""
    async with FakeDiscord(heartbeat_interval_ms=1000) as fake:
        yield fake


@pytest_asyncio.fixture
async def discord_world(fake_discord: FakeDiscord) -> World:
    """``fake_discord`` with one guild (``general`` text, ``Music`` voice, member ``alice``)."""
    guild = fake_discord.add_guild("Sonora Test Guild")
    text = guild.add_text_channel("general")
    voice = guild.add_voice_channel("Music")
    user = guild.add_member(name="alice")
    return World(fake_discord, guild, text, voice, user)


@pytest.fixture
def point_discord(fake_discord: FakeDiscord) -> Iterator[FakeDiscord]:
    """Point this process's discord.py at ``fake_discord`` for the test."""
    point_discord_at(fake_discord)
    try:
        yield fake_discord
    finally:
        point_discord_back()


@pytest_asyncio.fixture
async def fake_lavalink() -> AsyncIterator[Any]:
    """A started FakeLavalink (password ``youshallnotpass``)."""
    from sonora_cog.testing.fake_lavalink import FakeLavalink

    async with FakeLavalink(password="youshallnotpass", player_update_interval=5.0) as lavalink:  # noqa: S106 - Lavalink's well-known default
        yield lavalink


@pytest.fixture
def private_redis_server() -> Iterator[Any]:
    """A real ``redis-server`` for this test alone (persistent: ``kill()`` then ``start()`` keeps its data).

    Skipped when ``redis-server`` is not installed, except under ``CI`` where that is an error.
    """
    from sonora_cog.testing.redis_server import RedisServer, require_redis_server

    require_redis_server()
    server = RedisServer(persistent=True)
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest_asyncio.fixture
async def bot_process(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BotProcessFactory]:
    """Factory for :class:`BotProcess`; kills leftovers at teardown."""
    processes: list[BotProcess] = []
    request.node.stash[_PROCESSES_KEY] = processes

    def factory(script: str | os.PathLike[str], **kwargs: Any) -> BotProcess:
        kwargs.setdefault("log_file", tmp_path / f"bot-{len(processes)}.log")
        process = BotProcess(script, **kwargs)
        processes.append(process)
        return process

    yield factory
    for process in processes:
        if process.running:
            process.kill()
            await process.wait()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """Attach every bot process log to the report of a failed test."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for process in item.stash.get(_PROCESSES_KEY, []):
            report.sections.append((f"bot process {process.name} (pid {process.pid})", process.tail(200)))
