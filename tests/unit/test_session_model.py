"""A model-based (stateful) test of the session owner: what a restart would restore is what the bot had.

Hypothesis drives random sequences of what happens to one guild's music session: play, queue and
history edits, loop and autoplay modes, pause and resume, seek, volume, filters (timescale speeds other
than 1 included), the bot's ``extras`` and per-track extras, ``/stop``, a moderator disconnecting the
bot, the bot process crashing and restarting, and Lavalink crashing (node loss). After every step it
waits for the debounced write and compares *what a restart would restore* (the guild's live record,
``SessionManager.read_live``) with a plain model of the session, and what Lavalink really holds with
the same model.

Everything under test is real: ``SonoraPlayer`` (a real ``wavelink.Player``) on a real ``wavelink.Node``
connected over HTTP and WebSocket to the in-process :class:`~sonora_cog.testing.fake_lavalink.FakeLavalink`
(a playback clock with timescale), the real :class:`~sonora_cog.owner.SessionOwner` and its
:class:`~sonora_cog.manager.SessionManager` on a filesystem store, and the real restore functions. Only
Discord is stood in for (as ``benchmarks/_world.py`` does): a bot, a guild, a voice channel and the voice
gateway's answers, delivered through the public ``VoiceProtocol`` methods the way discord.py delivers
them, and listeners scheduled as tasks the way ``Client.dispatch`` schedules them.

Positions
---------
* Paused: the record must hold Lavalink's own frozen position *exactly* (the product promises it:
  ``SonoraPlayer.pause`` reads it back from Lavalink), and no crash, restore or node loss may move it.
* Playing: ``advance_position(record, now)`` must be within :data:`PLAYING_TOLERANCE_MS` of Lavalink's
  position now (see there for why that much).
* A restore starts a playing track ``rewind_seconds`` before the recorded (heartbeat-advanced) position,
  once; a paused one exactly where it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import itertools
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, TypeVar

import aiohttp
import pytest
import wavelink
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from sonora_cog.config import Settings, SnapshotSettings, StorageSettings
from sonora_cog.manager import SessionManager
from sonora_cog.model import SessionState, TrackState
from sonora_cog.owner import SessionOwner
from sonora_cog.player import SonoraPlayer
from sonora_cog.restore import ALL_PARTS, advance_position, apply_state, leave_voice, start_position
from sonora_cog.session import Phase
from sonora_cog.testing.fake_lavalink import FakeLavalink, FakePlayerState

_T = TypeVar("_T")

BOT_ID = 900_000_000_000_000_001
GUILD_ID = 800_000_000_000_000_001
VOICE_CHANNEL_ID = 800_000_000_000_000_002
LISTENER_ID = 700_000_000_000_000_001

#: Seconds between Lavalink's ``playerUpdate`` s (Lavalink's default is 5). Long enough that the owner's
#: clock really extrapolates between two of them (a clock running at the wrong speed drifts visibly),
#: short enough that several arrive in every run (paused players' updates, the ones after a seek).
PLAYER_UPDATE_INTERVAL = 0.5
#: ``snapshots.debounce``: every reported change is written this long after it.
DEBOUNCE = 0.02
#: How far ``advance_position(record, now)`` may be from Lavalink's position now while a track plays.
#: The owner's clock is anchored when the bot's PATCH (play, seek, resume, filters) *returns*, while
#: Lavalink moved when it *handled* it, and a ``playerUpdate`` is received a little after Lavalink sent
#: it: the record lags Lavalink by one loopback HTTP answer or WebSocket delivery, times the timescale
#: speed (2.0 at most here); ``advance_position`` extrapolating over wall time (``position_at``) rather
#: than the monotonic clock adds well under a ms. Measured: at most 4 ms over ~1000 checks. 100 ms
#: leaves room for a 50 ms event-loop stall at 2x on a loaded CI runner, and is 20x tighter than the
#: 2 s rewind (a missing or doubled rewind fails at once) and catches a clock whose speed is off by
#: 0.25 or more within one ``playerUpdate`` interval.
PLAYING_TOLERANCE_MS = 100
#: Tracks are never sought or started closer than this to their end, so none ends by itself in a run.
END_MARGIN_MS = 60_000
#: How long the stand-in waits for anything asynchronous that should be (nearly) immediate.
SETTLE_TIMEOUT = 5.0
#: How long after the debounce a write (or the deletion of an ended session's record) may take.
WRITE_GRACE = 0.5

PLAYLIST_URL = "https://www.youtube.com/playlist?list=PLclassicalessentials"  # seed_demo_catalogue's
SPEEDS = (0.5, 0.8, 1.0, 1.25, 1.5, 2.0)
RATES = (1.0, 0.9, 1.0)


def on_loop(method: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Make an async rule a sync one that runs on the test's event loop (hypothesis rules are sync)."""

    @functools.wraps(method)
    def run_on_loop(self: SessionModel, **kwargs: Any) -> None:
        self.run(method(self, **kwargs))

    return run_on_loop


