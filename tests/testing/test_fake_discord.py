"""FakeDiscord against the real, unmodified discord.py 2.7 on loopback."""

from __future__ import annotations

import asyncio
import io
import json
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import discord
import pytest
import pytest_asyncio
from discord import app_commands
from discord.ext import commands

from sonora_cog.testing.discord_client import point_discord_at, point_discord_back
from sonora_cog.testing.fake_discord import FakeDiscord, most_in_window
from sonora_cog.testing.fake_discord_guild import FakeGuild
from sonora_cog.testing.fake_discord_models import FakeChannel, FakeMember, Permissions

pytest_plugins = ["sonora_cog.testing.pytest_plugin"]


@dataclass
class Harness:
    """A real commands.Bot connected to the fake, plus the events it saw."""

    fake: FakeDiscord
    bot: commands.Bot
    guild: FakeGuild
    text: FakeChannel
    voice: FakeChannel
    stage: FakeChannel
    user: FakeMember
    dj_role_id: int
    events: dict[str, list[Any]] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None

    def record(self, name: str) -> None:
        self.events.setdefault(name, [])

        async def listener(*args: Any) -> None:
            self.events[name].append(args)

        self.bot.add_listener(listener, f"on_{name}")

    async def wait_event(self, name: str, count: int = 1, timeout: float = 5.0) -> list[Any]:  # noqa: ASYNC109 - a test helper deadline, like asyncio.wait_for
        async with asyncio.timeout(timeout):
            while len(self.events.get(name, [])) < count:  # noqa: ASYNC110 - polling discord.py-side state
                await asyncio.sleep(0.01)
        return self.events[name]


class Music(app_commands.Group):
    """A group like the cog's: /music status, /music load (autocomplete, attachment), /music confirm."""

    def __init__(self) -> None:
        super().__init__(name="music", description="Music commands")

    @app_commands.command(description="Show the status")
    async def status(self, interaction: discord.Interaction, verbose: bool = False) -> None:
        embed = discord.Embed(title="Status", description=f"verbose={verbose}")
        perms = interaction.permissions
        embed.add_field(name="manage_guild", value=str(perms.manage_guild))
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @app_commands.command(description="Load a snapshot")
    @app_commands.describe(snapshot="Snapshot id")
    async def load(self, interaction: discord.Interaction, snapshot: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await interaction.followup.send(f"loaded {snapshot}", ephemeral=True)

    @load.autocomplete("snapshot")
    async def load_autocomplete(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=f"{current}-{i}", value=f"{current}{i}") for i in range(3)]

    @app_commands.command(description="Import a file")
    async def upload(self, interaction: discord.Interaction, file: discord.Attachment) -> None:
        data = await file.read()
        out = discord.File(io.BytesIO(data[::-1]), filename="reversed.bin")
        await interaction.response.send_message(f"got {len(data)} bytes", file=out)

    @app_commands.command(description="Ask for confirmation")
    async def confirm(self, interaction: discord.Interaction) -> None:
        view = discord.ui.View(timeout=30)
        button: discord.ui.Button[discord.ui.View] = discord.ui.Button(label="Yes", custom_id="confirm-yes")

        async def on_click(click: discord.Interaction) -> None:
            await click.response.edit_message(content=f"confirmed by {click.user.id}", view=None)

        button.callback = on_click  # type: ignore[method-assign]
        view.add_item(button)
        await interaction.response.send_message("Are you sure?", view=view)


class RecordingVoice(discord.VoiceProtocol):
    """A minimal VoiceProtocol (what wavelink.Player is to discord.py): records the two voice events."""

    def __init__(self, client: discord.Client, channel: discord.abc.Connectable) -> None:
        super().__init__(client, channel)
        self.states: list[dict[str, Any]] = []
        self.servers: list[dict[str, Any]] = []
        self.ready = asyncio.Event()

    async def on_voice_state_update(self, data: Any) -> None:
        self.states.append(dict(data))

    async def on_voice_server_update(self, data: Any) -> None:
        self.servers.append(dict(data))
        self.ready.set()

    async def connect(
        self,
        *,
        timeout: float,  # noqa: ASYNC109 - discord.VoiceProtocol.connect's signature
        reconnect: bool,
        self_deaf: bool = False,
        self_mute: bool = False,
    ) -> None:
        assert isinstance(self.channel, discord.VoiceChannel)
        await self.channel.guild.change_voice_state(channel=self.channel, self_deaf=True)
        await asyncio.wait_for(self.ready.wait(), timeout)

    async def disconnect(self, *, force: bool) -> None:
        assert isinstance(self.channel, discord.VoiceChannel)
        await self.channel.guild.change_voice_state(channel=None)
        self.cleanup()


