"""A guild of :class:`~sonora_cog.testing.fake_discord.FakeDiscord`: channels, roles, members, voice states.

Permissions are computed as Discord documents it (``topics/permissions``): ``@everyone`` plus the
member's roles, ADMINISTRATOR or ownership grants all, then channel overwrites in order ``@everyone``,
roles (allow wins over deny among roles), member.

.. versionadded:: 0.1
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sonora_cog.testing.fake_discord_models import (
    ChannelType,
    FakeChannel,
    FakeMember,
    FakeRole,
    FakeUser,
    FakeVoiceState,
    Permissions,
    iso_now,
)

if TYPE_CHECKING:
    from sonora_cog.testing.fake_discord import FakeDiscord

__all__ = ("FakeGuild",)


class FakeGuild:
    """A guild in the fake world, built by tests through the ``add_*`` methods.

    Created with :meth:`FakeDiscord.add_guild`; the bot is a member of every guild with a managed role
    named after it.
    """

    def __init__(self, fake: FakeDiscord, guild_id: int, name: str, owner_id: int) -> None:
        self._fake = fake
        self.id: int = guild_id
        self.name: str = name
        self.owner_id: int = owner_id
        self.channels: dict[int, FakeChannel] = {}
        self.roles: dict[int, FakeRole] = {
            guild_id: FakeRole(guild_id, "@everyone", Permissions.DEFAULT_EVERYONE, position=0)
        }
        self.members: dict[int, FakeMember] = {}
        self.voice_states: dict[int, FakeVoiceState] = {}
        self.joined_at: str = iso_now()
        self.locale: str = "en-US"

    # -- world building -------------------------------------------------------------------------------

    def _add_channel(self, name: str, type_: int, **kwargs: Any) -> FakeChannel:
        channel = FakeChannel(self._fake.snowflake(), self.id, name, type_, position=len(self.channels), **kwargs)
        self.channels[channel.id] = channel
        if self._fake.gateway.live_sessions(self.id):  # Discord sends CHANNEL_CREATE to a connected bot
            self._fake.unannounced_channels.append(channel)
        return channel

    def add_text_channel(self, name: str, *, topic: str | None = None) -> FakeChannel:
        """Add a text channel (type 0)."""
        return self._add_channel(name, ChannelType.GUILD_TEXT, topic=topic)

    def add_voice_channel(
        self,
        name: str,
        *,
        bitrate: int = 64000,
        user_limit: int = 0,
        permission_overwrites: Iterable[Mapping[str, Any]] = (),
    ) -> FakeChannel:
        """Add a voice channel (type 2).

        ``permission_overwrites`` entries are ``{"id", "type" (0 role, 1 member), "allow", "deny"}``;
        ints are accepted and rendered as strings.
        """
        return self._add_channel(
            name,
            ChannelType.GUILD_VOICE,
            bitrate=bitrate,
            user_limit=user_limit,
            permission_overwrites=[_overwrite(o) for o in permission_overwrites],
        )

    def add_stage_channel(self, name: str, *, bitrate: int = 64000, user_limit: int = 0) -> FakeChannel:
        """Add a stage channel (type 13); the bot joins it suppressed, like any audience member."""
        return self._add_channel(name, ChannelType.GUILD_STAGE_VOICE, bitrate=bitrate, user_limit=user_limit)

    def add_role(self, name: str, permissions: int = 0, **kwargs: Any) -> FakeRole:
        """Add a role with the given permission bits."""
        role = FakeRole(self._fake.snowflake(), name, permissions, position=len(self.roles), **kwargs)
        self.roles[role.id] = role
        return role

    def add_member(
        self,
        user_id: int | None = None,
        name: str | None = None,
        roles: Iterable[FakeRole | int] = (),
        *,
        bot: bool = False,
        nick: str | None = None,
    ) -> FakeMember:
        """Add a member (a new user unless ``user_id`` names a known one)."""
        user = self._fake.users.get(user_id) if user_id is not None else None
        if user is None:
            uid = user_id if user_id is not None else self._fake.snowflake()
            user = FakeUser(uid, name or f"user{uid % 10000}", bot=bot)
            self._fake.users[uid] = user
        member = FakeMember(user, [r.id if isinstance(r, FakeRole) else int(r) for r in roles], nick=nick)
        self.members[user.id] = member
        return member

    # -- queries ------------------------------------------------------------------------------------

    def voice_channel_of(self, user_id: int) -> int | None:
        """The channel id the user is connected to, or ``None``."""
        state = self.voice_states.get(user_id)
        return None if state is None else state.channel_id

    def base_permissions(self, user_id: int) -> int:
        """Guild-level permissions of a member (owner and administrators get everything)."""
        if user_id == self.owner_id:
            return Permissions.ALL
        member = self.members.get(user_id)
        perms = self.roles[self.id].permissions
        for role_id in member.roles if member else ():
            role = self.roles.get(role_id)
            if role is not None:
                perms |= role.permissions
        return Permissions.ALL if perms & Permissions.ADMINISTRATOR else perms

    def channel_permissions(self, user_id: int, channel_id: int | None) -> int:
        """Permissions of a member in a channel, applying overwrites in Discord's documented order."""
        perms = self.base_permissions(user_id)
        channel = self.channels.get(channel_id) if channel_id is not None else None
        if perms & Permissions.ADMINISTRATOR or channel is None:
            return perms
        member = self.members.get(user_id)
        role_ids = set(member.roles if member else ())
        overwrites = {(str(o["id"]), int(o["type"])): o for o in channel.permission_overwrites}
        everyone = overwrites.get((str(self.id), 0))
        if everyone:
            perms = (perms & ~int(everyone["deny"])) | int(everyone["allow"])
        allow = deny = 0
        for (oid, otype), o in overwrites.items():
            if otype == 0 and int(oid) in role_ids:
                allow |= int(o["allow"])
                deny |= int(o["deny"])
        perms = (perms & ~deny) | allow
        own = overwrites.get((str(user_id), 1))
        if own:
            perms = (perms & ~int(own["deny"])) | int(own["allow"])
        return perms

    # -- payloads -------------------------------------------------------------------------------------

    def to_payload(self, *, all_members: bool) -> dict[str, Any]:
        """Return the GUILD_CREATE payload.

        Without the GUILD_MEMBERS intent Discord only sends the bot's own member and members in voice;
        ``member_count`` is always the full count.
        """
        bot_id = self._fake.bot_user.id
        members = [m for m in self.members.values() if all_members or m.id == bot_id or m.id in self.voice_states]
        return {
            **self.to_rest_payload(),
            "joined_at": self.joined_at,
            "large": len(self.members) > 250,
            "unavailable": False,
            "member_count": len(self.members),
            "voice_states": [s.to_payload(with_guild_id=False) for s in self.voice_states.values() if s.channel_id],
            "members": [m.to_payload() for m in members],
            "channels": [c.to_payload(with_guild_id=False) for c in self.channels.values()],
            "threads": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "lazy": True,
            "application_command_counts": {},
        }

    def to_rest_payload(self) -> dict[str, Any]:
        """Return the guild object as ``GET /guilds/{id}`` returns it."""
        text = next((c.id for c in self.channels.values() if c.type == ChannelType.GUILD_TEXT), None)
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": [r.to_payload() for r in self.roles.values()],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": None if text is None else str(text),
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "max_presences": None,
            "max_members": 500000,
            "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50,
            "vanity_url_code": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": self.locale,
            "nsfw_level": 0,
            "nsfw": False,
            "incidents_data": None,
        }


def _overwrite(o: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": str(o["id"]),
        "type": int(o.get("type", 0)),
        "allow": str(int(o.get("allow", 0))),
        "deny": str(int(o.get("deny", 0))),
    }
