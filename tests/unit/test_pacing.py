"""Voice-join pacing per shard connection (sonora_cog.pacing), on a virtual clock: nothing sleeps."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sonora_cog.pacing import DISCORD_GATEWAY_WINDOW_S, PACING_WINDOW_S, ShardBudget, ShardPacer, shard_id_of

WINDOW = PACING_WINDOW_S


class VirtualClock:
    """A clock that moves only when a waiter sleeps; every sleep is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def pacer(per_window: int = 100, rate: float = 1.0) -> tuple[ShardPacer, VirtualClock]:
    clock = VirtualClock()
    return ShardPacer(per_window, rate, clock=clock, sleep=clock.sleep), clock


async def join_times(paced: ShardPacer, clock: VirtualClock, shard: int, count: int) -> list[float]:
    """Acquire ``count`` joins on one shard, one after another; return when each was granted."""
    times = []
    for _ in range(count):
        await paced.acquire(shard)
        times.append(clock.now)
    return times


def simulate(per_window: int, rate: float, arrivals: list[tuple[float, int]]) -> dict[int, list[float]]:
    """Grant joins arriving at (time, shard), first come first served per shard; return the grant times.

    The loop is the one :meth:`ShardPacer.acquire` runs, with the clock jumping to each ready time.
    """
    budgets: dict[int, ShardBudget] = {}
    granted: dict[int, list[float]] = {}
    free_at: dict[int, float] = {}  # a shard's next join cannot go before the previous one (FIFO)
    for arrival, shard in sorted(arrivals):
        budget = budgets.setdefault(shard, ShardBudget(per_window, rate))
        now = max(arrival, free_at.get(shard, arrival))
        while (at := budget.ready_at(now)) > now:
            now = at
        budget.take(now)
        free_at[shard] = now
        granted.setdefault(shard, []).append(now)
    return granted


@settings(max_examples=300, deadline=None)
@given(
    per_window=st.integers(1, 12),
    rate=st.floats(0.05, 5.0),
    arrivals=st.lists(st.tuples(st.floats(0.0, 400.0, allow_nan=False), st.integers(0, 3)), min_size=1, max_size=80),
)
def test_no_shard_ever_exceeds_its_window(per_window: int, rate: float, arrivals: list[tuple[float, int]]) -> None:
    granted = simulate(per_window, rate, arrivals)
    assert sum(len(times) for times in granted.values()) == len(arrivals)  # every join went out, once
    for times in granted.values():
        assert times == sorted(times)
        # any per_window + 1 consecutive joins span a full window: no window holds more than per_window
        for first, later in zip(times, times[per_window:], strict=False):
            assert later >= first + WINDOW, (first, later)
        # and beyond the first per_window, the joins keep to the steady rate (a token bucket)
        for i, first in enumerate(times):
            for j in range(i, len(times)):
                assert j - i + 1 <= per_window + (times[j] - first) * rate + 1e-6


async def test_a_restore_that_fits_the_window_goes_out_at_once() -> None:
    paced, clock = pacer(per_window=100, rate=1.0)
    times = await join_times(paced, clock, 0, 100)
    assert set(times) == {1000.0}
    assert clock.sleeps == []
    assert paced.in_window(0) == 100


async def test_a_larger_restore_continues_at_the_steady_rate_and_never_exceeds_the_window() -> None:
    paced, clock = pacer(per_window=10, rate=0.5)
    times = await join_times(paced, clock, 0, 16)
    assert times[:10] == [1000.0] * 10
    # the window is spent: the 11th waits until the first ten leave it (the bucket refilled meanwhile)
    assert times[10] == pytest.approx(1000.0 + WINDOW)
    for first, later in zip(times, times[10:], strict=False):
        assert later >= first + WINDOW


async def test_the_steady_rate_applies_when_the_window_is_not_the_limit() -> None:
    # 100 per window at 1 join/s: after 100 at once, the window is full for 62 s; then joins go on with
    # what the bucket refilled meanwhile (62 tokens), then 1 per second.
    paced, clock = pacer(per_window=100, rate=1.0)
    times = await join_times(paced, clock, 0, 172)
    assert times[:100] == [1000.0] * 100
    assert times[100:162] == [pytest.approx(1000.0 + WINDOW)] * 62
    assert [b - a for a, b in itertools.pairwise(times[161:])] == [pytest.approx(1.0)] * 10
    assert sum(1 for t in times if t < 1000.0 + DISCORD_GATEWAY_WINDOW_S) == 100  # Discord's 60 s: 100


