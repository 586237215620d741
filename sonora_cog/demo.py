"""``python -m sonora_cog demo``: a real bot process with the cog, killed mid-track and brought back.

It starts :class:`~sonora_cog.testing.fake_discord.FakeDiscord` and
:class:`~sonora_cog.testing.fake_lavalink.FakeLavalink` on loopback, runs
:mod:`sonora_cog.testing.music_bot` as a subprocess, and in each guild: a listener joins voice, then
``/play`` (a track and a queue), ``/volume``, ``/filter`` and ``/loop``. Then the bot is SIGKILLed
mid-track twice, and a before/after table per guild is printed each time:

1. only the bot dies: the new process resumes its Lavalink session, whose players played on, and
   adopts them (nothing re-buffers; the queue, loop mode and the rest come from the live records);
2. the bot and Lavalink die together: every player is rebuilt from its live record on disk.

Exit 0 only if every guild came back both times: same channel, same track at the right position
(played on, or the recorded one), same queue, volume, filters and loop.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .capture import active_filter_names
from .config import Settings, StorageSettings
from .manager import SessionManager

__all__ = ("DemoScenario", "GuildView", "run_demo")

_console = Console(highlight=False, width=150)

#: What each demo guild does: (search, extra tracks to queue, volume, filter preset, loop mode).
PLANS: Sequence[tuple[str, Sequence[str], int, str, str]] = (
    ("clair de lune", ("boléro", "canon in d"), 65, "nightcore", "queue"),
    ("midnight drive", ("paper boats", "glass houses", "late train home"), 40, "bassboost", "track"),
    ("für elise", ("moonlight sonata",), 120, "karaoke", "off"),
    ("static & sunshine", ("run the numbers",), 80, "vaporwave", "queue"),
)
#: How far the restored position may sit from the position at the kill (rewind + checkpoint lag).
POSITION_TOLERANCE_MS = 6_000


@dataclass(slots=True)
class GuildView:
    """One guild's playback as the servers and the store see it."""

    guild: str
    channel: str | None
    track: str | None
    position: int | None
    queue: int | None
    volume: int | None
    filters: str
    loop: str | None

    def same_as(self, other: GuildView, played_ms: int = 0) -> list[str]:
        """Differences between two views that matter for recovery: ``other``'s position must be within
        the tolerance of this one's plus ``played_ms`` (how long the track played on in between)."""
        diffs = [
            name
            for name in ("channel", "track", "queue", "volume", "filters", "loop")
            if getattr(self, name) != getattr(other, name)
        ]
        if self.position is None or other.position is None:
            diffs += ["position"] if self.position != other.position else []
        elif abs(other.position - (self.position + played_ms)) > POSITION_TOLERANCE_MS:
            diffs.append("position")
        return diffs


