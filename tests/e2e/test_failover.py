"""Lavalink node failover and drain: real discord.py and wavelink, two or three FakeLavalink nodes.

Every test starts its players on node A only (the other nodes are drained while the players start,
then opened again), so that A's loss or drain has players to move. :class:`DoubleWatch` polls every
fake node's players every few milliseconds during the test and records any instant where one guild has
a player on two nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
import wavelink
from conftest import MusicWorld, RunningBot, StartBot

from sonora_cog.config import FailoverSettings
from sonora_cog.errors import NodeNotFound
from sonora_cog.restore import RestoreReport, RestoreStatus
from sonora_cog.testing.fake_discord_guild import FakeGuild
from sonora_cog.testing.fake_lavalink import FakeLavalink

GRACE = 1.0
#: Beyond the grace period, what the moves of 10 guilds may take: wavelink notices the dropped socket
#: at once, each move is a handful of loopback requests (delete, voice update, play, read back), at most
#: 5 at a time; 10 s leaves room for a loaded CI machine, while a move that hangs (MOVE_TIMEOUT 15 s) fails.
MOVE_BOUND = 10.0
#: How far the start position of a moved track may be from where it was when its node died.
POSITION_TOLERANCE_MS = 1_500


def failover(**options: Any) -> FailoverSettings:
    return replace(FailoverSettings(grace_seconds=GRACE, drain_pause=0.2), **options)


def add_guilds(world: MusicWorld, count: int) -> list[FakeGuild]:
    """The world's two guilds plus more, up to ``count``, each with alice and a voice channel."""
    guilds = [world.guild, world.other.guild]
    for number in range(count - len(guilds)):
        guild = world.fake.add_guild(f"Failover {number}")
        guild.add_text_channel("general")
        guild.add_voice_channel("Music")
        guild.add_member(world.alice.id)
        guilds.append(guild)
    return guilds[:count]


class DoubleWatch:
    """Polls every fake node's players; :attr:`doubles` lists (guild, nodes) seen with two players."""

    def __init__(self, fakes: Iterable[FakeLavalink], guild_ids: Iterable[int]) -> None:
        self.fakes = list(fakes)
        self.guild_ids = list(guild_ids)
        self.doubles: list[tuple[int, int]] = []
        self.polls = 0

    async def run(self) -> None:
        while True:
            for guild_id in self.guild_ids:
                holders = sum(1 for fake in self.fakes if fake.player(guild_id) is not None)
                if holders > 1:
                    self.doubles.append((guild_id, holders))
            self.polls += 1
            await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def watching(fakes: Iterable[FakeLavalink], guild_ids: Iterable[int]) -> AsyncIterator[DoubleWatch]:
    watch = DoubleWatch(fakes, guild_ids)
    task = asyncio.create_task(watch.run())
    try:
        yield watch
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert watch.polls >= 1, "the watch did not run"
    assert not watch.doubles, f"a guild had players on two nodes: {watch.doubles[:5]}"


def node_of(running: RunningBot, fake: FakeLavalink) -> wavelink.Node:
    return next(n for n in wavelink.Pool.nodes.values() if n.uri == fake.uri)


def reports_of(running: RunningBot) -> list[RestoreReport]:
    reports: list[RestoreReport] = []

    async def on_sonora_session_restored(report: RestoreReport) -> None:
        reports.append(report)

    running.bot.add_listener(on_sonora_session_restored)
    return reports


async def play_on_first_node(
    running: RunningBot, guilds: list[FakeGuild], others: list[FakeLavalink], songs: list[str] | None = None
) -> None:
    """Play one track in each guild with every node but the fixture's drained, then open them again."""
    names = [node_of(running, fake).identifier for fake in others]
    for name in names:
        await running.cog.drain_node(name)
    for number, guild in enumerate(guilds):
        await running.play((songs or ["Clair de Lune", "Canon in D", "Boléro"])[number % 3], guild=guild)
    for name in names:
        running.cog.undrain_node(name)
    for guild in guilds:
        assert running.lavalink.player(guild.id) is not None