async def until(predicate: Callable[[], Any], timeout: float = SETTLE_TIMEOUT, what: str = "") -> Any:  # noqa: ASYNC109
    """Poll ``predicate`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        await asyncio.sleep(0.005)
    return result


# -- Discord, stood in ---------------------------------------------------------------------------------


class StandInBot:
    """What wavelink, SonoraPlayer and SessionOwner use of a ``commands.Bot``, with Discord's behaviour.

    ``dispatch`` schedules each listener as a task, as ``Client.dispatch`` does, and resolves ``wait_for``
    futures; a listener that raises fails the test at the next :meth:`settle`. A *dead* bot (its process
    crashed) does nothing any more: no events, no guilds, no voice.
    """

    def __init__(self) -> None:
        self.user = SimpleNamespace(id=BOT_ID)
        self.shard_count: int | None = None
        self.shard_id: int | None = None
        self.shard_ids: list[int] | None = None
        self.dead = False
        self._guilds: dict[int, StandInGuild] = {}
        self._voice: dict[int, Any] = {}
        # VoiceProtocol.cleanup() removes the voice client through client._connection, as in discord.py
        self._connection = SimpleNamespace(_remove_voice_client=lambda key: self._voice.pop(key, None))
        self._listeners: dict[str, list[Callable[..., Coroutine[Any, Any, Any]]]] = {}
        self._waiters: dict[str, list[tuple[asyncio.Future[Any], Callable[..., bool]]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.errors: list[BaseException] = []

    # discord.Client --------------------------------------------------------------------------------
    def get_guild(self, guild_id: int) -> StandInGuild | None:
        return None if self.dead else self._guilds.get(guild_id)

    def get_channel(self, channel_id: int) -> StandInChannel | None:
        for guild in self._guilds.values():
            if guild.channel.id == channel_id:
                return guild.channel
        return None

    @property
    def voice_clients(self) -> list[Any]:
        return [] if self.dead else list(self._voice.values())

    def add_listener(self, func: Callable[..., Coroutine[Any, Any, Any]], name: str) -> None:
        self._listeners.setdefault(name, []).append(func)

    def remove_listener(self, func: Callable[..., Coroutine[Any, Any, Any]], name: str) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._listeners[name].remove(func)

    def dispatch(self, event: str, /, *args: Any) -> None:
        if self.dead:
            return
        waiters = self._waiters.get(event, [])
        for waiter in list(waiters):
            future, check = waiter
            if future.done():
                waiters.remove(waiter)
            elif check(*args):
                future.set_result(args)
                waiters.remove(waiter)
        for listener in list(self._listeners.get(f"on_{event}", ())):
            self.spawn(listener(*args))

    async def wait_for(self, event: str, *, check: Callable[..., bool], timeout: float | None = None) -> Any:  # noqa: ASYNC109
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(event, []).append((future, check))
        return await asyncio.wait_for(future, timeout)

    # the stand-in's own plumbing --------------------------------------------------------------------
    def add_guild(self, guild: StandInGuild) -> None:
        self._guilds[guild.id] = guild

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.errors.append(task.exception())  # type: ignore[arg-type]

    async def settle(self) -> None:
        """Wait until every event, listener and voice answer scheduled so far (and by them) has run."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while self._tasks:
            if time.monotonic() > deadline:
                raise AssertionError(f"stand-in Discord tasks still running: {self._tasks}")
            await asyncio.wait(set(self._tasks), timeout=SETTLE_TIMEOUT)
        if self.errors:
            error, self.errors = self.errors[0], []
            raise AssertionError(f"an event listener or voice handler raised: {error!r}") from error

    async def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=SETTLE_TIMEOUT)


class StandInChannel:
    """A voice channel: ``channel.connect(cls=...)`` as discord.py runs it, and one listener in it."""

    def __init__(self, channel_id: int, guild: StandInGuild) -> None:
        self.id = channel_id
        self.guild = guild
        self.name = "Music"
        self.members = [SimpleNamespace(id=LISTENER_ID, bot=False)]

    def _get_voice_client_key(self) -> tuple[int, str]:
        return self.guild.id, "guild_id"

    async def connect(self, *, cls: Callable[[Any, Any], Any], self_deaf: bool = False) -> Any:
        """``VoiceChannel.connect``: build the protocol, register it, let it connect (wavelink's ``connect``)."""
        bot = self.guild.bot
        if self.guild.voice_client is not None:
            raise RuntimeError("already connected to a voice channel")
        voice = cls(bot, self)
        bot._voice[self.guild.id] = voice
        try:
            await voice.connect(timeout=SETTLE_TIMEOUT, reconnect=True, self_deaf=self_deaf)
        except BaseException:
            bot._voice.pop(self.guild.id, None)
            raise
        return voice


class StandInGuild:
    """A guild whose voice gateway answers like Discord's: a voice state update (and, on a join, a voice
    server update) for every ``change_voice_state``, delivered as discord.py's ``parse_voice_state_update``
    delivers them: to the voice client first, then to the bot's ``voice_state_update`` listeners."""

    def __init__(self, bot: StandInBot) -> None:
        self.bot = bot
        self.id = GUILD_ID
        self.me = SimpleNamespace(id=BOT_ID, bot=True, guild=self, voice=None)
        self.channel = StandInChannel(VOICE_CHANNEL_ID, self)
        self._joins = itertools.count(1)

    @property
    def voice_client(self) -> Any:
        return self.bot._voice.get(self.id)

    def get_channel(self, channel_id: int) -> StandInChannel | None:
        return self.channel if channel_id == self.channel.id else None

    async def change_voice_state(
        self, *, channel: StandInChannel | None, self_mute: bool = False, self_deaf: bool = False
    ) -> None:
        """Gateway op 4; Discord answers asynchronously."""
        if not self.bot.dead:
            self.bot.spawn(self._answer(channel, self_mute, self_deaf))

    async def _answer(self, channel: StandInChannel | None, self_mute: bool, self_deaf: bool) -> None:
        await asyncio.sleep(0)
        self.voice_state_update(channel, self_mute=self_mute, self_deaf=self_deaf)
        if channel is not None:
            vc = self.voice_client
            if vc is not None:
                data = {"token": f"token-{next(self._joins)}", "guild_id": str(self.id), "endpoint": "voice.test:443"}
                self.bot.spawn(vc.on_voice_server_update(data))

    def voice_state_update(
        self, channel: StandInChannel | None, *, self_mute: bool = False, self_deaf: bool = True
    ) -> None:
        """Discord says where the bot is now (``channel=None``: it left, or a moderator disconnected it)."""
        if self.bot.dead:
            return
        before = self.me.voice or SimpleNamespace(channel=None, self_mute=False, self_deaf=False)
        after = SimpleNamespace(channel=channel, self_mute=self_mute, self_deaf=self_deaf)
        self.me.voice = after if channel is not None else None
        data = {
            "guild_id": str(self.id),
            "channel_id": None if channel is None else str(channel.id),
            "user_id": str(BOT_ID),
            "session_id": "discord-voice-session",
            "self_mute": self_mute,
            "self_deaf": self_deaf,
        }
        vc = self.voice_client
        if vc is not None:
            self.bot.spawn(vc.on_voice_state_update(data))
        self.bot.dispatch("voice_state_update", self.me, before, after)


# -- one bot process ------------------------------------------------------------------------------------


