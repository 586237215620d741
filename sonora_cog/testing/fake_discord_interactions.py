"""Interactions of :class:`~sonora_cog.testing.fake_discord.FakeDiscord`: what a test sends, what the bot answers.

A test sends an INTERACTION_CREATE (slash command type 2, component type 3, autocomplete type 4) and
gets a :class:`FakeInteraction`; the REST side records on it the bot's callback
(``POST /interactions/{id}/{token}/callback``), follow-ups (``POST /webhooks/{app_id}/{token}``) and edits
(``PATCH /webhooks/{app_id}/{token}/messages/@original``), and tests await them.

Payload shapes follow https://discord.com/developers/docs/interactions/receiving-and-responding and what
discord.py 2.7 reads in ``discord/interactions.py`` and ``discord/app_commands/tree.py``.

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sonora_cog.testing.fake_discord_models import (
    FakeChannel,
    FakeMember,
    FakeMessage,
    FakeRole,
    FakeUser,
)

if TYPE_CHECKING:
    from sonora_cog.testing.fake_discord import FakeDiscord
    from sonora_cog.testing.fake_discord_guild import FakeGuild
    from sonora_cog.testing.fake_discord_models import FakeFile

__all__ = ("FakeInteraction", "InteractionCallback", "InteractionType", "OptionType", "build_options")


class InteractionType:
    """Interaction types (``type`` of INTERACTION_CREATE)."""

    PING = 1
    APPLICATION_COMMAND = 2
    MESSAGE_COMPONENT = 3
    APPLICATION_COMMAND_AUTOCOMPLETE = 4
    MODAL_SUBMIT = 5


class OptionType:
    """Application command option types."""

    SUB_COMMAND = 1
    SUB_COMMAND_GROUP = 2
    STRING = 3
    INTEGER = 4
    BOOLEAN = 5
    USER = 6
    CHANNEL = 7
    ROLE = 8
    MENTIONABLE = 9
    NUMBER = 10
    ATTACHMENT = 11


LOADING = 128
EPHEMERAL = 64


@dataclass(slots=True)
class InteractionCallback:
    """One ``POST /interactions/{id}/{token}/callback`` body the bot sent.

    ``type`` is the callback type: 4 message, 5 deferred message, 6 deferred update, 7 update message,
    8 autocomplete result, 9 modal.
    """

    type: int
    data: dict[str, Any] = field(default_factory=dict)
    files: list[FakeFile] = field(default_factory=list)

    @property
    def content(self) -> str | None:
        """The message content, if any."""
        return self.data.get("content")

    @property
    def embeds(self) -> list[dict[str, Any]]:
        """The embeds (as dicts)."""
        return list(self.data.get("embeds") or [])

    @property
    def components(self) -> list[dict[str, Any]]:
        """The components (as dicts)."""
        return list(self.data.get("components") or [])

    @property
    def flags(self) -> int:
        """The message flags."""
        return int(self.data.get("flags") or 0)

    @property
    def ephemeral(self) -> bool:
        """Whether the EPHEMERAL flag (64) is set."""
        return bool(self.flags & EPHEMERAL)

    @property
    def choices(self) -> list[dict[str, Any]]:
        """Autocomplete choices (callback type 8)."""
        return list(self.data.get("choices") or [])


class FakeInteraction:
    """An interaction a test sent to the bot, and everything the bot answered to it."""

    def __init__(self, payload: dict[str, Any], *, guild_id: int | None, channel_id: int, user_id: int) -> None:
        self.payload = payload
        self.id: int = int(payload["id"])
        self.token: str = payload["token"]
        self.type: int = payload["type"]
        self.guild_id = guild_id
        self.channel_id = channel_id
        self.user_id = user_id
        self.created_at = time.monotonic()
        self.callbacks: list[InteractionCallback] = []
        self.original: FakeMessage | None = None
        self.followups: list[FakeMessage] = []
        self.target_message: FakeMessage | None = None
        self._changed = asyncio.Condition()

    def __repr__(self) -> str:
        return f"<FakeInteraction id={self.id} type={self.type} callbacks={len(self.callbacks)}>"

    @property
    def acknowledged(self) -> bool:
        """Whether the bot sent its callback."""
        return bool(self.callbacks)

    @property
    def response(self) -> InteractionCallback | None:
        """The callback, or ``None`` while unanswered."""
        return self.callbacks[0] if self.callbacks else None

    @property
    def messages(self) -> list[FakeMessage]:
        """The visible messages: the original (unless still loading) then the follow-ups."""
        first = [self.original] if self.original and not self.original.flags & LOADING else []
        return first + [m for m in self.followups if m is not self.original]

    async def notify(self) -> None:
        """Wake up waiters (called by the REST side after every change)."""
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[FakeInteraction], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109 - a test helper deadline, like asyncio.wait_for
        """Wait until ``predicate(self)`` is true; raise :class:`TimeoutError` after ``timeout`` s."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    async def wait_response(self, timeout: float = 5.0) -> InteractionCallback:  # noqa: ASYNC109 - a test helper deadline, like asyncio.wait_for
        """Wait for the callback and return it."""
        await self.wait_for(lambda i: i.acknowledged, timeout)
        assert self.response is not None
        return self.response

    async def wait_message(self, timeout: float = 5.0) -> FakeMessage:  # noqa: ASYNC109 - a test helper deadline, like asyncio.wait_for
        """Wait for the first message the user sees (after a defer: the edit or first follow-up)."""
        await self.wait_for(lambda i: bool(i.messages), timeout)
        return self.messages[0]

    async def wait_followup(self, index: int = 0, timeout: float = 5.0) -> FakeMessage:  # noqa: ASYNC109 - a test helper deadline, like asyncio.wait_for
        """Wait for the ``index``-th follow-up message."""
        await self.wait_for(lambda i: len(i.followups) > index, timeout)
        return self.followups[index]

    async def wait_edit(self, count: int = 1, timeout: float = 5.0) -> FakeMessage:  # noqa: ASYNC109 - a test helper deadline, like asyncio.wait_for
        """Wait until the original response was edited ``count`` times and return it."""
        await self.wait_for(lambda i: i.original is not None and len(i.original.edits) >= count, timeout)
        assert self.original is not None
        return self.original