async def _start_bot(fake: FakeDiscord, bot: commands.Bot) -> asyncio.Task[None]:
    await bot.login(fake.token)
    return asyncio.create_task(bot.connect(reconnect=True))


@pytest_asyncio.fixture
async def harness() -> AsyncIterator[Harness]:
    async with FakeDiscord(heartbeat_interval_ms=500, session_timeout=5.0) as fake:
        guild = fake.add_guild("Guild One")
        text = guild.add_text_channel("general")
        dj = guild.add_role("DJ", Permissions.MANAGE_GUILD)
        voice = guild.add_voice_channel(
            "Music",
            bitrate=96000,
            user_limit=5,
            permission_overwrites=[{"id": dj.id, "type": 0, "allow": Permissions.MOVE_MEMBERS, "deny": 0}],
        )
        stage = guild.add_stage_channel("Stage")
        user = guild.add_member(name="alice", roles=[dj])
        point_discord_at(fake)
        intents = discord.Intents.default()
        intents.members = True
        intents.voice_states = True
        intents.guilds = True
        bot = commands.Bot(command_prefix="!", intents=intents, guild_ready_timeout=0.05)
        bot.tree.add_command(Music())
        h = Harness(fake, bot, guild, text, voice, stage, user, dj.id)
        for name in ("ready", "resumed", "voice_state_update", "guild_channel_delete", "connect"):
            h.record(name)
        h.task = await _start_bot(fake, bot)
        await h.wait_event("ready")
        try:
            yield h
        finally:
            await bot.close()
            await asyncio.wait_for(h.task, 5)
            point_discord_back()


async def test_ready_builds_full_guild_cache(harness: Harness) -> None:
    bot, fake = harness.bot, harness.fake
    assert bot.user is not None and bot.user.id == fake.bot_user.id
    assert bot.application_id == fake.application_id
    guild = bot.get_guild(harness.guild.id)
    assert guild is not None and guild.name == "Guild One" and not guild.unavailable
    assert isinstance(guild.get_channel(harness.text.id), discord.TextChannel)
    voice = guild.get_channel(harness.voice.id)
    assert isinstance(voice, discord.VoiceChannel)
    assert (voice.bitrate, voice.user_limit) == (96000, 5)
    assert isinstance(guild.get_channel(harness.stage.id), discord.StageChannel)
    dj = guild.get_role(harness.dj_role_id)
    assert dj is not None and dj.permissions.manage_guild
    member = guild.get_member(harness.user.id)
    assert member is not None and dj in member.roles
    assert member.guild_permissions.manage_guild
    assert voice.permissions_for(member).move_members
    assert guild.me is not None
    me_perms = voice.permissions_for(guild.me)
    assert me_perms.connect and me_perms.speak and not me_perms.administrator
    assert guild.member_count == len(harness.guild.members)
    assert guild.chunked


async def test_tree_sync_and_ephemeral_embed_answer(harness: Harness) -> None:
    synced = await harness.bot.tree.sync()
    assert [c.name for c in synced] == ["music"]
    recorded = harness.fake.synced_commands
    assert recorded[0]["name"] == "music"
    assert {o["name"] for o in recorded[0]["options"]} == {"status", "load", "upload", "confirm"}

    interaction = await harness.fake.send_slash_command(
        harness.guild.id, harness.user.id, "music", "status", {"verbose": True}
    )
    answer = await interaction.wait_response()
    assert answer.type == 4 and answer.ephemeral
    assert answer.embeds[0]["title"] == "Status"
    assert answer.embeds[0]["description"] == "verbose=True"
    assert answer.embeds[0]["fields"][0]["value"] == "True"
    assert interaction.original is not None and interaction.original.ephemeral

    denied = await harness.fake.send_slash_command(harness.guild.id, harness.user.id, "music", "status", permissions=0)
    assert (await denied.wait_response()).embeds[0]["fields"][0]["value"] == "False"