class DemoScenario:
    """Fakes + bot subprocess + world; the steps of the demo, reusable from tests."""

    def __init__(
        self,
        workdir: Path,
        guilds: int = 3,
        *,
        checkpoint_interval: float = 1.0,
        extra_config: str = "",
        player_update_interval: float = 1.0,
        session_timeout: float = 60.0,
        shards: int = 0,
        explicit_shard_ids: bool = False,
    ) -> None:
        """``shards``: run the bot as an ``AutoShardedBot`` with that many shards (no explicit ids, unless
        ``explicit_shard_ids``: then ``shard_ids=[0, ..., shards - 1]``), guild ``i`` on shard ``i % shards``.
        ``session_timeout``: how long FakeDiscord keeps a dead process's gateway session (and its voice
        states). ``player_update_interval``: FakeLavalink's ``playerUpdate``."""
        from .testing.fake_discord import FakeDiscord
        from .testing.fake_lavalink import FakeLavalink

        self.workdir = workdir
        self.store_path = workdir / "store"
        self.config_path = workdir / "sonora.toml"
        self.guild_count = guilds
        self.extra_config = extra_config
        self.shards = shards
        self.explicit_shard_ids = explicit_shard_ids
        self.discord = FakeDiscord(session_timeout=session_timeout)
        self.lavalink = FakeLavalink(player_update_interval=player_update_interval)
        self.checkpoint_interval = checkpoint_interval
        self.world: list[tuple[Any, Any, Any, Any]] = []
        self.bot: Any = None

    async def __aenter__(self) -> DemoScenario:
        from . import testing
        from .testing.botproc import BotProcess

        await self.discord.start()
        await self.lavalink.start()
        self.lavalink.seed_demo_catalogue()
        for i in range(self.guild_count):
            guild_id = None
            if self.shards:  # a snowflake whose shard ((id >> 22) % shards) is i % shards
                guild_id = ((1_000_000 + i) << 22) + 4242 + i
            guild = self.discord.add_guild(f"Demo Guild {i + 1}", guild_id=guild_id)
            text = guild.add_text_channel("music-requests")
            voice = guild.add_voice_channel(f"Lounge {i + 1}")
            user = guild.add_member(name=f"listener{i + 1}")
            self.world.append((guild, text, voice, user))
        self.config_path.write_text(
            f'[storage]\npath = "{self.store_path}"\n'
            f"[snapshots]\ndebounce = 0.2\ncheckpoint_interval = {self.checkpoint_interval}\n"
            "[restore]\nrewind_seconds = 1.0\n" + self.extra_config
        )
        env = {
            "FAKE_DISCORD_URL": self.discord.base_url,
            "DISCORD_TOKEN": self.discord.token,
            "LAVALINK_URI": self.lavalink.uri,
            "LAVALINK_PASSWORD": self.lavalink.password,
            "SONORA_CONFIG": str(self.config_path),
        }
        if self.shards:
            env |= {"AUTO_SHARDED": "1", "SHARD_COUNT": str(self.shards)}
            if self.explicit_shard_ids:
                env["SHARD_IDS"] = ",".join(str(i) for i in range(self.shards))
        script = Path(testing.__path__[0]) / "music_bot.py"
        self.bot = BotProcess(script, env=env, log_file=self.workdir / "bot.log", name="demo-bot")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.bot is not None and self.bot.running:
            self.bot.kill()
            await self.bot.wait()
        await self.lavalink.close()
        await self.discord.stop()

    async def start_bot(self) -> None:
        """Start the bot process and wait until it is ready (and, after a restart, has restored)."""
        await self.bot.start()
        await self.bot.wait_for_line(r"SONORA ready", timeout=30)

    async def wait_restored(self, count: int, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Wait until the bot logged ``count`` restored guilds since its last start."""
        await self.bot.wait_for_line(r"startup restore finished", timeout=timeout)
        restored = [line for line in self.bot.lines_since_start() if "SONORA restored" in line]
        if len(restored) < count:
            raise RuntimeError(f"only {len(restored)} of {count} guilds were restored:\n{self.bot.tail()}")

    async def command(self, index: int, name: str, **options: Any) -> str:
        """Run a slash command as guild ``index``'s listener; return the bot's answer text."""
        guild, text, _voice, user = self.world[index]
        interaction = await self.discord.send_slash_command(
            guild.id, user.id, name, options=options, channel_id=text.id
        )
        response = await interaction.wait_response(15)
        if response.content:
            return response.content
        message = await interaction.wait_followup(0, 15)
        return message.content or ""

    async def play_everywhere(self) -> None:
        """Each guild: join voice, play, queue, volume, filter, loop."""
        for index in range(self.guild_count):
            guild, _text, voice, user = self.world[index]
            first, more, volume, preset, loop = PLANS[index % len(PLANS)]
            await self.discord.member_join_voice(guild.id, user.id, voice.id)
            await self.command(index, "play", query=first)
            for query in more:
                await self.command(index, "play", query=query)
            await self.command(index, "volume", value=volume)
            await self.command(index, "filter", preset=preset)
            await self.command(index, "loop", mode=loop)

    async def play_one(self, index: int, query: str = "clair de lune") -> None:
        """Guild ``index``: the listener joins voice and plays one track."""
        guild, _text, voice, user = self.world[index]
        await self.discord.member_join_voice(guild.id, user.id, voice.id)
        await self.command(index, "play", query=query)

    async def views(self) -> list[GuildView]:
        """Each guild as FakeDiscord (channel), FakeLavalink (track, position, volume, filters) and the
        live record (queue length, loop mode) see it now."""
        manager = SessionManager(Settings(storage=StorageSettings(path=str(self.store_path))))
        views = []
        try:
            for guild, _text, voice, _user in self.world:
                player = self.lavalink.player(guild.id)
                channel_id = self.discord.bot_voice_channel(guild.id)
                live = await manager.read_live(guild.id)
                track = player.track if player is not None else None
                views.append(
                    GuildView(
                        guild=guild.name,
                        channel=voice.name if channel_id == voice.id else (str(channel_id) if channel_id else None),
                        track=track["info"]["title"] if track else None,
                        position=player.position if player is not None and track else None,
                        queue=len(live.queue.upcoming) if live else None,
                        volume=player.volume if player is not None else None,
                        filters=",".join(sorted(active_filter_names(player.filters if player else {}))),
                        loop=live.queue.loop_mode.value if live else None,
                    )
                )
        finally:
            await manager.close()
        return views

    async def wait_saved(self) -> None:
        """Wait for one checkpoint after the last change, so the live records hold the last state."""
        await asyncio.sleep(self.checkpoint_interval + 0.5)


def _table(before: list[GuildView], after: list[GuildView], played_ms: int) -> Table:
    table = Table("guild", "", "channel", "track", "position", "queue", "volume", "filters", "loop", "ok")
    for b, a in zip(before, after, strict=True):
        diffs = b.same_as(a, played_ms)
        for label, view in (("before", b), ("after", a)):
            table.add_row(
                view.guild if label == "before" else "",
                label,
                view.channel or "-",
                view.track or "-",
                f"{view.position / 1000:.1f}s" if view.position is not None else "-",
                str(view.queue) if view.queue is not None else "-",
                str(view.volume or "-"),
                view.filters or "-",
                view.loop or "-",
                ("[green]yes[/green]" if not diffs else f"[red]no: {', '.join(diffs)}[/red]")
                if label == "after"
                else "",
            )
    return table


async def _crash_and_recover(demo: DemoScenario, step: int, *, lavalink_too: bool) -> bool:
    """SIGKILL the bot (and crash Lavalink too), start it again; print the table; True if all came back."""
    before = await demo.views()
    seen_at = time.monotonic()
    what = "the bot and Lavalink" if lavalink_too else "the bot"
    _console.print(f"[bold]{step}.[/bold] playing in {len(before)} guilds; killing {what} mid-track")
    demo.bot.kill()
    await demo.bot.wait()
    if lavalink_too:
        await demo.lavalink.restart()  # every Lavalink session and player is lost
    killed_at = time.monotonic()
    await demo.start_bot()
    await demo.wait_restored(len(before))
    restored_in = time.monotonic() - killed_at
    adopted = sum("adopted from the resumed Lavalink session" in line for line in demo.bot.lines_since_start())
    how = (
        f"{adopted} player(s) adopted from the resumed Lavalink session as they played on (nothing re-buffered)"
        if adopted
        else "every player rebuilt from its live record on disk"
    )
    _console.print(f"[bold]{step + 1}.[/bold] bot restarted; {how}; {restored_in:.1f}s after the kill")
    await asyncio.sleep(0.5)
    after = await demo.views()
    played_ms = 0 if lavalink_too else int((time.monotonic() - seen_at) * 1000)
    _console.print(_table(before, after, played_ms))
    failed = [b.guild for b, a in zip(before, after, strict=True) if b.same_as(a, played_ms)]
    if failed:
        _console.print(f"[red]not restored:[/red] {', '.join(failed)}")
    expected_adopted = 0 if lavalink_too else len(before)
    if adopted != expected_adopted:
        _console.print(f"[red]{adopted} player(s) adopted, expected {expected_adopted}[/red]")
    return not failed and adopted == expected_adopted


async def run_demo(guilds: int = 3) -> int:
    """Run the demo; return 0 if every guild came back both times, 1 otherwise."""
    workdir = Path(tempfile.mkdtemp(prefix="sonora-demo-"))
    try:
        async with DemoScenario(workdir, guilds) as demo:
            _console.print(
                f"[bold]1.[/bold] FakeDiscord on {demo.discord.base_url}, FakeLavalink on {demo.lavalink.uri}"
            )
            await demo.start_bot()
            _console.print(f"[bold]2.[/bold] bot process started (pid {demo.bot.pid}) with sonora_cog loaded")
            await demo.play_everywhere()
            await asyncio.sleep(3)
            await demo.wait_saved()
            ok = await _crash_and_recover(demo, 3, lavalink_too=False)
            await demo.wait_saved()
            ok = await _crash_and_recover(demo, 5, lavalink_too=True) and ok
            if not ok:
                _console.print(f"(bot log: {workdir / 'bot.log'})")
                return 1
            _console.print("[green]every guild came back, both times[/green]")
            return 0
    except Exception as exc:
        _console.print(f"[red]demo failed:[/red] {type(exc).__name__}: {exc}  (bot log: {workdir / 'bot.log'})")
        return 1
    finally:
        if (workdir / "bot.log").exists():
            shutil.copy(workdir / "bot.log", Path(tempfile.gettempdir()) / "sonora-demo-bot.log")
        shutil.rmtree(workdir, ignore_errors=True)