def new_interaction_token() -> str:
    """A token shaped like Discord's (long, URL-safe)."""
    return "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(120)


def _infer_type(value: Any) -> int:
    if isinstance(value, bool):
        return OptionType.BOOLEAN
    if isinstance(value, int):
        return OptionType.INTEGER
    if isinstance(value, float):
        return OptionType.NUMBER
    if isinstance(value, FakeMember | FakeUser):
        return OptionType.USER
    if isinstance(value, FakeChannel):
        return OptionType.CHANNEL
    if isinstance(value, FakeRole):
        return OptionType.ROLE
    if isinstance(value, Mapping) and "filename" in value:
        return OptionType.ATTACHMENT
    return OptionType.STRING


def _object_id(value: Any) -> int:
    if isinstance(value, FakeMember | FakeUser | FakeChannel | FakeRole):
        return value.id
    if isinstance(value, Mapping):
        return int(value["id"])
    return int(value)


def build_options(
    fake: FakeDiscord,
    guild: FakeGuild | None,
    definitions: list[dict[str, Any]],
    options: Mapping[str, Any],
    resolved: dict[str, dict[str, Any]],
    *,
    focused: str | None = None,
) -> list[dict[str, Any]]:
    """Render ``options`` as interaction option objects, filling ``resolved`` for users/channels/etc.

    Option types come from the synced command definition when known, else from the Python value.
    """
    by_name = {d.get("name"): d for d in definitions}
    rendered: list[dict[str, Any]] = []
    for name, value in options.items():
        definition = by_name.get(name)
        kind = int(definition["type"]) if definition else _infer_type(value)
        option: dict[str, Any] = {"name": name, "type": kind}
        if name == focused:
            option["value"] = str(value)
            option["focused"] = True
        elif kind in (OptionType.USER, OptionType.MENTIONABLE, OptionType.CHANNEL, OptionType.ROLE):
            oid = _object_id(value)
            option["value"] = str(oid)
            _resolve(fake, guild, oid, kind, resolved)
        elif kind == OptionType.ATTACHMENT:
            attachment = dict(value)
            option["value"] = str(attachment["id"])
            resolved.setdefault("attachments", {})[str(attachment["id"])] = attachment
        else:
            option["value"] = value
        rendered.append(option)
    return rendered


def _resolve(fake: FakeDiscord, guild: FakeGuild | None, oid: int, kind: int, resolved: dict[str, Any]) -> None:
    if guild is not None and oid in guild.channels:
        channel = guild.channels[oid]
        resolved.setdefault("channels", {})[str(oid)] = {
            **channel.to_payload(),
            "permissions": str(guild.channel_permissions(fake.bot_user.id, oid)),
        }
    elif guild is not None and oid in guild.roles:
        resolved.setdefault("roles", {})[str(oid)] = guild.roles[oid].to_payload()
    elif oid in fake.users:
        resolved.setdefault("users", {})[str(oid)] = fake.users[oid].to_payload()
        member = guild.members.get(oid) if guild is not None else None
        if member is not None and guild is not None:
            data = member.to_payload(permissions=guild.base_permissions(oid))
            data.pop("user")
            resolved.setdefault("members", {})[str(oid)] = data
    else:
        raise ValueError(f"option of type {kind}: unknown id {oid}")


def nest_subcommand(subcommand: str | None, options: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Wrap leaf options in a SUB_COMMAND (``"play"``) or SUB_COMMAND_GROUP + SUB_COMMAND (``"a b"``)."""
    if not subcommand:
        return options
    parts = subcommand.split()
    if len(parts) == 1:
        return [{"type": OptionType.SUB_COMMAND, "name": parts[0], "options": options}]
    if len(parts) == 2:
        inner = [{"type": OptionType.SUB_COMMAND, "name": parts[1], "options": options}]
        return [{"type": OptionType.SUB_COMMAND_GROUP, "name": parts[0], "options": inner}]
    raise ValueError(f"subcommand path too deep: {subcommand!r}")


def leaf_definitions(command: dict[str, Any] | None, subcommand: str | None) -> list[dict[str, Any]]:
    """The option definitions of the leaf (sub)command, from a synced command, or ``[]``."""
    if command is None:
        return []
    options: list[dict[str, Any]] = command.get("options") or []
    for part in (subcommand or "").split():
        match = next((o for o in options if o.get("name") == part and o.get("type") in (1, 2)), None)
        if match is None:
            return []
        options = match.get("options") or []
    return options