async def playing_on_a(
    start_bot: StartBot, world: MusicWorld, count: int, others: list[FakeLavalink], settings: FailoverSettings
) -> tuple[RunningBot, list[FakeGuild], list[RestoreReport]]:
    """A bot with the fixture's node A and ``others``, playing in ``count`` guilds, all on A; its reports."""
    guilds = add_guilds(world, count)
    running = await start_bot(more_nodes=others, failover=settings)
    reports = reports_of(running)
    await play_on_first_node(running, guilds, others)
    return running, guilds, reports


def start_position(fake: FakeLavalink, guild_id: int) -> int | None:
    """The ``position`` of the last play the node received for the guild."""
    plays = [
        r.json
        for r in fake.requests
        if r.method == "PATCH"
        and r.path.endswith(f"/players/{guild_id}")
        and isinstance(r.json, dict)
        and "position" in r.json
    ]
    return plays[-1]["position"] if plays else None


@pytest.fixture
async def node_b() -> AsyncIterator[FakeLavalink]:
    async with FakeLavalink(player_update_interval=0.5) as fake:
        yield fake


@pytest.fixture
async def node_c() -> AsyncIterator[FakeLavalink]:
    async with FakeLavalink(player_update_interval=0.5) as fake:
        yield fake


async def test_a_node_that_dies_for_good_has_its_ten_guilds_play_on_the_others(
    start_bot: StartBot,
    music_world: MusicWorld,
    fake_lavalink: FakeLavalink,
    node_b: FakeLavalink,
    node_c: FakeLavalink,
) -> None:
    running, guilds, reports = await playing_on_a(start_bot, music_world, 10, [node_b, node_c], failover())
    paused = guilds[:3]
    for guild in paused:
        player = running.player(guild.id)
        assert player is not None
        await player.pause(True)
    await asyncio.sleep(0.5)
    ids = [g.id for g in guilds]

    async with watching([fake_lavalink, node_b, node_c], ids):
        before = {g.id: running.player(g.id).position for g in guilds}  # type: ignore[union-attr]
        titles = {g.id: running.player(g.id).current.title for g in guilds}  # type: ignore[union-attr]
        killed = time.monotonic()
        await fake_lavalink.close()  # for good: the port refuses every reconnect

        def moved() -> bool:
            return all(
                (node_b.player(g) or node_c.player(g)) is not None
                and ((node_b.player(g) or node_c.player(g)).track is not None)
                for g in ids
            )  # type: ignore[union-attr]

        await running.wait_for(moved, GRACE + MOVE_BOUND)
        took = time.monotonic() - killed
    assert took >= GRACE * 0.9, f"players moved after {took:.2f}s, before the grace period was over"
    print(f"10 guilds played on the other nodes {took:.2f}s after the kill (grace {GRACE}s)")  # shown with -s

    for guild in guilds:
        there = node_b.player(guild.id) or node_c.player(guild.id)
        assert there is not None and there.track is not None
        assert there.track["info"]["title"] == titles[guild.id]
        assert there.paused is (guild in paused), f"guild {guild.id}: paused is {there.paused}"
        fake = node_b if node_b.player(guild.id) else node_c
        start = start_position(fake, guild.id)
        assert start is not None and abs(start - before[guild.id]) <= POSITION_TOLERANCE_MS, (
            f"guild {guild.id}: started at {start}, was at {before[guild.id]} when its node died"
        )
    assert node_b.players() and node_c.players(), "every player went to one node"
    await running.wait_for(lambda: len(reports) == 10)
    assert {r.guild_id for r in reports} == set(ids)
    assert all(
        r.status is RestoreStatus.restored
        and r.node in {node_of(running, node_b).identifier, node_of(running, node_c).identifier}
        for r in reports
    )
    # The live records follow: still playing, the paused ones paused, nothing ended.
    for guild in guilds:
        state = await running.live_record(lambda s: s.queue.current is not None, guild_id=guild.id)
        assert state.player.paused is (guild in paused)

    # The old node comes back: it takes no player back, and new players may go there.
    await fake_lavalink.start()
    old = node_of(running, fake_lavalink)
    await running.wait_for(lambda: old.status is wavelink.NodeStatus.CONNECTED, 40)
    await asyncio.sleep(1.0)
    assert fake_lavalink.players() == []
    assert all((node_b.player(g) or node_c.player(g)) is not None for g in ids)


