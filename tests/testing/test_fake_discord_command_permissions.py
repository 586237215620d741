"""FakeDiscord delivers a command only to who Discord would deliver it to (issue 14, item 3).

Written from Discord's developer docs, "Application Commands" > "Permissions"
(https://discord.com/developers/docs/interactions/application-commands#permissions), with the commands
registered by the real discord.py (``default_permissions`` → ``default_member_permissions``):

- "The ``default_member_permissions`` field can be used when creating a command to set the permissions a
  user must have to use it"; its type is ``?string`` (null: no requirement).
- "Setting it to ``"0"`` will prohibit anyone in a guild from using the command unless a specific
  overwrite is configured or the user has admin permissions."
- "If you don't have permission to use a command, it will not show up in the command picker. Members with
  the Administrator permission can use all commands."
- Application command permissions: entries ``{id, type: 1 role | 2 user | 3 channel, permission}``;
  constants ``guild_id`` (@everyone) and ``guild_id - 1`` (all channels); with the application's id as the
  command id they apply to all commands. Since 2023-02-28 (help centre, "Updates to Command Permissions")
  "individual command changes only overwrite conflicting settings. Other application-level changes are
  still in effect."
- ``topics/permissions``: USE_APPLICATION_COMMANDS "Allows members to use application commands, including
  slash commands and context menu commands".
- "Guild commands are not available in DMs"; ``contexts`` with ``BOT_DM`` (1) controls "whether it can be
  run in DMs with your app" (by default "all interaction context types included for new commands");
  "Contexts are distinct from, and do not affect, any command permissions for apps installed to a server."
- ``topics/permissions``: a member's permissions are those of ``@everyone`` and their roles; ADMINISTRATOR
  grants all; the owner has all.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import discord
import pytest
import pytest_asyncio
from discord import app_commands
from discord.ext import commands

from sonora_cog.testing.discord_client import point_discord_at, point_discord_back
from sonora_cog.testing.fake_discord import CommandNotAvailable, FakeDiscord
from sonora_cog.testing.fake_discord_guild import FakeGuild
from sonora_cog.testing.fake_discord_interactions import FakeInteraction
from sonora_cog.testing.fake_discord_models import FakeChannel, FakeMember, FakeRole, FakeUser, Permissions
from sonora_cog.testing.inprocess import running

ROLE, USER, CHANNEL = 1, 2, 3


@dataclass
class World:
    fake: FakeDiscord
    bot: commands.Bot
    guild: FakeGuild
    text: FakeChannel
    other_text: FakeChannel
    managers: FakeRole
    dj_role: FakeRole
    manager: FakeMember
    dj: FakeMember
    member: FakeMember
    received: list[discord.Interaction] = field(default_factory=list)

    async def use(self, user: FakeMember, name: str, *, channel: FakeChannel | None = None) -> FakeInteraction:
        """Send ``/name`` as ``user`` and wait for the bot's answer."""
        interaction = await self.fake.send_slash_command(
            self.guild.id, user.id, name, channel_id=(channel or self.text).id
        )
        assert (await interaction.wait_response()).content == f"{name} ok"
        return interaction

    async def only(self, command: str | None, target: int, kind: int, permission: bool) -> None:
        """Give ``/command`` (``None``: every command) this one permission entry in the guild."""
        entry = {"id": target, "type": kind, "permission": permission}
        await self.fake.set_command_permissions(self.guild.id, command, [entry])

    async def refused(self, user: FakeMember, name: str, *, channel: FakeChannel | None = None) -> CommandNotAvailable:
        """Send ``/name`` as ``user``: Discord does not deliver it, the bot sees nothing."""
        seen = len(self.received)
        with pytest.raises(CommandNotAvailable) as refused:
            await self.fake.send_slash_command(self.guild.id, user.id, name, channel_id=(channel or self.text).id)
        await asyncio.sleep(0.05)
        assert len(self.received) == seen, "the bot received a command Discord would not deliver"
        return refused.value


def _answering(name: str) -> app_commands.Command[None, ..., None]:
    async def callback(interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"{name} ok", ephemeral=True)

    return app_commands.Command(name=name, description=f"/{name}", callback=callback)


