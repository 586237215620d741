"""``sonora_cog.testing`` as a public package: its names, and an import that stays cheap."""

from __future__ import annotations

import subprocess
import sys

import pytest

import sonora_cog.testing as kit
from sonora_cog.testing.botproc import BotProcess
from sonora_cog.testing.discord_client import point_discord_at, point_discord_back
from sonora_cog.testing.fake_discord import CommandNotAvailable, FakeDiscord
from sonora_cog.testing.fake_discord_models import Permissions
from sonora_cog.testing.fake_lavalink import FakeLavalink
from sonora_cog.testing.redis_server import RedisServer


def test_every_public_name_is_the_module_s_own() -> None:
    from sonora_cog.testing import PYTEST_PLUGIN

    assert (kit.FakeDiscord, kit.FakeLavalink, kit.BotProcess, kit.Permissions, kit.RedisServer) == (
        FakeDiscord,
        FakeLavalink,
        BotProcess,
        Permissions,
        RedisServer,
    )
    assert (kit.point_discord_at, kit.point_discord_back) == (point_discord_at, point_discord_back)
    assert kit.CommandNotAvailable is CommandNotAvailable
    from sonora_cog.testing.inprocess import running

    assert kit.running is running
    from sonora_cog.testing import pytest_plugin
    from sonora_cog.testing.fake_discord_guild import FakeGuild
    from sonora_cog.testing.fake_discord_interactions import FakeInteraction
    from sonora_cog.testing.fake_discord_models import FakeChannel, FakeMember, FakeRole

    assert (kit.World, kit.BotProcessFactory) == (pytest_plugin.World, pytest_plugin.BotProcessFactory)
    assert (kit.FakeGuild, kit.FakeChannel, kit.FakeMember, kit.FakeRole, kit.FakeInteraction) == (
        FakeGuild,
        FakeChannel,
        FakeMember,
        FakeRole,
        FakeInteraction,
    )
    assert Permissions.MANAGE_GUILD == 1 << 5
    assert __import__(PYTEST_PLUGIN, fromlist=["fake_discord"]).fake_discord is not None
    assert sorted(kit.__all__) == dir(kit)
    with pytest.raises(AttributeError, match="no attribute 'FakeSpotify'"):
        kit.FakeSpotify  # noqa: B018


def test_importing_the_package_imports_nothing_more_than_sonora_cog_does() -> None:
    """No fake, no web server, no track codec until a name is used: only the package itself."""
    probe = (
        "import sys, sonora_cog\n"
        "before = set(sys.modules)\n"
        "import sonora_cog.testing\n"
        "print(sorted(set(sys.modules) - before))\n"
        "sonora_cog.testing.FakeDiscord\n"
        "print('sonora_cog.testing.fake_discord' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split("\n")[:2] == ["['sonora_cog.testing']", "True"], out.stdout + out.stderr
