"""The cog's lifecycle end to end: a failed load, SIGTERM, the cog-less auto snapshots, a hung store at unload.

Real discord.py + wavelink + sonora_cog in this process, through FakeDiscord and FakeLavalink (fixtures
in ``tests/e2e/conftest.py``; ``start_host`` below starts a bot with the music commands only, for the
tests that add sonora_cog themselves or run it without the cog). Nothing of discord.py or wavelink is
patched; where a store must fail, sonora_cog's own store object is made to fail.

Every test that sends SIGTERM to this process first makes sure a handler is installed, and puts the
original disposition back in a ``finally``: pytest itself is never killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from conftest import RunningBot, StartBot, default_settings
from discord import app_commands
from discord.ext import commands

import sonora_cog
from sonora_cog.cog import COG_NAME, HANDOVER_GRACE, SonoraCog
from sonora_cog.config import Settings, SnapshotSettings
from sonora_cog.manager import SessionManager
from sonora_cog.meta import SnapshotKind
from sonora_cog.model import LoopMode, SessionState
from sonora_cog.owner import SessionOwner, owner_of
from sonora_cog.player import SonoraPlayer

SONORA_DIR = Path(sonora_cog.__file__).resolve().parent
TESTING_DIR = SONORA_DIR / "testing"  # the fakes and the music commands: the host's code, not sonora_cog's
_node_ids = itertools.count(1)

Setup = Callable[[commands.Bot], Awaitable[None]]
StartHost = Callable[..., Awaitable[RunningBot]]


# -- a host bot without SonoraCog ---------------------------------------------------------------------


@pytest.fixture
def start_host(start_bot: StartBot) -> StartHost:
    """``await start_host(setup=..., settings=...)``: ``start_bot`` without sonora_cog (the host bot alone;
    ``setup(bot)`` runs at the end of ``setup_hook``, where the host adds what it wants)."""
    return functools.partial(start_bot, sonora=False)


# -- helpers ------------------------------------------------------------------------------------------


@pytest.fixture
def host_sigterm() -> Iterator[list[int]]:
    """The host's own Python SIGTERM handler (it records each signal); the original one is put back after."""
    original = signal.getsignal(signal.SIGTERM)
    received: list[int] = []

    def host(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    signal.signal(signal.SIGTERM, host)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, original)


def _is_sonora_file(filename: str) -> bool:
    path = Path(filename).resolve()
    return path.is_relative_to(SONORA_DIR) and not path.is_relative_to(TESTING_DIR)