def build_tree(bot: commands.Bot, guild_id: int) -> None:
    """The commands of the docs' examples, registered the way a discord.py bot registers them."""
    manage = _answering("manage")  # the docs' MANAGE_GUILD example: str(1 << 5)
    app_commands.default_permissions(manage_guild=True)(manage)
    admins = _answering("admins")  # the docs' "0" example: "not usable by anyone except admins"
    app_commands.default_permissions()(admins)
    everyone = _answering("everyone")  # null: no requirement
    dm_ok = _answering("dmok")  # usable in a DM with the bot, Manage Server in a guild
    app_commands.default_permissions(manage_guild=True)(dm_ok)
    app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)(dm_ok)
    guild_only = _answering("guildonly")
    app_commands.guild_only()(guild_only)
    for command in (manage, admins, everyone, dm_ok, guild_only):
        bot.tree.add_command(command)
    bot.tree.add_command(_answering("local"), guild=discord.Object(guild_id))  # a guild command


@pytest_asyncio.fixture
async def world() -> AsyncIterator[World]:
    async with FakeDiscord(heartbeat_interval_ms=1000) as fake:
        guild = fake.add_guild("Permissions Guild")
        text = guild.add_text_channel("general")
        other_text = guild.add_text_channel("music-requests")
        managers = guild.add_role("Managers", Permissions.MANAGE_GUILD)
        dj_role = guild.add_role("DJ", 0)
        everyone = Permissions.VIEW_CHANNEL | Permissions.SEND_MESSAGES | Permissions.USE_APPLICATION_COMMANDS
        guild.roles[guild.id].permissions = everyone  # Manage Server only through a role
        manager = guild.add_member(name="manager", roles=[managers])
        dj = guild.add_member(name="dj", roles=[dj_role])
        member = guild.add_member(name="member")
        point_discord_at(fake)
        bot = commands.Bot(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.05)
        build_tree(bot, guild.id)
        w = World(fake, bot, guild, text, other_text, managers, dj_role, manager, dj, member)

        async def on_interaction(interaction: discord.Interaction) -> None:
            w.received.append(interaction)

        bot.add_listener(on_interaction)
        try:
            async with running(bot, fake.token):
                await bot.tree.sync()
                await bot.tree.sync(guild=discord.Object(guild.id))
                yield w
        finally:
            point_discord_back()


# -- default_member_permissions -------------------------------------------------------------------------


async def test_registered_default_member_permissions_are_the_docs_values(world: World) -> None:
    # discord.py sends an int; Discord keeps the documented "?string" (a bitwise permission string).
    synced = {c["name"]: c["default_member_permissions"] for c in world.fake.synced_commands}
    assert synced["manage"] == str(1 << 5) and synced["admins"] == "0" and synced["everyone"] is None


async def test_a_member_without_the_permission_is_not_delivered_the_command(world: World) -> None:
    refused = await world.refused(world.member, "manage")
    assert refused.missing == Permissions.MANAGE_GUILD
    assert (refused.user_id, refused.command, refused.guild_id) == (world.member.id, "manage", world.guild.id)
    text = str(refused)
    assert "/manage" in text and "'member'" in text and str(world.member.id) in text and "MANAGE_GUILD" in text
    assert all(i.user_id != world.member.id for i in world.fake.interactions)
    await world.use(world.manager, "manage")  # Manage Server through a role


async def test_null_needs_nothing_and_everyone_role_permissions_count(world: World) -> None:
    await world.use(world.member, "everyone")
    await world.refused(world.member, "manage")
    world.guild.roles[world.guild.id].permissions |= Permissions.MANAGE_GUILD  # @everyone is a role too
    await world.use(world.member, "manage")


async def test_zero_is_for_administrators_and_the_owner_only(world: World) -> None:
    everything_but_admin = world.guild.add_role("Almost", Permissions.ALL & ~Permissions.ADMINISTRATOR)
    almost = world.guild.add_member(name="almost", roles=[everything_but_admin])
    refused = await world.refused(almost, "admins")
    assert refused.missing == Permissions.ADMINISTRATOR and '"0"' in str(refused)
    admin = world.guild.add_member(name="admin", roles=[world.guild.add_role("Admin", Permissions.ADMINISTRATOR)])
    await world.use(admin, "admins")
    await world.use(world.guild.members[world.guild.owner_id], "admins")


async def test_autocomplete_of_a_command_the_member_cannot_use_is_not_sent(world: World) -> None:
    with pytest.raises(CommandNotAvailable, match="MANAGE_GUILD"):
        await world.fake.send_autocomplete(world.guild.id, world.member.id, "manage", options={"q": ""}, focused="q")