async def test_a_target_that_fails_during_the_move_is_skipped_for_the_next_node(
    start_bot: StartBot,
    music_world: MusicWorld,
    fake_lavalink: FakeLavalink,
    node_b: FakeLavalink,
    node_c: FakeLavalink,
) -> None:
    running, guilds, reports = await playing_on_a(start_bot, music_world, 4, [node_b, node_c], failover())
    broken = guilds[0].id
    node_b.fail_player(broken)  # node B refuses that guild's player; C takes it
    node_c.fail_player(guilds[1].id)  # and C refuses another one; B takes it
    ids = [g.id for g in guilds]

    async with watching([fake_lavalink, node_b, node_c], ids):
        await fake_lavalink.close()
        await running.wait_for(lambda: len(reports) == 4, GRACE + MOVE_BOUND)
    assert all(r.ok for r in reports), reports
    assert node_c.player(broken) is not None and node_c.player(broken).track is not None  # type: ignore[union-attr]
    assert node_b.player(broken) is None
    assert node_b.player(guilds[1].id) is not None


async def test_one_guild_that_no_node_takes_does_not_keep_the_others_from_moving(
    start_bot: StartBot,
    music_world: MusicWorld,
    fake_lavalink: FakeLavalink,
    node_b: FakeLavalink,
) -> None:
    running, guilds, reports = await playing_on_a(start_bot, music_world, 5, [node_b], failover())
    stuck = guilds[2].id
    node_b.fail_player(stuck)
    others = [g.id for g in guilds if g.id != stuck]

    async with watching([fake_lavalink, node_b], [g.id for g in guilds]):
        await fake_lavalink.close()
        await running.wait_for(lambda: len(reports) == 4, GRACE + MOVE_BOUND)
    assert sorted(r.guild_id for r in reports) == sorted(others)
    assert all(node_b.player(g) is not None for g in others)
    assert node_b.player(stuck) is None
    # The stuck guild keeps its session and its live record, and moves once the node takes it.
    assert running.cog.owner.phase(stuck).value == "live"
    assert (await running.cog.manager.read_live(stuck)) is not None
    node_b.heal_player(stuck)
    await running.wait_for(lambda: node_b.player(stuck) is not None, 30)


async def test_with_no_other_node_the_players_wait_and_move_when_one_is_ready(
    start_bot: StartBot,
    music_world: MusicWorld,
    fake_lavalink: FakeLavalink,
    node_b: FakeLavalink,
) -> None:
    guilds = add_guilds(music_world, 3)
    running = await start_bot(failover=failover())
    reports = reports_of(running)
    await play_on_first_node(running, guilds, [])
    ids = [g.id for g in guilds]
    await fake_lavalink.close()
    await asyncio.sleep(GRACE + 1.0)
    assert reports == []
    for guild_id in ids:  # nothing ended: the sessions wait, in voice, with their records
        assert running.cog.owner.phase(guild_id).value == "live"
        assert running.player(guild_id) is not None
        assert (await running.cog.manager.read_live(guild_id)) is not None

    # wavelink never closes a session it made itself: the late node gets one, closed after the node
    async with aiohttp.ClientSession() as session:
        async with watching([fake_lavalink, node_b], ids):
            node = wavelink.Node(uri=node_b.uri, password=node_b.password, identifier="late-node", session=session)
            await wavelink.Pool.connect(nodes=[node], client=running.bot)
            await running.wait_for(lambda: len(reports) == 3, MOVE_BOUND)
        assert all(r.ok and r.node == "late-node" for r in reports)
        assert all(node_b.player(g) is not None and node_b.player(g).track is not None for g in ids)  # type: ignore[union-attr]
        await running.stop()  # the bot, then every node of the pool: before the late node's session closes


