"""A model-based (stateful) test of node failover and drain: whatever happens to the nodes, every guild
plays on exactly one working node, with what its users set, and never on two at once.

Hypothesis drives random sequences of: a Lavalink node dying for good, a new node joining the pool, a
node drained and undrained, and the bot's users changing their sessions (queueing a track, changing the
volume, pausing and resuming) at any point, also while players move. After every step it waits for the
moves to settle and compares, for each of three guilds, what the bot holds, what the Lavalink node holds
and what the live record holds with a plain model. A watch polls every fake node's players every few
milliseconds for the whole run and fails on any instant where a guild has players on two nodes.

Everything is real and in this process, on the test's own event loop: discord.py against FakeDiscord,
wavelink against FakeLavalinks, sonora_cog's cog with its failover, on a filesystem store.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import discord
import wavelink
from discord.ext import commands
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from sonora_cog.cog import SonoraCog
from sonora_cog.config import FailoverSettings, Settings, SnapshotSettings, StorageSettings
from sonora_cog.player import SonoraPlayer
from sonora_cog.testing.discord_client import point_discord_at, point_discord_back
from sonora_cog.testing.fake_discord import FakeDiscord
from sonora_cog.testing.fake_lavalink import FakeLavalink

_T = TypeVar("_T")

GUILDS = 3
MAX_NODES = 4
GRACE = 0.3
#: How long the moves after one step may take to settle (a node's grace period, then at most three moves
#: onto one node, each a few loopback requests, plus the 5 s retry of a guild that found no node).
SETTLE = GRACE + 12.0
SONGS = ("Clair de Lune", "Canon in D", "Boléro", "Für Elise", "Paper Boats")
_names = itertools.count(1)


@dataclass
class GuildModel:
    """What the bot's users set in one guild."""

    track: str
    queue: list[str] = field(default_factory=list)
    volume: int = 100
    paused: bool = False


@dataclass
class NodeModel:
    fake: FakeLavalink
    identifier: str
    alive: bool = True
    drained: bool = False


class FailoverModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.store = Path(tempfile.mkdtemp(prefix="sonora-failover-model-"))
        self.nodes: list[NodeModel] = []
        self.guilds: dict[int, GuildModel] = {}
        self.doubles: list[tuple[int, list[str]]] = []
        self._watch: asyncio.Task[None] | None = None
        self.run(self._start())

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return self.loop.run_until_complete(coro)

    # -- the world --------------------------------------------------------------------------------------

    async def _start(self) -> None:
        self.discord = FakeDiscord(heartbeat_interval_ms=1000)
        await self.discord.start()
        point_discord_at(self.discord)
        self.fake_guilds = []
        for number in range(GUILDS):
            guild = self.discord.add_guild(f"Model {number}")
            guild.add_text_channel("general")
            guild.add_voice_channel("Music")
            guild.add_member(name=f"listener{number}")
            self.fake_guilds.append(guild)
        settings = Settings(
            storage=StorageSettings(path=str(self.store)),
            snapshots=SnapshotSettings(debounce=0.02, auto_enabled=False),
            failover=FailoverSettings(grace_seconds=GRACE, probe_interval=0, drain_pause=0.05),
        )
        intents = discord.Intents.default()
        intents.voice_states = True
        self.bot = commands.Bot(command_prefix="!", intents=intents, guild_ready_timeout=0.05)
        self.cog = SonoraCog(self.bot, settings=settings)
        self.session = aiohttp.ClientSession()
        ready = asyncio.Event()

        async def setup_hook() -> None:
            await self.bot.add_cog(self.cog)

        async def on_ready() -> None:
            ready.set()

        self.bot.setup_hook = setup_hook  # type: ignore[method-assign]
        self.bot.add_listener(on_ready)
        await self.bot.login(self.discord.token)
        self.bot_task = asyncio.ensure_future(self.bot.connect(reconnect=True))
        await asyncio.wait_for(ready.wait(), 15)
        for _ in range(3):
            await self._add_node()
        self.tracks: dict[str, wavelink.Playable] = {}
        for song in SONGS:
            found = await wavelink.Playable.search(song)
            assert isinstance(found, list) and found
            self.tracks[song] = found[0]
        for number, fake_guild in enumerate(self.fake_guilds):
            channel = self.bot.get_channel(next(c.id for c in fake_guild.channels.values() if c.is_voice))
            assert isinstance(channel, discord.VoiceChannel)
            player = await channel.connect(cls=SonoraPlayer, self_deaf=True)
            await player.play(self.tracks[SONGS[number]])
            self.guilds[fake_guild.id] = GuildModel(SONGS[number])
        self._watch = asyncio.ensure_future(self._watch_doubles())

    async def _add_node(self) -> NodeModel:
        fake = FakeLavalink(player_update_interval=0.5)
        await fake.start()
        fake.seed_demo_catalogue()
        identifier = f"model-{next(_names)}"
        node = wavelink.Node(uri=fake.uri, password=fake.password, identifier=identifier, session=self.session)
        await wavelink.Pool.connect(nodes=[node], client=self.bot)
        await self._until(lambda: node.status is wavelink.NodeStatus.CONNECTED and node.session_id, 10, "node up")
        model = NodeModel(fake, identifier)
        self.nodes.append(model)
        return model

    async def _watch_doubles(self) -> None:
        while True:
            for guild_id in self.guilds:
                holders = [n.identifier for n in self.nodes if n.fake.player(guild_id) is not None]
                if len(holders) > 1:
                    self.doubles.append((guild_id, holders))
            await asyncio.sleep(0.003)

    async def _until(self, check: Callable[[], Any], timeout: float, what: str) -> None:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout}s: {what}\n{self._describe()}")
            await asyncio.sleep(0.01)

    def _describe(self) -> str:
        lines = []
        for guild_id, model in self.guilds.items():
            holders = [n.identifier for n in self.nodes if n.fake.player(guild_id) is not None]
            player = self.player(guild_id)
            lines.append(
                f"guild {guild_id}: model={model} bot node={player.node.identifier if player else None} "
                f"held by {holders}"
            )
        lines += [f"node {n.identifier}: alive={n.alive} drained={n.drained}" for n in self.nodes]
        return "\n".join(lines)

    def player(self, guild_id: int) -> wavelink.Player | None:
        guild = self.bot.get_guild(guild_id)
        client = guild.voice_client if guild is not None else None
        return client if isinstance(client, wavelink.Player) else None

    def teardown(self) -> None:
        async def stop() -> None:
            if self._watch is not None:
                self._watch.cancel()
            with contextlib.suppress(Exception):
                await self.bot.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.bot_task, 10)
            for node in list(wavelink.Pool.nodes.values()):
                with contextlib.suppress(Exception):
                    await node.close(eject=True)
            await self.session.close()
            for node in self.nodes:
                await node.fake.close()
            await self.discord.stop()

        try:
            self.run(stop())
        finally:
            point_discord_back()
            self.loop.close()
            shutil.rmtree(self.store, ignore_errors=True)

    # -- what happens ------------------------------------------------------------------------------------

    def _alive(self) -> list[NodeModel]:
        return [n for n in self.nodes if n.alive]

    @precondition(lambda self: len(self._alive()) >= 1)
    @rule(data=st.data())
    def a_node_dies_for_good(self, data: st.DataObject) -> None:
        node = data.draw(st.sampled_from(self._alive()))
        node.alive = False
        self.run(node.fake.close())

    @precondition(lambda self: len(self.nodes) < MAX_NODES)
    @rule()
    def a_node_joins(self) -> None:
        self.run(self._add_node())

    @precondition(lambda self: any(not n.drained for n in self._alive()))
    @rule(data=st.data())
    def a_node_is_drained(self, data: st.DataObject) -> None:
        node = data.draw(st.sampled_from([n for n in self._alive() if not n.drained]))
        node.drained = True
        self.run(self._drain_under_load(node.identifier, data.draw(st.booleans(), label="users act meanwhile")))

    async def _drain_under_load(self, identifier: str, users_act: bool) -> None:
        drain = asyncio.ensure_future(self.cog.drain_node(identifier))
        if users_act:
            for guild_id in list(self.guilds):
                await self._change(guild_id, "queue")
                await self._change(guild_id, "volume")
        await drain

    @precondition(lambda self: any(n.drained for n in self.nodes))
    @rule(data=st.data())
    def a_node_is_undrained(self, data: st.DataObject) -> None:
        node = data.draw(st.sampled_from([n for n in self.nodes if n.drained]))
        node.drained = False
        self.cog.undrain_node(node.identifier)

    @rule(guild=st.integers(0, GUILDS - 1), change=st.sampled_from(["queue", "volume", "pause"]))
    def a_user_changes_the_session(self, guild: int, change: str) -> None:
        self.run(self._change(list(self.guilds)[guild], change))

    async def _change(self, guild_id: int, change: str) -> None:
        player = self.player(guild_id)
        model = self.guilds[guild_id]
        assert player is not None, f"guild {guild_id} has no player\n{self._describe()}"
        if change == "queue":  # a track found earlier: with every node down, nothing can be searched
            track = self.tracks[SONGS[len(model.queue) % len(SONGS)]]
            player.queue.put(track)
            model.queue.append(track.title)
        elif not self.cog.owner.nodes.alive(player.node):
            return  # the player waits for a node: Lavalink cannot be told anything now
        elif change == "volume":
            model.volume = 10 + (model.volume + 37) % 190
            await player.set_volume(model.volume)
        else:
            model.paused = not model.paused
            await player.pause(model.paused)

    # -- what must hold ----------------------------------------------------------------------------------

    @invariant()
    def never_two_players(self) -> None:
        assert not self.doubles, f"a guild had players on two nodes: {self.doubles[:3]}"

    @invariant()
    def every_guild_plays_what_its_users_set_on_one_working_node(self) -> None:
        self.run(self._check())

    async def _check(self) -> None:
        takers = [n for n in self._alive() if not n.drained]
        working = {n.identifier for n in self._alive()}
        if not working:
            # Nowhere to play: every session waits in voice, with its live record.
            for guild_id in self.guilds:
                assert self.player(guild_id) is not None
                assert self.cog.owner.phase(guild_id).value in ("live", "restoring")
            return

        def settled() -> bool:
            for guild_id, model in self.guilds.items():
                player = self.player(guild_id)
                if player is None or self.cog.owner.phase(guild_id).value != "live":
                    return False  # (a move in progress holds the guild in "restoring")
                if player.node.identifier not in working:
                    if takers:
                        return False
                    continue  # its node died and only drained nodes work: it waits (drained nodes take none)
                if takers and player.node.identifier not in {n.identifier for n in takers}:
                    return False  # still on a drained node although another node takes players
                held = next(n for n in self.nodes if n.identifier == player.node.identifier).fake.player(guild_id)
                if held is None or held.track is None or held.track["info"]["title"] != model.track:
                    return False
                if held.paused is not model.paused or held.volume != model.volume:
                    return False
            return True

        await self._until(settled, SETTLE, "every guild on one working node, as its users set it")
        for guild_id, model in self.guilds.items():
            player = self.player(guild_id)
            assert player is not None
            session = self.cog.owner.session(guild_id)
            assert session.phase.value == "live", f"guild {guild_id}: {session.phase.value} ({session.reason})"
            assert [t.title for t in player.queue] == model.queue
            assert player.current is not None and player.current.title == model.track
            assert [t.title for t in player.queue.history or []] == [model.track], "history grew on a move"
            await self._until_recorded(guild_id, model)

    async def _until_recorded(self, guild_id: int, model: GuildModel) -> None:
        deadline = time.monotonic() + 5
        while True:
            state = await self.cog.manager.read_live(guild_id)
            if (
                state is not None
                and state.queue.current is not None
                and (
                    [t.info["title"] for t in state.queue.upcoming] == model.queue
                    and state.player.volume == model.volume
                    and state.player.paused is model.paused
                    and state.queue.current.info["title"] == model.track
                )
            ):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"guild {guild_id}: the live record {state!r} never matched {model}")
            await asyncio.sleep(0.02)


def test_failover_and_drain_keep_every_guild_on_one_working_node() -> None:
    run_state_machine_as_test(
        FailoverModel,
        settings=settings(
            max_examples=10,
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
