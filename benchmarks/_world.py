"""Shared fixtures for the benchmarks: real wavelink players full of real Lavalink tracks, offline.

The players are real ``SonoraPlayer`` (a ``wavelink.Player`` subclass) objects attached to stand-in
channel objects, as ``tests/unit/test_capture.py`` does: no Discord and no Lavalink, but every
attribute capture reads is wavelink's own. Tracks are Lavalink v4 track JSON with real ``encoded``
blobs (``sonora_cog.testing.trackcodec``), each guild holding its own distinct objects.
"""

from __future__ import annotations

import itertools
import random
import string
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import wavelink
from discord.ext import commands  # noqa: F401 - SonoraPlayer reads discord.ext.commands.Bot

from sonora_cog.player import SonoraPlayer
from sonora_cog.testing.trackcodec import encode_track

__all__ = ("FakeBot", "World", "lavalink_track", "make_world")

_ids = itertools.count(1)
_ARTISTS = ("Debussy", "The Night Owls", "Lumen", "Saltwater Kids", "Aurora Lane", "Ravel")


_rng = random.Random(20251125)  # seeded: every run builds the same tracks
_WORDS = (
    "love",
    "night",
    "summer",
    "dream",
    "fire",
    "heart",
    "city",
    "lights",
    "rain",
    "blue",
    "golden",
    "road",
    "home",
    "wild",
    "river",
    "ocean",
    "midnight",
    "forever",
    "young",
    "stars",
    "moon",
    "dance",
    "shadow",
    "echo",
    "paper",
    "glass",
    "silver",
    "broken",
    "electric",
    "velvet",
    "neon",
    "winter",
    "thunder",
    "sugar",
    "honey",
    "ghost",
    "dust",
    "ember",
    "north",
    "south",
    "tide",
    "memory",
    "letters",
    "runaway",
)
_SUFFIXES = ("", "", "", " (Official Video)", " (Live)", " [Remastered]", " (Lyrics)", " ft. Lumen")
_B64 = string.ascii_letters + string.digits + "-_"


def lavalink_track(index: int, *, requester: int | None = None) -> dict[str, Any]:
    """One track exactly as Lavalink v4 sends it (``/v4/loadtracks``), with a real encoded blob.

    YouTube-like: an 11-character random id, a title of 2-5 words from a small vocabulary plus the
    usual suffixes, so compression sees text about as repetitive as a real queue's.
    """
    ident = "".join(_rng.choice(_B64) for _ in range(11))
    next(_ids)
    words = _rng.sample(_WORDS, _rng.randint(2, 5))
    info = {
        "identifier": ident,
        "isSeekable": True,
        "author": f"{_ARTISTS[index % len(_ARTISTS)]}{'' if index % 3 else ' - Topic'}",
        "length": _rng.randint(90_000, 420_000),
        "isStream": False,
        "position": 0,
        "title": " ".join(words).title() + _rng.choice(_SUFFIXES),
        "uri": f"https://www.youtube.com/watch?v={ident}",
        "artworkUrl": f"https://i.ytimg.com/vi/{ident}/maxresdefault.jpg",
        "isrc": None,
        "sourceName": "youtube",
    }
    user_data = {"requester_id": str(requester)} if requester is not None else {}
    return {"encoded": encode_track(info), "info": info, "pluginInfo": {}, "userData": user_data}


class _Guild(SimpleNamespace):
    pass


class FakeBot:
    """The part of ``commands.Bot`` that :class:`~sonora_cog.owner.SessionOwner` reads."""

    def __init__(self) -> None:
        self.guilds: dict[int, Any] = {}
        self.voice_clients: list[wavelink.Player] = []
        self.dispatched = 0
        self.user = SimpleNamespace(id=1)  # the owner names its heartbeat after the bot user and shards
        self.shard_id: int | None = None
        self.shard_ids: list[int] | None = None
        self.shard_count: int | None = None

    def get_guild(self, guild_id: int) -> Any:
        return self.guilds.get(guild_id)

    def dispatch(self, event: str, *args: Any) -> None:
        self.dispatched += 1


class World:
    """``guilds`` players, each playing a track with ``tracks - 1`` more queued."""

    def __init__(
        self,
        bot: FakeBot,
        players: list[SonoraPlayer],
        node: wavelink.Node,
        session: aiohttp.ClientSession,
        build_seconds: float,
    ) -> None:
        self.bot = bot
        self.players = players
        self.node = node
        self.session = session
        self.build_seconds = build_seconds

    def guild_ids(self) -> list[int]:
        return [p.guild.id for p in self.players if p.guild is not None]

    async def close(self) -> None:
        self.players.clear()
        self.bot.voice_clients.clear()
        self.bot.guilds.clear()
        await self.node.close()
        await self.session.close()


def _guild_ids(first: int = 800_000_000_000_000_001) -> Iterator[int]:
    return itertools.count(first, 7)


def make_player(node: wavelink.Node, bot: FakeBot, guild_id: int, tracks: int, *, history: int = 0) -> SonoraPlayer:
    """One connected, playing ``SonoraPlayer`` with ``tracks`` tracks (current + queue), registered on ``bot``."""
    player = SonoraPlayer(nodes=[node])
    guild = _Guild(id=guild_id, voice_client=player)
    # what channel.connect(cls=...) does, with stand-ins for the client and the channel
    player(SimpleNamespace(), SimpleNamespace(id=guild_id + 1, guild=guild))  # type: ignore[arg-type]
    made = [wavelink.Playable(lavalink_track(i, requester=guild_id + 2)) for i in range(max(tracks, 1))]  # type: ignore[arg-type]
    for done in made[:history]:
        player.queue.history.put(done)  # type: ignore[union-attr]
    # What Lavalink's answers would have set (there is no node to answer here; the e2e tests do it for real).
    player._connected = True
    player._current = made[0]
    player._paused = False
    player._last_update = time.monotonic_ns()
    player._last_position = 42_000
    player._volume = 80
    player.queue.put(made[1:])
    player.queue.mode = wavelink.QueueMode.loop_all
    filters = wavelink.Filters()
    filters.timescale.set(speed=1.1, pitch=1.1, rate=1.0)
    player._filters = filters
    player.extras = {"announce_channel": str(guild_id + 3)}
    bot.guilds[guild_id] = guild
    bot.voice_clients.append(player)
    return player


def offline_node() -> tuple[wavelink.Node, aiohttp.ClientSession]:
    """A node that never connects (players need one), and the HTTP session to close with it."""
    session = aiohttp.ClientSession()
    node = wavelink.Node(uri="http://127.0.0.1:9", password="unused", identifier="bench-node", session=session)
    return node, session


def make_world(guilds: int, tracks: int) -> World:
    """Build the players (must run inside an event loop: wavelink's Node wants one)."""
    started = time.perf_counter()
    node, session = offline_node()
    bot = FakeBot()
    ids = _guild_ids()
    players = [make_player(node, bot, next(ids), tracks) for _ in range(guilds)]
    return World(bot, players, node, session, time.perf_counter() - started)