async def test_closing_a_node_in_the_bot_ends_no_session_and_its_players_move(
    start_bot: StartBot,
    music_world: MusicWorld,
    fake_lavalink: FakeLavalink,
    node_b: FakeLavalink,
) -> None:
    running, guilds, reports = await playing_on_a(start_bot, music_world, 3, [node_b], failover())
    ids = [g.id for g in guilds]

    async with watching([fake_lavalink, node_b], ids):
        await node_of(running, fake_lavalink).close()  # wavelink disconnects every player of the node
        await running.wait_for(lambda: len(reports) == 3, MOVE_BOUND)
    assert all(r.ok for r in reports)
    for guild_id in ids:
        assert running.cog.owner.phase(guild_id).value == "live"
        assert (await running.cog.manager.read_live(guild_id)) is not None
        assert node_b.player(guild_id) is not None
    assert fake_lavalink.players() == []


async def test_a_drain_under_load_moves_every_player_and_loses_no_change(
    start_bot: StartBot,
    music_world: MusicWorld,
    fake_lavalink: FakeLavalink,
    node_b: FakeLavalink,
) -> None:
    *guilds, extra = add_guilds(music_world, 7)
    running = await start_bot(more_nodes=[node_b], failover=failover(drain_batch_size=2))
    reports = reports_of(running)
    await play_on_first_node(running, guilds, [node_b])
    ids = [g.id for g in guilds]
    a = node_of(running, fake_lavalink).identifier
    queued: dict[int, list[str]] = {g: [] for g in ids}
    songs = ["Für Elise", "Moonlight Sonata", "Glass Houses", "Paper Boats"]

    async def keep_changing() -> None:
        # The bot's users go on: tracks are queued and volumes change in every guild while it drains.
        number = 0
        while not stop.is_set():
            for guild_id in ids:
                player = running.player(guild_id)
                assert player is not None
                found = await wavelink.Playable.search(
                    songs[number % len(songs)],
                    node=player.node if player.node.status is wavelink.NodeStatus.CONNECTED else None,
                )
                assert isinstance(found, list) and found
                player.queue.put(found[0])
                queued[guild_id].append(found[0].title)
                await player.set_volume(50 + number % 50)
            number += 1
            await asyncio.sleep(0.05)

    stop = asyncio.Event()
    async with watching([fake_lavalink, node_b], ids):
        changer = asyncio.create_task(keep_changing())
        try:
            drained = await running.cog.drain_node(a)
        finally:
            stop.set()  # not cancelled: a wavelink call cancelled half-way leaves wavelink and Lavalink apart
            await changer
    assert drained.moved == 6 and drained.left == []
    assert [r.status for r in drained.reports] == [RestoreStatus.restored] * 6
    assert fake_lavalink.players() == [] and len(node_b.players()) == 6
    assert all(r.guild_id in ids for r in reports)
    for guild_id in ids:
        player = running.player(guild_id)
        assert player is not None and player.node.identifier != a
        assert [t.title for t in player.queue] == queued[guild_id]
        volume = player.volume
        assert node_b.player(guild_id).volume == volume  # type: ignore[union-attr]
        count = len(queued[guild_id])
        state = await running.live_record(
            lambda s, n=count, v=volume: len(s.queue.upcoming) == n and s.player.volume == v,
            guild_id=guild_id,
        )
        assert [t.info["title"] for t in state.queue.upcoming] == queued[guild_id]
    # A drained node takes no new player; undrained, it does again.
    assert a in running.cog.owner.nodes.drained
    await running.play("Clair de Lune", guild=extra)
    assert fake_lavalink.player(extra.id) is None and node_b.player(extra.id) is not None
    assert running.cog.undrain_node(a) is True
    assert a not in running.cog.owner.nodes.drained