async def test_defer_then_followup_fills_the_original(harness: Harness) -> None:
    await harness.bot.tree.sync()  # Discord delivers registered commands only
    interaction = await harness.fake.send_slash_command(
        harness.guild.id, harness.user.id, "music", "load", {"snapshot": "abc"}
    )
    assert (await interaction.wait_response()).type == 5
    message = await interaction.wait_message()
    assert message.content == "loaded abc" and message.ephemeral
    assert message is interaction.original


async def test_autocomplete_choices(harness: Harness) -> None:
    await harness.bot.tree.sync()  # Discord delivers registered commands only
    interaction = await harness.fake.send_autocomplete(
        harness.guild.id, harness.user.id, "music", "load", {"snapshot": "sn"}, focused="snapshot"
    )
    answer = await interaction.wait_response()
    assert answer.type == 8
    assert [c["value"] for c in answer.choices] == ["sn0", "sn1", "sn2"]


async def test_attachment_option_and_file_upload(harness: Harness) -> None:
    await harness.bot.tree.sync()
    attachment = harness.fake.host_attachment("snap.bin", b"hello")
    interaction = await harness.fake.send_slash_command(
        harness.guild.id, harness.user.id, "music", "upload", attachments={"file": attachment}
    )
    answer = await interaction.wait_response()
    assert answer.content == "got 5 bytes"
    assert [(f.filename, f.data) for f in answer.files] == [("reversed.bin", b"olleh")]


async def test_button_click_reaches_view_callback(harness: Harness) -> None:
    await harness.bot.tree.sync()  # Discord delivers registered commands only
    interaction = await harness.fake.send_slash_command(harness.guild.id, harness.user.id, "music", "confirm")
    message = await interaction.wait_message()
    assert message.content == "Are you sure?"
    click = await harness.fake.click_button(message, "confirm-yes", harness.user.id)
    answer = await click.wait_response()
    assert answer.type == 7
    assert message.content == f"confirmed by {harness.user.id}"
    assert message.components == []


async def test_invalid_session_makes_discord_py_identify_again(harness: Harness) -> None:
    await harness.fake.invalidate_session(resumable=False)
    # discord.py's before_identify hook waits 5 s before any non-initial IDENTIFY.
    await harness.wait_event("ready", 2, timeout=10)
    assert harness.fake.identify_count == 2
    assert harness.fake.resume_count == 0


async def test_resume_after_dropped_connection_replays_missed_events(harness: Harness) -> None:
    await harness.fake.close_gateway(4000)
    # Sent while the client is away: kept in the session and replayed on RESUME.
    await harness.fake.member_join_voice(harness.guild.id, harness.user.id, harness.voice.id)
    await harness.wait_event("resumed")
    events = await harness.wait_event("voice_state_update")
    member, before, after = events[0]
    assert member.id == harness.user.id and before.channel is None and after.channel.id == harness.voice.id
    assert harness.fake.resume_count == 1 and harness.fake.identify_count == 1
    await harness.fake.reconnect_request()
    await harness.wait_event("resumed", 2)


async def test_voice_connect_and_moderator_disconnect(harness: Harness) -> None:
    channel = harness.bot.get_channel(harness.voice.id)
    assert isinstance(channel, discord.VoiceChannel)
    protocol = await channel.connect(cls=RecordingVoice, timeout=5)
    assert protocol.states[0]["channel_id"] == str(harness.voice.id)
    assert protocol.states[0]["session_id"] == harness.bot.ws.session_id
    assert protocol.states[0]["self_deaf"] is True
    server = protocol.servers[0]
    assert server["guild_id"] == str(harness.guild.id) and server["token"] and server["endpoint"]
    assert harness.fake.bot_voice_channel(harness.guild.id) == harness.voice.id
    assert harness.fake.voice_state_update_counts == {harness.guild.id: 1}

    await harness.fake.move_bot(harness.guild.id, harness.stage.id)
    await harness.fake.disconnect_bot_from_voice(harness.guild.id)
    async with asyncio.timeout(5):
        while len(protocol.states) < 3:  # noqa: ASYNC110 - polling discord.py-side state
            await asyncio.sleep(0.01)
    assert protocol.states[1]["channel_id"] == str(harness.stage.id)
    assert protocol.states[2]["channel_id"] is None
    assert len(protocol.servers) == 1