class World:
    """What outlives a bot process: the event loop, Lavalink and its catalogue (one per test run)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.lavalink = FakeLavalink(player_update_interval=PLAYER_UPDATE_INTERVAL)
        self.catalogue: list[dict[str, Any]] = []
        self._nodes = itertools.count(1)

    def run(self, coro: Awaitable[_T]) -> _T:
        return self.loop.run_until_complete(coro)

    async def start(self) -> None:
        await self.lavalink.start()
        self.catalogue = self.lavalink.seed_demo_catalogue()

    def node_identifier(self) -> str:
        return f"session-model-{next(self._nodes)}"

    def close(self) -> None:
        async def close() -> None:
            await self.lavalink.close()
            for node in list(wavelink.Pool.nodes.values()):
                await node.close(eject=True)
            await asyncio.sleep(0.05)
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.run(close())
            self.run(self.loop.shutdown_asyncgens())
            self.run(self.loop.shutdown_default_executor())
        finally:
            self.loop.close()


class Process:
    """One bot process: a stand-in bot and guild, its own wavelink node, SessionManager and SessionOwner."""

    def __init__(self, world: World, settings: Settings) -> None:
        self.world = world
        self.settings = settings
        self.bot = StandInBot()
        self.guild = StandInGuild(self.bot)
        self.bot.add_guild(self.guild)
        self.http: aiohttp.ClientSession | None = None
        self.node: wavelink.Node | None = None
        self.manager = SessionManager(settings)
        self.owner = SessionOwner(self.bot, self.manager)  # type: ignore[arg-type]

    async def start(self) -> None:
        assert not wavelink.Pool.nodes, f"a node of another process is still in the Pool: {wavelink.Pool.nodes}"
        self.http = aiohttp.ClientSession()
        self.node = wavelink.Node(
            uri=self.world.lavalink.uri,
            password=self.world.lavalink.password,
            identifier=self.world.node_identifier(),
            session=self.http,
            resume_timeout=0,  # a crashed process's Lavalink session ends with it (no resume, no ghost)
            inactive_player_timeout=None,
            inactive_channel_tokens=None,
        )
        await wavelink.Pool.connect(nodes=[self.node], client=self.bot)  # type: ignore[arg-type]
        await self.node_ready()
        self.owner.attach()

    async def node_ready(self, old_session: str | None = None) -> None:
        node = self.node
        assert node is not None
        await until(
            lambda: node.status is wavelink.NodeStatus.CONNECTED and node.session_id not in (None, old_session),
            timeout=10,
            what="the wavelink node to be ready",
        )

    @property
    def player(self) -> SonoraPlayer | None:
        vc = self.guild.voice_client
        return vc if isinstance(vc, SonoraPlayer) else None

    async def join(self) -> SonoraPlayer:
        """``await channel.connect(cls=SonoraPlayer, self_deaf=True)``, as a bot and the cog's restore join."""
        player = await self.guild.channel.connect(cls=SonoraPlayer, self_deaf=True)
        assert isinstance(player, SonoraPlayer)
        return player

    async def settle(self) -> None:
        """Every event delivered, and the debounced write of every reported change done."""
        await self.bot.settle()
        await until(
            lambda: not self.owner.is_dirty(GUILD_ID),
            timeout=DEBOUNCE + WRITE_GRACE + 1.0,
            what="the debounced write of the guild's changes",
        )
        await self.owner.flush(())  # joins a write in flight (the flush lock)
        await self.bot.settle()

    def kill(self) -> None:
        """The process dies here, with no shutdown write: nothing it holds is written from now on."""
        self.bot.dead = True
        self.owner.detach()

    async def bury(self) -> None:
        """Release what a dead process left behind (its sockets); Lavalink drops its session and players."""
        self.kill()
        if self.node is not None:
            await self.node.close(eject=True)
        if self.http is not None:
            await self.http.close()
        await self.bot.cancel_all()
        await self.manager.close()


# -- the model -----------------------------------------------------------------------------------------

#: A track as the model knows it: Lavalink's encoded track, its userData, and its playlist (name, size).
Ref = tuple[str, dict[str, Any], tuple[str, int] | None]


def ref(track: wavelink.Playable) -> Ref:
    playlist = track.playlist
    return track.encoded, dict(vars(track.extras)), None if playlist is None else (playlist.name, playlist.tracks)


def stored(track: TrackState) -> Ref:
    playlist = track.playlist
    return track.encoded, dict(track.user_data), None if playlist is None else (playlist["name"], playlist["tracks"])


@dataclass
class Model:
    """What the guild's session should be, and so what a restart should bring back."""

    connected: bool = False
    """This process has a player in the guild: a session is live and its record exists."""
    current: Ref | None = None
    current_json: dict[str, Any] | None = None
    upcoming: list[Ref] = field(default_factory=list)
    history: list[Ref] = field(default_factory=list)
    auto_queue: list[Ref] = field(default_factory=list)
    loop: wavelink.QueueMode = wavelink.QueueMode.normal
    autoplay: wavelink.AutoPlayMode = wavelink.AutoPlayMode.disabled
    shuffle_enabled: bool = False
    volume: int = 100
    paused: bool = False
    filters: dict[str, Any] = field(default_factory=lambda: wavelink.Filters()())
    extras: dict[str, Any] = field(default_factory=dict)
    paused_position: int | None = None
    """Lavalink's frozen position while paused (exact: it may never move until the track is resumed)."""

    @property
    def is_stream(self) -> bool:
        return self.current_json is not None and bool(self.current_json["info"]["isStream"])

    @property
    def length(self) -> int:
        assert self.current_json is not None
        return int(self.current_json["info"]["length"])

    @property
    def speed(self) -> float:
        timescale = self.filters.get("timescale") or {}
        return float(timescale.get("speed", 1.0)) * float(timescale.get("rate", 1.0))


LOOP_NAMES = {wavelink.QueueMode.normal: "none", wavelink.QueueMode.loop: "track", wavelink.QueueMode.loop_all: "queue"}