async def test_a_drain_that_no_node_can_take_leaves_the_players_where_they_are(
    start_bot: StartBot,
    music_world: MusicWorld,
    fake_lavalink: FakeLavalink,
    node_b: FakeLavalink,
) -> None:
    guilds = add_guilds(music_world, 2)
    running = await start_bot(more_nodes=[node_b], failover=failover())
    await play_on_first_node(running, guilds, [node_b])
    for guild in guilds:
        node_b.fail_player(guild.id)
    a = node_of(running, fake_lavalink).identifier
    async with watching([fake_lavalink, node_b], [g.id for g in guilds]):
        drained = await running.cog.drain_node(a)
    assert drained.moved == 0 and sorted(drained.left) == sorted(g.id for g in guilds)
    assert all(r.status is RestoreStatus.rolled_back for r in drained.reports)
    for guild in guilds:  # back on their node, playing
        there = fake_lavalink.player(guild.id)
        assert there is not None and there.track is not None and not there.paused
        assert node_b.player(guild.id) is None


async def test_draining_an_unknown_node_says_which_nodes_exist(running_bot: RunningBot) -> None:
    with pytest.raises(NodeNotFound, match=r"no Lavalink node is named 'nope' \(nodes: e2e-"):
        await running_bot.cog.drain_node("nope")


async def test_a_node_back_within_the_grace_period_keeps_its_players(
    start_bot: StartBot,
    music_world: MusicWorld,
    fake_lavalink: FakeLavalink,
    node_b: FakeLavalink,
) -> None:
    running, _, reports = await playing_on_a(start_bot, music_world, 2, [node_b], failover(grace_seconds=30.0))
    node = node_of(running, fake_lavalink)
    seen: list[str] = []

    async def on_wavelink_node_disconnected(payload: wavelink.NodeDisconnectedEventPayload) -> None:
        seen.append("disconnected")

    async def on_wavelink_node_ready(payload: wavelink.NodeReadyEventPayload) -> None:
        seen.append(f"ready resumed={payload.resumed}")

    running.bot.add_listener(on_wavelink_node_disconnected)
    running.bot.add_listener(on_wavelink_node_ready)
    try:
        await fake_lavalink.drop_connections(abrupt=True)  # a network blip: Lavalink keeps the resumable session
        await running.wait_for(lambda: "ready resumed=True" in seen, 20)
        assert seen[0] == "disconnected"
        await asyncio.sleep(0.5)
    finally:  # discord.py cannot dispatch to a closed bot: wavelink's events at teardown would fail
        running.bot.remove_listener(on_wavelink_node_disconnected)
        running.bot.remove_listener(on_wavelink_node_ready)
    assert reports == [] and node_b.players() == []
    assert node.identifier not in running.cog._node_watch


async def test_a_node_that_shuts_down_cleanly_is_found_by_the_probe(
    start_bot: StartBot,
    music_world: MusicWorld,
    fake_lavalink: FakeLavalink,
    node_b: FakeLavalink,
) -> None:
    # A Lavalink that shuts down closes its WebSockets with a close frame; wavelink 3.5 then stops
    # listening without an event or a reconnect and still calls the node connected. The stats probe
    # finds it.
    running, guilds, reports = await playing_on_a(start_bot, music_world, 2, [node_b], failover(probe_interval=0.2))
    node = node_of(running, fake_lavalink)
    async with watching([fake_lavalink, node_b], [g.id for g in guilds]):
        await fake_lavalink.drop_connections(code=1001, reason="shutting down")
        await fake_lavalink.close()
        await running.wait_for(lambda: len(reports) == 2, GRACE + MOVE_BOUND)
    assert node.status is wavelink.NodeStatus.CONNECTED  # what wavelink still says
    assert all(r.ok and node_b.player(r.guild_id) is not None for r in reports)