async def test_the_reported_member_permissions_do_not_open_the_command(world: World) -> None:
    # ``permissions=`` changes what the interaction says, not who Discord lets use the command.
    with pytest.raises(CommandNotAvailable):
        await world.fake.send_slash_command(world.guild.id, world.member.id, "manage", permissions=Permissions.ALL)


# -- USE_APPLICATION_COMMANDS ----------------------------------------------------------------------------


def test_a_new_servers_everyone_role_may_use_application_commands() -> None:
    # As a server created in the client: @everyone holds USE_APPLICATION_COMMANDS, so commands just work.
    guild = FakeDiscord().add_guild("Fresh")
    assert guild.roles[guild.id].permissions & Permissions.USE_APPLICATION_COMMANDS


async def test_no_command_in_a_channel_where_the_member_may_not_use_application_commands(world: World) -> None:
    # topics/permissions: USE_APPLICATION_COMMANDS "Allows members to use application commands, including
    # slash commands and context menu commands", computed with the channel's overwrites like every bit.
    guild = world.guild
    muted = guild.add_text_channel("no-commands")
    no_commands = Permissions.USE_APPLICATION_COMMANDS
    muted.permission_overwrites.append({"id": str(guild.id), "type": 0, "allow": "0", "deny": str(no_commands)})
    refused = await world.refused(world.member, "everyone", channel=muted)
    assert refused.missing == Permissions.USE_APPLICATION_COMMANDS and "USE_APPLICATION_COMMANDS" in str(refused)
    await world.refused(world.manager, "manage", channel=muted)  # Manage Server does not lift it
    await world.only("everyone", world.member.id, USER, True)  # nor does a command permission entry
    await world.refused(world.member, "everyone", channel=muted)
    await world.use(world.member, "everyone")  # other channels are unaffected
    admin = guild.add_member(name="admin", roles=[guild.add_role("Admin", Permissions.ADMINISTRATOR)])
    await world.use(admin, "everyone", channel=muted)  # "Members with the Administrator permission can use
    await world.use(guild.members[guild.owner_id], "everyone", channel=muted)  # all commands"; the owner too
    allowed = {"id": str(world.dj_role.id), "type": 0, "allow": str(no_commands), "deny": "0"}
    muted.permission_overwrites.append(allowed)  # a role's overwrite gives it back
    await world.use(world.dj, "everyone", channel=muted)


async def test_no_command_for_a_member_whose_roles_lack_use_application_commands(world: World) -> None:
    world.guild.roles[world.guild.id].permissions &= ~Permissions.USE_APPLICATION_COMMANDS
    await world.refused(world.member, "everyone")
    world.dj_role.permissions |= Permissions.USE_APPLICATION_COMMANDS
    await world.use(world.dj, "everyone")


# -- the guild's application command permissions ----------------------------------------------------------


async def test_a_role_or_user_entry_opens_a_command_to_members_without_the_default(world: World) -> None:
    await world.refused(world.dj, "admins")
    await world.fake.set_command_permissions(
        world.guild.id, "admins", [{"id": world.dj_role.id, "type": ROLE, "permission": True}]
    )
    await world.use(world.dj, "admins")  # "0" ... "unless a specific overwrite is configured"
    await world.refused(world.member, "admins")
    await world.fake.set_command_permissions(
        world.guild.id, "admins", [{"id": world.member.id, "type": USER, "permission": True}]
    )
    await world.use(world.member, "admins")
    await world.refused(world.dj, "admins")  # the new list replaced the role entry


async def test_role_user_and_channel_entries_close_a_command_to_members_with_the_default(world: World) -> None:
    guild = world.guild
    await world.only("manage", world.managers.id, ROLE, False)
    assert "Managers" in str(await world.refused(world.manager, "manage"))
    await world.only("manage", world.manager.id, USER, False)
    await world.refused(world.manager, "manage")
    await world.only("manage", world.text.id, CHANNEL, False)
    assert "channel" in str(await world.refused(world.manager, "manage", channel=world.text))
    await world.use(world.manager, "manage", channel=world.other_text)
    all_channels = guild.id - 1
    await world.only("manage", all_channels, CHANNEL, False)
    await world.refused(world.manager, "manage", channel=world.other_text)


async def test_an_everyone_allow_does_not_lift_the_default(world: World) -> None:
    # discord/discord-api-docs#5356 (answered "This is intended"): "0" plus an @everyone allow stays
    # admins-only; an @everyone deny closes a command that needs nothing.
    everyone = world.guild.id
    await world.only("admins", everyone, ROLE, True)
    await world.refused(world.member, "admins")
    await world.only("everyone", everyone, ROLE, False)
    assert "@everyone" in str(await world.refused(world.member, "everyone"))


