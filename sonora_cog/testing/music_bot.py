"""A small, real music bot on :class:`~sonora_cog.player.SonoraPlayer`, with sonora_cog loaded.

Slash commands: ``/play``, ``/skip``, ``/queue``, ``/pause``, ``/resume``, ``/stop``, ``/volume``,
``/filter``, ``/loop``, ``/autoplay``, ``/note`` (a key of ``player.extras``, set while playing). The
demo and the end-to-end tests run it as a subprocess against the fakes; ``examples/bot.py`` runs it
against a real Discord and Lavalink.

Run it as a script; it reads its environment:

``DISCORD_TOKEN``
    The bot token (any non-empty string against FakeDiscord).
``LAVALINK_URI`` / ``LAVALINK_PASSWORD``
    The Lavalink node (default ``http://127.0.0.1:2333`` / ``youshallnotpass``).
``FAKE_DISCORD_URL``
    When set, discord.py is pointed at a :class:`~sonora_cog.testing.fake_discord.FakeDiscord` there.
``SONORA_CONFIG``
    sonora_cog's config file (see ``config.example.toml``).
``SHARD_ID`` / ``SHARD_COUNT``
    Run as one shard of several (optional): a plain ``Bot`` with that shard.
``AUTO_SHARDED``
    With ``SHARD_COUNT``: an ``AutoShardedBot`` instead, running every shard (or ``SHARD_IDS``, comma
    separated) in this process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import cast

import aiohttp
import discord
import wavelink
from discord import app_commands
from discord.ext import commands

from sonora_cog._typing import AnyBot
from sonora_cog.cog import SonoraCog
from sonora_cog.player import SonoraPlayer
from sonora_cog.restore import RestoreReport

__all__ = ("FILTER_PRESETS", "MusicCog", "build_bot", "main")

_log = logging.getLogger("sonora_cog.music_bot")

FILTER_PRESETS = ("nightcore", "karaoke", "bassboost", "vaporwave", "speedup", "reset")
LOOP_MODES = {"off": wavelink.QueueMode.normal, "track": wavelink.QueueMode.loop, "queue": wavelink.QueueMode.loop_all}


def preset_filters(name: str) -> wavelink.Filters:
    """The filters of a named preset."""
    filters = wavelink.Filters()
    if name == "nightcore":
        filters.timescale.set(speed=1.2, pitch=1.2, rate=1.0)
    elif name == "karaoke":
        filters.karaoke.set(level=1.0, mono_level=1.0, filter_band=220.0, filter_width=100.0)
    elif name == "bassboost":
        filters.equalizer.set(bands=[{"band": b, "gain": 0.25} for b in range(4)])
    elif name == "vaporwave":
        filters.timescale.set(speed=0.8, pitch=0.85, rate=1.0)
    elif name == "speedup":
        filters.timescale.set(speed=1.25, pitch=1.0, rate=1.0)
    return filters


async def _reply(interaction: discord.Interaction, text: str) -> None:
    if interaction.response.is_done():
        await interaction.followup.send(text)
    else:
        await interaction.response.send_message(text)


class MusicCog(commands.Cog):
    """The music commands. Every player is a :class:`SonoraPlayer`, so sonora_cog sees each change."""

    def __init__(self, bot: AnyBot) -> None:
        self.bot = bot

    @staticmethod
    def _player(interaction: discord.Interaction) -> SonoraPlayer | None:
        player = interaction.guild.voice_client if interaction.guild else None
        return player if isinstance(player, SonoraPlayer) else None

    async def _connected(self, interaction: discord.Interaction) -> SonoraPlayer | None:
        """The guild's player, or ``None`` after telling the user the bot is not connected."""
        player = self._player(interaction)
        if player is None:
            await _reply(interaction, "Not connected.")
        return player

    @app_commands.command(description="Play or queue a track (search text or URL).")
    @app_commands.guild_only()
    async def play(self, interaction: discord.Interaction, query: str) -> None:
        member = cast(discord.Member, interaction.user)
        if member.voice is None or member.voice.channel is None:
            await _reply(interaction, "Join a voice channel first.")
            return
        await interaction.response.defer()
        player = self._player(interaction)
        if player is None:
            player = await member.voice.channel.connect(cls=SonoraPlayer, self_deaf=True)
            player.extras = {"announce_channel_id": str(interaction.channel_id)}
        found = await wavelink.Playable.search(query)
        if not found:
            await _reply(interaction, f"Nothing found for {query!r}.")
            return
        tracks = list(found) if isinstance(found, wavelink.Playlist) else [found[0]]
        for track in tracks:
            track.extras = {"requester_id": str(member.id)}
        if player.current is None:
            first, rest = tracks[0], tracks[1:]
            player.queue.put(rest)
            await player.play(first)
            await _reply(interaction, f"Playing **{first.title}**" + (f" (+{len(rest)} queued)" if rest else ""))
        else:
            player.queue.put(tracks)
            await _reply(interaction, f"Queued {len(tracks)} track(s).")

    @app_commands.command(description="Skip the current track.")
    @app_commands.guild_only()
    async def skip(self, interaction: discord.Interaction) -> None:
        player = self._player(interaction)
        if player is None or player.current is None:
            await _reply(interaction, "Nothing is playing.")
            return
        await player.skip()
        await _reply(interaction, "Skipped.")

    @app_commands.command(description="Show the queue.")
    @app_commands.guild_only()
    async def queue(self, interaction: discord.Interaction) -> None:
        player = await self._connected(interaction)
        if player is None:
            return
        lines = [f"Now: {player.current.title if player.current else '-'}"]
        lines += [f"{i}. {t.title}" for i, t in enumerate(list(player.queue)[:10], 1)]
        await _reply(interaction, "\n".join(lines))

    @app_commands.command(description="Pause playback.")
    @app_commands.guild_only()
    async def pause(self, interaction: discord.Interaction) -> None:
        player = await self._connected(interaction)
        if player is None:
            return
        await player.pause(True)
        await _reply(interaction, "Paused.")

    @app_commands.command(description="Resume playback.")
    @app_commands.guild_only()
    async def resume(self, interaction: discord.Interaction) -> None:
        player = await self._connected(interaction)
        if player is None:
            return
        await player.pause(False)
        await _reply(interaction, "Resumed.")

    @app_commands.command(description="Stop and leave the voice channel (the session ends).")
    @app_commands.guild_only()
    async def stop(self, interaction: discord.Interaction) -> None:
        player = await self._connected(interaction)
        if player is None:
            return
        await player.disconnect()
        await _reply(interaction, "Stopped. Bye!")

    @app_commands.command(description="Set the volume (0-1000).")
    @app_commands.guild_only()
    async def volume(self, interaction: discord.Interaction, value: app_commands.Range[int, 0, 1000]) -> None:
        player = await self._connected(interaction)
        if player is None:
            return
        await player.set_volume(value)
        await _reply(interaction, f"Volume {value}.")

    @app_commands.command(name="filter", description="Apply a filter preset.")
    @app_commands.guild_only()
    @app_commands.choices(preset=[app_commands.Choice(name=p, value=p) for p in FILTER_PRESETS])
    async def filter_(self, interaction: discord.Interaction, preset: app_commands.Choice[str]) -> None:
        player = await self._connected(interaction)
        if player is None:
            return
        await player.set_filters(preset_filters(preset.value), seek=True)
        await _reply(interaction, f"Filter {preset.value}.")

    @app_commands.command(description="Set the loop mode.")
    @app_commands.guild_only()
    @app_commands.choices(mode=[app_commands.Choice(name=m, value=m) for m in LOOP_MODES])
    async def loop(self, interaction: discord.Interaction, mode: app_commands.Choice[str]) -> None:
        player = await self._connected(interaction)
        if player is None:
            return
        player.queue.mode = LOOP_MODES[mode.value]
        await _reply(interaction, f"Loop {mode.value}.")

    @app_commands.command(description="Set the autoplay mode.")
    @app_commands.guild_only()
    @app_commands.choices(mode=[app_commands.Choice(name=m.name, value=m.name) for m in wavelink.AutoPlayMode])
    async def autoplay(self, interaction: discord.Interaction, mode: app_commands.Choice[str]) -> None:
        player = await self._connected(interaction)
        if player is None:
            return
        player.autoplay = wavelink.AutoPlayMode[mode.value]
        await _reply(interaction, f"Autoplay {mode.value}.")

    @app_commands.command(description="Remember a note for this session (saved with it).")
    @app_commands.guild_only()
    async def note(self, interaction: discord.Interaction, text: str) -> None:
        player = await self._connected(interaction)
        if player is None:
            return
        player.extras["note"] = text  # a key of extras, set while playing: saved like everything else
        await _reply(interaction, "Noted.")

    @commands.Cog.listener()
    async def on_sonora_session_restored(self, report: RestoreReport) -> None:
        _log.info(
            "SONORA restored guild=%s track=%r position=%s queue=%s",
            report.guild_id,
            report.track,
            report.position,
            report.queue_length,
        )


