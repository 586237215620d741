"""Point the real discord.py at a :class:`~sonora_cog.testing.fake_discord.FakeDiscord` — and back.

:func:`point_discord_at` changes exactly two class attributes and nothing else:

``discord.http.Route.BASE``
    The REST base URL. Every REST call of discord.py builds its URL from it, including the
    interaction callback and webhook follow-up routes (``discord/webhook/async_.py`` imports the same
    ``Route``). Attachment downloads use the absolute URL inside the attachment object, which the fake
    already points at itself.

``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY``
    A plain :class:`discord.Client` / :class:`~discord.ext.commands.Bot` never asks ``GET /gateway/bot``:
    ``Client.connect`` opens ``DEFAULT_GATEWAY`` directly (discord.py 2.7 ``client.py`` /
    ``gateway.py``). Afterwards it follows the ``resume_gateway_url`` of READY (which the fake sets to
    itself) and falls back to ``DEFAULT_GATEWAY`` after an INVALID_SESSION. ``AutoShardedClient``
    reads ``/gateway/bot``, which the fake answers with its own URL, so it needs nothing more.

Nothing else is patched: the client speaks plain ``ws://`` and ``http://`` to loopback, with the query
(``v=10&encoding=json&compress=zstd-stream`` or ``zlib-stream``) it builds itself, and the fake speaks
the protocol back. Voice needs no patch either: wavelink's ``Player`` receives VOICE_STATE_UPDATE and
VOICE_SERVER_UPDATE through discord.py's ``VoiceProtocol`` hooks and hands them to Lavalink; discord.py's
own voice client is never used.

Call it before ``bot.login`` / ``bot.start`` (in a bot subprocess: from ``FAKE_DISCORD_URL``).

.. versionadded:: 0.1
"""

from __future__ import annotations

import logging
from typing import Protocol

import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

__all__ = ("DiscordTarget", "point_discord_at", "point_discord_back", "urls_for")

_log = logging.getLogger(__name__)

_ORIGINAL_BASE: str = Route.BASE
_ORIGINAL_GATEWAY: yarl.URL = DiscordWebSocket.DEFAULT_GATEWAY


class DiscordTarget(Protocol):
    """Anything with the fake's ``base_url`` (a running :class:`FakeDiscord`)."""

    @property
    def base_url(self) -> str: ...


def urls_for(target: DiscordTarget | str) -> tuple[str, str]:
    """Return ``(rest_base, gateway_url)`` for a fake or its base URL (``http://127.0.0.1:port``)."""
    base = target if isinstance(target, str) else target.base_url
    base = base.rstrip("/")
    if base.endswith("/api/v10"):
        base = base[: -len("/api/v10")]
    url = yarl.URL(base)
    if url.scheme not in ("http", "https"):
        raise ValueError(f"expected an http(s) base URL, got {base!r}")
    ws_scheme = "wss" if url.scheme == "https" else "ws"
    return f"{base}/api/v10", str(url.with_scheme(ws_scheme).with_path("/gateway"))


def point_discord_at(target: DiscordTarget | str) -> None:
    """Make discord.py talk to the fake: set ``Route.BASE`` and ``DiscordWebSocket.DEFAULT_GATEWAY``.

    Parameters
    ----------
    target:
        A started :class:`~sonora_cog.testing.fake_discord.FakeDiscord`, or its ``base_url`` string
        (what a bot subprocess gets in ``FAKE_DISCORD_URL``).
    """
    rest, gateway = urls_for(target)
    Route.BASE = rest
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway)
    _log.info("discord.py now talks to %s (gateway %s)", rest, gateway)


def point_discord_back() -> None:
    """Undo :func:`point_discord_at`: restore Discord's real REST base and gateway URL."""
    Route.BASE = _ORIGINAL_BASE
    DiscordWebSocket.DEFAULT_GATEWAY = _ORIGINAL_GATEWAY