async def test_delete_channel_disconnects_occupants(harness: Harness) -> None:
    await harness.fake.member_join_voice(harness.guild.id, harness.user.id, harness.voice.id)
    await harness.wait_event("voice_state_update")
    await harness.fake.delete_channel(harness.guild.id, harness.voice.id)
    deleted = await harness.wait_event("guild_channel_delete")
    assert deleted[0][0].id == harness.voice.id
    _, before, after = harness.events["voice_state_update"][1]
    assert before.channel.id == harness.voice.id and after.channel is None


async def test_a_guild_added_while_connected_is_joined_not_made_available(harness: Harness) -> None:
    # Discord sends GUILD_CREATE "when a user is initially connecting" (guilds READY listed unavailable),
    # "when a Guild becomes available again" and "when the current user joins a new Guild" (gateway events
    # docs); ``unavailable`` is for the first two. discord.py (like hikari) reads ``unavailable: false``
    # as a guild coming back and its absence as a join.
    harness.record("guild_join")
    harness.record("guild_available")
    later = harness.fake.add_guild("Later Guild")
    later.add_text_channel("welcome")
    await harness.fake.dispatch_guild_create(later.id)
    ((joined,),) = await harness.wait_event("guild_join")
    assert joined.id == later.id and joined.name == "Later Guild"
    assert harness.events["guild_available"] == []


async def test_channel_messages_and_unknown_routes(harness: Harness) -> None:
    channel = harness.bot.get_channel(harness.text.id)
    assert isinstance(channel, discord.TextChannel)
    sent = await channel.send("now playing", embed=discord.Embed(title="x"))
    await sent.edit(content="still playing")
    fetched = await channel.fetch_message(sent.id)
    assert fetched.content == "still playing"
    recorded = harness.fake.messages[sent.id]
    assert recorded.content == "still playing" and len(recorded.edits) == 1
    assert recorded.embeds[0]["title"] == "x"
    with pytest.raises(discord.NotFound) as info:
        await harness.bot.http.request(discord.http.Route("GET", "/nothing/here"))
    assert info.value.code == 0
    assert ("GET", "/api/v10/nothing/here") in harness.fake.unknown_routes
    with pytest.raises(discord.NotFound) as missing:
        await harness.bot.fetch_channel(1234)
    assert missing.value.code == 10003


async def test_wrong_token_is_rejected(fake_discord: FakeDiscord) -> None:
    point_discord_at(fake_discord)
    try:
        client = discord.Client(intents=discord.Intents.default())
        with pytest.raises(discord.LoginFailure):
            await client.login("not-the-token")
        await client.close()
    finally:
        point_discord_back()


async def test_get_gateway_needs_no_token_and_the_rest_does(fake_discord: FakeDiscord) -> None:
    """Discord documents "Get Gateway" (``GET /gateway``) without authentication, and "Get Gateway Bot" with a
    bot token (https://discord.com/developers/docs/events/gateway#get-gateway); hikari calls the first that way."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fake_discord.api_url}/gateway") as response:
            assert response.status == 200 and (await response.json())["url"].startswith("ws")
        async with http.get(f"{fake_discord.api_url}/gateway/bot") as response:
            assert response.status == 401
        async with http.get(f"{fake_discord.api_url}/users/@me") as response:
            assert response.status == 401


async def test_application_info_has_the_documented_install_counts(fake_discord: FakeDiscord) -> None:
    """The application object carries ``approximate_guild_count`` and ``approximate_user_install_count``
    (https://discord.com/developers/docs/resources/application#application-object), which hikari reads."""
    headers = {"Authorization": f"Bot {fake_discord.token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{fake_discord.api_url}/oauth2/applications/@me", headers=headers) as response,
    ):
        payload = await response.json()
    assert isinstance(payload["approximate_guild_count"], int)
    assert isinstance(payload["approximate_user_install_count"], int)
    point_discord_at(fake_discord)
    try:
        client = discord.Client(intents=discord.Intents.default())
        await client.login(fake_discord.token)
        info = await client.application_info()
        assert info.approximate_user_install_count == 0
        await client.close()
    finally:
        point_discord_back()