async def test_a_bot_that_closes_the_pool_before_discord_keeps_every_session_for_its_next_start(
    start_bot: StartBot,
    music_world: MusicWorld,
    fake_lavalink: FakeLavalink,
) -> None:
    # A common bot close(): `await wavelink.Pool.close()` first, then discord.py's. wavelink disconnects
    # every player of each node; that must not read as "the bot left on purpose".
    guilds = add_guilds(music_world, 3)
    running = await start_bot(failover=failover())
    await play_on_first_node(running, guilds, [])
    ids = [g.id for g in guilds]
    for guild_id in ids:
        await running.live_record(lambda s: s.queue.current is not None, guild_id=guild_id)
    titles = {g: running.player(g).current.title for g in ids}  # type: ignore[union-attr]
    await asyncio.sleep(1.0)
    await wavelink.Pool.close()
    await asyncio.sleep(0.5)  # the end of a session would have deleted its record by now
    for guild_id in ids:
        assert running.cog.owner.phase(guild_id).value == "live"
        assert (await running.cog.manager.read_live(guild_id)) is not None
    assert fake_lavalink.players() == []  # the players were deleted on the closing node
    await running.stop()

    again = await start_bot()
    await again.wait_for(
        lambda: all(fake_lavalink.player(g) is not None and fake_lavalink.player(g).track for g in ids), 30
    )  # type: ignore[union-attr]
    for guild_id in ids:
        player = again.player(guild_id)
        assert player is not None and player.current is not None
        assert player.current.title == titles[guild_id]
        # the stalled position (about a second in), less the restore's rewind: not the start of the track
        state = await again.live_record(lambda s: s.queue.current is not None, guild_id=guild_id)
        assert state.queue.current is not None and state.queue.current.info["title"] == titles[guild_id]


async def test_a_bot_that_starts_while_a_node_is_down_restores_every_guild_on_the_others(
    start_bot: StartBot,
    music_world: MusicWorld,
    fake_lavalink: FakeLavalink,
    node_b: FakeLavalink,
) -> None:
    # wavelink.Pool.connect waits forever for a node that does not answer; connect_nodes must not.
    guilds = add_guilds(music_world, 3)
    running = await start_bot(more_nodes=[node_b], failover=failover(enabled=False), connect_nodes=True)
    await play_on_first_node(running, guilds, [node_b])
    ids = [g.id for g in guilds]
    for guild_id in ids:
        await running.live_record(lambda s: s.queue.current is not None, guild_id=guild_id)
    await running.stop()  # a redeploy (the live records stay; the next start restores them)
    await fake_lavalink.close()  # and node A is down meanwhile

    again = await start_bot(more_nodes=[node_b], connect_nodes=True)  # fails if setup_hook waits for node A
    await again.wait_for(lambda: all(node_b.player(g) is not None and node_b.player(g).track for g in ids), 30)  # type: ignore[union-attr]
    await fake_lavalink.start()  # A comes back: it joins the pool and takes no player back
    await again.wait_for(
        lambda: (
            len(wavelink.Pool.nodes) == 2
            and all(n.status is wavelink.NodeStatus.CONNECTED for n in wavelink.Pool.nodes.values())
        ),
        60,
    )
    await asyncio.sleep(0.5)
    assert fake_lavalink.players() == [] and len(node_b.players()) == 3


