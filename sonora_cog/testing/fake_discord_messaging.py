"""Messages and interactions of :class:`~sonora_cog.testing.fake_discord.FakeDiscord` (a mixin).

The test side sends interactions (:meth:`MessagingMixin.send_slash_command`, ``send_autocomplete``,
``click_button``); the REST side calls the ``_``-prefixed hooks here to store the bot's messages,
callbacks, follow-ups and edits, and to dispatch MESSAGE_CREATE / MESSAGE_UPDATE / MESSAGE_DELETE for
what is visible in the channel (ephemeral messages are not dispatched, as on Discord).

Behaviour modelled on Discord: the initial callback must come within 3 s
(``interaction_response_timeout``), a deferred response (type 5) shows a "thinking" message (flag
``LOADING`` 128) that the first follow-up or the ``@original`` edit replaces; callback type 7 edits the
message carrying the clicked component.

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

from sonora_cog.testing.fake_discord_commands import CommandsMixin, InteractionContextType
from sonora_cog.testing.fake_discord_interactions import (
    EPHEMERAL,
    LOADING,
    FakeInteraction,
    InteractionCallback,
    InteractionType,
    build_options,
    leaf_definitions,
    nest_subcommand,
    new_interaction_token,
)
from sonora_cog.testing.fake_discord_models import (
    ChannelType,
    FakeChannel,
    FakeFile,
    FakeMessage,
    FakeUser,
    Permissions,
    iso_now,
)

if TYPE_CHECKING:
    from sonora_cog.testing.fake_discord import FakeDiscord
    from sonora_cog.testing.fake_discord_guild import FakeGuild

__all__ = ("MessagingMixin",)


#: What an app may do in a DM with its bot user, as ``app_permissions`` says (Discord's interaction docs:
#: ATTACH_FILES | EMBED_LINKS | MENTION_EVERYONE, "and additionally USE_EXTERNAL_EMOJIS for DMs with the
#: app's bot user").
BOT_DM_APP_PERMISSIONS = (
    Permissions.ATTACH_FILES | Permissions.EMBED_LINKS | Permissions.MENTION_EVERYONE | Permissions.USE_EXTERNAL_EMOJIS
)

#: Discord sends DMs to shard 0 only; ``(guild_id >> 22) % num_shards`` of a guild id 0 is that shard.
_DM_SHARD_KEY = 0

#: Interactions that carry a command, which Discord offers only to who may use it (a component is clicked
#: on a message instead).
_COMMAND_INTERACTIONS = (InteractionType.APPLICATION_COMMAND, InteractionType.APPLICATION_COMMAND_AUTOCOMPLETE)


class MessagingMixin(CommandsMixin):
    """Message store and interaction traffic of :class:`FakeDiscord`."""

    if TYPE_CHECKING:
        users: dict[int, FakeUser]
        guilds: dict[int, FakeGuild]
        bot_user: FakeUser
        application_id: int
        snowflake: Callable[[], int]
        clock: Callable[[], float]
        human_delay: float
        messages: dict[int, FakeMessage]
        attachments: dict[int, FakeFile]
        interactions: list[FakeInteraction]
        interactions_by_token: dict[str, FakeInteraction]
        dm_channels: dict[int, int]

        @property
        def base_url(self) -> str: ...
        def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> Awaitable[None]: ...

    def channel_messages(self, channel_id: int) -> list[FakeMessage]:
        """Messages (not deleted) in a channel, oldest first."""
        return [m for m in self.messages.values() if m.channel_id == channel_id and not m.deleted]

    async def wait_for_message(
        self,
        channel_id: int | None = None,
        predicate: Callable[[FakeMessage], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - a test helper deadline, like asyncio.wait_for
    ) -> FakeMessage:
        """Wait for a (non-deleted) bot message matching ``channel_id`` and ``predicate``."""

        def find() -> FakeMessage | None:
            for message in self.messages.values():
                if message.deleted or (channel_id is not None and message.channel_id != channel_id):
                    continue
                if predicate is None or predicate(message):
                    return message
            return None

        await self.wait_until(lambda: find() is not None, timeout)
        found = find()
        assert found is not None
        return found

    # -- interactions ---------------------------------------------------------------------------------

    def _default_text_channel(self, guild: FakeGuild) -> FakeChannel:
        for channel in guild.channels.values():
            if channel.type == ChannelType.GUILD_TEXT:
                return channel
        raise ValueError(f"guild {guild.id} has no text channel; pass channel_id")

    async def _send_interaction(
        self,
        itype: int,
        guild_id: int,
        user_id: int,
        data: dict[str, Any],
        *,
        channel_id: int | None,
        permissions: int | None,
        locale: str,
        message: FakeMessage | None = None,
        command: Mapping[str, Any] | None = None,
    ) -> FakeInteraction:
        guild = self.guild(guild_id)
        member = guild.members.get(user_id)
        if member is None and itype in _COMMAND_INTERACTIONS:
            raise self._not_available(self._not_a_member(user_id), user_id, data["name"], guild)
        if member is None:
            raise KeyError(f"user {user_id} is not a member of guild {guild_id}")
        channel = guild.channels[channel_id] if channel_id is not None else self._default_text_channel(guild)
        if command is None and itype in _COMMAND_INTERACTIONS:
            raise self._not_available(self._not_registered(), user_id, data["name"], guild)
        if command is not None and (refusal := self._command_refusal(guild, user_id, channel.id, command)):
            raise self._not_available(refusal, user_id, command["name"], guild)
        perms = permissions if permissions is not None else guild.channel_permissions(user_id, channel.id)
        payload: dict[str, Any] = {
            "id": str(self.snowflake()),
            "application_id": str(self.application_id),
            "type": itype,
            "data": data,
            "guild_id": str(guild.id),
            "guild": {"id": str(guild.id), "locale": guild.locale, "features": []},
            "channel_id": str(channel.id),
            "channel": {**channel.to_payload(), "permissions": str(perms)},
            "member": member.to_payload(permissions=perms),
            "token": new_interaction_token(),
            "version": 1,
            "app_permissions": str(guild.channel_permissions(self.bot_user.id, channel.id)),
            "locale": locale,
            "guild_locale": guild.locale,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "authorizing_integration_owners": {"0": str(guild.id)},
            "context": InteractionContextType.GUILD,
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        if message is not None:
            payload["message"] = message.to_payload(self.base_url)
        return await self._deliver(payload, guild.id, channel.id, user_id, message)

    async def _deliver(
        self, payload: dict[str, Any], guild_id: int | None, channel_id: int, user_id: int, message: FakeMessage | None
    ) -> FakeInteraction:
        interaction = FakeInteraction(payload, guild_id=guild_id, channel_id=channel_id, user_id=user_id)
        interaction.created_at = self.clock()
        interaction.target_message = message
        self.interactions.append(interaction)
        self.interactions_by_token[interaction.token] = interaction
        key = _DM_SHARD_KEY if guild_id is None else guild_id
        if await self.dispatch("INTERACTION_CREATE", payload, guild_id=key) == 0:
            where = "shard 0 (DMs)" if guild_id is None else f"guild {guild_id}"
            raise RuntimeError(f"no gateway session covers {where}: is the bot connected?")
        return interaction

    def _command_data(
        self,
        guild_id: int | None,
        name: str,
        subcommand: str | None,
        options: Mapping[str, Any],
        focused: str | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        guild = self.guild(guild_id) if guild_id is not None else None
        command, is_guild_command = self._find_command(name, guild_id)
        resolved: dict[str, dict[str, Any]] = {}
        fake = cast("FakeDiscord", self)  # this mixin is only ever part of a FakeDiscord
        leaves = build_options(fake, guild, leaf_definitions(command, subcommand), options, resolved, focused=focused)
        data: dict[str, Any] = {
            "id": command["id"] if command else str(self.snowflake()),
            "name": name,
            "type": 1,
            "options": nest_subcommand(subcommand, leaves),
        }
        if is_guild_command:
            data["guild_id"] = str(guild_id)
        if resolved:
            data["resolved"] = resolved
        return data, command

    async def send_slash_command(
        self,
        guild_id: int,
        user_id: int,
        name: str,
        subcommand: str | None = None,
        options: Mapping[str, Any] | None = None,
        *,
        attachments: Mapping[str, Mapping[str, Any]] | None = None,
        permissions: int | None = None,
        channel_id: int | None = None,
        locale: str = "en-US",
    ) -> FakeInteraction:
        """Send a slash command (INTERACTION_CREATE type 2) as ``user_id`` would.

        ``subcommand`` is ``"play"`` or ``"group play"``; ``options`` maps option names to values
        (members/channels/roles may be passed as fake objects, attachments as :meth:`host_attachment`
        dicts, or by name in ``attachments``). ``permissions`` overrides the member permissions the
        interaction reports (not who may use the command). The bot's answers are read from the returned
        :class:`FakeInteraction`.

        Raises
        ------
        CommandNotAvailable
            Discord would not deliver the registered command to this member in this channel: they lack its
            ``default_member_permissions`` or ``USE_APPLICATION_COMMANDS`` in the channel, or the guild's
            command permissions deny it (see :mod:`.fake_discord_commands` and
            :meth:`set_command_permissions`), or the bot has not registered the command (for this guild or
            globally: ``bot.tree.sync()``). Any command is refused to a user who is not a member of the
            guild (or whom the fake does not know).
        """
        all_options = {**(options or {}), **(attachments or {})}
        data, command = self._command_data(guild_id, name, subcommand, all_options)
        return await self._send_interaction(
            InteractionType.APPLICATION_COMMAND,
            guild_id,
            user_id,
            data,
            channel_id=channel_id,
            permissions=permissions,
            locale=locale,
            command=command,
        )

    async def send_autocomplete(
        self,
        guild_id: int,
        user_id: int,
        name: str,
        subcommand: str | None = None,
        options: Mapping[str, Any] | None = None,
        *,
        focused: str,
        channel_id: int | None = None,
        permissions: int | None = None,
        locale: str = "en-US",
    ) -> FakeInteraction:
        """Send an autocomplete request (type 4) with ``focused`` marking the option being typed.

        The bot's choices are ``(await interaction.wait_response()).choices`` (callback type 8). Raises
        :class:`CommandNotAvailable` like :meth:`send_slash_command`: a member cannot type a command
        they cannot use.
        """
        data, command = self._command_data(guild_id, name, subcommand, options or {}, focused=focused)
        return await self._send_interaction(
            InteractionType.APPLICATION_COMMAND_AUTOCOMPLETE,
            guild_id,
            user_id,
            data,
            channel_id=channel_id,
            permissions=permissions,
            locale=locale,
            command=command,
        )

    async def send_dm_slash_command(
        self,
        user_id: int,
        name: str,
        subcommand: str | None = None,
        options: Mapping[str, Any] | None = None,
        *,
        locale: str = "en-US",
    ) -> FakeInteraction:
        """Send a slash command from the user's DM with the bot (``context`` BOT_DM, ``user`` instead of
        ``member``), to shard 0 as Discord sends DMs.

        Raises
        ------
        CommandNotAvailable
            Discord would not offer the command there: it is not a registered global command (guild
            commands are not available in DMs), its ``contexts`` leave out BOT_DM (or, without
            ``contexts``, ``dm_permission`` is false), the user shares no guild with the bot, or the fake
            knows no user with this id.
            ``default_member_permissions`` is not checked: there are no member permissions in a DM.
        """
        user = self.users.get(user_id)
        if user is None:
            raise self._not_available(self._not_a_member(user_id), user_id, name, None)
        if (refusal := self._dm_refusal(user_id, name)) is not None:
            raise self._not_available(refusal, user_id, name, None)
        data, _ = self._command_data(None, name, subcommand, options or {})
        channel_id = self.dm_channels.setdefault(user_id, self.snowflake())
        payload: dict[str, Any] = {
            "id": str(self.snowflake()),
            "application_id": str(self.application_id),
            "type": InteractionType.APPLICATION_COMMAND,
            "data": data,
            "channel_id": str(channel_id),
            "channel": {
                "id": str(channel_id),
                "type": ChannelType.DM,
                "last_message_id": None,
                "flags": 0,
                "recipients": [user.to_payload()],
            },
            "user": user.to_payload(),
            "token": new_interaction_token(),
            "version": 1,
            "app_permissions": str(BOT_DM_APP_PERMISSIONS),
            "locale": locale,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "authorizing_integration_owners": {"0": "0"},
            "context": InteractionContextType.BOT_DM,
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        return await self._deliver(payload, None, channel_id, user_id, None)

    async def click_button(
        self,
        message: FakeMessage | int,
        custom_id: str,
        user_id: int,
        *,
        values: Iterable[str] | None = None,
        permissions: int | None = None,
        locale: str = "en-US",
    ) -> FakeInteraction:
        """Click a component of a bot message (type 3); ``values`` for a select menu instead."""
        msg = message if isinstance(message, FakeMessage) else self.messages[int(message)]
        component = _find_component(msg.components, custom_id)
        if component is None:
            raise KeyError(f"message {msg.id} has no component with custom_id {custom_id!r}")
        if component.get("disabled"):
            raise ValueError(f"component {custom_id!r} is disabled")
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component["type"]}
        if values is not None:
            data["values"] = list(values)
        if msg.guild_id is None:
            raise ValueError("only guild messages are supported")
        # A person sees a message before clicking it; this also lets discord.py finish handling the
        # HTTP response that created the message (and store its View) before the click arrives.
        await asyncio.sleep(max(0.0, self.human_delay - (time.monotonic() - msg.changed_at)))
        return await self._send_interaction(
            InteractionType.MESSAGE_COMPONENT,
            msg.guild_id,
            user_id,
            data,
            channel_id=msg.channel_id,
            permissions=permissions,
            locale=locale,
            message=msg,
        )

    async def send_user_message(self, guild_id: int, channel_id: int, user_id: int, content: str) -> FakeMessage:
        """A member writes ``content`` in a text channel: dispatch ``MESSAGE_CREATE`` as Discord does (for a
        bot's prefix commands; the content reaches the bot when it holds the message content intent or is
        mentioned, so mention it, as ``commands.when_mentioned`` expects)."""
        guild = self.guilds[guild_id]
        member = guild.members[user_id]
        message = FakeMessage(self.snowflake(), channel_id, guild_id, member.user, content=content)
        data = message.to_payload(self.base_url)
        stub = member.to_payload()
        stub.pop("user")
        data["member"] = stub
        if f"<@{self.bot_user.id}>" in content:
            data["mentions"] = [self.bot_user.to_payload()]
        await self.dispatch("MESSAGE_CREATE", data, guild_id=guild_id)
        await self.notify()
        return message

    def _new_message(
        self,
        channel_id: int,
        guild_id: int | None,
        body: Mapping[str, Any],
        files: list[FakeFile],
        *,
        interaction: FakeInteraction | None = None,
    ) -> FakeMessage:
        message = FakeMessage(self.snowflake(), channel_id, guild_id, self.bot_user)
        if interaction is not None:
            message.interaction_id = interaction.id
            message.webhook_id = self.application_id
        self._attach(files)
        message.apply(body, files)
        self.messages[message.id] = message
        return message

    def _attach(self, files: list[FakeFile]) -> None:
        for file in files:
            file.id = self.snowflake()
            self.attachments[file.id] = file

    def _member_stub(self, guild_id: int | None) -> dict[str, Any] | None:
        guild = self.guilds.get(guild_id) if guild_id is not None else None
        member = guild.members.get(self.bot_user.id) if guild else None
        if member is None:
            return None
        data = member.to_payload()
        data.pop("user")
        return data

    async def _announce_message(self, message: FakeMessage) -> None:
        if not message.ephemeral:
            data = message.to_payload(self.base_url)
            if (member := self._member_stub(message.guild_id)) is not None:
                data["member"] = member
            await self.dispatch("MESSAGE_CREATE", data, guild_id=message.guild_id)
        await self.notify()

    async def _edit_message(self, message: FakeMessage, body: Mapping[str, Any], files: list[FakeFile]) -> None:
        self._attach(files)
        was_loading = bool(message.flags & LOADING)
        message.apply(body, files)
        message.flags &= ~LOADING
        message.edits.append(dict(body))
        message.edited_timestamp = iso_now()
        if was_loading:
            await self._announce_message(message)
        elif not message.ephemeral:
            await self.dispatch("MESSAGE_UPDATE", message.to_payload(self.base_url), guild_id=message.guild_id)
        await self.notify()

    async def _delete_message(self, message: FakeMessage) -> None:
        message.deleted = True
        if not message.ephemeral:
            data = {"id": str(message.id), "channel_id": str(message.channel_id)}
            if message.guild_id is not None:
                data["guild_id"] = str(message.guild_id)
            await self.dispatch("MESSAGE_DELETE", data, guild_id=message.guild_id)
        await self.notify()

    async def _apply_callback(self, interaction: FakeInteraction, callback: InteractionCallback) -> FakeMessage | None:
        interaction.callbacks.append(callback)
        message: FakeMessage | None = None
        if callback.type == 4:
            message = self._new_message(
                interaction.channel_id, interaction.guild_id, callback.data, callback.files, interaction=interaction
            )
            interaction.original = message
            await self._announce_message(message)
        elif callback.type == 5:
            body = {"content": "", "flags": (callback.flags & EPHEMERAL) | LOADING}
            message = self._new_message(interaction.channel_id, interaction.guild_id, body, [], interaction=interaction)
            interaction.original = message
        elif callback.type in (6, 7) and interaction.target_message is not None:
            message = interaction.target_message
            interaction.original = message
            if callback.type == 7:
                await self._edit_message(message, callback.data, callback.files)
        await self.notify()
        return message

    async def _followup(
        self, interaction: FakeInteraction, body: Mapping[str, Any], files: list[FakeFile]
    ) -> FakeMessage:
        original = interaction.original
        if original is not None and original.flags & LOADING:
            # The first follow-up after a deferred response replaces the "thinking" message.
            body = {**body, "flags": original.flags & EPHEMERAL}
            await self._edit_message(original, body, files)
            interaction.followups.append(original)
            return original
        message = self._new_message(interaction.channel_id, interaction.guild_id, body, files, interaction=interaction)
        interaction.followups.append(message)
        await self._announce_message(message)
        return message


def _find_component(components: list[dict[str, Any]], custom_id: str) -> dict[str, Any] | None:
    for component in components:
        if component.get("custom_id") == custom_id:
            return component
        for key in ("components", "accessory"):
            inner = component.get(key)
            children = inner if isinstance(inner, list) else [inner] if isinstance(inner, dict) else []
            found = _find_component(children, custom_id)
            if found is not None:
                return found
    return None
