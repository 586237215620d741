"""The REST half of :class:`~sonora_cog.testing.fake_discord.FakeDiscord`: the ``/api/v10`` routes discord.py calls.

Errors use Discord's JSON shape ``{"message": ..., "code": ...}`` with its status codes and JSON error
codes (https://discord.com/developers/docs/topics/opcodes-and-status-codes#json): 10003 Unknown
Channel, 10004 Unknown Guild, 10007 Unknown Member, 10008 Unknown Message, 10013 Unknown User,
10015 Unknown Webhook, 10062 Unknown Interaction, 10066 Unknown application command permissions,
40060 Interaction has already been acknowledged, 50001 Missing Access, 50013 Missing Permissions,
50035 Invalid Form Body; ``401: Unauthorized`` and ``404: Not Found`` with code 0. Unknown routes
answer 404 and are logged and kept in :attr:`FakeDiscord.unknown_routes`, so a test reveals what is
missing.

Bodies are JSON, or ``multipart/form-data`` with a ``payload_json`` part and ``files[n]`` parts (what
discord.py's ``handle_message_parameters`` builds); uploaded bytes are kept as :class:`FakeFile`.

.. versionadded:: 0.1
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, web

from sonora_cog.testing.fake_discord_interactions import LOADING, FakeInteraction, InteractionCallback
from sonora_cog.testing.fake_discord_models import FakeFile, FakeMessage, Permissions

if TYPE_CHECKING:
    from sonora_cog.testing.fake_discord import FakeDiscord

__all__ = ("DiscordHTTPError", "FakeRest", "read_body")

_log = logging.getLogger(__name__)

API = "/api/v10"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class DiscordHTTPError(Exception):
    """Raised by handlers; rendered as Discord's JSON error body."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _json(data: Any, status: int = 200) -> web.Response:
    # Exactly "application/json", as Discord sends it (discord.py's json_or_text compares verbatim).
    body = json.dumps(data, separators=(",", ":")).encode()
    return web.Response(body=body, status=status, headers={"Content-Type": "application/json"})


def _id(request: web.Request, key: str) -> int:
    try:
        return int(request.match_info[key])
    except ValueError:
        raise DiscordHTTPError(400, 50035, "Invalid Form Body") from None


async def read_body(request: web.Request) -> tuple[Any, list[FakeFile]]:
    """Read a JSON or multipart body; return ``(payload, files)``."""
    if request.content_type == "multipart/form-data":
        payload: Any = None
        files: list[FakeFile] = []
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):  # a nested multipart: Discord's uploads have none
                continue
            name = part.name or ""
            data = bytes(await part.read(decode=False))
            if name == "payload_json":
                payload = json.loads(data)
            elif name.startswith("files["):
                files.append(FakeFile(part.filename or name, data, part.headers.get("Content-Type")))
        return payload, files
    if not request.can_read_body:
        return None, []
    text = await request.text()
    return (json.loads(text) if text else None), []


