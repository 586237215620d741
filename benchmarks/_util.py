"""Small helpers shared by the benchmark parts: timers, percentiles, the loop-lag probe, directory sizes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sonora_cog.owner import SessionOwner

__all__ = ("LagProbe", "dir_bytes", "percentile", "ratio", "sync_disks", "timed")


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


def ratio(value: float, floor: float) -> float | None:
    """``value / floor`` rounded to two places (``None`` when the floor is zero)."""
    return round(value / floor, 2) if floor else None


def dir_bytes(path: Path) -> tuple[int, int]:
    """(files, total bytes) of the regular files directly in ``path``."""
    files = total = 0
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                files += 1
                total += entry.stat(follow_symlinks=False).st_size
    return files, total


def sync_disks() -> None:
    """Flush dirty pages so one phase's writeback does not land in the next phase's timing."""
    with contextlib.suppress(AttributeError, OSError):
        os.sync()


@contextlib.contextmanager
def timed(into: dict[str, Any], key: str = "seconds") -> Iterator[None]:
    """Store the wall time of the block in ``into[key]``."""
    started = time.perf_counter()
    try:
        yield
    finally:
        into[key] = time.perf_counter() - started


class LagProbe:
    """A task that sleeps ``interval`` and records how late it wakes (event-loop lag), in ms."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.lags_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self._running = False

    async def _run(self) -> None:
        clock = time.perf_counter
        while self._running:
            started = clock()
            await asyncio.sleep(self.interval)
            self.lags_ms.append(max(0.0, (clock() - started - self.interval) * 1000.0))

    async def __aenter__(self) -> LagProbe:
        self._running = True
        self._task = asyncio.get_running_loop().create_task(self._run())
        await asyncio.sleep(0)  # let it take its first sample before the work starts
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._running = False
        if self._task is not None:
            await self._task

    def summary(self) -> dict[str, float]:
        """p50 / p99 / max lag in ms and the sample count."""
        return {
            "samples": len(self.lags_ms),
            "p50_ms": round(percentile(self.lags_ms, 50), 3),
            "p99_ms": round(percentile(self.lags_ms, 99), 3),
            "max_ms": round(max(self.lags_ms, default=0.0), 3),
        }


async def open_store(owner: SessionOwner) -> None:
    """Open the owner's store before timing (both backends have ``open()``; the store protocol leaves it out)."""
    opener = getattr(owner.manager.store, "open", None)
    if opener is not None:
        await opener()