def sonora_frames(task: asyncio.Task[Any]) -> list[str]:
    """The sonora_cog functions (outside ``sonora_cog.testing``) in the task's chain of awaited coroutines."""
    found = []
    coro: Any = task.get_coro()
    while coro is not None:
        code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None) or getattr(coro, "ag_code", None)
        if code is not None and _is_sonora_file(code.co_filename):
            found.append(f"{Path(code.co_filename).name}:{code.co_qualname}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return found


def pending_sonora_tasks() -> dict[str, list[str]]:
    """Every unfinished task of this loop that runs sonora_cog code (task name → its sonora functions)."""
    return {
        task.get_name(): frames
        for task in asyncio.all_tasks()
        if not task.done()
        and (frames := sonora_frames(task) or (["(named)"] if task.get_name().startswith("sonora-") else []))
    }


@contextlib.contextmanager
def recording_tasks() -> Iterator[list[asyncio.Task[Any]]]:
    """Every task created on the running loop while the block runs (through the loop's task factory)."""
    loop = asyncio.get_running_loop()
    previous = loop.get_task_factory()
    created: list[asyncio.Task[Any]] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        task = previous(loop, coro, **kwargs) if previous is not None else asyncio.Task(coro, loop=loop, **kwargs)
        created.append(task)  # type: ignore[arg-type]
        return task  # type: ignore[return-value]

    loop.set_task_factory(factory)  # type: ignore[arg-type]
    try:
        yield created
    finally:
        loop.set_task_factory(previous)


def listeners_of(bot: commands.Bot, *objects: object) -> list[tuple[str, Any]]:
    """The bot's extra listeners that are bound methods of one of ``objects``."""
    return [
        (name, func)
        for name, funcs in bot.extra_events.items()
        for func in funcs
        if any(getattr(func, "__self__", None) is obj for obj in objects)
    ]


async def read_live(settings: Settings, guild_id: int) -> SessionState | None:
    """The guild's live record, read with a manager of its own (the bot's may be closed)."""
    manager = SessionManager(settings)
    try:
        return await manager.read_live(guild_id)
    finally:
        await manager.close()


async def snapshot_kinds(settings: Settings, guild_id: int) -> list[SnapshotKind]:
    manager = SessionManager(settings)
    try:
        return [m.kind for m in await manager.list_snapshots(guild_id)]
    finally:
        await manager.close()


async def music(running: RunningBot, name: str, options: dict[str, Any] | None = None) -> str:
    """Send a music command as alice (who is in the voice channel) and return its answer."""
    interaction = await running.slash(name, None, options, user=running.world.alice)
    return (await interaction.wait_message(10)).content


def assert_nothing_left_behind(
    bot: commands.Bot, cog: SonoraCog, created: list[asyncio.Task[Any]], sigterm_before: Any
) -> None:
    """What a failed ``add_cog(SonoraCog(...))`` must leave: nothing of sonora_cog on the bot or the loop."""
    assert bot.get_cog(COG_NAME) is None
    assert bot.get_cog("SonoraSnapshots") is None
    assert owner_of(bot) is None
    assert listeners_of(bot, cog, cog.owner) == []
    assert signal.getsignal(signal.SIGTERM) is sigterm_before
    started = [t for t in created if sonora_frames(t) or t.get_name().startswith("sonora-")]
    renewers = [t for t in started if t.get_name() == "sonora-lease-renew"]
    assert len(renewers) == 1, [t.get_name() for t in started]  # cog_load did get as far as the leases
    unfinished = [(t.get_name(), sonora_frames(t)) for t in started if not t.done()]
    assert unfinished == [], unfinished
    assert pending_sonora_tasks() == {}


# -- 1. a failed cog_load leaves nothing behind --------------------------------------------------------


@pytest.mark.parametrize("store", ["working", "unlistable"])
async def test_a_failed_cog_load_leaves_nothing_behind(
    start_host: StartHost, host_sigterm: list[int], tmp_path: Path, caplog: pytest.LogCaptureFixture, store: str
) -> None:
    # The host has its own /snapshot, so adding sonora_cog's /snapshot group cog fails inside cog_load,
    # after the owner, the leases, the startup lookup (and its retry task, when the store cannot be
    # listed), the jobs and the SIGTERM handler were set up: all of that must be undone. A short
    # checkpoint: a cog loaded while a player plays takes that session over at its first checkpoint.
    snapshots = SnapshotSettings(debounce=0.05, checkpoint_interval=0.5, auto_enabled=False)
    running = await start_host(settings=default_settings(tmp_path / "sonora", snapshots=snapshots))
    bot = running.bot
    await running.play("clair de lune")  # the host's music plays while the cog is loaded at runtime
    mine = app_commands.Group(name="snapshot", description="mine")
    bot.tree.add_command(mine)
    if store == "working":
        settings = running.settings
    else:
        blocker = tmp_path / "not-a-directory"
        blocker.write_text("a file where the store's parent directory should be")
        settings = default_settings(blocker / "sonora", snapshots=snapshots)
    cog = SonoraCog(bot, settings=settings)
    sigterm_before = signal.getsignal(signal.SIGTERM)
    caplog.set_level(logging.INFO, logger="sonora_cog")
    caplog.set_level(logging.INFO, logger="apscheduler.scheduler")

    with recording_tasks() as created, pytest.raises(app_commands.CommandAlreadyRegistered):
        await bot.add_cog(cog)

    assert bot.tree.get_command("snapshot") is mine
    assert "Scheduler started" in caplog.text  # the jobs had started...
    await running.wait_for(lambda: cog.scheduler.running is False, 2)  # ...and are stopped (next loop turn)
    assert "Scheduler has been shut down" in caplog.text
    assert_nothing_left_behind(bot, cog, created, sigterm_before)
    if store == "unlistable":
        assert "cannot list the live records" in caplog.text  # the retry task was started, then cancelled
        retries = [t for t in created if any("when_store_is_back" in f for f in sonora_frames(t))]
        assert len(retries) == 1 and retries[0].cancelled()
    assert host_sigterm == []

    # Nothing of the failed cog watches the player: a change is not written anywhere, not even by a
    # checkpoint (an absence: wait one checkpoint interval, the job of a leftover scheduler would have run).
    player = running.player()
    assert isinstance(player, SonoraPlayer) and owner_of(player.client) is None
    assert await music(running, "volume", {"value": 33}) == "Volume 33."
    await asyncio.sleep(snapshots.checkpoint_interval + 0.2)
    assert await read_live(running.settings, running.guild.id) is None

    # The host fixes its command tree and loads the cog again: it works as if the failure never happened.
    bot.tree.remove_command("snapshot")
    retry = SonoraCog(bot, settings=running.settings)
    await bot.add_cog(retry)
    running.cog = retry
    assert owner_of(bot) is retry.owner
    assert bot.get_cog("SonoraSnapshots") is not None
    assert isinstance(bot.tree.get_command("snapshot"), app_commands.Group)
    assert bot.tree.get_command("snapshot") is not mine
    await running.play("boléro")
    assert await music(running, "volume", {"value": 44}) == "Volume 44."
    state = await running.live_record(
        manager=retry.manager, check=lambda s: s.player.volume == 44 and len(s.queue.upcoming) == 1
    )
    assert state.queue.current is not None and state.queue.current.title == "Clair de Lune"


async def test_a_cog_load_refused_because_start_auto_snapshot_owns_the_bot_changes_nothing(
    start_host: StartHost, host_sigterm: list[int], tmp_path: Path
) -> None:
    # The other failure point: the very first step (one owner per bot). The running auto-snapshot owner
    # must keep its listeners, its jobs and its writes.
    settings = default_settings(tmp_path / "sonora", snapshots=SnapshotSettings(debounce=0.05, auto_enabled=False))
    manager = SessionManager(settings)

    async def setup(bot: commands.Bot) -> None:
        manager.start_auto_snapshot(bot)

    try:
        running = await start_host(setup=setup, settings=settings)
        bot = running.bot
        auto_owner = owner_of(bot)
        assert isinstance(auto_owner, SessionOwner)
        cog = SonoraCog(bot, settings=settings)
        sigterm_before = signal.getsignal(signal.SIGTERM)
        listeners_before = listeners_of(bot, auto_owner)
        assert len(listeners_before) == 4

        with recording_tasks() as created, pytest.raises(RuntimeError, match="already has a sonora_cog session owner"):
            await bot.add_cog(cog)

        assert bot.get_cog(COG_NAME) is None and bot.get_cog("SonoraSnapshots") is None
        assert bot.tree.get_command("snapshot") is None
        assert owner_of(bot) is auto_owner
        assert listeners_of(bot, auto_owner) == listeners_before
        assert listeners_of(bot, cog, cog.owner) == []
        assert signal.getsignal(signal.SIGTERM) is sigterm_before
        assert cog.scheduler.running is False
        assert [t.get_name() for t in created if sonora_frames(t) or t.get_name().startswith("sonora-")] == []
        assert manager._scheduler is not None and manager._scheduler.running  # the auto-snapshot jobs run on

        await running.play("clair de lune")
        assert await music(running, "volume", {"value": 21}) == "Volume 21."
        await running.live_record(manager=manager, check=lambda s: s.player.volume == 21)
    finally:
        await manager.close()


# -- 2. SIGTERM: chained to the host's handler, restored on unload -------------------------------------


async def _play_and_save(running: RunningBot) -> None:
    await running.play("clair de lune")
    assert await music(running, "volume", {"value": 61}) == "Volume 61."
    await running.live_record(manager=running.cog.manager, check=lambda s: s.player.volume == 61)


async def _sigterm_and_wait_closed(running: RunningBot) -> None:
    handler = signal.getsignal(signal.SIGTERM)
    assert callable(handler), f"refusing to send SIGTERM with {handler!r} in place: it would kill pytest"
    os.kill(os.getpid(), signal.SIGTERM)
    assert running.task is not None
    await asyncio.wait_for(asyncio.shield(running.task), 15)  # the bot's connect() ends: sonora closed it
    assert running.bot.is_closed()
    assert running.bot.get_cog(COG_NAME) is None and owner_of(running.bot) is None


async def _assert_saved_for_handover(running: RunningBot) -> None:
    assert await snapshot_kinds(running.settings, running.guild.id) == [SnapshotKind.shutdown]
    state = await read_live(running.settings, running.guild.id)  # kept: the next process restores it
    assert state is not None and state.player.volume == 61
    assert state.queue.current is not None and state.queue.current.title == "Clair de Lune"


async def test_sigterm_is_chained_to_the_hosts_python_handler_and_it_is_restored_on_unload(
    start_bot: StartBot, host_sigterm: list[int]
) -> None:
    host = signal.getsignal(signal.SIGTERM)
    running = await start_bot()
    sonora = signal.getsignal(signal.SIGTERM)
    assert sonora is not host and callable(sonora)
    await _play_and_save(running)

    await _sigterm_and_wait_closed(running)

    assert host_sigterm == [signal.SIGTERM]  # the host's handler ran too, once
    assert signal.getsignal(signal.SIGTERM) is host  # unloading put it back
    await _assert_saved_for_handover(running)


async def test_sigterm_keeps_the_hosts_loop_handler_running_and_it_is_restored_on_unload(
    start_bot: StartBot,
) -> None:
    loop = asyncio.get_running_loop()
    original = signal.getsignal(signal.SIGTERM)
    received: list[str] = []
    try:
        loop.add_signal_handler(signal.SIGTERM, received.append, "host")
        asyncio_handler = signal.getsignal(signal.SIGTERM)  # asyncio's own (it wakes the loop up)
        running = await start_bot()
        assert signal.getsignal(signal.SIGTERM) is not asyncio_handler
        await _play_and_save(running)

        await _sigterm_and_wait_closed(running)
        await running.wait_for(lambda: received, 5)

        assert received == ["host"]
        assert signal.getsignal(signal.SIGTERM) is asyncio_handler
        await _assert_saved_for_handover(running)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        signal.signal(signal.SIGTERM, original)


# -- 3. start_auto_snapshot: the same persistence without the cog --------------------------------------


async def test_start_auto_snapshot_without_the_cog_persists_every_sonora_player_change(
    start_host: StartHost, tmp_path: Path
) -> None:
    # no checkpoint during the test: only what SonoraPlayer reports can be written
    settings = default_settings(
        tmp_path / "sonora", snapshots=SnapshotSettings(debounce=0.05, checkpoint_interval=3600, auto_enabled=False)
    )
    manager = SessionManager(settings)
    owners: list[SessionOwner] = []

    async def setup(bot: commands.Bot) -> None:
        owners.append(manager.start_auto_snapshot(bot))

    try:
        running = await start_host(setup=setup, settings=settings)
        assert running.bot.get_cog(COG_NAME) is None and running.bot.tree.get_command("snapshot") is None
        assert owner_of(running.bot) is owners[0]
        alice, world = running.world.alice, running.world.world

        await running.play("clair de lune")
        await running.play("boléro")
        assert await music(running, "pause") == "Paused."
        assert await music(running, "volume", {"value": 40}) == "Volume 40."
        assert await music(running, "loop", {"mode": "queue"}) == "Loop queue."
        assert await music(running, "note", {"text": "birthday set"}) == "Noted."

        extras = {"announce_channel_id": str(world.text.id), "note": "birthday set"}
        state = await running.live_record(manager=manager, check=lambda s: s.extras == extras and s.player.volume == 40)
        assert state.channel_id == world.voice.id
        assert state.queue.current is not None and state.queue.current.title == "Clair de Lune"
        assert state.queue.current.user_data == {"requester_id": str(alice.id)}
        assert [t.title for t in state.queue.upcoming] == ["Boléro"]
        assert state.player.paused is True
        assert state.queue.loop_mode is LoopMode.queue

        assert await music(running, "volume", {"value": 90}) == "Volume 90."
        await manager.close()  # the final state and a shutdown snapshot

        assert owner_of(running.bot) is None
        reader = SessionManager(settings)
        try:
            final = await reader.read_live(running.guild.id)
            metas = await reader.list_snapshots(running.guild.id)
            assert [m.kind for m in metas] == [SnapshotKind.shutdown]
            shutdown = await reader.load_snapshot(metas[0].id, running.guild.id)
        finally:
            await reader.close()
        for saved in (final, shutdown):
            assert saved is not None
            assert saved.player.volume == 90 and saved.player.paused is True
            assert saved.extras == extras and saved.queue.loop_mode is LoopMode.queue
            assert saved.queue.current is not None and saved.queue.current.title == "Clair de Lune"
            assert [t.title for t in saved.queue.upcoming] == ["Boléro"]
    finally:
        await manager.close()


async def test_start_auto_snapshot_on_a_bot_that_has_the_cog_is_refused(start_bot: StartBot) -> None:
    running = await start_bot()
    cog_owner = running.cog.owner
    manager = SessionManager(running.settings)
    try:
        with pytest.raises(RuntimeError, match="already has a sonora_cog session owner"):
            manager.start_auto_snapshot(running.bot)
        with pytest.raises(RuntimeError, match="already has a sonora_cog session owner"):
            manager.start_auto_snapshot(running.bot)  # still refused: no half-made owner was kept
        assert manager._owner is None and manager._scheduler is None
        assert owner_of(running.bot) is cog_owner
        assert len(listeners_of(running.bot, cog_owner)) == 4
        await _play_and_save(running)  # the cog's owner writes on as before
    finally:
        await manager.close()


# -- 4. unloading is bounded in time when the store hangs ----------------------------------------------


@pytest.mark.parametrize("stuck", ["in-a-flush", "in-the-final-write"])
async def test_unload_is_bounded_when_the_store_hangs(
    start_bot: StartBot, caplog: pytest.LogCaptureFixture, stuck: str
) -> None:
    timeout = 1.0
    running = await start_bot(
        snapshots=SnapshotSettings(
            debounce=0.05, checkpoint_interval=3600, auto_enabled=False, shutdown_timeout=timeout
        )
    )
    await _play_and_save(running)  # the last checkpoint: volume 61
    store = running.cog.manager.store
    entered = asyncio.Event()

    async def hangs(*args: Any) -> None:
        entered.set()
        await asyncio.Event().wait()  # never returns: a store that stopped answering

    for write in ("put_live", "put_live_many", "save", "save_many"):  # one record or a group commit
        setattr(store, write, hangs)
    if stuck == "in-a-flush":  # a debounced write is stuck in the store (holding the flush lock) at unload
        assert await music(running, "volume", {"value": 62}) == "Volume 62."
        await asyncio.wait_for(entered.wait(), 5)
    caplog.set_level(logging.INFO, logger="sonora_cog")

    started = time.monotonic()
    await asyncio.wait_for(running.bot.close(), timeout + 3 * HANDOVER_GRACE + 5)  # never hang the suite
    elapsed = time.monotonic() - started

    assert entered.is_set()
    assert timeout - 0.05 <= elapsed <= timeout + HANDOVER_GRACE, f"bot.close() took {elapsed:.2f}s"
    if stuck == "in-a-flush":  # the final write never started: the guild (changed: volume 62) was not compared
        assert "0 current, 1 not compared yet: up to 1 guild(s) keep their last checkpoint" in caplog.text
    else:  # the guild had not changed since the checkpoint: its live record is current, its snapshot is stuck
        assert "1 current, 0 not compared yet: up to 0 guild(s) keep their last checkpoint" in caplog.text
    assert "0 of 1 shutdown snapshot(s) written" in caplog.text
    assert "sonora_cog unloaded" in caplog.text
    assert running.bot.get_cog(COG_NAME) is None and owner_of(running.bot) is None
    assert running.cog.scheduler.running is False
    state = await read_live(running.settings, running.guild.id)
    assert state is not None and state.player.volume == 61  # the last checkpoint, as the log says
    assert await snapshot_kinds(running.settings, running.guild.id) == []
    assert pending_sonora_tasks() == {}  # the write stuck in the store was abandoned with the rest
