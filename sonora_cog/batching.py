"""Writing many guilds at once: the outcome of each guild's write, and encoding in slices that keep the loop free.

The session writer hands the manager batches of states (:data:`BATCH_SIZE` at most); the manager encodes
them (:class:`LoopSlicer` yields to the event loop every few milliseconds, and records too big to encode on
the loop go to a worker thread) and writes each batch with one store call (a group commit, see
:meth:`~sonora_cog.store.base.SnapshotStore.put_live_many`). One guild's failure is its own
:class:`WriteOutcome`; the others are written.

.. versionadded:: 0.5
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from .meta import SnapshotMeta

__all__ = ("BATCH_SIZE", "SLICE_SECONDS", "LoopSlicer", "WriteOutcome")

#: Guilds per group commit. Big enough that what a batch pays once (one ``syncfs`` or directory ``fsync``,
#: one store lock, one thread hop, one Redis round trip) is small beside what it pays per record; small
#: enough that a batch of 200-track states holds ~20 MB, that the store holds its guilds' locks for about a
#: tenth of a second, and that the first write starts while the rest are still being captured. Measured in
#: ``benchmarks/README.md`` ("Group commit").
BATCH_SIZE = 128

#: Longest stretch of encoding the loop does before it lets other tasks run.
SLICE_SECONDS = 0.004


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """What happened to one guild's record in a batch write.

    Attributes
    ----------
    guild_id:
        The guild.
    meta:
        The metadata of the record written (``size`` filled in), or ``None`` when it failed.
    data:
        The record's bytes as written (``b""`` when it failed): a ``shutdown`` snapshot reuses them.
    error:
        Why it was not written (encoding refused it, the store refused it), or ``None``.
    """

    guild_id: int
    meta: SnapshotMeta | None = None
    data: bytes = b""
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        """Whether the record was written."""
        return self.error is None


class LoopSlicer:
    """Lets other tasks run whenever :data:`SLICE_SECONDS` of work has passed on the loop since they last did.

    ``await slicer.tick()`` between items of CPU work: cheap when the slice is not over, one
    ``asyncio.sleep(0)`` when it is.
    """

    __slots__ = ("_since", "_slice")

    def __init__(self, slice_seconds: float | None = None) -> None:
        self._slice = SLICE_SECONDS if slice_seconds is None else slice_seconds
        self._since = time.perf_counter()

    async def tick(self) -> None:
        """Yield to the loop if this slice is used up."""
        if time.perf_counter() - self._since >= self._slice:
            await asyncio.sleep(0)
            self._since = time.perf_counter()
