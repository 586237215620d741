"""Voice-join pacing: one budget per shard connection, under Discord's rolling gateway window.

Discord allows 120 gateway sends per connection in any 60 s, heartbeats included, and disconnects a
connection that sends more ("Apps can send 120 gateway events per connection every 60 seconds",
https://discord.com/developers/docs/events/gateway#rate-limiting). discord.py's own limiter
(``discord.gateway.GatewayRatelimiter``) lets 110 sends per 60 s through and sends heartbeats beside
it ("to give room for at least 10 heartbeats per minute"). A voice join is one send (op 4
VOICE_STATE_UPDATE) on the connection of the guild's shard, so each shard connection here has its own
:class:`ShardBudget`:

* at most ``per_window`` joins in any ``window`` seconds, a rolling window that is never exceeded;
* up to that many at once when the shard has been quiet: a restore that fits the window goes out at once;
* once that budget is spent, the joins go on at the steady ``rate`` per second (a token bucket of
  ``per_window`` tokens refilled at ``rate``), still never more than ``per_window`` in any window.

Shards share nothing: a join on shard 3 never waits for shard 0's budget. The clock and the sleep are
injectable, so the pacing is tested without waiting.

A join is counted when it is granted and sent a moment later (after the guild's checks, through
discord.py's own limiter), and that moment varies: so a join counts against its window for
:data:`PACING_WINDOW_S` (62 s), 2 s more than Discord's 60, so that joins granted as old ones leave the
window never land in the same 60 s as those on Discord's side.

.. versionadded:: 0.5
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

__all__ = (
    "DISCORDPY_GATEWAY_SENDS",
    "DISCORD_GATEWAY_SENDS",
    "DISCORD_GATEWAY_WINDOW_S",
    "PACING_WINDOW_S",
    "ShardBudget",
    "ShardPacer",
    "shard_id_of",
)

_log = logging.getLogger(__name__)

#: Discord's gateway limit: sends per connection in any :data:`DISCORD_GATEWAY_WINDOW_S`, heartbeats included.
DISCORD_GATEWAY_SENDS = 120
#: The length of Discord's rolling gateway window, in seconds.
DISCORD_GATEWAY_WINDOW_S = 60.0
#: What discord.py's ``GatewayRatelimiter`` lets through per window (heartbeats go beside it).
DISCORDPY_GATEWAY_SENDS = 110
#: How long a granted join counts against its shard's window: Discord's 60 s and a margin for the moment
#: between granting a join and its frame leaving the process.
PACING_WINDOW_S = DISCORD_GATEWAY_WINDOW_S + 2.0

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]


def shard_id_of(guild_id: int, shard_count: int | None) -> int:
    """The shard whose gateway connection carries ``guild_id`` (discord.py's ``Guild.shard_id``).

    ``shard_count`` ``None`` (a bot that is not sharded) is shard 0.
    """
    return 0 if not shard_count else (guild_id >> 22) % shard_count


@dataclass(slots=True)
class ShardBudget:
    """The join budget of one shard connection. Pure: times come from the caller, nothing awaits.

    A join counts against the window from the moment it is taken until ``window`` seconds later
    (a join at ``t`` and one at ``t + window`` are never in the same window).
    """

    per_window: int
    rate: float
    window: float = PACING_WINDOW_S
    tokens: float = field(init=False)
    stamp: float | None = field(default=None, init=False)
    #: When the joins still inside the window were taken, oldest first.
    taken: deque[float] = field(default_factory=deque, init=False)

    def __post_init__(self) -> None:
        if self.per_window < 1 or self.rate <= 0 or self.window <= 0:
            raise ValueError("per_window must be >= 1, rate and window > 0")
        self.tokens = float(self.per_window)

    def ready_at(self, now: float) -> float:
        """The earliest time, at or after ``now``, when the next join may be taken."""
        self._advance(now)
        at = now
        if len(self.taken) >= self.per_window:
            at = max(at, self.taken[-self.per_window] + self.window)
        if self.tokens < 1:
            at = max(at, now + (1 - self.tokens) / self.rate)
        return at

    def take(self, now: float) -> None:
        """Count one join at ``now`` (call only when :meth:`ready_at` says ``now``)."""
        self._advance(now)
        self.tokens -= 1
        self.taken.append(now)

    def in_window(self, now: float) -> int:
        """How many joins count against the window at ``now``."""
        self._advance(now)
        return len(self.taken)

    def _advance(self, now: float) -> None:
        while self.taken and self.taken[0] + self.window <= now:
            self.taken.popleft()
        if self.stamp is not None and now > self.stamp:
            self.tokens = min(float(self.per_window), self.tokens + (now - self.stamp) * self.rate)
        if self.stamp is None or now > self.stamp:
            self.stamp = now


class ShardPacer:
    """Paces voice joins per shard connection (see the module docstring).

    Parameters
    ----------
    per_window:
        Joins allowed per shard in any ``window`` seconds (``restore.joins_per_window``).
    rate:
        Joins per second per shard once that budget is spent (``restore.joins_per_second``).
    window:
        The rolling window, in seconds: :data:`PACING_WINDOW_S` (Discord's 60 and a margin).
    clock, sleep:
        Monotonic time and the sleep to wait with (a test passes a virtual clock).

    .. versionadded:: 0.5
    """

    def __init__(
        self,
        per_window: int,
        rate: float,
        *,
        window: float = PACING_WINDOW_S,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        ShardBudget(per_window, rate, window)  # validates the numbers now, not at the first join
        self.per_window = per_window
        self.rate = rate
        self.window = window
        self._clock = clock
        self._sleep = sleep
        self._budgets: dict[int, ShardBudget] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    def budget(self, shard_id: int) -> ShardBudget:
        """The budget of one shard connection (created on first use)."""
        budget = self._budgets.get(shard_id)
        if budget is None:
            budget = self._budgets[shard_id] = ShardBudget(self.per_window, self.rate, self.window)
        return budget

    def in_window(self, shard_id: int) -> int:
        """How many joins of this shard count against its window now."""
        return self.budget(shard_id).in_window(self._clock())

    async def acquire(self, shard_id: int) -> None:
        """Wait until a join on ``shard_id``'s connection is within its budget, and count it.

        Joins of one shard are granted in the order they asked (FIFO); joins of other shards never wait
        for it. A waiter that is cancelled takes nothing from the budget.
        """
        budget = self.budget(shard_id)
        lock = self._locks.setdefault(shard_id, asyncio.Lock())
        async with lock:
            while True:
                now = self._clock()
                at = budget.ready_at(now)
                if at <= now:
                    budget.take(now)
                    return
                _log.debug("shard %s: voice join budget spent, next join in %.2f s", shard_id, at - now)
                await self._sleep(at - now)
