"""A bot author's annotated test type-checks under ``mypy --strict`` against the installed package
(``py.typed``): the testing kit's fixtures and objects have types a user can name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
USER_TEST = """
from pathlib import Path

import wavelink

from sonora_cog import SessionManager, SessionState, SonoraCog, SonoraPlayer, load_settings
from sonora_cog.testing import (
    BotProcess, BotProcessFactory, CommandNotAvailable, FakeChannel, FakeGuild, FakeInteraction, FakeLavalink,
    FakeMember, FakeRole, Permissions, World,
)


async def saved(store: Path, guild_id: int) -> SessionState | None:
    manager = SessionManager(load_settings(env={"SONORA_STORAGE_PATH": str(store)}))
    try:
        return await manager.read_live(guild_id, quarantine=False)
    finally:
        await manager.close()


async def test_typed(discord_world: World, fake_lavalink: FakeLavalink, bot_process: BotProcessFactory) -> None:
    guild: FakeGuild = discord_world.guild
    voice: FakeChannel = discord_world.voice
    dj: FakeRole = guild.add_role("DJ", Permissions.MANAGE_GUILD)
    member: FakeMember = guild.add_member(name="bob", roles=[dj])
    bot: BotProcess = bot_process(Path("my_bot.py"), env=discord_world.env)
    await bot.start()
    await discord_world.fake.member_join_voice(guild.id, member.user.id, voice.id)
    try:
        interaction: FakeInteraction = await discord_world.fake.send_slash_command(guild.id, member.user.id, "play")
    except CommandNotAvailable as refused:
        print(refused)
        return
    content: str | None = (await interaction.wait_response()).content
    state = await saved(Path("store"), guild.id)
    if state is not None and state.queue.current is not None:
        title: str = state.queue.current.title
        print(content, title, state.player.paused, len(state.queue.upcoming))
    player = fake_lavalink.player(guild.id)
    print(player.paused if player is not None else None, SonoraCog.__name__, SonoraPlayer, wavelink.Player)
"""


def test_a_user_s_annotated_test_passes_mypy_strict(tmp_path: Path) -> None:
    pytest.importorskip("mypy", reason="mypy is in the test extra")
    (tmp_path / "test_typed.py").write_text(USER_TEST, encoding="utf-8")
    # The checkout's sonora_cog (an editable install hides it from mypy), its own errors not reported:
    # what a user's mypy sees of an installed, typed package (tests/packaging/test_wheel.py checks py.typed).
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYPY")} | {"MYPYPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--follow-imports=silent", "test_typed.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