def differences(model: Model, record: SessionState | None, lavalink: FakePlayerState | None, now: float) -> list[str]:
    """How the live record (what a restart restores) and Lavalink differ from the model; empty if they agree."""
    if not model.connected:
        return [] if record is None else [f"a live record exists although the session ended: {record!r}"]
    if record is None:
        return ["no live record although the session is live"]
    out: list[str] = []

    def same(what: str, actual: Any, expected: Any) -> None:
        if actual != expected:
            out.append(f"{what}: record has {actual!r}, model has {expected!r}")

    q = record.queue
    same("current", None if q.current is None else stored(q.current), model.current)
    same("upcoming", [stored(t) for t in q.upcoming], model.upcoming)
    same("history", [stored(t) for t in q.history], model.history)
    same("auto_queue", [stored(t) for t in record.autoplay.auto_queue], model.auto_queue)
    same("loop_mode", q.loop_mode.value, LOOP_NAMES[model.loop])
    same("shuffle_enabled", q.shuffle_enabled, model.shuffle_enabled)
    same("autoplay", record.autoplay.mode.value, model.autoplay.name)
    same("volume", record.player.volume, model.volume)
    same("paused", record.player.paused, model.paused)
    same("filters", dict(record.filters.filter_config), model.filters)
    same("extras", dict(record.extras), model.extras)
    same("channel", record.channel_id, VOICE_CHANNEL_ID)
    same("connected", record.player.connected, True)

    # Lavalink holds what the model says (the bot really plays it, not only believes it does).
    if lavalink is None or not lavalink.connected:
        out.append(f"Lavalink holds no connected player for the guild: {lavalink!r}")
        return out
    if lavalink.volume != model.volume:
        out.append(f"Lavalink's volume is {lavalink.volume}, model has {model.volume}")
    if (lavalink.filters.get("timescale") or None) != (model.filters.get("timescale") or None):
        out.append(
            f"Lavalink's timescale is {lavalink.filters.get('timescale')}, model has {model.filters.get('timescale')}"
        )
    if model.current is None:
        if lavalink.track is not None:
            out.append(f"Lavalink plays {lavalink.track['info']['title']!r}, model has no current track")
        same("position (no track)", record.player.position, 0)
        return out
    assert model.current_json is not None
    if lavalink.track is None or lavalink.track["info"]["identifier"] != model.current_json["info"]["identifier"]:
        out.append(
            f"Lavalink plays {lavalink.track and lavalink.track['info']['title']!r}, "
            f"model has {model.current_json['info']['title']!r}"
        )
        return out
    if lavalink.paused != model.paused:
        out.append(f"Lavalink's paused is {lavalink.paused}, model has {model.paused}")
    if model.is_stream:
        return out  # a stream has no position to keep: a restore always starts it live (position 0)
    if model.paused:
        # Exact: the product records the position Lavalink froze, read back from Lavalink.
        if not record.player.position == lavalink.position == model.paused_position:
            out.append(
                f"paused position: record {record.player.position}, Lavalink {lavalink.position}, "
                f"model {model.paused_position} (must all be equal)"
            )
    else:
        restored = advance_position(record, now).player.position
        if abs(restored - lavalink.position) > PLAYING_TOLERANCE_MS:
            out.append(
                f"playing position: a restart now would restore {restored} ms, Lavalink is at "
                f"{lavalink.position} ms (tolerance {PLAYING_TOLERANCE_MS} ms, speed {model.speed})"
            )
    return out


# -- the state machine -----------------------------------------------------------------------------------

track_extras = st.sampled_from([None, {"requester_id": "111"}, {"requester_id": "222", "note": "for Ana"}])
extras_keys = st.sampled_from(["announce_channel_id", "dj", "note"])
extras_values = st.one_of(st.integers(-1000, 1000), st.text(max_size=8), st.booleans(), st.none())
indexes = st.integers(0, 63)