async def test_sharded_bot_gets_its_guilds_only(fake_discord: FakeDiscord) -> None:
    fake_discord.recommended_shards = 2
    guilds = [fake_discord.add_guild(f"g{i}") for i in range(6)]
    point_discord_at(fake_discord)
    bot = commands.AutoShardedBot(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.05)
    ready = asyncio.Event()

    async def on_ready() -> None:
        ready.set()

    bot.add_listener(on_ready)
    task = await _start_bot(fake_discord, bot)
    try:
        await asyncio.wait_for(ready.wait(), 10)
        assert bot.shard_count == 2
        assert {g.id for g in bot.guilds} == {g.id for g in guilds}
        for g in bot.guilds:
            assert g.shard_id == (g.id >> 22) % 2
        assert sorted(s.shard for s in fake_discord.sessions if s.shard) == [(0, 2), (1, 2)]
    finally:
        await bot.close()
        await asyncio.wait_for(task, 5)
        point_discord_back()


async def _raw_identify(ws: aiohttp.ClientWebSocketResponse, fake: FakeDiscord, **extra: Any) -> None:
    await ws.send_json({"op": 2, "d": {"token": fake.token, "intents": 1 | 128, "properties": {}, **extra}})


async def test_rate_limit_accounting_flags_sends_over_120_per_minute(fake_discord: FakeDiscord) -> None:
    guild = fake_discord.add_guild("g")
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{fake_discord.gateway_url}?v=10&encoding=json") as ws,
    ):
        hello = await ws.receive_json()
        assert hello["op"] == 10 and hello["d"]["heartbeat_interval"] == 1000
        await _raw_identify(ws, fake_discord)
        ready = await ws.receive_json()
        assert ready["t"] == "READY" and ready["s"] == 1
        for _ in range(3):
            await ws.send_json({"op": 4, "d": {"guild_id": str(guild.id), "channel_id": None}})
        for _ in range(124):
            await ws.send_json({"op": 1, "d": 1})
        await fake_discord.wait_until(lambda: sum(fake_discord.gateway_send_counts.values()) >= 128)
    violations = fake_discord.rate_limit_violations
    assert len(violations) == 8
    assert violations[0].count_in_window == 121 and violations[0].op == 1
    assert fake_discord.voice_state_update_counts == {guild.id: 3}


async def test_every_send_is_logged_per_connection_with_its_shard(fake_discord: FakeDiscord) -> None:
    fake_discord.recommended_shards = 2
    guild = fake_discord.add_guild("g", guild_id=(1_000_001 << 22) + 7)  # on shard 1 of 2
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{fake_discord.gateway_url}?v=10&encoding=json") as ws,
    ):
        await ws.receive_json()  # HELLO
        await _raw_identify(ws, fake_discord, shard=[1, 2])
        assert (await ws.receive_json())["t"] == "READY"
        for _ in range(3):
            await ws.send_json({"op": 4, "d": {"guild_id": str(guild.id), "channel_id": None}})
        await ws.send_json({"op": 1, "d": 1})
        await fake_discord.wait_until(lambda: sum(fake_discord.gateway_send_counts.values()) >= 5)
    [(connection, sends)] = fake_discord.gateway_sends().items()
    assert [s.op for s in sends] == [2, 4, 4, 4, 1]
    assert fake_discord.gateway.connection_shards[connection] == (1, 2)
    joins = fake_discord.gateway_sends(op=4)[connection]
    assert [s.guild_id for s in joins] == [guild.id] * 3
    assert [s.at for s in sends] == sorted(s.at for s in sends)
    assert most_in_window([s.at for s in sends]) == 5


def test_most_in_window_counts_both_ends_like_the_fake() -> None:
    assert most_in_window([]) == 0
    assert most_in_window([0.0, 60.0, 120.0]) == 2  # 60 s apart: inside one window, ends included
    assert most_in_window([0.0, 60.5, 121.0]) == 1
    assert most_in_window([5.0, 1.0, 3.0, 70.0], window=4.0) == 3  # unsorted input


