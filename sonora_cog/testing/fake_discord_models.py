"""The world of :class:`~sonora_cog.testing.fake_discord.FakeDiscord`: guilds, channels, roles, members.

Every object here renders itself as the JSON Discord's API v10 sends (``to_payload``), with snowflakes as
strings and permissions as decimal strings, so the real discord.py parses it unchanged.

.. versionadded:: 0.1
"""

from __future__ import annotations

import datetime
import itertools
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = (
    "DISCORD_EPOCH_MS",
    "ChannelType",
    "FakeChannel",
    "FakeFile",
    "FakeMember",
    "FakeMessage",
    "FakeRole",
    "FakeUser",
    "FakeVoiceState",
    "Permissions",
    "SnowflakeFactory",
    "iso_now",
)

DISCORD_EPOCH_MS = 1420070400000


class ChannelType:
    """Channel type numbers of the Discord API (only the ones the fake builds)."""

    GUILD_TEXT = 0
    DM = 1
    GUILD_VOICE = 2
    GUILD_CATEGORY = 4
    GUILD_STAGE_VOICE = 13


class Permissions:
    """Permission bits of the Discord API (``topics/permissions``, "Bitwise Permission Flags"), the ones the
    fake computes with or names in its messages."""

    CREATE_INSTANT_INVITE = 1 << 0
    KICK_MEMBERS = 1 << 1
    BAN_MEMBERS = 1 << 2
    ADMINISTRATOR = 1 << 3
    MANAGE_CHANNELS = 1 << 4
    MANAGE_GUILD = 1 << 5
    ADD_REACTIONS = 1 << 6
    VIEW_AUDIT_LOG = 1 << 7
    PRIORITY_SPEAKER = 1 << 8
    STREAM = 1 << 9
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    MANAGE_MESSAGES = 1 << 13
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    MENTION_EVERYONE = 1 << 17
    USE_EXTERNAL_EMOJIS = 1 << 18
    CONNECT = 1 << 20
    SPEAK = 1 << 21
    MUTE_MEMBERS = 1 << 22
    DEAFEN_MEMBERS = 1 << 23
    MOVE_MEMBERS = 1 << 24
    USE_VAD = 1 << 25
    MANAGE_ROLES = 1 << 28
    USE_APPLICATION_COMMANDS = 1 << 31
    MODERATE_MEMBERS = 1 << 40
    ALL = (1 << 53) - 1
    #: What a fresh server's ``@everyone`` role gets (the client's default, 0xF9_8637_CE41), with
    #: USE_APPLICATION_COMMANDS among it.
    DEFAULT_EVERYONE = 1071698660929

    @classmethod
    def names(cls, bits: int) -> list[str]:
        """The flag names of ``bits`` (``["MANAGE_GUILD"]``), lowest bit first; a bit without a name here
        is written ``1 << n``."""
        named = {value: name for name, value in vars(cls).items() if isinstance(value, int) and value.bit_count() == 1}
        return [named.get(1 << n, f"1 << {n}") for n in range(bits.bit_length()) if bits >> n & 1]


class SnowflakeFactory:
    """Generate realistic, strictly increasing Discord snowflakes.

    Layout: 42 bits of milliseconds since the Discord epoch, 5 bits worker, 5 bits process,
    12 bits increment.
    """

    def __init__(self, worker: int = 1, process: int = 0) -> None:
        self._worker = worker & 0x1F
        self._process = process & 0x1F
        self._counter = itertools.count()
        self._last = 0
        self._lock = threading.Lock()

    def __call__(self) -> int:
        """Return a new snowflake."""
        with self._lock:
            ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
            value = (ms << 22) | (self._worker << 17) | (self._process << 12) | (next(self._counter) & 0xFFF)
            if value <= self._last:
                value = self._last + 1
            self._last = value
            return value


def iso_now() -> str:
    """Return the current UTC time in the ISO-8601 form Discord uses."""
    return datetime.datetime.now(datetime.UTC).isoformat()


