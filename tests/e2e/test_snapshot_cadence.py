"""How often a running bot snapshots: adaptive and fixed ``auto`` intervals.

Real discord.py + wavelink + SonoraCog through FakeDiscord and FakeLavalink (``conftest.py``). Time is
the session owner's clock, replaced by a :class:`~factories.ManualClock` before anything plays: the
tests move it and call the auto-snapshot job themselves, so an hour passes without sleeping.
"""

from __future__ import annotations

from conftest import RunningBot, StartBot
from factories import ManualClock

from sonora_cog.config import SnapshotSettings
from sonora_cog.meta import SnapshotKind, SnapshotMeta
from sonora_cog.player import SonoraPlayer


async def start_clocked(start_bot: StartBot, **snapshots: float) -> tuple[RunningBot, ManualClock]:
    """A bot whose owner runs on a manual clock; no jobs run by themselves (the test calls them)."""
    settings = SnapshotSettings(debounce=0.05, checkpoint_interval=3600, auto_enabled=False, **snapshots)  # type: ignore[arg-type]
    running = await start_bot(snapshots=settings)
    clock = ManualClock()
    running.cog.owner.clock = clock
    return running, clock


async def snapshots_of(running: RunningBot, guild_id: int, kind: SnapshotKind) -> list[SnapshotMeta]:
    return [m for m in await running.cog.manager.list_snapshots(guild_id) if m.kind is kind]


def sonora_player(running: RunningBot, guild_id: int | None = None) -> SonoraPlayer:
    player = running.player(guild_id)
    assert isinstance(player, SonoraPlayer)
    return player


async def busy_and_quiet(running: RunningBot) -> tuple[int, int]:
    """Music in both guilds; alice listens in the main one and leaves the other: (busy, quiet) guild ids."""
    other = running.world.other
    await running.play("Clair de Lune")
    await running.play("Paper Boats", guild=other.guild)
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
    await running.play("Clair de Lune")
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
    await running.play("Clair de Lune")
    owner = running.cog.owner
    assert await owner.auto_snapshot() == 0  # just went live: not due yet
    clock.advance(600)
    assert await owner.auto_snapshot() == 1
    clock.advance(600)
    assert await owner.auto_snapshot() == 0  # due, but only its track moved on
    clock.advance(600)
    assert await owner.auto_snapshot() == 0
    assert owner.next_auto_in(running.guild.id) == -600  # still due
    await sonora_player(running).set_volume(55)
    assert await owner.auto_snapshot() == 1  # a change while due: taken at the next run
    assert owner.next_auto_in(running.guild.id) == 600