async def test_administrators_pass_every_entry(world: World) -> None:
    admin_role = world.guild.add_role("Admin", Permissions.ADMINISTRATOR)
    admin = world.guild.add_member(name="admin", roles=[admin_role])
    entries = [
        {"id": admin.id, "type": USER, "permission": False},
        {"id": admin_role.id, "type": ROLE, "permission": False},
        {"id": world.text.id, "type": CHANNEL, "permission": False},
    ]
    await world.fake.set_command_permissions(world.guild.id, "manage", entries)
    await world.use(admin, "manage")
    await world.refused(world.manager, "manage")


async def test_application_wide_entries_apply_to_every_command(world: World) -> None:
    app_wide = [{"id": world.dj_role.id, "type": ROLE, "permission": True}]
    await world.fake.set_command_permissions(world.guild.id, None, app_wide)
    await world.use(world.dj, "manage")
    await world.use(world.dj, "admins")
    own = [{"id": world.member.id, "type": USER, "permission": True}]
    await world.fake.set_command_permissions(world.guild.id, "admins", own)
    await world.use(world.member, "admins")
    await world.use(world.dj, "admins")  # "Other application-level changes are still in effect"
    await world.only("admins", world.dj_role.id, ROLE, False)  # a conflicting entry of the command wins
    await world.refused(world.dj, "admins")
    await world.use(world.dj, "manage")


async def test_command_entries_override_only_the_conflicting_application_wide_ones(world: World) -> None:
    # Discord's own example (help centre, "Updates to Command Permissions", in effect since 2023-02-28):
    # StudyBot is for "Student Leads" in #study-zone only; /notecards also for "Study Buddies" and also in
    # #flashcard-help. "Now, /notecards can be used - By Study Buddies and Student Leads - In
    # #flashcard-help and #study-zone"; the other commands keep the application-wide setup.
    guild = world.guild
    leads, buddies = guild.add_role("Student Leads"), guild.add_role("Study Buddies")
    lead, buddy = guild.add_member(name="lead", roles=[leads]), guild.add_member(name="buddy", roles=[buddies])
    study, flashcards, off_topic = world.text, world.other_text, guild.add_text_channel("off-topic")
    everyone, all_channels = guild.id, guild.id - 1
    app_wide = [
        {"id": everyone, "type": ROLE, "permission": False},
        {"id": leads.id, "type": ROLE, "permission": True},
        {"id": all_channels, "type": CHANNEL, "permission": False},
        {"id": study.id, "type": CHANNEL, "permission": True},
    ]
    await world.fake.set_command_permissions(guild.id, None, app_wide)
    notecards = [
        {"id": buddies.id, "type": ROLE, "permission": True},
        {"id": flashcards.id, "type": CHANNEL, "permission": True},
    ]
    await world.fake.set_command_permissions(guild.id, "everyone", notecards)  # /everyone plays /notecards
    for user in (lead, buddy):
        for channel in (study, flashcards):
            await world.use(user, "everyone", channel=channel)
    assert "@everyone" in str(await world.refused(world.member, "everyone", channel=study))
    assert "channel" in str(await world.refused(buddy, "everyone", channel=off_topic))
    await world.use(lead, "local", channel=study)  # /local plays /quiz: only the application-wide entries
    await world.refused(buddy, "local", channel=study)
    await world.refused(lead, "local", channel=flashcards)


async def test_the_bot_sees_and_can_read_the_guild_permissions(world: World) -> None:
    seen: list[discord.RawAppCommandPermissionsUpdateEvent] = []

    async def on_raw_app_command_permissions_update(payload: discord.RawAppCommandPermissionsUpdateEvent) -> None:
        seen.append(payload)

    world.bot.add_listener(on_raw_app_command_permissions_update)
    entries = [{"id": world.dj_role.id, "type": ROLE, "permission": True}]
    await world.fake.set_command_permissions(world.guild.id, "manage", entries)
    async with asyncio.timeout(5):
        while not seen:  # noqa: ASYNC110 - polling discord.py-side state
            await asyncio.sleep(0.01)
    manage = next(c for c in await world.bot.tree.fetch_commands() if c.name == "manage")
    assert seen[0].target_id == manage.id and seen[0].guild.id == world.guild.id
    fetched = await manage.fetch_permissions(discord.Object(world.guild.id))
    assert [(p.id, p.type, p.permission) for p in fetched.permissions] == [
        (world.dj_role.id, discord.AppCommandPermissionType.role, True)
    ]
    admins = next(c for c in await world.bot.tree.fetch_commands() if c.name == "admins")
    with pytest.raises(discord.NotFound):
        await admins.fetch_permissions(discord.Object(world.guild.id))