class SessionModel(RuleBasedStateMachine):
    """One guild's session, driven at random; the invariant compares its persisted state with the model.

    Every rule runs on the test's event loop (:func:`on_loop`): SonoraPlayer's mutators report to the
    owner, which schedules its debounced write on the running loop.
    """

    world: World  # set by the test

    def __init__(self) -> None:
        super().__init__()
        self.store_dir = tempfile.mkdtemp(prefix="sonora-model-")
        self.settings = Settings(
            storage=StorageSettings(path=self.store_dir),
            snapshots=SnapshotSettings(debounce=DEBOUNCE, auto_enabled=False),
        )
        self.model = Model()
        #: Lavalink crashes once per example at most: each costs wavelink's reconnect backoff (0-2 s for
        #: the first outage of a node, growing for the next ones: a node never resets it).
        self.lavalink_crashed = False
        self.proc = Process(self.world, self.settings)
        self.run(self.proc.start())

    def run(self, coro: Awaitable[_T]) -> _T:
        return self.world.run(coro)

    @property
    def lavalink(self) -> FakeLavalink:
        return self.world.lavalink

    @property
    def player(self) -> SonoraPlayer:
        player = self.proc.player
        assert player is not None, "the model says the bot is in voice, but it has no player"
        return player

    def teardown(self) -> None:
        try:
            self.run(self.proc.bury())
        finally:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def playable(self, index: int, extras: dict[str, Any] | None) -> tuple[wavelink.Playable, dict[str, Any]]:
        data = copy.deepcopy(self.world.catalogue[index % len(self.world.catalogue)])
        track = wavelink.Playable(data)  # type: ignore[arg-type]
        if extras is not None:
            track.extras = copy.deepcopy(extras)
        return track, data

    def lavalink_position(self) -> int:
        state = self.lavalink.player(GUILD_ID)
        assert state is not None, "Lavalink has no player for the guild"
        return state.position

    # -- the invariant ---------------------------------------------------------------------------------

    @invariant()
    @on_loop
    async def a_restart_restores_the_model(self) -> None:
        await self.proc.settle()
        phase = self.proc.owner.phase(GUILD_ID)
        expected = {Phase.live} if self.model.connected else {Phase.idle, Phase.ended}
        assert phase in expected, f"the session is {phase.value}, expected one of {sorted(p.value for p in expected)}"
        deadline = time.monotonic() + WRITE_GRACE
        while True:
            record = await self.proc.manager.read_live(GUILD_ID)
            lavalink, now = self.lavalink.player(GUILD_ID), time.time()  # read together, no await between
            problems = differences(self.model, record, lavalink, now)
            # Only an ended session's record may need another look: a task of the owner's deletes it.
            if not problems or self.model.connected or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        assert not problems, "what a restart would restore differs from the model:\n  " + "\n  ".join(problems)

    # -- joining and leaving ---------------------------------------------------------------------------

    @initialize(index=indexes, start=st.integers(0, 120_000), paused=st.booleans())
    @on_loop
    async def join_and_play(self, index: int, start: int, paused: bool) -> None:
        """As most sessions start: the bot joins and plays a track (here maybe paused at once), so that
        positions are checked from the first step on."""
        await self.join_voice()
        await self.play_track(index, None, start, replace=True, paused=paused, volume=None)

    @precondition(lambda self: not self.model.connected)
    @rule()
    @on_loop
    async def join(self) -> None:
        await self.join_voice()

    async def join_voice(self) -> None:
        """The bot joins the voice channel: a new session, with wavelink's defaults."""
        await self.proc.join()
        self.model = Model(connected=True)

    async def write_in_flight(self) -> None:
        """Change something and wait until its debounced write has begun (it is not finished yet)."""
        self.player.extras["leaving"] = True
        await until(lambda: not self.proc.owner.is_dirty(GUILD_ID), what="the debounced write to begin")

    @precondition(lambda self: self.model.connected)
    @rule(in_flight=st.booleans())
    @on_loop
    async def stop(self, in_flight: bool) -> None:
        """``/stop``: the bot leaves on purpose; the session ends and its live record is deleted (also when
        a write of it is in flight at that moment)."""
        if in_flight:
            await self.write_in_flight()
        await self.player.disconnect()
        self.model = Model()

    @precondition(lambda self: self.model.connected)
    @rule(in_flight=st.booleans())
    @on_loop
    async def moderator_disconnects_the_bot(self, in_flight: bool) -> None:
        """Discord says the bot left voice (a moderator disconnected it): the session ends."""
        if in_flight:
            await self.write_in_flight()
        self.proc.guild.voice_state_update(None)
        await self.proc.bot.settle()
        assert self.proc.player is None, "wavelink kept its player after Discord disconnected the bot"
        self.model = Model()

    # -- playing ---------------------------------------------------------------------------------------

    @precondition(lambda self: self.model.connected)
    @rule(
        index=indexes,
        extras=track_extras,
        start=st.integers(0, 120_000),
        replace=st.booleans(),
        paused=st.none() | st.booleans(),
        volume=st.none() | st.integers(1, 1000),
    )
    @on_loop
    async def play(
        self,
        index: int,
        extras: dict[str, Any] | None,
        start: int,
        replace: bool,
        paused: bool | None,
        volume: int | None,
    ) -> None:
        """Play a catalogue track (its extras set first) from ``start``; ``paused=None`` keeps the pause
        state (wavelink). ``replace=False`` with a track playing only adds the track to the history
        (wavelink; Lavalink's ``noReplace`` keeps the current one)."""
        await self.play_track(index, extras, start, replace=replace, paused=paused, volume=volume)

    async def play_track(
        self,
        index: int,
        extras: dict[str, Any] | None,
        start: int,
        *,
        replace: bool,
        paused: bool | None,
        volume: int | None,
    ) -> None:
        track, data = self.playable(index, extras)
        m = self.model
        if not replace and m.current is not None:
            await self.player.play(track, replace=False)
            m.history.append(ref(track))
            return
        is_stream = bool(data["info"]["isStream"])
        start = 0 if is_stream else min(start, int(data["info"]["length"]) - END_MARGIN_MS)
        await self.player.play(track, start=start, replace=replace, paused=paused, volume=volume)
        m.current, m.current_json = ref(track), data
        m.history.append(ref(track))
        m.paused = m.paused if paused is None else paused
        m.volume = volume or m.volume
        m.paused_position = start if m.paused and not is_stream else None
        if not is_stream:
            position = self.lavalink_position()
            assert start <= position <= start + PLAYING_TOLERANCE_MS, f"Lavalink started at {position}, not {start}"

    @precondition(
        lambda self: (
            self.model.connected
            and self.model.current is not None
            and self.model.autoplay is wavelink.AutoPlayMode.disabled
        )
    )
    @rule()
    @on_loop
    async def skip(self) -> None:
        """Stop the current track (autoplay off: nothing follows it)."""
        player = self.player
        await player.skip(force=True)
        await until(lambda: player.current is None, what="wavelink to see the track end")
        self.model.current = self.model.current_json = None
        self.model.paused_position = None

    @precondition(lambda self: self.model.connected)
    @rule(paused=st.booleans())
    @on_loop
    async def pause(self, paused: bool) -> None:
        await self.player.pause(paused)
        m = self.model
        if paused and m.current is not None and not m.is_stream:
            frozen = self.lavalink_position()
            if m.paused:
                assert frozen == m.paused_position, f"pausing a paused track moved it: {m.paused_position} -> {frozen}"
            m.paused_position = frozen
        elif not paused:
            m.paused_position = None
        m.paused = paused

    @precondition(lambda self: self.model.connected and self.model.current is not None and not self.model.is_stream)
    @rule(fraction=st.floats(0, 1))
    @on_loop
    async def seek(self, fraction: float) -> None:
        position = int(fraction * (self.model.length - END_MARGIN_MS))
        await self.player.seek(position)
        if self.model.paused:
            self.model.paused_position = position
        now = self.lavalink_position()
        assert position <= now <= position + PLAYING_TOLERANCE_MS, f"Lavalink is at {now} after a seek to {position}"

    @precondition(lambda self: self.model.connected)
    @rule(volume=st.integers(-50, 1050))
    @on_loop
    async def set_volume(self, volume: int) -> None:
        await self.player.set_volume(volume)
        self.model.volume = max(0, min(1000, volume))  # wavelink clamps

    @precondition(lambda self: self.model.connected)
    @rule(
        speed=st.sampled_from(SPEEDS),
        rate=st.sampled_from(RATES),
        karaoke=st.sampled_from([None, 0.3]),
        reset=st.booleans(),
        seek=st.booleans(),
    )
    @on_loop
    async def set_filters(self, speed: float, rate: float, karaoke: float | None, reset: bool, seek: bool) -> None:
        """Set a timescale (the track's clock runs at ``speed * rate``), maybe karaoke; or reset them.

        With ``seek``, wavelink seeks to its own idea of the position right after (to apply the filters
        at once); where Lavalink lands is wavelink's business, but the record must say where it is.
        """
        filters = wavelink.Filters()
        if not reset:
            filters.timescale.set(speed=speed, pitch=1.0, rate=rate)
            if karaoke is not None:
                filters.karaoke.set(level=karaoke)
        await self.player.set_filters(None if reset else filters, seek=seek)
        m = self.model
        m.filters = filters()
        if seek and m.paused and m.current is not None and not m.is_stream:
            m.paused_position = self.lavalink_position()

    # -- the queue, its history, the auto queue, modes ---------------------------------------------------

    @precondition(lambda self: self.model.connected)
    @rule(index=indexes, extras=track_extras, at=st.none() | indexes)
    @on_loop
    async def queue_put(self, index: int, extras: dict[str, Any] | None, at: int | None) -> None:
        """Queue a track (its extras set before it is queued), at the end or at a position."""
        track, _ = self.playable(index, extras)
        if at is None:
            self.player.queue.put(track)
            self.model.upcoming.append(ref(track))
        else:
            at %= len(self.model.upcoming) + 1
            self.player.queue.put_at(at, track)
            self.model.upcoming.insert(at, ref(track))

    @precondition(lambda self: self.model.connected)
    @rule(count=st.integers(1, 3), first=st.integers(0, 7))
    @on_loop
    async def queue_playlist(self, count: int, first: int) -> None:
        """Queue tracks of a playlist (each keeps its playlist: name and size)."""
        loaded = self.lavalink.load(PLAYLIST_URL)
        assert loaded["loadType"] == "playlist"
        playlist = wavelink.Playlist(loaded["data"])
        tracks = playlist.tracks[first : first + count]
        self.player.queue.put(tracks)
        self.model.upcoming.extend(map(ref, tracks))

    @precondition(
        lambda self: (
            self.model.connected
            and self.model.loop is not wavelink.QueueMode.loop
            and (self.model.upcoming or (self.model.loop is wavelink.QueueMode.loop_all and self.model.history))
        )
    )
    @rule()
    @on_loop
    async def queue_get(self) -> None:
        """Take the next track off the queue (loop_all refills an empty queue from the history first)."""
        track = self.player.queue.get()
        m = self.model
        if m.loop is wavelink.QueueMode.loop_all and not m.upcoming:
            m.upcoming, m.history = m.history, []
        assert ref(track) == m.upcoming.pop(0)

    @precondition(lambda self: self.model.connected and self.model.upcoming)
    @rule(index=indexes, how=st.sampled_from(["get_at", "del", "remove"]))
    @on_loop
    async def queue_take(self, index: int, how: str) -> None:
        """Take a track out of the queue by index (``get_at``, ``del``) or by equality (``remove``)."""
        queue, upcoming = self.player.queue, self.model.upcoming
        index %= len(upcoming)
        if how == "get_at":
            assert ref(queue.get_at(index)) == upcoming.pop(index)
        elif how == "del":
            del queue[index]
            del upcoming[index]
        else:
            target = queue[index]
            assert queue.remove(target) == 1
            del upcoming[[t[0] for t in upcoming].index(target.encoded)]  # the first equal one (same encoded)

    @precondition(lambda self: self.model.connected and self.model.upcoming)
    @rule(index=indexes, track=indexes, extras=track_extras)
    @on_loop
    async def queue_replace(self, index: int, track: int, extras: dict[str, Any] | None) -> None:
        index %= len(self.model.upcoming)
        playable, _ = self.playable(track, extras)
        self.player.queue[index] = playable
        self.model.upcoming[index] = ref(playable)

    @precondition(lambda self: self.model.connected)
    @rule()
    @on_loop
    async def queue_reset(self) -> None:
        """``Queue.reset``: queue and history cleared, loop mode back to normal."""
        self.player.queue.reset()
        self.model.upcoming, self.model.history, self.model.loop = [], [], wavelink.QueueMode.normal

    @precondition(lambda self: self.model.connected and self.model.upcoming)
    @rule(index=indexes)
    @on_loop
    async def queue_delete(self, index: int) -> None:
        index %= len(self.model.upcoming)
        self.player.queue.delete(index)
        del self.model.upcoming[index]

    @precondition(lambda self: self.model.connected and len(self.model.upcoming) >= 2)
    @rule(first=indexes, second=indexes)
    @on_loop
    async def queue_swap(self, first: int, second: int) -> None:
        upcoming = self.model.upcoming
        first, second = first % len(upcoming), second % len(upcoming)
        self.player.queue.swap(first, second)
        upcoming[first], upcoming[second] = upcoming[second], upcoming[first]

    @precondition(lambda self: self.model.connected and len(self.model.upcoming) >= 2)
    @rule()
    @on_loop
    async def queue_shuffle(self) -> None:
        self.player.queue.shuffle()
        shuffled = [ref(t) for t in self.player.queue]
        assert sorted(map(repr, shuffled)) == sorted(map(repr, self.model.upcoming)), "shuffle changed the tracks"
        self.model.upcoming = shuffled  # the order is random: the model takes it, the record must follow it

    @precondition(lambda self: self.model.connected and self.model.upcoming)
    @rule(index=indexes, requester=st.sampled_from(["333", "444"]), then=st.sampled_from(["mark_dirty", "checkpoint"]))
    @on_loop
    async def queued_track_extras_changed_in_place(self, index: int, requester: str, then: str) -> None:
        """A queued track's extras changed where the player cannot see it; the bot calls ``mark_dirty()``
        as documented, or the next checkpoint finds the change."""
        index %= len(self.model.upcoming)
        track = self.player.queue[index]
        track.extras = {"requester_id": requester}
        if then == "mark_dirty":
            self.player.mark_dirty()
        else:
            await self.proc.settle()
            await self.proc.owner.checkpoint()
        self.model.upcoming[index] = ref(track)

    @precondition(lambda self: self.model.connected)
    @rule()
    @on_loop
    async def queue_clear(self) -> None:
        self.player.queue.clear()
        self.model.upcoming = []

    @precondition(lambda self: self.model.connected and self.model.history)
    @rule()
    @on_loop
    async def history_clear(self) -> None:
        history = self.player.queue.history
        assert history is not None
        history.clear()
        self.model.history = []

    @precondition(lambda self: self.model.connected)
    @rule(index=indexes)
    @on_loop
    async def auto_queue_put(self, index: int) -> None:
        track, _ = self.playable(index, None)
        self.player.auto_queue.put(track)
        self.model.auto_queue.append(ref(track))

    @precondition(lambda self: self.model.connected)
    @rule(mode=st.sampled_from(wavelink.QueueMode))
    @on_loop
    async def loop_mode(self, mode: wavelink.QueueMode) -> None:
        self.player.queue.mode = mode
        self.model.loop = mode

    @precondition(lambda self: self.model.connected)
    @rule(mode=st.sampled_from(wavelink.AutoPlayMode))
    @on_loop
    async def autoplay_mode(self, mode: wavelink.AutoPlayMode) -> None:
        self.player.autoplay = mode
        self.model.autoplay = mode

    @precondition(lambda self: self.model.connected)
    @rule(enabled=st.booleans())
    @on_loop
    async def shuffle_mode(self, enabled: bool) -> None:
        self.player.shuffle_enabled = enabled
        self.model.shuffle_enabled = enabled

    # -- the bot's extras ---------------------------------------------------------------------------------

    @precondition(lambda self: self.model.connected)
    @rule(extras=st.dictionaries(extras_keys, extras_values, max_size=3))
    @on_loop
    async def extras_replaced(self, extras: dict[str, Any]) -> None:
        self.player.extras = extras
        self.model.extras = dict(extras)

    @precondition(lambda self: self.model.connected)
    @rule(key=extras_keys, value=extras_values)
    @on_loop
    async def extras_key_set(self, key: str, value: Any) -> None:
        self.player.extras[key] = value
        self.model.extras[key] = value

    @precondition(lambda self: self.model.connected)
    @rule(
        op=st.sampled_from(["update", "ior", "setdefault", "pop", "popitem", "clear"]),
        key=extras_keys,
        value=extras_values,
    )
    @on_loop
    async def extras_mutated(self, op: str, key: str, value: Any) -> None:
        """The other ways to change ``player.extras`` (each is seen by the player)."""
        extras, model = self.player.extras, self.model.extras
        if op == "update":
            extras.update({key: value})
            model.update({key: value})
        elif op == "ior":
            extras |= {key: value}
            model[key] = value
        elif op == "setdefault":
            assert extras.setdefault(key, value) == model.setdefault(key, value)
        elif op == "pop":
            assert extras.pop(key, None) == model.pop(key, None)
        elif op == "popitem" and model:
            popped = extras.popitem()
            assert model.pop(popped[0]) == popped[1]
        elif op == "clear":
            extras.clear()
            model.clear()

    @precondition(lambda self: self.model.connected)
    @rule(key=extras_keys, value=extras_values, then=st.sampled_from(["mark_dirty", "checkpoint"]))
    @on_loop
    async def nested_extras_changed_in_place(self, key: str, value: Any, then: str) -> None:
        """A value nested in ``player.extras`` changed in place (the player cannot see it); the bot calls
        ``mark_dirty()``, or the next checkpoint finds it."""
        if not isinstance(self.model.extras.get("settings"), dict):
            self.player.extras["settings"] = {}
            self.model.extras["settings"] = {}
            await self.proc.settle()
        self.player.extras["settings"][key] = value
        self.model.extras["settings"][key] = value
        if then == "mark_dirty":
            self.player.mark_dirty()
        else:
            await self.proc.owner.checkpoint()

    @precondition(lambda self: self.model.connected and self.model.extras)
    @rule(key=extras_keys)
    @on_loop
    async def extras_key_removed(self, key: str) -> None:
        key = key if key in self.model.extras else next(iter(self.model.extras))
        del self.player.extras[key]
        del self.model.extras[key]

    # -- time ---------------------------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([0.05, 0.15, 0.3]))
    @on_loop
    async def time_passes(self, seconds: float) -> None:
        """Nobody does anything for a while: tracks play on, Lavalink's ``playerUpdate`` s come and go."""
        await asyncio.sleep(seconds)

    # -- the checkpoint job ---------------------------------------------------------------------------------

    @rule()
    @on_loop
    async def checkpoint(self) -> None:
        """The checkpoint job: writes what changed (nothing here) and the heartbeat a restore advances by."""
        await self.proc.owner.checkpoint()

    # -- crashes ----------------------------------------------------------------------------------------

    def unsaved_change(self, unsaved: str | None, index: int, *, model_too: bool) -> None:
        """A change made just before the process stops, inside the debounce window (not written yet)."""
        player = self.proc.player
        if unsaved is None or player is None:
            return
        if unsaved == "extras":
            player.extras["last_words"] = index
            if model_too:
                self.model.extras["last_words"] = index
        elif unsaved == "queue":
            track, _ = self.playable(index, None)
            player.queue.put(track)
            if model_too:
                self.model.upcoming.append(ref(track))
        else:
            player.queue.mode = wavelink.QueueMode.loop_all
            if model_too:
                self.model.loop = wavelink.QueueMode.loop_all

    @rule(unsaved=st.sampled_from([None, "extras", "queue", "loop"]), index=indexes, stale_leave=st.booleans())
    @on_loop
    async def bot_crashes_and_restarts(self, unsaved: str | None, index: int, stale_leave: bool) -> None:
        """The bot process dies (no shutdown write) and a new one restores the guild from its live record,
        as the cog's startup restore does.

        With ``unsaved``, a change is made just before the crash, inside the debounce window: it was never
        written, so it is lost, and the new process restores the state from before it. With
        ``stale_leave``, the dead process's voice state times out (Discord says the bot left) while the
        new process's restore is pending: that must not end the session.
        """
        self.unsaved_change(unsaved, index, model_too=False)
        old = self.proc
        old.kill()  # no await since the change: the debounce had no chance to write it
        await old.bury()
        await self.restart(stale_leave)

    @rule(unsaved=st.sampled_from([None, "extras", "queue", "loop"]), index=indexes)
    @on_loop
    async def bot_restarts_gracefully(self, unsaved: str | None, index: int) -> None:
        """The bot shuts down (the owner writes every live session's final state, changes of the last
        debounce window included), then a new process restores it."""
        self.unsaved_change(unsaved, index, model_too=True)
        old = self.proc
        await old.owner.shutdown()
        assert old.owner.phase(GUILD_ID) is Phase.closed
        old.kill()
        await old.bury()
        await self.restart(stale_leave=False)

    async def restart(self, stale_leave: bool) -> None:
        """A new bot process starts and restores the guild from its live record, as ``SonoraCog`` does:
        hold the guilds with a live record (``pending``), then restore each inside ``restoring``, advanced
        to the previous process's last checkpoint heartbeat. (``restore_state``'s channel checks and
        verification want real discord.py channels; its join and ``apply_state`` are what run here.)"""
        new = self.proc = Process(self.world, self.settings)
        await new.start()
        held = new.owner.expect_restore(await new.manager.live_guilds())
        assert held == ([GUILD_ID] if self.model.connected else []), f"held {held} for the startup restore"
        if not held:
            return
        if stale_leave:
            # The new process's READY still shows the bot in the channel (the dead process's voice session),
            # until Discord times that session out and says the bot left.
            new.guild.me.voice = SimpleNamespace(channel=new.guild.channel, self_mute=False, self_deaf=True)
            new.guild.voice_state_update(None)
            await new.bot.settle()
            assert new.owner.phase(GUILD_ID) is Phase.pending, "a stale voice leave ended a pending session"
        heartbeat = await new.manager.read_heartbeat(new.owner.key)
        async with new.owner.restoring(GUILD_ID, "startup restore"):
            state = await new.manager.read_live(GUILD_ID)
            assert state is not None
            if heartbeat is not None:  # the previous process's last checkpoint: the track played on until then
                state = advance_position(state, heartbeat)
            player = await new.join()
            await apply_state(player, state, ALL_PARTS, self.settings.restore)
            self.expect_restored_position(state, "the restore after a restart")

    def expect_restored_position(self, state: SessionState, what: str) -> None:
        """Lavalink starts the track ``rewind_seconds`` early when it played, exactly where it was if paused."""
        m = self.model
        if m.current is None or m.is_stream:
            return
        position = self.lavalink_position()
        if m.paused:
            assert state.player.position == position == m.paused_position, (
                f"{what} moved the paused track: recorded {state.player.position}, Lavalink {position}, "
                f"paused at {m.paused_position}"
            )
        else:
            start = start_position(state, self.settings.restore)
            assert start == max(0, state.player.position - int(self.settings.restore.rewind_seconds * 1000))
            assert start <= position <= start + PLAYING_TOLERANCE_MS, (
                f"{what} started at {position} ms, expected {start} ms "
                f"({state.player.position} ms recorded, less the rewind)"
            )

    @precondition(lambda self: self.model.connected and not self.lavalink_crashed)
    @rule()
    @on_loop
    async def lavalink_crashes(self) -> None:
        """Lavalink restarts and loses every session and player; the player is rebuilt from the owner's
        own capture when the node is back, as ``RecoveryMixin.rebuild`` does."""
        proc, m = self.proc, self.model
        node = proc.node
        assert node is not None
        before, lost_at = self.lavalink.player(GUILD_ID), time.monotonic()
        old_session = node.session_id
        self.lavalink_crashed = True
        await self.lavalink.restart()
        assert self.lavalink.player(GUILD_ID) is None
        await proc.node_ready(old_session)
        player = self.player
        async with proc.owner.restoring(GUILD_ID, "the Lavalink node came back without its players"):
            state, captured_at = proc.owner.capture(player), time.monotonic()
            await leave_voice(player)
            new = await proc.join()
            await apply_state(new, state, ALL_PARTS, self.settings.restore)
            if m.current is not None and not m.is_stream and not m.paused:
                # The owner's clock ran on through the outage, at the track's speed.
                assert before is not None
                expected = before.position + (captured_at - lost_at) * 1000 * m.speed
                assert abs(state.player.position - expected) <= PLAYING_TOLERANCE_MS, (
                    f"captured {state.player.position} ms after the node loss, expected about {expected:.0f} ms"
                )
            self.expect_restored_position(state, "the rebuild after a node loss")


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    """One event loop and one FakeLavalink for the module (the bot processes come and go)."""
    world = World()
    world.run(world.start())
    SessionModel.world = world
    try:
        yield world
    finally:
        world.close()