async def test_a_node_cut_off_from_the_bot_loses_its_old_players_when_it_is_reachable_again(
    start_bot: StartBot,
    music_world: MusicWorld,
    fake_lavalink: FakeLavalink,
    node_b: FakeLavalink,
) -> None:
    # A partition of the WebSocket only: Lavalink A keeps the resumable session, and its players, while
    # wavelink cannot reconnect. Lavalink's REST does not reach a session that waits to be resumed, so
    # nobody can delete those players until the session is resumed: then they are destroyed at once.
    running, guilds, reports = await playing_on_a(start_bot, music_world, 3, [node_b], failover())
    ids = [g.id for g in guilds]
    fake_lavalink.fail_requests("GET /v4/websocket", status=503, message="partitioned", times=10_000)
    await fake_lavalink.drop_connections(abrupt=True)
    await running.wait_for(lambda: len(reports) == 3, GRACE + MOVE_BOUND)
    assert all(node_b.player(g) is not None and node_b.player(g).track for g in ids)  # type: ignore[union-attr]
    assert len(fake_lavalink.players()) == 3  # out of reach, in the session that waits to be resumed

    fake_lavalink._injected.clear()  # the partition heals: wavelink resumes its session on A
    node = node_of(running, fake_lavalink)
    await running.wait_for(lambda: node.status is wavelink.NodeStatus.CONNECTED, 60)
    await running.wait_for(lambda: fake_lavalink.players() == [], 5)
    async with watching([fake_lavalink, node_b], ids):
        await asyncio.sleep(1.0)
    assert len(node_b.players()) == 3 and len(reports) == 3


async def test_a_guild_every_node_refuses_keeps_its_track_and_position_until_a_node_takes_it(
    start_bot: StartBot,
    music_world: MusicWorld,
    fake_lavalink: FakeLavalink,
    node_b: FakeLavalink,
    node_c: FakeLavalink,
) -> None:
    guilds = add_guilds(music_world, 1)
    guild_id = guilds[0].id
    running = await start_bot(more_nodes=[node_b, node_c], failover=failover())
    reports = reports_of(running)
    await play_on_first_node(running, guilds, [node_b, node_c])
    title = running.player(guild_id).current.title  # type: ignore[union-attr]
    node_b.fail_player(guild_id)
    node_c.fail_requests("GET /v4/sessions/{sessionId}/players/{guildId}", times=1)  # C plays, cannot confirm
    await asyncio.sleep(1.0)
    before = running.player(guild_id).position  # type: ignore[union-attr]
    await fake_lavalink.close()
    await running.wait_for(lambda: guild_id in running.cog._waiting, GRACE + MOVE_BOUND)
    # Waiting: the record keeps the track, at the position it stood at, whatever C played of it.
    state = await running.live_record(lambda s: s.queue.current is not None, guild_id=guild_id)
    assert state.queue.current is not None and state.queue.current.info["title"] == title
    assert abs(state.player.position - before) <= POSITION_TOLERANCE_MS
    assert node_c.player(guild_id) is None and reports == []
    await asyncio.sleep(2.0)
    node_b.heal_player(guild_id)
    await running.wait_for(lambda: len(reports) == 1, 15)  # the retry, every 5 s
    assert reports[0].ok and reports[0].track == title
    there = node_b.player(guild_id) or node_c.player(guild_id)
    assert there is not None and there.track is not None and there.track["info"]["title"] == title
    fake = node_b if node_b.player(guild_id) else node_c
    start = start_position(fake, guild_id)
    assert start is not None and abs(start - before) <= POSITION_TOLERANCE_MS, (start, before)


async def test_a_target_that_hangs_costs_one_timeout_and_the_others_go_elsewhere(
    start_bot: StartBot,
    music_world: MusicWorld,
    fake_lavalink: FakeLavalink,
    node_b: FakeLavalink,
    node_c: FakeLavalink,
) -> None:
    running, guilds, reports = await playing_on_a(
        start_bot, music_world, 6, [node_b, node_c], failover(probe_interval=1.0)
    )
    # From now on B hangs on its players (each request waits longer than a move may take, 6 s) while its
    # stats still answer: it still looks like the least loaded node.
    patch = "PATCH /v4/sessions/{sessionId}/players/{guildId}"
    node_b.delay_requests(patch, 30.0)
    patches_before = node_b.request_counts[patch]
    killed = time.monotonic()
    await fake_lavalink.close()
    # B gets every other pick: three guilds. Two try it at once (failover.per_node_concurrency) and wait
    # one timeout; the third, queued behind them, finds B unreachable and goes to C without waiting.
    await running.wait_for(lambda: len(reports) == 6, GRACE + 6.0 + MOVE_BOUND)
    took = time.monotonic() - killed
    assert all(r.ok and node_c.player(r.guild_id) is not None for r in reports)
    assert node_b.request_counts[patch] - patches_before <= 2
    # What B does with the requests it got, once it answers again, the probe finds and destroys.
    node_b.delay_requests(patch, 0.5)
    await running.wait_for(lambda: any(node_b.player(g.id) for g in guilds), 40)
    await running.wait_for(lambda: not any(node_b.player(g.id) for g in guilds), 15)
    assert sorted(r.guild_id for r in reports) == sorted(g.id for g in guilds)
    print(f"6 guilds moved {took:.2f}s after the kill, with one target hung")  # shown with -s