# -- DMs ----------------------------------------------------------------------------------------------


async def test_a_dm_command_is_delivered_without_member_permissions(world: World) -> None:
    # Permissions exist per guild; in a DM only the command's contexts count.
    interaction = await world.fake.send_dm_slash_command(world.member.id, "dmok")
    assert (await interaction.wait_response()).content == "dmok ok"
    assert interaction.payload["context"] == 1 and "member" not in interaction.payload
    assert interaction.payload["user"]["id"] == str(world.member.id)
    assert world.received[-1].guild_id is None and world.received[-1].user.id == world.member.id
    await world.refused(world.member, "dmok")  # the same command in the guild needs Manage Server


async def test_a_global_command_is_offered_in_a_dm_by_default(world: World) -> None:
    # Application command object: ``contexts`` "By default, all interaction context types included for new
    # commands"; ``dm_permission`` (deprecated) "By default, commands are visible". A command registered
    # with neither field is usable in a DM with the bot.
    assert world.bot.application_id is not None
    await world.bot.http.upsert_global_command(world.bot.application_id, {"name": "bare", "description": "x"})
    bare = next(c for c in world.fake.synced_commands if c["name"] == "bare")
    assert bare["contexts"] is None and "dm_permission" not in bare
    interaction = await world.fake.send_dm_slash_command(world.member.id, "bare")
    assert interaction.payload["context"] == 1


async def test_what_discord_does_not_offer_in_a_dm(world: World) -> None:
    with pytest.raises(CommandNotAvailable, match="BOT_DM"):
        await world.fake.send_dm_slash_command(world.manager.id, "guildonly")
    with pytest.raises(CommandNotAvailable, match="guild commands are not available in DMs"):
        await world.fake.send_dm_slash_command(world.manager.id, "local")
    stranger = FakeUser(world.fake.snowflake(), "stranger")  # a user in no guild of the bot
    world.fake.users[stranger.id] = stranger
    with pytest.raises(CommandNotAvailable, match="shares no guild"):
        await world.fake.send_dm_slash_command(stranger.id, "dmok")


# -- who is not there --------------------------------------------------------------------------------------


async def test_a_user_the_fake_does_not_know_gets_no_dm_command(world: World) -> None:
    nobody = world.fake.snowflake()
    with pytest.raises(CommandNotAvailable, match="no user") as refused:
        await world.fake.send_dm_slash_command(nobody, "dmok")
    assert (refused.value.user_id, refused.value.command, refused.value.guild_id) == (nobody, "dmok", None)
    assert str(nobody) in str(refused.value)


async def test_a_user_who_is_not_a_member_gets_no_guild_command(world: World) -> None:
    outsider = world.fake.add_guild("Elsewhere").add_member(name="outsider")
    nobody = world.fake.snowflake()
    for user_id, what in ((outsider.id, "not a member"), (nobody, "no user")):
        for name in ("everyone", "unregistered"):  # unregistered commands are delivered unchecked, but not to him
            with pytest.raises(CommandNotAvailable, match=what) as refused:
                await world.fake.send_slash_command(world.guild.id, user_id, name)
            assert (refused.value.user_id, refused.value.guild_id) == (user_id, world.guild.id)
            assert "'Permissions Guild'" in str(refused.value)
        with pytest.raises(CommandNotAvailable, match=what):
            await world.fake.send_autocomplete(world.guild.id, user_id, "everyone", options={"q": ""}, focused="q")


async def test_a_command_the_bot_never_registered_reaches_nobody(world: World) -> None:
    # Discord shows a member the commands the application registered (globally or for the guild) and
    # nothing else: a bot that forgot tree.sync() gets no interaction for its command.
    with pytest.raises(CommandNotAvailable, match="has not registered") as refused:
        await world.fake.send_slash_command(world.guild.id, world.manager.id, "never_registered")
    assert refused.value.command == "never_registered"
    with pytest.raises(CommandNotAvailable, match="has not registered"):
        await world.fake.send_autocomplete(world.guild.id, world.manager.id, "never_registered", focused="x")
    assert world.received == []