@dataclass(slots=True)
class FakeUser:
    """A Discord user (``bot=True`` for bot accounts)."""

    id: int
    username: str
    bot: bool = False
    global_name: str | None = None

    def to_payload(self) -> dict[str, Any]:
        """Return the user object."""
        data: dict[str, Any] = {
            "id": str(self.id),
            "username": self.username,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": None,
            "public_flags": 0,
            "flags": 0,
            "banner": None,
            "accent_color": None,
            "avatar_decoration_data": None,
            "primary_guild": None,
            "collectibles": None,
        }
        if self.bot:
            data["bot"] = True
        return data


@dataclass(slots=True)
class FakeRole:
    """A guild role; the ``@everyone`` role has the guild's id."""

    id: int
    name: str
    permissions: int
    position: int = 0
    managed: bool = False
    bot_id: int | None = None
    color: int = 0
    hoist: bool = False
    mentionable: bool = False

    def to_payload(self) -> dict[str, Any]:
        """Return the role object."""
        data: dict[str, Any] = {
            "id": str(self.id),
            "name": self.name,
            "color": self.color,
            "colors": {"primary_color": self.color, "secondary_color": None, "tertiary_color": None},
            "hoist": self.hoist,
            "icon": None,
            "unicode_emoji": None,
            "position": self.position,
            "permissions": str(self.permissions),
            "managed": self.managed,
            "mentionable": self.mentionable,
            "flags": 0,
        }
        if self.bot_id is not None:
            data["tags"] = {"bot_id": str(self.bot_id)}
        return data


@dataclass(slots=True)
class FakeChannel:
    """A guild channel (text 0, voice 2, category 4 or stage 13)."""

    id: int
    guild_id: int
    name: str
    type: int
    position: int = 0
    bitrate: int = 64000
    user_limit: int = 0
    permission_overwrites: list[dict[str, Any]] = field(default_factory=list)
    parent_id: int | None = None
    topic: str | None = None
    rtc_region: str | None = None

    @property
    def is_voice(self) -> bool:
        """Whether members can connect to this channel."""
        return self.type in (ChannelType.GUILD_VOICE, ChannelType.GUILD_STAGE_VOICE)

    def to_payload(self, *, with_guild_id: bool = True) -> dict[str, Any]:
        """Return the channel object (GUILD_CREATE omits ``guild_id`` inside ``channels``)."""
        data: dict[str, Any] = {
            "id": str(self.id),
            "type": self.type,
            "name": self.name,
            "position": self.position,
            "permission_overwrites": [dict(o) for o in self.permission_overwrites],
            "parent_id": None if self.parent_id is None else str(self.parent_id),
            "flags": 0,
        }
        if with_guild_id:
            data["guild_id"] = str(self.guild_id)
        if self.type != ChannelType.GUILD_CATEGORY:
            data.update(nsfw=False, last_message_id=None, rate_limit_per_user=0)
        if self.type == ChannelType.GUILD_TEXT:
            data["topic"] = self.topic
            data["default_auto_archive_duration"] = 1440
        if self.is_voice:
            data.update(bitrate=self.bitrate, user_limit=self.user_limit, rtc_region=self.rtc_region)
            if self.type == ChannelType.GUILD_VOICE:
                data["video_quality_mode"] = 1
            else:
                data["topic"] = self.topic
        return data


@dataclass(slots=True)
class FakeMember:
    """A guild member: a user plus guild-specific roles and nickname."""

    user: FakeUser
    roles: list[int] = field(default_factory=list)
    nick: str | None = None
    joined_at: str = field(default_factory=iso_now)

    @property
    def id(self) -> int:
        """The user id."""
        return self.user.id

    def to_payload(self, *, permissions: int | None = None) -> dict[str, Any]:
        """Return the guild member object (with ``permissions`` when part of an interaction)."""
        data: dict[str, Any] = {
            "user": self.user.to_payload(),
            "nick": self.nick,
            "avatar": None,
            "banner": None,
            "roles": [str(r) for r in self.roles],
            "joined_at": self.joined_at,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }
        if permissions is not None:
            data["permissions"] = str(permissions)
        return data