async def test_two_drains_of_a_node_and_a_failover_in_between_move_each_guild_once(
    start_bot: StartBot,
    music_world: MusicWorld,
    fake_lavalink: FakeLavalink,
    node_b: FakeLavalink,
) -> None:
    running, guilds, reports = await playing_on_a(
        start_bot, music_world, 4, [node_b], failover(drain_batch_size=2, drain_pause=3.0)
    )
    a = node_of(running, fake_lavalink).identifier
    first = asyncio.ensure_future(running.cog.drain_node(a))
    second = asyncio.ensure_future(running.cog.drain_node(a))
    await running.wait_for(lambda: len(reports) == 2)  # the first batch moved
    await fake_lavalink.close()  # A dies before the next batch: the failover moves the other two
    one, two = await asyncio.gather(first, second)
    assert len(reports) == 4 and sorted(r.guild_id for r in reports) == sorted(g.id for g in guilds)
    assert one.left == [] and two.left == [] and two.reports == []
    assert one.moved == 2


async def test_a_target_that_refuses_the_voice_update_is_not_taken_for_a_move(
    start_bot: StartBot,
    music_world: MusicWorld,
    fake_lavalink: FakeLavalink,
    node_b: FakeLavalink,
) -> None:
    # B refuses the voice update once: Lavalink would hold the track but never play it to anyone.
    running, guilds, reports = await playing_on_a(start_bot, music_world, 1, [node_b], failover())
    guild_id = guilds[0].id
    node_b.fail_requests("PATCH /v4/sessions/{sessionId}/players/{guildId}", times=1)
    await fake_lavalink.close()
    await running.wait_for(lambda: len(reports) == 1, GRACE + MOVE_BOUND)  # at the retry, 5 s later
    assert reports[0].ok
    there = node_b.player(guild_id)
    assert there is not None and there.connected and there.track is not None


async def test_a_drain_whose_way_back_fails_too_keeps_the_track_and_moves_at_the_retry(
    start_bot: StartBot,
    music_world: MusicWorld,
    fake_lavalink: FakeLavalink,
    node_b: FakeLavalink,
) -> None:
    running, guilds, reports = await playing_on_a(start_bot, music_world, 1, [node_b], failover())
    guild_id = guilds[0].id
    title = running.player(guild_id).current.title  # type: ignore[union-attr]
    patch = "PATCH /v4/sessions/{sessionId}/players/{guildId}"
    for fake in (node_b, fake_lavalink):  # B refuses it, and so does A when it goes back
        fake.fail_requests(patch, times=2)
    drained = await running.cog.drain_node(node_of(running, fake_lavalink).identifier)
    assert [r.status for r in drained.reports] == [RestoreStatus.failed]
    assert running.player(guild_id).current.title == title  # type: ignore[union-attr]
    state = await running.live_record(lambda s: s.queue.current is not None, guild_id=guild_id)
    assert state.queue.current is not None and state.queue.current.info["title"] == title
    await running.wait_for(lambda: any(r.ok for r in reports), 15)  # the retry, 5 s later
    there = node_b.player(guild_id) or fake_lavalink.player(guild_id)
    assert there is not None and there.track is not None and there.track["info"]["title"] == title
    assert there.connected
