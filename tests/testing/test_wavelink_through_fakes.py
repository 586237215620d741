"""The fakes drive the real, unmodified discord.py and wavelink in one process (issue: example e2e).

A real ``commands.Bot`` with a wavelink ``Pool`` joins a voice channel through FakeDiscord's gateway,
plays a track found by ``Playable.search`` on FakeLavalink, and the test watches the fake: the track
plays and its position advances; pause, volume and filters arrive; a slash command is answered; the
Lavalink node restarts and wavelink reconnects. Only ``point_discord_at`` touches discord.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import discord
import pytest
import wavelink
from discord.ext import commands

from sonora_cog.testing.discord_client import point_discord_at, point_discord_back
from sonora_cog.testing.fake_discord import FakeDiscord
from sonora_cog.testing.fake_lavalink import FakeLavalink
from sonora_cog.testing.inprocess import running


@dataclass
class Setup:
    bot: commands.Bot
    discord: FakeDiscord
    lavalink: FakeLavalink
    guild_id: int
    voice_id: int
    text_id: int
    user_id: int
    node: wavelink.Node


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    async with (
        FakeDiscord(heartbeat_interval_ms=1000) as fake,
        FakeLavalink(player_update_interval=0.1) as lavalink,
        aiohttp.ClientSession() as session,  # wavelink never closes a session it made itself: give it ours
    ):
        lavalink.seed_demo_catalogue()
        guild = fake.add_guild("Offline Guild")
        text = guild.add_text_channel("general")
        voice = guild.add_voice_channel("Music")
        user = guild.add_member(name="alice")
        point_discord_at(fake)
        intents = discord.Intents.default()
        bot = commands.Bot(command_prefix="!", intents=intents)
        node = wavelink.Node(
            uri=lavalink.uri, password=lavalink.password, identifier=f"offline-{id(bot)}", session=session
        )

        @bot.tree.command(description="Say hi")
        async def hello(interaction: discord.Interaction, name: str) -> None:
            await interaction.response.send_message(embed=discord.Embed(title=f"Hi {name}"), ephemeral=True)

        async def setup_hook() -> None:
            await wavelink.Pool.connect(nodes=[node], client=bot)

        bot.setup_hook = setup_hook  # type: ignore[method-assign]
        try:
            async with running(bot, fake.token):
                await bot.tree.sync()  # Discord delivers registered commands only
                try:
                    yield Setup(bot, fake, lavalink, guild.id, voice.id, text.id, user.id, node)
                finally:
                    await node.close(eject=True)
        finally:
            point_discord_back()


async def connect(s: Setup) -> wavelink.Player:
    channel = s.bot.get_channel(s.voice_id)
    assert isinstance(channel, discord.VoiceChannel)
    return await channel.connect(cls=wavelink.Player)


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_join_search_play_and_position_advances(setup: Setup) -> None:
    player = await connect(setup)
    assert setup.discord.bot_voice_channel(setup.guild_id) == setup.voice_id
    found = await wavelink.Playable.search("clair de lune")
    assert isinstance(found, list) and found[0].title == "Clair de Lune"
    await player.play(found[0])
    await wait_for(lambda: (p := setup.lavalink.player(setup.guild_id)) is not None and p.connected and p.track)
    first = setup.lavalink.player(setup.guild_id)
    assert first is not None and first.track is not None and first.track["info"]["title"] == "Clair de Lune"
    await asyncio.sleep(0.5)
    second = setup.lavalink.player(setup.guild_id)
    assert second is not None and second.position > first.position
    await wait_for(lambda: player.position > 0)  # wavelink saw the fake's playerUpdate


async def test_pause_volume_and_filters_reach_lavalink(setup: Setup) -> None:
    player = await connect(setup)
    track = (await wavelink.Playable.search("midnight drive"))[0]  # type: ignore[index]
    await player.play(track)
    await player.pause(True)
    await player.set_volume(42)
    filters = wavelink.Filters()
    filters.timescale.set(speed=1.25)
    filters.karaoke.set(level=0.7)
    await player.set_filters(filters)
    state = setup.lavalink.player(setup.guild_id)
    assert state is not None
    assert state.paused is True and state.volume == 42
    assert state.filters["timescale"] == {"speed": 1.25}
    assert state.filters["karaoke"] == {"level": 0.7}
    frozen = state.position
    await asyncio.sleep(0.3)
    after = setup.lavalink.player(setup.guild_id)
    assert after is not None and after.position == frozen  # paused: the clock stands still


async def test_slash_command_answer_is_read_back(setup: Setup) -> None:
    interaction = await setup.discord.send_slash_command(
        setup.guild_id, setup.user_id, "hello", options={"name": "Ada"}, channel_id=setup.text_id
    )
    response = await interaction.wait_response()
    assert response.ephemeral and response.embeds[0]["title"] == "Hi Ada"


async def test_node_restart_and_wavelink_reconnects(setup: Setup) -> None:
    old_session = setup.node.session_id
    assert old_session is not None
    await setup.lavalink.restart()
    await wait_for(
        lambda: setup.node.status is wavelink.NodeStatus.CONNECTED and setup.node.session_id not in (None, old_session),
        timeout=30,
    )
    found = await wavelink.Playable.search("paper boats")
    assert found and found[0].title == "Paper Boats"


async def test_autoplay_plays_a_recommended_track_after_the_seed(setup: Setup) -> None:
    seed = setup.lavalink.add_track("Seed Song", "Seeder", 400)  # a youtube track that ends at once
    recommended = setup.lavalink.add_track("Recommended Song", "Recommender", 600_000)
    setup.lavalink.recommend(seed, [recommended])
    player = await connect(setup)
    player.autoplay = wavelink.AutoPlayMode.enabled
    found = await wavelink.Playable.search(seed["info"]["uri"])
    assert isinstance(found, list) and found[0].identifier == seed["info"]["identifier"]
    await player.play(found[0])
    identifier = recommended["info"]["identifier"]
    await wait_for(lambda: player.current is not None and player.current.identifier == identifier, timeout=10)
    assert player.current is not None and player.current.recommended
    state = setup.lavalink.player(setup.guild_id)
    assert state is not None and state.track is not None and state.track["info"]["identifier"] == identifier
    seed_end = setup.lavalink.events("TrackEndEvent", setup.guild_id)[0]
    assert (seed_end["track"]["info"]["identifier"], seed_end["reason"]) == (seed["info"]["identifier"], "finished")
    mix = [r.query["identifier"] for r in setup.lavalink.requests if r.route == "/v4/loadtracks"][-1]
    assert f"list=RD{seed['info']['identifier']}" in mix  # wavelink asked for the seed's mix; the test never named it


async def test_autoplay_from_a_spotify_seed_found_by_its_uri(setup: Setup) -> None:
    """The README's pattern with a Spotify seed: search its uri (LavaSrc's open.spotify.com link), play it, and
    wavelink's autoplay asks LavaSrc's ``sprec:`` for what comes next."""
    seed = setup.lavalink.add_track("Seed Song", "Seeder", 400, source="spotify")  # ends at once
    recommended = setup.lavalink.add_track("Recommended Song", "Recommender", 600_000, source="spotify")
    setup.lavalink.recommend(seed, [recommended])
    player = await connect(setup)
    player.autoplay = wavelink.AutoPlayMode.enabled
    found = await wavelink.Playable.search(seed["info"]["uri"])
    assert isinstance(found, list) and found[0].identifier == seed["info"]["identifier"]
    assert found[0].source == "spotify" and found[0].uri == f"https://open.spotify.com/track/{found[0].identifier}"
    await player.play(found[0])
    identifier = recommended["info"]["identifier"]
    await wait_for(lambda: player.current is not None and player.current.identifier == identifier, timeout=10)
    assert player.current is not None and player.current.recommended
    loads = [r.query["identifier"] for r in setup.lavalink.requests if r.route == "/v4/loadtracks"]
    assert any(load.startswith("sprec:seed_tracks=") and seed["info"]["identifier"] in load for load in loads)
