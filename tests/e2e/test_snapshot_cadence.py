"""How often a running bot snapshots: adaptive and fixed ``auto`` intervals, ``pre-change`` snapshots.

Real discord.py + wavelink + SonoraCog through FakeDiscord and FakeLavalink (``conftest.py``). Time is
the session owner's clock, replaced by a :class:`~factories.ManualClock` before anything plays: the
tests move it and call the auto-snapshot job themselves, so an hour passes without sleeping.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import wavelink
from conftest import RunningBot, StartBot
from factories import ManualClock

from sonora_cog.cadence import PRE_CHANGE_MIN_GAP
from sonora_cog.config import SnapshotSettings
from sonora_cog.meta import SnapshotKind, SnapshotMeta
from sonora_cog.player import SonoraPlayer
from sonora_cog.session import Phase

QUIET_TITLES = ("Paper Boats",)


async def start_clocked(start_bot: StartBot, **snapshots: float) -> tuple[RunningBot, ManualClock]:
    """A bot whose owner runs on a manual clock; no jobs run by themselves (the test calls them)."""
    settings = SnapshotSettings(debounce=0.05, checkpoint_interval=3600, auto_enabled=False, **snapshots)  # type: ignore[arg-type]
    running = await start_bot(snapshots=settings)
    clock = ManualClock()
    running.cog.owner.clock = clock
    return running, clock


async def play(running: RunningBot, title: str, guild: Any = None) -> None:
    """Play ``title`` and wait until the guild's session is ``live`` (its join and track start were seen:
    under load they arrive after the command's answer)."""
    await running.play(title, guild=guild)
    guild_id = guild.id if guild is not None else running.guild.id
    await running.wait_for(lambda: running.cog.owner.phase(guild_id) is Phase.live)


async def snapshots_of(running: RunningBot, guild_id: int, kind: SnapshotKind) -> list[SnapshotMeta]:
    return [m for m in await running.cog.manager.list_snapshots(guild_id) if m.kind is kind]


def sonora_player(running: RunningBot, guild_id: int | None = None) -> SonoraPlayer:
    player = running.player(guild_id)
    assert isinstance(player, SonoraPlayer)
    return player


async def busy_and_quiet(running: RunningBot) -> tuple[int, int]:
    """Music in both guilds; alice listens in the main one and leaves the other: (busy, quiet) guild ids."""
    other = running.world.other
    await play(running, "Clair de Lune")
    await play(running, "Paper Boats", guild=other.guild)
    await running.fake.member_leave_voice(other.guild.id, running.world.alice.id)
    owner = running.cog.owner
    await running.wait_for(lambda: owner.listener_count(other.guild.id) == 0)
    assert owner.listener_count(running.guild.id) == 1
    return running.guild.id, other.guild.id


async def run_for_an_hour(
    running: RunningBot, clock: ManualClock, change_every: dict[int, int]
) -> dict[int, list[int]]:
    """Minute by minute for an hour: change each guild every ``change_every[guild]`` minutes, run the
    auto-snapshot job; return, per guild, the seconds (from the start) at which it got an ``auto`` snapshot."""
    start = clock.now
    taken: dict[int, list[int]] = {guild_id: [] for guild_id in change_every}
    for minute in range(1, 61):
        clock.now = start + minute * 60
        for guild_id, every in change_every.items():
            if minute % every == 0:
                await sonora_player(running, guild_id).set_volume(10 + minute)
        before = {g: len(await snapshots_of(running, g, SnapshotKind.auto)) for g in change_every}
        await running.cog.owner.auto_snapshot()
        for guild_id in change_every:
            if len(await snapshots_of(running, guild_id, SnapshotKind.auto)) > before[guild_id]:
                taken[guild_id].append(minute * 60)
    return taken


# -- auto snapshots -------------------------------------------------------------------------------------


async def test_a_busy_guild_gets_the_busy_interval_and_a_quiet_one_the_quiet_interval(start_bot: StartBot) -> None:
    running, clock = await start_clocked(start_bot, auto_interval_busy=300, auto_interval_quiet=1800)
    busy, quiet = await busy_and_quiet(running)
    live_at = clock.now  # both went live now (the clock stood still while they started)
    for i in range(20):  # a burst of activity in the busy guild: 20 separate changes within a minute
        await sonora_player(running, busy).set_volume(40 + i)
        clock.advance(2)
    owner = running.cog.owner
    assert owner.cadence(busy).interval == 300 and owner.cadence(busy).reason.startswith("busy: ")
    assert owner.cadence(quiet).interval == 1800 and "no listeners" in owner.cadence(quiet).reason
    clock.now = live_at

    taken = await run_for_an_hour(running, clock, {busy: 1, quiet: 5})

    # the first one an interval after going live, not at once; then every interval
    assert taken[busy] == list(range(300, 3601, 300))
    assert taken[quiet] == [1800, 3600]


async def test_a_guild_in_between_gets_an_interval_in_between(start_bot: StartBot) -> None:
    running, clock = await start_clocked(start_bot, auto_interval_busy=300, auto_interval_quiet=1800)
    await play(running, "Clair de Lune")
    owner = running.cog.owner
    changes = owner.session(running.guild.id).recent_changes(clock.now)
    assert 0 < changes < 12
    cadence = owner.cadence(running.guild.id)
    assert cadence.interval == 1800 - 1500 * changes / 12
    assert cadence.reason.endswith("in the last hour (busy from 12), 1 listener")