class FakeRest:
    """Registers the REST routes of a :class:`FakeDiscord` on an aiohttp application."""

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake

    # -- wiring ------------------------------------------------------------------------------------

    def install(self, app: web.Application) -> None:
        """Add the middleware and every route to ``app``."""
        app.middlewares.append(self._middleware)
        r = app.router
        r.add_get(f"{API}/gateway", self.get_gateway)
        r.add_get(f"{API}/gateway/bot", self.get_gateway_bot)
        r.add_get(f"{API}/users/@me", self.get_me)
        r.add_get(f"{API}/users/{{user_id}}", self.get_user)
        r.add_get(f"{API}/applications/@me", self.get_application)
        r.add_get(f"{API}/oauth2/applications/@me", self.get_application)
        for prefix in (f"{API}/applications/{{app_id}}", f"{API}/applications/{{app_id}}/guilds/{{guild_id}}"):
            r.add_get(f"{prefix}/commands", self.get_commands)
            r.add_put(f"{prefix}/commands", self.put_commands)
            r.add_post(f"{prefix}/commands", self.post_command)
        guild_commands = f"{API}/applications/{{app_id}}/guilds/{{guild_id}}/commands"
        r.add_get(f"{guild_commands}/permissions", self.get_guild_command_permissions)
        r.add_get(f"{guild_commands}/{{command_id}}/permissions", self.get_command_permissions)
        r.add_get(f"{API}/guilds/{{guild_id}}", self.get_guild)
        r.add_get(f"{API}/guilds/{{guild_id}}/channels", self.get_guild_channels)
        r.add_get(f"{API}/guilds/{{guild_id}}/roles", self.get_roles)
        r.add_get(f"{API}/guilds/{{guild_id}}/members", self.get_members)
        r.add_get(f"{API}/guilds/{{guild_id}}/members/{{user_id}}", self.get_member)
        r.add_patch(f"{API}/guilds/{{guild_id}}/voice-states/@me", self.patch_my_voice_state)
        r.add_get(f"{API}/channels/{{channel_id}}", self.get_channel)
        r.add_post(f"{API}/channels/{{channel_id}}/typing", self.post_typing)
        r.add_get(f"{API}/channels/{{channel_id}}/messages", self.get_messages)
        r.add_post(f"{API}/channels/{{channel_id}}/messages", self.post_message)
        r.add_get(f"{API}/channels/{{channel_id}}/messages/{{message_id}}", self.get_message)
        r.add_patch(f"{API}/channels/{{channel_id}}/messages/{{message_id}}", self.patch_message)
        r.add_delete(f"{API}/channels/{{channel_id}}/messages/{{message_id}}", self.delete_message)
        r.add_post(f"{API}/interactions/{{interaction_id}}/{{token}}/callback", self.post_callback)
        r.add_post(f"{API}/webhooks/{{app_id}}/{{token}}", self.post_followup)
        hook = f"{API}/webhooks/{{app_id}}/{{token}}/messages/{{message_id}}"
        r.add_get(hook, self.get_webhook_message)
        r.add_patch(hook, self.patch_webhook_message)
        r.add_delete(hook, self.delete_webhook_message)
        r.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self.get_attachment)
        r.add_route("*", "/{tail:.*}", self.unknown_route)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        fake = self.fake
        path = request.path
        if path.startswith(API):
            fake.requests.append((request.method, path))
            # Interaction and webhook routes authenticate with their token in the path, and "Get Gateway"
            # takes no authentication at all (https://discord.com/developers/docs/events/gateway#get-gateway).
            open_route = path == f"{API}/gateway" or path.startswith((f"{API}/interactions/", f"{API}/webhooks/"))
            if not open_route and request.headers.get("Authorization") != f"Bot {fake.token}":
                return _json({"message": "401: Unauthorized", "code": 0}, 401)
        try:
            return await handler(request)
        except DiscordHTTPError as exc:
            return _json({"message": exc.message, "code": exc.code}, exc.status)
        except web.HTTPMethodNotAllowed:
            return _json({"message": "405: Method Not Allowed", "code": 0}, 405)

    async def unknown_route(self, request: web.Request) -> web.Response:
        """Any route the fake does not implement: Discord's 404, logged and recorded."""
        self.fake.unknown_routes.append((request.method, request.path))
        _log.warning("FakeDiscord: unknown route %s %s", request.method, request.path)
        return _json({"message": "404: Not Found", "code": 0}, 404)

    # -- lookups -------------------------------------------------------------------------------------

    def _guild(self, request: web.Request) -> Any:
        guild = self.fake.guilds.get(_id(request, "guild_id"))
        if guild is None:
            raise DiscordHTTPError(404, 10004, "Unknown Guild")
        return guild

    def _channel(self, request: web.Request) -> Any:
        found = self.fake.find_channel(_id(request, "channel_id"))
        if found is None:
            raise DiscordHTTPError(404, 10003, "Unknown Channel")
        return found

    def _message(self, request: web.Request) -> FakeMessage:
        message = self.fake.messages.get(_id(request, "message_id"))
        if message is None or message.deleted or message.channel_id != _id(request, "channel_id"):
            raise DiscordHTTPError(404, 10008, "Unknown Message")
        return message

    def _interaction(self, request: web.Request) -> FakeInteraction:
        interaction = self.fake.interactions_by_token.get(request.match_info["token"])
        if interaction is None:
            raise DiscordHTTPError(404, 10015, "Unknown Webhook")
        return interaction

    # -- gateway, users, application ---------------------------------------------------------------

    async def get_gateway(self, request: web.Request) -> web.Response:
        """``GET /gateway``."""
        return _json({"url": self.fake.gateway_url})

    async def get_gateway_bot(self, request: web.Request) -> web.Response:
        """``GET /gateway/bot``: the fake gateway URL, the recommended shards and the session start limit."""
        fake = self.fake
        remaining = max(0, 1000 - fake.gateway.identify_count)
        return _json(
            {
                "url": fake.gateway_url,
                "shards": fake.recommended_shards,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": remaining,
                    "reset_after": 86_400_000,
                    "max_concurrency": 1,
                },
            }
        )

    async def get_me(self, request: web.Request) -> web.Response:
        """``GET /users/@me``."""
        return _json({**self.fake.bot_user.to_payload(), "verified": True, "mfa_enabled": False})

    async def get_user(self, request: web.Request) -> web.Response:
        """``GET /users/{id}``."""
        user = self.fake.users.get(_id(request, "user_id"))
        if user is None:
            raise DiscordHTTPError(404, 10013, "Unknown User")
        return _json(user.to_payload())

    async def get_application(self, request: web.Request) -> web.Response:
        """``GET /oauth2/applications/@me`` (what ``Client.application_info`` calls) and ``/applications/@me``."""
        fake = self.fake
        owner = (fake.users.get(fake.owner_id) if fake.owner_id is not None else None) or fake.bot_user
        return _json(
            {
                "id": str(fake.application_id),
                "name": fake.bot_user.username,
                "icon": None,
                "description": "",
                "summary": "",
                "type": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": owner.to_payload(),
                "team": None,
                "verify_key": "0" * 64,
                "flags": fake.application_flags,
                "bot": fake.bot_user.to_payload(),
                "interactions_endpoint_url": None,
                "approximate_guild_count": len(fake.guilds),
                "approximate_user_install_count": 0,
                "install_params": None,
                "integration_types_config": {"0": {}},
                "tags": [],
                "redirect_uris": [],
            }
        )

    # -- application commands ------------------------------------------------------------------------

    def _command_key(self, request: web.Request) -> int | None:
        if int(request.match_info["app_id"]) != self.fake.application_id:
            raise DiscordHTTPError(403, 50001, "Missing Access")
        return _id(request, "guild_id") if "guild_id" in request.match_info else None

    async def get_commands(self, request: web.Request) -> web.Response:
        """``GET /applications/{app}/commands`` and the guild variant."""
        return _json(self.fake._commands_for(self._command_key(request)))

    async def put_commands(self, request: web.Request) -> web.Response:
        """``PUT .../commands``: bulk overwrite (what ``CommandTree.sync`` calls); recorded."""
        key = self._command_key(request)
        body, _ = await read_body(request)
        if not isinstance(body, list):
            raise DiscordHTTPError(400, 50035, "Invalid Form Body")
        return _json(self.fake._store_commands(key, body, replace=True))

    async def post_command(self, request: web.Request) -> web.Response:
        """``POST .../commands``: create or update one command."""
        key = self._command_key(request)
        body, _ = await read_body(request)
        return _json(self.fake._store_commands(key, [body], replace=False)[0], 201)

    def _command_permissions(self, request: web.Request) -> list[dict[str, Any]]:
        self._command_key(request)
        return self.fake.guild_command_permissions(self._guild(request).id)

    async def get_guild_command_permissions(self, request: web.Request) -> web.Response:
        """``GET .../guilds/{guild}/commands/permissions``: the guild's application command permissions."""
        return _json(self._command_permissions(request))

    async def get_command_permissions(self, request: web.Request) -> web.Response:
        """``GET .../guilds/{guild}/commands/{command}/permissions``; 404 (10066) when the guild set none."""
        command_id = _id(request, "command_id")
        found = [p for p in self._command_permissions(request) if int(p["id"]) == command_id]
        if not found:
            raise DiscordHTTPError(404, 10066, "Unknown application command permissions")
        return _json(found[0])

    # -- guilds --------------------------------------------------------------------------------------

    async def get_guild(self, request: web.Request) -> web.Response:
        """``GET /guilds/{id}``."""
        guild = self._guild(request)
        data = guild.to_rest_payload()
        if request.query.get("with_counts") in ("true", "1"):
            data.update(approximate_member_count=len(guild.members), approximate_presence_count=0)
        return _json(data)

    async def get_guild_channels(self, request: web.Request) -> web.Response:
        """``GET /guilds/{id}/channels``."""
        return _json([c.to_payload() for c in self._guild(request).channels.values()])

    async def get_roles(self, request: web.Request) -> web.Response:
        """``GET /guilds/{id}/roles``."""
        return _json([r.to_payload() for r in self._guild(request).roles.values()])

    async def get_members(self, request: web.Request) -> web.Response:
        """``GET /guilds/{id}/members`` (paginated with ``limit`` / ``after``)."""
        guild = self._guild(request)
        after = int(request.query.get("after", 0))
        limit = int(request.query.get("limit", 1))
        members = sorted((m for m in guild.members.values() if m.id > after), key=lambda m: m.id)
        return _json([m.to_payload() for m in members[:limit]])

    async def get_member(self, request: web.Request) -> web.Response:
        """``GET /guilds/{id}/members/{user_id}``."""
        member = self._guild(request).members.get(_id(request, "user_id"))
        if member is None:
            raise DiscordHTTPError(404, 10007, "Unknown Member")
        return _json(member.to_payload())

    async def patch_my_voice_state(self, request: web.Request) -> web.Response:
        """``PATCH /guilds/{id}/voice-states/@me``: the bot (un)suppresses itself or requests to speak."""
        guild = self._guild(request)
        body, _ = await read_body(request)
        await self.fake._update_bot_stage_state(guild, body or {})
        return web.Response(status=204)

    # -- channels and messages -------------------------------------------------------------------------

    async def get_channel(self, request: web.Request) -> web.Response:
        """``GET /channels/{id}``."""
        _, channel = self._channel(request)
        return _json(channel.to_payload())

    async def post_typing(self, request: web.Request) -> web.Response:
        """``POST /channels/{id}/typing``."""
        self._channel(request)
        return web.Response(status=204)

    def _check_send(self, guild: Any, channel_id: int) -> None:
        perms = guild.channel_permissions(self.fake.bot_user.id, channel_id)
        if not perms & Permissions.VIEW_CHANNEL:
            raise DiscordHTTPError(403, 50001, "Missing Access")
        if not perms & Permissions.SEND_MESSAGES:
            raise DiscordHTTPError(403, 50013, "Missing Permissions")

    async def get_messages(self, request: web.Request) -> web.Response:
        """``GET /channels/{id}/messages`` (newest first, ``limit``)."""
        _, channel = self._channel(request)
        limit = int(request.query.get("limit", 50))
        found = [m for m in self.fake.channel_messages(channel.id)][::-1][:limit]
        return _json([m.to_payload(self.fake.base_url) for m in found])

    async def post_message(self, request: web.Request) -> web.Response:
        """``POST /channels/{id}/messages``."""
        guild, channel = self._channel(request)
        self._check_send(guild, channel.id)
        body, files = await read_body(request)
        message = self.fake._new_message(channel.id, guild.id, body or {}, files)
        await self.fake._announce_message(message)
        return _json(message.to_payload(self.fake.base_url))

    async def get_message(self, request: web.Request) -> web.Response:
        """``GET /channels/{id}/messages/{id}``."""
        self._channel(request)
        return _json(self._message(request).to_payload(self.fake.base_url))

    async def patch_message(self, request: web.Request) -> web.Response:
        """``PATCH /channels/{id}/messages/{id}``."""
        self._channel(request)
        message = self._message(request)
        body, files = await read_body(request)
        await self.fake._edit_message(message, body or {}, files)
        return _json(message.to_payload(self.fake.base_url))

    async def delete_message(self, request: web.Request) -> web.Response:
        """``DELETE /channels/{id}/messages/{id}``."""
        self._channel(request)
        await self.fake._delete_message(self._message(request))
        return web.Response(status=204)

    # -- interactions and webhooks ---------------------------------------------------------------------

    async def post_callback(self, request: web.Request) -> web.Response:
        """``POST /interactions/{id}/{token}/callback``: the bot's initial response, recorded."""
        fake = self.fake
        interaction = fake.interactions_by_token.get(request.match_info["token"])
        if interaction is None or interaction.id != _id(request, "interaction_id"):
            raise DiscordHTTPError(404, 10062, "Unknown interaction")
        if interaction.acknowledged:
            raise DiscordHTTPError(400, 40060, "Interaction has already been acknowledged.")
        if fake.clock() - interaction.created_at > fake.interaction_response_timeout:
            raise DiscordHTTPError(404, 10062, "Unknown interaction")
        body, files = await read_body(request)
        if not isinstance(body, dict) or "type" not in body:
            raise DiscordHTTPError(400, 50035, "Invalid Form Body")
        callback = InteractionCallback(int(body["type"]), dict(body.get("data") or {}), files)
        message = await fake._apply_callback(interaction, callback)
        await interaction.notify()
        if request.query.get("with_response") not in ("1", "true", "True"):
            return web.Response(status=204)
        info: dict[str, Any] = {"id": str(interaction.id), "type": interaction.type}
        resource: dict[str, Any] = {"type": callback.type}
        if message is not None:
            info.update(
                response_message_id=str(message.id),
                response_message_loading=bool(message.flags & LOADING),
                response_message_ephemeral=message.ephemeral,
            )
            resource["message"] = message.to_payload(fake.base_url)
        return _json({"interaction": info, "resource": resource})

    async def post_followup(self, request: web.Request) -> web.Response:
        """``POST /webhooks/{app_id}/{token}``: a follow-up (after a defer, the first one fills the original)."""
        interaction = self._interaction(request)
        if not interaction.acknowledged:
            raise DiscordHTTPError(404, 10015, "Unknown Webhook")
        body, files = await read_body(request)
        message = await self.fake._followup(interaction, body or {}, files)
        await interaction.notify()
        if request.query.get("wait") in ("1", "true", "True"):
            return _json(message.to_payload(self.fake.base_url))
        return web.Response(status=204)

    def _webhook_message(self, request: web.Request, interaction: FakeInteraction) -> FakeMessage:
        key = request.match_info["message_id"]
        if key == "@original":
            message = interaction.original
        else:
            message = next((m for m in interaction.followups if str(m.id) == key), None)
            if message is None and interaction.original is not None and str(interaction.original.id) == key:
                message = interaction.original
        if message is None or message.deleted:
            raise DiscordHTTPError(404, 10008, "Unknown Message")
        return message

    async def get_webhook_message(self, request: web.Request) -> web.Response:
        """``GET /webhooks/{app_id}/{token}/messages/{id|@original}``."""
        interaction = self._interaction(request)
        return _json(self._webhook_message(request, interaction).to_payload(self.fake.base_url))

    async def patch_webhook_message(self, request: web.Request) -> web.Response:
        """``PATCH /webhooks/{app_id}/{token}/messages/{id|@original}``: an edit, recorded."""
        interaction = self._interaction(request)
        message = self._webhook_message(request, interaction)
        body, files = await read_body(request)
        await self.fake._edit_message(message, body or {}, files)
        await interaction.notify()
        return _json(message.to_payload(self.fake.base_url))

    async def delete_webhook_message(self, request: web.Request) -> web.Response:
        """``DELETE /webhooks/{app_id}/{token}/messages/{id|@original}``."""
        interaction = self._interaction(request)
        await self.fake._delete_message(self._webhook_message(request, interaction))
        await interaction.notify()
        return web.Response(status=204)

    async def get_attachment(self, request: web.Request) -> web.Response:
        """Serve hosted or uploaded attachment bytes (the URL in attachment objects)."""
        file = self.fake.attachments.get(_id(request, "attachment_id"))
        if file is None or file.filename != request.match_info["filename"]:
            return web.Response(status=404, text="Not Found")
        content_type = file.content_type or "application/octet-stream"
        return web.Response(body=file.data, headers={"Content-Type": content_type})