def build_bot(session: aiohttp.ClientSession | None = None) -> AnyBot:
    """A bot with the music commands, a wavelink node from the environment, and sonora_cog loaded.

    ``session`` is given to the node: wavelink never closes a session it made itself (``Node.close``
    and ``Pool.close`` leave it open), so the caller that passes one closes it after the bot.
    """
    intents = discord.Intents.default()
    intents.voice_states = True
    intents.guilds = True
    shard_count = os.environ.get("SHARD_COUNT")
    options: dict[str, object] = {}
    bot_cls: type[AnyBot] = commands.Bot
    if shard_count and os.environ.get("AUTO_SHARDED"):
        bot_cls = commands.AutoShardedBot
        options = {"shard_count": int(shard_count)}
        if os.environ.get("SHARD_IDS"):
            options["shard_ids"] = [int(i) for i in os.environ["SHARD_IDS"].split(",")]
    elif shard_count:
        options = {"shard_id": int(os.environ.get("SHARD_ID", "0")), "shard_count": int(shard_count)}
    bot = bot_cls(command_prefix=commands.when_mentioned, intents=intents, **options)  # type: ignore[arg-type]

    async def setup_hook() -> None:
        node = wavelink.Node(
            uri=os.environ.get("LAVALINK_URI", "http://127.0.0.1:2333"),
            password=os.environ.get("LAVALINK_PASSWORD", "youshallnotpass"),
            identifier="main",
            session=session,
        )
        await bot.add_cog(MusicCog(bot))
        await bot.load_extension("sonora_cog")
        sonora = bot.get_cog("Sonora")
        assert isinstance(sonora, SonoraCog)
        await sonora.connect_nodes([node])  # wavelink.Pool.connect, resuming the last Lavalink session
        await bot.tree.sync()  # Discord delivers only the commands an application registered

    async def on_ready() -> None:
        _log.info("SONORA ready as %s in %d guild(s)", bot.user, len(bot.guilds))

    bot.setup_hook = setup_hook  # type: ignore[method-assign]
    bot.add_listener(on_ready)
    return bot


async def _run() -> None:
    fake = os.environ.get("FAKE_DISCORD_URL")
    if fake:
        from sonora_cog.testing.discord_client import point_discord_at

        point_discord_at(fake)
    token = os.environ.get("DISCORD_TOKEN", "")
    if not token:
        raise SystemExit("set DISCORD_TOKEN")
    async with aiohttp.ClientSession() as session:
        bot = build_bot(session)
        try:
            async with bot:
                await bot.start(token)
        finally:
            await wavelink.Pool.close()  # the node's websocket, before its session closes


def main() -> None:
    """Run the bot until it is closed (SIGTERM is handled by sonora_cog: state is saved first)."""
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"),
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(_run())


if __name__ == "__main__":
    main()
