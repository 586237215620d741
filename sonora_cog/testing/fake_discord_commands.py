"""Application commands of :class:`~sonora_cog.testing.fake_discord.FakeDiscord`: what the bot registered,
and who Discord lets use it (a mixin).

Discord decides before it delivers a command whether the member may use it; a member who may not never
sees the command in the picker, so the bot never gets the interaction. The fake decides the same way and
raises :class:`CommandNotAvailable` (naming the member, the command and what is missing) instead of
delivering it. From Discord's developer docs, "Application Commands" > "Permissions" and "Contexts"
(https://discord.com/developers/docs/interactions/application-commands#permissions):

- ``default_member_permissions`` is "the permissions a user must have to use it", a bitwise permission
  string; null requires nothing; ``"0"`` "will prohibit anyone in a guild from using the command unless a
  specific overwrite is configured or the user has admin permissions".
- "Members with the Administrator permission can use all commands" (the owner has every permission,
  ``topics/permissions``).
- Everyone else needs ``USE_APPLICATION_COMMANDS`` ("Allows members to use application commands, including
  slash commands and context menu commands", ``topics/permissions``) in the channel, after its
  overwrites; no command permission entry lifts that. A new server's ``@everyone`` has it
  (:attr:`Permissions.DEFAULT_EVERYONE`), so a world that never touches it is not affected.
- A server's admins may override this per guild with *application command permissions* (Server Settings >
  Integrations): entries ``{"id", "type": 1 role | 2 user | 3 channel, "permission": bool}`` for one
  command, or with the application's id for all commands; the constants ``guild_id`` (@everyone) and
  ``guild_id - 1`` (all channels). Tests set them with :meth:`CommandsMixin.set_command_permissions` (bots
  cannot: the docs require a user's Bearer token).
- A command's own entries override the application-wide ones target by target (help centre, "Updates to
  Command Permissions", in effect since 2023-02-28): "individual command changes only overwrite
  conflicting settings. Other application-level changes are still in effect." So the entries that apply
  to a command are the application-wide ones, each replaced by the command's own entry for the same role,
  user or channel, plus the command's entries for other targets. (The developer docs still say the
  application-wide entries "apply to all commands that do not contain explicit overwrites", the rule from
  before that change.)
- "Guild commands are not available in DMs"; a global command is, to a user who shares a guild with the
  bot, unless its ``contexts`` leave out ``BOT_DM`` (1) (null: "By default, all interaction context types
  included for new commands") or, without ``contexts``, its deprecated ``dm_permission`` is false ("By
  default, commands are visible"). "Contexts are distinct from, and do not affect, any command
  permissions": permissions only exist in a guild, so a DM has none to check.

The docs do not spell out how the kinds of entries combine, so this order is the fake's choice, written
down here: a channel entry (this channel, else "all channels") that denies refuses; then the member's own
entry decides; then their roles' entries (any allow wins, as among channel overwrites); an ``@everyone``
entry that denies refuses, and one that allows leaves the decision to ``default_member_permissions`` (the
answer in discord/discord-api-docs#5356, "This is intended": an ``@everyone`` allow does not lift ``"0"``).
``default_member_permissions`` is compared with the member's guild permissions (``@everyone`` plus their
roles), not with channel overwrites, which the docs do not mention either.

.. versionadded:: 0.5
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sonora_cog.testing.fake_discord_models import Permissions

if TYPE_CHECKING:
    from sonora_cog.testing.fake_discord_guild import FakeGuild
    from sonora_cog.testing.fake_discord_models import FakeUser

__all__ = (
    "CommandNotAvailable",
    "CommandPermissionType",
    "CommandsMixin",
    "InteractionContextType",
    "command_refusal",
)


class CommandPermissionType:
    """``type`` of an application command permission entry."""

    ROLE = 1
    USER = 2
    CHANNEL = 3


class InteractionContextType:
    """Where a command can be used (``contexts``) or was used (an interaction's ``context``)."""

    GUILD = 0
    BOT_DM = 1
    PRIVATE_CHANNEL = 2


class CommandNotAvailable(Exception):
    """Discord would not deliver this command to this user here (it is not in their command picker).

    Attributes
    ----------
    user_id, command, guild_id:
        Who tried, the command's name, and the guild (``None`` in a DM).
    missing:
        The permission bits the member lacks: for ``default_member_permissions``, or
        ``USE_APPLICATION_COMMANDS`` in the channel (0 when something else refused: an entry of the
        server's command permissions, a context).
    reason:
        Why, in one sentence.
    """

    def __init__(self, message: str, *, user_id: int, command: str, guild_id: int | None, missing: int, reason: str):
        super().__init__(message)
        self.user_id, self.command, self.guild_id = user_id, command, guild_id
        self.missing, self.reason = missing, reason


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a member may not use a command: one sentence, and the missing permission bits (or 0)."""

    reason: str
    missing: int = 0


def command_refusal(
    guild: FakeGuild, user_id: int, channel_id: int, command: Mapping[str, Any], entries: Iterable[Mapping[str, Any]]
) -> Refusal | None:
    """Why Discord would not let the member use ``command`` in this channel of ``guild``, or ``None``.

    ``entries`` are the guild's application command permissions that apply: the application-wide ones
    followed by the command's own, a later entry for the same target replacing an earlier one (so a
    command's entry overrides only the conflicting application-wide entry); see the module docstring for
    the order in which they are weighed.
    """
    permissions = guild.base_permissions(user_id)
    if permissions & Permissions.ADMINISTRATOR:
        return None
    if not guild.channel_permissions(user_id, channel_id) & Permissions.USE_APPLICATION_COMMANDS:
        reason = "the member lacks USE_APPLICATION_COMMANDS in this channel"
        return Refusal(reason, Permissions.USE_APPLICATION_COMMANDS)
    allowed = {(int(e["type"]), int(e["id"])): bool(e["permission"]) for e in entries}
    channel = allowed.get((CommandPermissionType.CHANNEL, channel_id))
    if channel is None:
        channel = allowed.get((CommandPermissionType.CHANNEL, guild.id - 1))
    if channel is False:
        return Refusal("the server's command permissions disable it in this channel")
    own = allowed.get((CommandPermissionType.USER, user_id))
    if own is not None:
        return None if own else Refusal("the server's command permissions deny this member")
    member = guild.members.get(user_id)
    role_ids = [r for r in (member.roles if member else ()) if (CommandPermissionType.ROLE, r) in allowed]
    if role_ids:
        if any(allowed[(CommandPermissionType.ROLE, r)] for r in role_ids):
            return None
        names = ", ".join(guild.roles[r].name for r in role_ids)
        return Refusal(f"the server's command permissions deny the member's role(s) {names}")
    if allowed.get((CommandPermissionType.ROLE, guild.id)) is False:
        return Refusal("the server's command permissions deny @everyone")
    required = command.get("default_member_permissions")
    if required is None:
        return None
    if int(required) == 0:
        return Refusal('default_member_permissions is "0" (administrators only)', Permissions.ADMINISTRATOR)
    missing = int(required) & ~permissions
    if missing:
        return Refusal(f"default_member_permissions needs {' | '.join(Permissions.names(missing))}", missing)
    return None


class CommandsMixin:
    """The registered application commands of :class:`FakeDiscord` and the guilds' permissions for them."""

    if TYPE_CHECKING:
        users: dict[int, FakeUser]
        guilds: dict[int, FakeGuild]
        application_id: int
        snowflake: Callable[[], int]
        synced_commands: list[dict[str, Any]]
        synced_guild_commands: dict[int, list[dict[str, Any]]]
        sync_count: int

        def guild(self, guild_id: int) -> FakeGuild: ...
        def dispatch(self, event: str, data: dict[str, Any], *, guild_id: int | None = None) -> Awaitable[int]: ...
        def notify(self) -> Awaitable[None]: ...

    #: Per guild id: the application command permissions, by command id (or the application id for the
    #: application-wide ones), as :meth:`set_command_permissions` left them.
    command_permissions: dict[int, dict[int, list[dict[str, Any]]]]

    def _find_command(self, name: str, guild_id: int | None) -> tuple[dict[str, Any] | None, bool]:
        guild_commands = self.synced_guild_commands.get(guild_id, []) if guild_id is not None else []
        for command in guild_commands:
            if command["name"] == name and command.get("type", 1) == 1:
                return command, True
        for command in self.synced_commands:
            if command["name"] == name and command.get("type", 1) == 1:
                return command, False
        return None, False

    def _commands_for(self, guild_id: int | None) -> list[dict[str, Any]]:
        return self.synced_commands if guild_id is None else self.synced_guild_commands.get(guild_id, [])

    def _store_commands(
        self, guild_id: int | None, body: list[dict[str, Any]], *, replace: bool
    ) -> list[dict[str, Any]]:
        existing = {(c["name"], c.get("type", 1)): c for c in self._commands_for(guild_id)}
        stored = []
        for raw in body:
            old = existing.get((raw["name"], raw.get("type", 1)))
            command = {
                "type": 1,
                "description": "",
                "default_member_permissions": None,
                "nsfw": False,
                "contexts": None,
                "integration_types": [0],
                **raw,
                "id": old["id"] if old else str(self.snowflake()),
                "application_id": str(self.application_id),
                "version": str(self.snowflake()),
            }
            if command["default_member_permissions"] is not None:  # "?string": clients may send an int
                command["default_member_permissions"] = str(int(command["default_member_permissions"]))
            if guild_id is not None:
                command["guild_id"] = str(guild_id)
            stored.append(command)
        if not replace:
            keep = [c for k, c in existing.items() if k not in {(s["name"], s["type"]) for s in stored}]
            stored = keep + stored
        if guild_id is None:
            self.synced_commands = stored
        else:
            self.synced_guild_commands[guild_id] = stored
        self.sync_count += 1
        return stored

    # -- the guilds' command permissions ------------------------------------------------------------

    async def set_command_permissions(
        self, guild_id: int, command: str | None, permissions: Iterable[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """Set a guild's application command permissions, as its admins do in Server Settings > Integrations.

        ``command`` is the name of a registered command (a guild command of this guild, else a global one),
        or ``None`` for the application-wide entries, which apply to every command.
        ``permissions`` are Discord's entries ``{"id": ..., "type": 1 role | 2 user | 3 channel,
        "permission": True/False}`` (up to 100); ``id`` may be the guild id (@everyone) or the guild id
        minus 1 (all channels). A command's entries override the application-wide entry for the same
        target only; the application-wide entries for other targets still apply to it. They replace the
        earlier entries of the same command (or of the application; an empty list removes them), and
        ``APPLICATION_COMMAND_PERMISSIONS_UPDATE`` is dispatched. Returns the guild application command
        permissions object.
        """
        guild = self.guild(guild_id)
        if command is None:
            target = self.application_id
        else:
            found, _ = self._find_command(command, guild.id)
            if found is None:
                raise KeyError(f"no command /{command} is registered for guild {guild.id}")
            target = int(found["id"])
        entries = [
            {"id": str(int(e["id"])), "type": int(e["type"]), "permission": bool(e["permission"])} for e in permissions
        ]
        if len(entries) > 100 or any(e["type"] not in (1, 2, 3) for e in entries):
            raise ValueError("up to 100 entries of type 1 (role), 2 (user) or 3 (channel)")
        by_target = self.command_permissions.setdefault(guild.id, {})
        if entries:
            by_target[target] = entries
        else:
            by_target.pop(target, None)
        payload = self._command_permissions_payload(guild.id, target, entries)
        await self.dispatch("APPLICATION_COMMAND_PERMISSIONS_UPDATE", payload, guild_id=guild.id)
        await self.notify()
        return payload

    def _command_permissions_payload(self, guild_id: int, target: int, entries: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": str(target),
            "application_id": str(self.application_id),
            "guild_id": str(guild_id),
            "permissions": [dict(e) for e in entries],
        }

    def guild_command_permissions(self, guild_id: int) -> list[dict[str, Any]]:
        """The guild application command permissions objects of a guild (what ``GET .../commands/permissions``
        returns)."""
        by_target = self.command_permissions.get(guild_id, {})
        return [self._command_permissions_payload(guild_id, t, e) for t, e in by_target.items()]

    def _command_refusal(
        self, guild: FakeGuild, user_id: int, channel_id: int, command: Mapping[str, Any]
    ) -> Refusal | None:
        by_target = self.command_permissions.get(guild.id, {})
        entries = [*by_target.get(self.application_id, []), *by_target.get(int(command["id"]), [])]
        return command_refusal(guild, user_id, channel_id, command, entries)

    def _not_registered(self) -> Refusal:
        """Why a command the bot never registered (for the guild, or globally) reaches nobody."""
        return Refusal("the bot has not registered a command of that name (for this guild or globally)")

    def _not_a_member(self, user_id: int) -> Refusal:
        """Why a user who is not a member of the guild (or whom the fake does not know at all) gets nothing."""
        if user_id not in self.users:
            return Refusal("no user has this id (add one with FakeGuild.add_member)")
        return Refusal("the user is not a member of this guild")

    def _dm_refusal(self, user_id: int, name: str) -> Refusal | None:
        command, _ = self._find_command(name, None)
        if command is None:
            if any(c["name"] == name for commands in self.synced_guild_commands.values() for c in commands):
                return Refusal("it is a guild command, and guild commands are not available in DMs")
            return Refusal("no global command of that name is registered")
        contexts = command.get("contexts")
        if contexts is not None and InteractionContextType.BOT_DM not in contexts:
            return Refusal(f"its contexts {contexts} leave out BOT_DM (1)")
        if contexts is None and command.get("dm_permission") is False:
            return Refusal("its dm_permission is false")
        if not any(user_id in guild.members for guild in self.guilds.values()):
            return Refusal("the user shares no guild with the bot")
        return None

    def _not_available(self, refusal: Refusal, user_id: int, name: str, guild: FakeGuild | None) -> CommandNotAvailable:
        user = self.users.get(user_id)
        who = f"{user.username!r} ({user_id})" if user else str(user_id)
        where = f"guild {guild.name!r} ({guild.id})" if guild is not None else "a DM with the bot"
        return CommandNotAvailable(
            f"Discord would not deliver /{name} to {who} in {where}: {refusal.reason}",
            user_id=user_id,
            command=name,
            guild_id=guild.id if guild is not None else None,
            missing=refusal.missing,
            reason=refusal.reason,
        )
