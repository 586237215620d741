"""End-to-end fixtures: a real discord.py bot with real wavelink and sonora_cog, in this process.

The bot is built like :func:`sonora_cog.testing.music_bot.build_bot` (the music commands of
:class:`~sonora_cog.testing.music_bot.MusicCog`) but with a :class:`SonoraCog` added explicitly, with
settings pointing its store at ``tmp_path``. It talks to FakeDiscord (through ``point_discord_at``
only) and to FakeLavalink (through ``wavelink.Pool.connect``); nothing of discord.py or wavelink is
patched.

Fixtures
--------
``music_world``
    ``discord_world`` plus people with different rights (``admin`` with Manage Server, ``dj`` with a
    role that has no permissions, ``member`` with none) and a second guild (``other``) with its own
    channels, where alice and the admin are members too.
``start_bot``
    ``await start_bot(**sections)`` starts a bot (``commands=CommandSettings(...)`` etc. override a
    settings section) and returns a :class:`RunningBot`; ``sonora=False`` leaves sonora_cog out (the
    host bot alone) and ``setup=`` runs ``await setup(bot)`` at the end of ``setup_hook``; ``more_nodes=``
    connects further FakeLavalinks as more wavelink nodes (after the ``fake_lavalink`` one), and
    ``connect_nodes=True`` connects them with ``SonoraCog.connect_nodes`` instead of ``wavelink.Pool.connect``;
    every bot is closed at teardown, and the
    wavelink ``Pool`` is emptied (it is class-level: a node left in it would leak into the next test).
    One bot at a time: start the next one (same store) after ``await running.stop()``.
``running_bot``
    ``await start_bot()`` with the defaults.
``scenario``
    ``async with scenario(guilds, **options) as demo:`` a :class:`~sonora_cog.demo.DemoScenario`: the
    demo's music bot as a subprocess against the fakes, started; its log is printed when the block fails.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import aiohttp
import discord
import pytest
import pytest_asyncio
import wavelink
from discord.ext import commands

from sonora_cog.cog import COG_NAME, SonoraCog
from sonora_cog.config import Settings, SnapshotSettings, StorageSettings
from sonora_cog.demo import DemoScenario
from sonora_cog.manager import SessionManager
from sonora_cog.model import SessionState
from sonora_cog.testing.fake_discord import FakeDiscord
from sonora_cog.testing.fake_discord_guild import FakeGuild
from sonora_cog.testing.fake_discord_interactions import FakeInteraction
from sonora_cog.testing.fake_discord_models import FakeChannel, FakeMember, FakeMessage, FakeRole, Permissions
from sonora_cog.testing.fake_lavalink import FakeLavalink, FakePlayerState
from sonora_cog.testing.music_bot import MusicCog
from sonora_cog.testing.pytest_plugin import World

_node_ids = itertools.count(1)


@dataclass(slots=True)
class OtherGuild:
    """A second guild of the same fake world."""

    guild: FakeGuild
    text: FakeChannel
    voice: FakeChannel


@dataclass(slots=True)
class MusicWorld:
    """``discord_world`` plus members with different rights and a second guild."""

    world: World
    admin: FakeMember
    admin_role: FakeRole
    dj: FakeMember
    dj_role: FakeRole
    member: FakeMember
    other: OtherGuild

    @property
    def fake(self) -> FakeDiscord:
        return self.world.fake

    @property
    def guild(self) -> FakeGuild:
        return self.world.guild

    @property
    def alice(self) -> FakeMember:
        return self.world.user


@pytest_asyncio.fixture
async def music_world(discord_world: World) -> MusicWorld:
    """The world of the end-to-end tests (see the module docstring)."""
    guild = discord_world.guild
    admin_role = guild.add_role("Admin", Permissions.MANAGE_GUILD)
    dj_role = guild.add_role("DJ", 0)
    admin = guild.add_member(name="admin", roles=[admin_role])
    dj = guild.add_member(name="dj", roles=[dj_role])
    member = guild.add_member(name="member")
    other = discord_world.fake.add_guild("Other Guild")
    other_admin = other.add_role("Admin", Permissions.MANAGE_GUILD)
    other.add_member(admin.id, roles=[other_admin])
    other.add_member(discord_world.user.id)
    world = OtherGuild(other, other.add_text_channel("general"), other.add_voice_channel("Music"))
    return MusicWorld(discord_world, admin, admin_role, dj, dj_role, member, world)


@dataclass(eq=False)
class RunningBot:
    """A started in-process bot and everything a test drives it with."""

    bot: commands.Bot
    cog: SonoraCog
    fake: FakeDiscord
    lavalink: FakeLavalink
    world: MusicWorld
    settings: Settings
    catalogue: list[dict[str, Any]]
    task: asyncio.Task[None] | None = None
    stopped: bool = False
    _node: wavelink.Node | None = field(default=None, repr=False)

    # -- shortcuts ------------------------------------------------------------------------------

    @property
    def guild(self) -> FakeGuild:
        """The main fake guild."""
        return self.world.guild

    @property
    def discord_guild(self) -> discord.Guild:
        """discord.py's view of the main guild."""
        guild = self.bot.get_guild(self.guild.id)
        assert guild is not None
        return guild

    def player(self, guild_id: int | None = None) -> wavelink.Player | None:
        """The bot's wavelink player in a guild (the main one by default), or ``None``."""
        guild = self.bot.get_guild(guild_id or self.guild.id)
        client = guild.voice_client if guild is not None else None
        return client if isinstance(client, wavelink.Player) else None

    def lavalink_player(self, guild_id: int | None = None) -> FakePlayerState | None:
        """What FakeLavalink holds for a guild (the main one by default)."""
        return self.lavalink.player(guild_id or self.guild.id)

    def track(self, title: str) -> dict[str, Any]:
        """The catalogue track with this title."""
        return next(t for t in self.catalogue if t["info"]["title"] == title)

    # -- driving --------------------------------------------------------------------------------

    async def slash(
        self,
        name: str,
        subcommand: str | None = None,
        options: Mapping[str, Any] | None = None,
        *,
        user: FakeMember | None = None,
        guild: FakeGuild | None = None,
        **kwargs: Any,
    ) -> FakeInteraction:
        """Send ``/name [subcommand]`` as ``user`` (default: the admin) in ``guild`` (default: the main one)."""
        target = guild or self.guild
        member = user or self.world.admin
        return await self.fake.send_slash_command(target.id, member.id, name, subcommand, options, **kwargs)

    async def snapshot(
        self, subcommand: str, options: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> FakeInteraction:
        """Send ``/snapshot <subcommand>`` (same keywords as :meth:`slash`)."""
        return await self.slash("snapshot", subcommand, options, **kwargs)

    async def answer(self, interaction: FakeInteraction, timeout: float = 10.0) -> FakeMessage:  # noqa: ASYNC109
        """The first message the user sees for ``interaction`` (after a defer: the follow-up)."""
        return await interaction.wait_message(timeout)

    async def join_voice(
        self, member: FakeMember, guild: FakeGuild | None = None, channel_id: int | None = None
    ) -> None:
        """Put ``member`` in a voice channel and wait until discord.py has seen it."""
        target = guild or self.guild
        voice = channel_id or next(c.id for c in target.channels.values() if c.is_voice)
        if target.voice_channel_of(member.id) == voice:
            return
        await self.fake.member_join_voice(target.id, member.id, voice)
        channel = self.bot.get_channel(voice)
        assert isinstance(channel, discord.VoiceChannel)
        await self.lavalink.wait_for(lambda: member.id in channel.voice_states)

    async def play(self, query: str, *, user: FakeMember | None = None, guild: FakeGuild | None = None) -> FakeMessage:
        """Join ``user`` (default: alice) to voice, send ``/play query`` and wait for its answer."""
        target = guild or self.guild
        member = user or self.world.alice
        await self.join_voice(member, target)
        interaction = await self.fake.send_slash_command(target.id, member.id, "play", None, {"query": query})
        message = await interaction.wait_message(15)
        assert message.content.startswith(("Playing", "Queued")), message.content
        return message

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:  # noqa: ASYNC109
        """Poll ``predicate`` (sync or async) until it is truthy; return its value."""
        return await self.lavalink.wait_for(predicate, timeout)

    async def live_record(
        self,
        check: Callable[[SessionState], Any],
        *,
        manager: SessionManager | None = None,
        guild_id: int | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> SessionState:
        """Wait until the guild's live record (main guild, read with the cog's manager by default)
        satisfies ``check``; return it."""
        reader = manager or self.cog.manager
        found: list[SessionState] = []

        async def ready() -> bool:
            state = await reader.read_live(guild_id or self.guild.id)
            if state is not None and check(state):
                found.append(state)
                return True
            return False

        await self.wait_for(ready, timeout)
        return found[-1]

    # -- lifecycle ------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Close the bot (the cog saves its shutdown snapshots) and empty the wavelink Pool."""
        if self.stopped:
            return
        self.stopped = True
        try:
            await self.bot.close()
            if self.task is not None:
                await asyncio.wait_for(self.task, 10)
        finally:
            await close_pool()


async def close_pool() -> None:
    """Close every wavelink node and remove it from the (class-level) Pool.

    ``wavelink.Pool.close()`` closes the nodes but keeps them in the Pool (wavelink 3.5), so the next
    ``Pool.connect`` with the same identifier would be refused; ``Node.close(eject=True)`` removes them.
    """
    await wavelink.Pool.close()
    for node in list(wavelink.Pool.nodes.values()):
        await node.close(eject=True)


def default_settings(store: Path, **sections: Any) -> Settings:
    """Settings for a test bot: store in ``store``, a short debounce, no auto snapshots."""
    settings = Settings(
        storage=StorageSettings(path=str(store)),
        snapshots=SnapshotSettings(debounce=0.05, auto_enabled=False),
    )
    return replace(settings, **sections)


StartBot = Callable[..., Awaitable[RunningBot]]


@pytest_asyncio.fixture
async def start_bot(
    music_world: MusicWorld, point_discord: FakeDiscord, fake_lavalink: FakeLavalink, tmp_path: Path
) -> AsyncIterator[StartBot]:
    """Factory: ``await start_bot(**sections)`` → a ready :class:`RunningBot` (see the module docstring)."""
    catalogue = fake_lavalink.seed_demo_catalogue()
    bots: list[RunningBot] = []
    sessions: list[aiohttp.ClientSession] = []
    assert not wavelink.Pool.nodes, f"wavelink.Pool leaked from an earlier test: {wavelink.Pool.nodes}"

    async def start(
        *,
        settings: Settings | None = None,
        sonora: bool = True,
        setup: Callable[[commands.Bot], Awaitable[None]] | None = None,
        more_nodes: Sequence[FakeLavalink] = (),
        connect_nodes: bool = False,
        **sections: Any,
    ) -> RunningBot:
        if any(not b.stopped for b in bots):
            raise RuntimeError("stop the running bot first: wavelink.Pool is shared by the whole process")
        chosen = settings or default_settings(tmp_path / "sonora", **sections)
        intents = discord.Intents.default()
        intents.voice_states = True
        intents.guilds = True
        bot = commands.Bot(command_prefix=commands.when_mentioned, intents=intents, guild_ready_timeout=0.05)
        cog = SonoraCog(bot, settings=chosen) if sonora else cast(SonoraCog, None)
        # wavelink never closes a session it made itself (Node.close leaves it open): give it ours
        session = aiohttp.ClientSession()
        sessions.append(session)
        node = wavelink.Node(
            uri=fake_lavalink.uri,
            password=fake_lavalink.password,
            identifier=f"e2e-{next(_node_ids)}",
            session=session,
        )
        nodes = [node] + [
            wavelink.Node(uri=extra.uri, password=extra.password, identifier=f"e2e-{next(_node_ids)}", session=session)
            for extra in more_nodes
        ]
        for extra in more_nodes:
            extra.seed_demo_catalogue()
        running = RunningBot(bot, cog, point_discord, fake_lavalink, music_world, chosen, catalogue, _node=node)
        bots.append(running)
        ready = asyncio.Event()

        async def setup_hook() -> None:
            if not connect_nodes:
                await wavelink.Pool.connect(nodes=nodes, client=bot)
            await bot.add_cog(MusicCog(bot))
            if sonora:
                await bot.add_cog(cog)
            if connect_nodes:
                await cog.connect_nodes(nodes)
            if setup is not None:
                await setup(bot)

        async def on_ready() -> None:
            ready.set()

        bot.setup_hook = setup_hook  # type: ignore[method-assign]
        bot.add_listener(on_ready)
        await bot.login(point_discord.token)
        running.task = asyncio.create_task(bot.connect(reconnect=True))
        await asyncio.wait_for(ready.wait(), 15)
        await bot.tree.sync()
        if not sonora:
            running.cog = cast(SonoraCog, bot.get_cog(COG_NAME))  # the one ``setup`` loaded, if any
        return running

    try:
        yield start
    finally:
        for running in bots:
            await running.stop()
        await close_pool()
        for session in sessions:
            await session.close()
        assert not wavelink.Pool.nodes


@pytest_asyncio.fixture
async def running_bot(start_bot: StartBot) -> RunningBot:
    """A bot with the default test settings."""
    return await start_bot()


# -- a real bot process (the demo's music bot) against the fakes ----------------------------------


@pytest.fixture
def scenario(tmp_path: Path) -> Callable[..., AsyncIterator[DemoScenario]]:
    @asynccontextmanager
    async def make(guilds: int = 2, **kwargs: object) -> AsyncIterator[DemoScenario]:
        async with DemoScenario(tmp_path, guilds, **kwargs) as demo:  # type: ignore[arg-type]
            try:
                await demo.start_bot()
                yield demo
            except BaseException:
                print(f"--- bot log (last lines) ---\n{demo.bot.tail(300)}")  # shown by pytest on failure
                raise

    return make


def manager_for(demo: DemoScenario) -> SessionManager:
    return SessionManager(Settings(storage=StorageSettings(path=str(demo.store_path))))


async def live_states(demo: DemoScenario) -> dict[int, SessionState | None]:
    manager = manager_for(demo)
    try:
        return {guild.id: await manager.read_live(guild.id) for guild, *_ in demo.world}
    finally:
        await manager.close()


def track_starts(demo: DemoScenario) -> dict[int, int]:
    """How many tracks Lavalink has started per guild (a restore that re-buffers starts one)."""
    return {guild.id: len(demo.lavalink.events("TrackStartEvent", guild.id)) for guild, *_ in demo.world}


async def kill_and_restart(demo: DemoScenario, restored: int) -> None:
    demo.bot.kill()
    await demo.bot.wait()
    await demo.start_bot()
    if restored:
        await demo.wait_restored(restored)