@dataclass(slots=True)
class FakeVoiceState:
    """A user's voice state in one guild."""

    guild_id: int
    user_id: int
    channel_id: int | None
    session_id: str
    self_mute: bool = False
    self_deaf: bool = False
    suppress: bool = False
    request_to_speak_timestamp: str | None = None

    def to_payload(self, member: FakeMember | None = None, *, with_guild_id: bool = True) -> dict[str, Any]:
        """Return the voice state object (VOICE_STATE_UPDATE carries ``member``, GUILD_CREATE not)."""
        data: dict[str, Any] = {
            "channel_id": None if self.channel_id is None else str(self.channel_id),
            "user_id": str(self.user_id),
            "session_id": self.session_id,
            "deaf": False,
            "mute": False,
            "self_deaf": self.self_deaf,
            "self_mute": self.self_mute,
            "self_video": False,
            "suppress": self.suppress,
            "request_to_speak_timestamp": self.request_to_speak_timestamp,
        }
        if with_guild_id:
            data["guild_id"] = str(self.guild_id)
        if member is not None:
            data["member"] = member.to_payload()
        return data


@dataclass(slots=True)
class FakeFile:
    """A file the bot uploaded (multipart ``files[n]``) or that a test hosts on the fake."""

    filename: str
    data: bytes
    content_type: str | None = None
    description: str | None = None
    id: int = 0

    def to_payload(self, base_url: str, channel_id: int) -> dict[str, Any]:
        """Return the attachment object, with a URL the fake serves the bytes at."""
        url = f"{base_url}/attachments/{channel_id}/{self.id}/{self.filename}"
        return {
            "id": str(self.id),
            "filename": self.filename,
            "size": len(self.data),
            "url": url,
            "proxy_url": url,
            "content_type": self.content_type,
            "description": self.description,
        }


@dataclass(slots=True)
class FakeMessage:
    """A message the bot created (channel message, interaction response or follow-up).

    ``edits`` keeps every PATCH body applied to it, oldest first.
    """

    id: int
    channel_id: int
    guild_id: int | None
    author: FakeUser
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    flags: int = 0
    files: list[FakeFile] = field(default_factory=list)
    interaction_id: int | None = None
    webhook_id: int | None = None
    timestamp: str = field(default_factory=iso_now)
    edited_timestamp: str | None = None
    edits: list[dict[str, Any]] = field(default_factory=list)
    deleted: bool = False
    #: ``time.monotonic()`` of the last create/edit (a "human" does not click faster than they see).
    changed_at: float = field(default_factory=time.monotonic)

    @property
    def ephemeral(self) -> bool:
        """Whether the EPHEMERAL flag (64) is set."""
        return bool(self.flags & 64)

    def apply(self, body: Mapping[str, Any], files: Sequence[FakeFile] = ()) -> None:
        """Apply a create or edit body (``content``, ``embeds``, ``components``, ``flags``, files)."""
        self.changed_at = time.monotonic()
        if "content" in body:
            self.content = body["content"] or ""
        if "embeds" in body:
            self.embeds = list(body["embeds"] or [])
        if "components" in body:
            self.components = list(body["components"] or [])
        if body.get("flags") is not None:
            self.flags = int(body["flags"])
        if files or "attachments" in body:
            kept = {str(a.get("id")) for a in body.get("attachments") or []}
            self.files = [f for f in self.files if str(f.id) in kept] + list(files)

    def to_payload(self, base_url: str) -> dict[str, Any]:
        """Return the message object as Discord would send it."""
        attachments = [f.to_payload(base_url, self.channel_id) for f in self.files]
        data: dict[str, Any] = {
            "id": str(self.id),
            "channel_id": str(self.channel_id),
            "type": 20 if self.interaction_id is not None else 0,
            "content": self.content,
            "author": self.author.to_payload(),
            "timestamp": self.timestamp,
            "edited_timestamp": self.edited_timestamp,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": attachments,
            "embeds": self.embeds,
            "components": self.components,
            "pinned": False,
            "flags": self.flags,
        }
        if self.guild_id is not None:
            data["guild_id"] = str(self.guild_id)
        if self.webhook_id is not None:
            data["webhook_id"] = str(self.webhook_id)
            data["application_id"] = str(self.webhook_id)
        return data