async def test_zlib_stream_compression_and_identify_errors(fake_discord: FakeDiscord) -> None:
    fake_discord.add_guild("g")
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{fake_discord.gateway_url}?v=10&encoding=json&compress=zlib-stream") as ws:
            inflator = zlib.decompressobj()

            async def receive() -> dict[str, Any]:
                raw = await ws.receive_bytes()
                assert raw.endswith(b"\x00\x00\xff\xff")
                return json.loads(inflator.decompress(raw))

            assert (await receive())["op"] == 10
            await _raw_identify(ws, fake_discord, shard=[0, 1])
            ready = await receive()
            assert ready["d"]["shard"] == [0, 1] and ready["d"]["v"] == 10
            assert (await receive())["t"] == "GUILD_CREATE"
        async with session.ws_connect(f"{fake_discord.gateway_url}?v=10&encoding=json") as ws:
            await ws.receive_json()
            await ws.send_json({"op": 2, "d": {"token": "wrong", "intents": 1, "properties": {}}})
            await ws.receive()
            assert ws.close_code == 4004
        async with session.ws_connect(f"{fake_discord.gateway_url}?v=10&encoding=json") as ws:
            await ws.receive_json()
            await _raw_identify(ws, fake_discord, shard=[2, 2])
            await ws.receive()
            assert ws.close_code == 4010


BOT_SCRIPT = """
import os

import discord
from discord.ext import commands

from sonora_cog.testing.discord_client import point_discord_at

point_discord_at(os.environ["FAKE_DISCORD_URL"])
bot = commands.Bot(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.05)


@bot.event
async def on_ready():
    guild = bot.guilds[0]
    voice = guild.me.voice.channel.id if guild.me.voice else None
    print(f"READY session={bot.ws.session_id} voice={voice}", flush=True)
    await guild.change_voice_state(channel=guild.voice_channels[0])


@bot.event
async def on_voice_state_update(member, before, after):
    if member == bot.user and after.channel:
        print(f"JOINED {after.channel.id}", flush=True)


bot.run(os.environ["DISCORD_TOKEN"], log_handler=None)
"""


async def test_bot_subprocess_killed_and_restarted(fake_discord: FakeDiscord, bot_process: Any, tmp_path: Any) -> None:
    fake_discord.session_timeout = 30.0
    guild = fake_discord.add_guild("g")
    voice = guild.add_voice_channel("Music")
    script = tmp_path / "bot.py"
    script.write_text(BOT_SCRIPT)
    env = {"FAKE_DISCORD_URL": fake_discord.base_url, "DISCORD_TOKEN": fake_discord.token}
    proc = bot_process(script, env=env)
    await proc.start()
    first = await proc.wait_for_line(r"READY session=(\w+) voice=None", timeout=20)
    await proc.wait_for_line(rf"JOINED {voice.id}")
    assert fake_discord.bot_voice_channel(guild.id) == voice.id

    proc.kill()
    assert await proc.wait() == -9
    # Like Discord, the dead session's voice state lingers until the session times out.
    assert fake_discord.bot_voice_channel(guild.id) == voice.id

    await proc.restart()
    second = await proc.wait_for_line(rf"READY session=(\w+) voice={voice.id}", timeout=20)
    assert second.group(1) != first.group(1)
    await proc.wait_for_line(rf"JOINED {voice.id}")
    assert fake_discord.identify_count == 2
    assert fake_discord.voice_state_update_counts == {guild.id: 2}
    await proc.stop()


async def test_fake_restarts_on_the_same_port_and_the_bot_resumes(harness: Harness) -> None:
    port = harness.fake.port
    await harness.fake.request_heartbeat()
    await harness.fake.stop()
    await harness.fake.start()
    assert harness.fake.port == port
    # discord.py retries with a random exponential backoff while the fake is down (connection refused).
    await harness.wait_event("resumed", timeout=60)
    assert harness.fake.resume_count == 1


async def test_plugin_fixtures(discord_world: Any, fake_lavalink: Any) -> None:
    assert discord_world.fake.guilds[discord_world.guild.id] is discord_world.guild
    assert discord_world.env["FAKE_DISCORD_URL"] == discord_world.fake.base_url
    assert fake_lavalink.password == "youshallnotpass" and fake_lavalink.uri