def test_a_restart_restores_what_the_session_model_says(world: World) -> None:
    # About 20 s on a 2-core machine: most of it is the invariant (~15 ms a step: the debounced write
    # and a read of the record) and the Lavalink crashes (wavelink's reconnect backoff, up to 2 s).
    run_state_machine_as_test(
        SessionModel,
        settings=settings(
            max_examples=20,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


@pytest.mark.parametrize("restart", ["bot crash", "graceful restart", "Lavalink crash"])
def test_a_paused_player_whose_track_was_skipped_stays_paused_after_a_restart(world: World, restart: str) -> None:
    # Found by the state machine above (its shrunk example, kept here so the failure does not depend on
    # hypothesis drawing it again): a paused track is skipped, so nothing plays and the player is
    # paused (wavelink plays the next track paused too). The record says paused, but
    # restore.apply_state applies the pause only to a player that has a current track, so the restored
    # player is not paused, and the record is then rewritten as not paused.
    machine = SessionModel()
    try:
        machine.join_and_play(index=0, start=0, paused=True)
        machine.a_restart_restores_the_model()
        machine.skip()
        machine.a_restart_restores_the_model()
        if restart == "bot crash":
            machine.bot_crashes_and_restarts(unsaved=None, index=0, stale_leave=False)
        elif restart == "graceful restart":
            machine.bot_restarts_gracefully(unsaved=None, index=0)
        else:
            machine.lavalink_crashes()
        machine.a_restart_restores_the_model()
    finally:
        machine.teardown()
