"""Offline test kit for a discord.py + wavelink bot with sonora_cog: protocol fakes on loopback, helpers.

Every name is imported on first use, so ``import sonora_cog.testing`` costs nothing beyond ``import
sonora_cog`` (no fake, no web server, no track codec until a name is used)::

    from sonora_cog.testing import FakeDiscord, FakeLavalink, point_discord_at

=======================  ===========================================================================
``FakeDiscord``          a Discord gateway + REST server (guilds, voice, interactions) on loopback
``FakeLavalink``         a Lavalink v4 server (REST + WebSocket, real encoded tracks) on loopback
``point_discord_at``     points discord.py at a ``FakeDiscord`` or its URL, before ``bot.start``
                         (``point_discord_back`` undoes it); a bot subprocess calls it with the URL it
                         is given (``testing/music_bot.py`` reads ``FAKE_DISCORD_URL``)
``BotProcess``           runs a bot script in a subprocess that a test can SIGKILL and start again
``running``              ``async with running(bot, token):`` a discord.py bot in the test's own process,
                         started, ready, and closed after the block
``Permissions``          Discord permission bits, to build roles (``Permissions.MANAGE_GUILD``...)
``CommandNotAvailable``  raised by ``FakeDiscord`` for a command Discord would not deliver to that member
                         (``default_member_permissions``, DM rules)
``RedisServer``          a private ``redis-server`` on a free loopback port
``PYTEST_PLUGIN``        the pytest plugin's module name: ``pytest_plugins = [PYTEST_PLUGIN]`` gives
                         the fixtures ``fake_discord``, ``discord_world``, ``fake_lavalink``,
                         ``bot_process``...
``World``, ``BotProcessFactory``
                         the types of the ``discord_world`` and ``bot_process`` fixtures
``FakeGuild``, ``FakeChannel``, ``FakeMember``, ``FakeRole``, ``FakeInteraction``
                         the fake world's objects, for annotations
=======================  ===========================================================================

.. versionadded:: 0.5
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .botproc import BotProcess
    from .discord_client import point_discord_at, point_discord_back
    from .fake_discord import CommandNotAvailable, FakeDiscord
    from .fake_discord_guild import FakeGuild
    from .fake_discord_interactions import FakeInteraction
    from .fake_discord_models import FakeChannel, FakeMember, FakeRole, Permissions
    from .fake_lavalink import FakeLavalink
    from .inprocess import running
    from .pytest_plugin import BotProcessFactory, World
    from .redis_server import RedisServer

__all__ = (
    "PYTEST_PLUGIN",
    "BotProcess",
    "BotProcessFactory",
    "CommandNotAvailable",
    "FakeChannel",
    "FakeDiscord",
    "FakeGuild",
    "FakeInteraction",
    "FakeLavalink",
    "FakeMember",
    "FakeRole",
    "Permissions",
    "RedisServer",
    "World",
    "point_discord_at",
    "point_discord_back",
    "running",
)

#: The module to name in ``pytest_plugins`` for the fakes' fixtures.
PYTEST_PLUGIN = "sonora_cog.testing.pytest_plugin"

#: Where each public name lives (imported when it is first used).
_HOMES = {
    "BotProcess": ".botproc",
    "BotProcessFactory": ".pytest_plugin",
    "CommandNotAvailable": ".fake_discord",
    "FakeChannel": ".fake_discord_models",
    "FakeDiscord": ".fake_discord",
    "FakeGuild": ".fake_discord_guild",
    "FakeInteraction": ".fake_discord_interactions",
    "FakeLavalink": ".fake_lavalink",
    "FakeMember": ".fake_discord_models",
    "FakeRole": ".fake_discord_models",
    "Permissions": ".fake_discord_models",
    "World": ".pytest_plugin",
    "RedisServer": ".redis_server",
    "point_discord_at": ".discord_client",
    "point_discord_back": ".discord_client",
    "running": ".inprocess",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value  # the next lookup does not come here
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