class HeldClock(VirtualClock):
    """A clock that stands still: a sleeper waits until the test moves time and opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await self.gate.wait()
        self.gate.clear()


async def test_shards_are_independent() -> None:
    clock = HeldClock()
    paced = ShardPacer(3, 0.1, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        await paced.acquire(0)  # shard 0 spent its budget
    waiting = asyncio.create_task(paced.acquire(0))
    await asyncio.sleep(0)
    assert not waiting.done() and clock.sleeps == [pytest.approx(WINDOW)]
    for _ in range(3):  # shard 1 goes at once, while shard 0 waits: no sleep, no time passes
        await asyncio.wait_for(paced.acquire(1), 1)
    assert clock.sleeps == [pytest.approx(WINDOW)] and paced.in_window(1) == 3
    assert not waiting.done()
    clock.now += WINDOW
    clock.gate.set()
    await asyncio.wait_for(waiting, 1)
    assert paced.in_window(0) == 1


async def test_a_cancelled_waiter_takes_nothing_from_the_budget() -> None:
    clock = HeldClock()
    paced = ShardPacer(2, 1.0, clock=clock, sleep=clock.sleep)
    await paced.acquire(0)
    await paced.acquire(0)
    waiter = asyncio.create_task(paced.acquire(0))
    await asyncio.sleep(0)
    assert clock.sleeps and not waiter.done()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert paced.in_window(0) == 2
    clock.now += WINDOW
    assert paced.in_window(0) == 0
    # the whole budget is there again, and the lock the waiter held was released
    await asyncio.wait_for(paced.acquire(0), 1)
    await asyncio.wait_for(paced.acquire(0), 1)
    assert paced.in_window(0) == 2 and len(clock.sleeps) == 1


async def test_joins_of_one_shard_are_granted_in_order() -> None:
    paced, clock = pacer(per_window=1, rate=1.0)
    order: list[int] = []

    async def join(index: int) -> None:
        await paced.acquire(0)
        order.append(index)

    await asyncio.gather(*(join(i) for i in range(4)))
    assert order == [0, 1, 2, 3]
    assert clock.now == pytest.approx(1000.0 + 3 * WINDOW)


def test_the_shard_of_a_guild_is_discord_pys() -> None:
    assert shard_id_of((1_000_003 << 22) + 5, 4) == 1_000_003 % 4
    assert shard_id_of(123 << 22, None) == 0  # a plain Bot is shard 0
    assert shard_id_of(123 << 22, 1) == 0


@pytest.mark.parametrize(("per_window", "rate", "window"), [(0, 1.0, 60.0), (1, 0.0, 60.0), (1, 1.0, 0.0)])
def test_nonsense_numbers_are_refused(per_window: int, rate: float, window: float) -> None:
    with pytest.raises(ValueError, match="per_window"):
        ShardPacer(per_window, rate, window=window)


@pytest.mark.parametrize("joins", [130, 200, 300, 1000])
async def test_a_shard_larger_than_its_window_restores_near_discord_s_window_floor(joins: int) -> None:
    """At the shipped defaults, a restore of more guilds than one window holds ends within 1.5x of the
    least Discord's rule allows (118 joins per 60 s beside ~2 heartbeats: join k no earlier than
    60 s x (k // 118)), and never has more than ``joins_per_window`` joins in any window."""
    from sonora_cog.config import RestoreSettings

    defaults = RestoreSettings()
    paced, clock = pacer(defaults.joins_per_window, defaults.joins_per_second)
    times = await join_times(paced, clock, 0, joins)
    took = times[-1] - times[0]
    floor = DISCORD_GATEWAY_WINDOW_S * ((joins - 1) // 118)
    assert floor <= took <= 1.5 * floor
    assert (
        max(sum(1 for t in times if start <= t < start + DISCORD_GATEWAY_WINDOW_S) for start in times)
        <= defaults.joins_per_window
    )