async def test_a_fixed_interval_applies_to_every_guild_whatever_its_activity(start_bot: StartBot) -> None:
    running, clock = await start_clocked(start_bot, auto_interval=600)
    busy, quiet = await busy_and_quiet(running)
    assert running.cog.owner.cadence(quiet).reason == "fixed: snapshots.auto_interval"

    taken = await run_for_an_hour(running, clock, {busy: 1, quiet: 1})

    assert taken[busy] == taken[quiet] == list(range(600, 3601, 600))


async def test_a_due_guild_that_did_not_change_gets_none_until_it_changes(start_bot: StartBot) -> None:
    running, clock = await start_clocked(start_bot, auto_interval=600)
    await play(running, "Clair de Lune")
    owner = running.cog.owner
    assert await owner.auto_snapshot() == 0  # just went live: not due yet
    clock.advance(600)
    assert await owner.auto_snapshot() == 1
    clock.advance(600)
    assert await owner.auto_snapshot() == 0  # due, but only its track moved on
    clock.advance(600)
    assert await owner.auto_snapshot() == 0
    assert owner.next_auto_in(running.guild.id) == pytest.approx(-600)  # still due
    await sonora_player(running).set_volume(55)
    assert await owner.auto_snapshot() == 1  # a change while due: taken at the next run
    assert owner.next_auto_in(running.guild.id) == pytest.approx(600)


# -- pre-change snapshots -------------------------------------------------------------------------------


async def queue_titles(running: RunningBot, *titles: str) -> SonoraPlayer:
    """Play the first title and queue the others; wait until the live record holds them."""
    for title in titles:
        await play(running, title)
    player = sonora_player(running)
    assert [t.title for t in player.queue] == list(titles[1:])
    return player


async def pre_changes(running: RunningBot) -> list[SnapshotMeta]:
    await running.cog.owner.drain()  # the background saves started so far are done
    return await snapshots_of(running, running.guild.id, SnapshotKind.pre_change)


async def upcoming_of(running: RunningBot, meta: SnapshotMeta) -> list[str]:
    state = await running.cog.manager.load_snapshot(meta.id, running.guild.id)
    return [t.title for t in state.queue.upcoming]


async def test_clearing_the_queue_keeps_a_pre_change_snapshot_of_it(start_bot: StartBot) -> None:
    running, _clock = await start_clocked(start_bot)
    player = await queue_titles(running, "Clair de Lune", "Boléro", "Midnight Drive", "Glass Houses")
    player.queue.clear()
    [meta] = await pre_changes(running)
    assert meta.label == "before queue clear" and meta.current_title == "Clair de Lune"
    assert await upcoming_of(running, meta) == ["Boléro", "Midnight Drive", "Glass Houses"]
    await running.live_record(lambda s: s.queue.upcoming == ())  # the clear itself is saved as usual


async def test_shuffling_keeps_the_order_from_before(start_bot: StartBot) -> None:
    running, _clock = await start_clocked(start_bot)
    titles = ("Clair de Lune", "Boléro", "Midnight Drive", "Glass Houses", "Paper Boats", "Gymnopédie No. 1")
    player = await queue_titles(running, *titles)
    player.queue.shuffle()
    [meta] = await pre_changes(running)
    assert meta.label == "before queue shuffle"
    assert await upcoming_of(running, meta) == list(titles[1:])


async def test_at_most_one_pre_change_snapshot_a_minute_and_small_changes_get_none(
    start_bot: StartBot, caplog: pytest.LogCaptureFixture
) -> None:
    running, clock = await start_clocked(start_bot)
    player = await queue_titles(running, "Clair de Lune", "Boléro", "Midnight Drive")
    player.queue.clear()
    assert len(await pre_changes(running)) == 1
    for title in ("Glass Houses", "Paper Boats", "Boléro", "Midnight Drive", "Clair de Lune"):
        player.queue.put(wavelink.Playable(running.track(title)))  # type: ignore[arg-type]
    caplog.set_level(logging.DEBUG, logger="sonora_cog.writer")
    player.queue.shuffle()  # a bot that clears or shuffles on every track end does not flood the store
    assert len(await pre_changes(running)) == 1
    assert "no pre-change snapshot before queue shuffle" in caplog.text
    clock.advance(PRE_CHANGE_MIN_GAP)
    player.queue.delete(0)  # one track: not major
    del player.queue[0:1]
    assert len(await pre_changes(running)) == 1
    order = [t.title for t in player.queue]
    assert len(order) == 3
    del player.queue[0:3]  # three at once: major
    metas = await pre_changes(running)
    assert len(metas) == 2
    newest = max(metas, key=lambda m: m.created_at)
    assert newest.label == "before removing 3 tracks"
    assert await upcoming_of(running, newest) == order


async def test_a_restore_clearing_the_queue_takes_no_pre_change_snapshot(start_bot: StartBot) -> None:
    running, _clock = await start_clocked(start_bot)
    await queue_titles(running, "Clair de Lune", "Boléro", "Midnight Drive")
    state = running.cog.current_state(running.discord_guild)
    assert state is not None
    report = await running.cog.restore(running.discord_guild, state, pre_restore_label="test")
    assert report.status.value == "restored"
    assert await pre_changes(running) == []  # the restore keeps its own pre-restore snapshot instead
    assert await snapshots_of(running, running.guild.id, SnapshotKind.pre_restore)
