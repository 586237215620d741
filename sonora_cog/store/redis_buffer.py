"""The bounded, in-memory write buffer of :class:`~sonora_cog.store.redis.RedisStore` during an outage.

While Redis cannot be reached, writes are kept here in arrival order and written when it is back:

- a guild's live record is coalesced (only the latest write, or a delete, is kept per guild), and so
  is each auxiliary record;
- snapshots are kept first in, first out, each once (a second one with the same id is refused).

The buffer is bounded by a record count and a byte count. A write that does not fit raises
:class:`BufferFull` (a :class:`~sonora_cog.errors.StoreError`): it is refused loudly, never dropped.
This module does no I/O; the store owns the flushing.

.. versionadded:: 0.2
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum

from ..errors import BufferFull, DuplicateSnapshot
from ..meta import SnapshotMeta

__all__ = ("BufferFull", "PendingKind", "PendingWrite", "WriteBuffer")  # BufferFull lives in sonora_cog.errors


class PendingKind(Enum):
    """What a buffered write does when it is flushed."""

    put_live = "put_live"
    delete_live = "delete_live"
    save = "save"
    put_aux = "put_aux"


@dataclass(frozen=True, slots=True)
class PendingWrite:
    """One write waiting for Redis.

    Attributes
    ----------
    kind:
        Put or delete a live record, or save a snapshot.
    guild_id:
        The guild written (0 for an auxiliary record).
    data:
        The record's bytes (``b""`` for a delete).
    meta:
        The snapshot's metadata read from its header (``None`` for live records).
    queued_at:
        ``time.time()`` when it was buffered.
    name:
        The key of an auxiliary record (``""`` otherwise).
    """

    kind: PendingKind
    guild_id: int
    data: bytes = b""
    meta: SnapshotMeta | None = None
    queued_at: float = field(default_factory=time.time)
    name: str = ""

    @property
    def key(self) -> tuple[str, int, str]:
        """The record this write targets; a newer write of the same live record replaces it."""
        if self.kind is PendingKind.save:
            assert self.meta is not None
            return ("snapshot", self.guild_id, self.meta.id)
        if self.kind is PendingKind.put_aux:
            return ("aux", 0, self.name)
        return ("live", self.guild_id, "")

    def describe(self) -> str:
        """For log lines: what the write is (never its bytes)."""
        if self.kind is PendingKind.save:
            assert self.meta is not None
            return f"snapshot {self.meta.id} of guild {self.guild_id}"
        if self.kind is PendingKind.put_aux:
            return f"auxiliary record {self.name!r}"
        verb = "deletion of" if self.kind is PendingKind.delete_live else "write of"
        return f"{verb} the live record of guild {self.guild_id}"


class WriteBuffer:
    """Writes waiting for Redis, in order, bounded by ``max_records`` and ``max_bytes``.

    Parameters
    ----------
    max_records:
        Most buffered writes (a guild's live record counts once, however often it is rewritten).
    max_bytes:
        Most bytes of buffered records.
    """

    def __init__(self, max_records: int, max_bytes: int) -> None:
        if max_records < 1 or max_bytes < 1:
            raise ValueError("the write buffer needs room for at least one record")
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, int, str], PendingWrite] = OrderedDict()
        self._bytes = 0
        #: Writes refused because the buffer was full, since the store was created.
        self.refused = 0

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __iter__(self) -> Iterator[PendingWrite]:
        return iter(list(self._items.values()))

    @property
    def bytes(self) -> int:
        """Bytes of buffered records."""
        return self._bytes

    def add(self, item: PendingWrite) -> None:
        """Buffer ``item`` at the end (replacing an older write of the same live record).

        Raises
        ------
        DuplicateSnapshot
            A snapshot with the same guild and id is already buffered.
        BufferFull
            It does not fit; nothing changed.
        """
        old = self._items.get(item.key)
        if old is not None and item.kind is PendingKind.save:
            raise DuplicateSnapshot(f"{item.describe()} already exists (buffered); snapshots are immutable")
        records = len(self._items) + (0 if old is not None else 1)
        size = self._bytes - (len(old.data) if old is not None else 0) + len(item.data)
        if records > self.max_records or size > self.max_bytes:
            self.refused += 1
            raise BufferFull(
                f"Redis is unreachable and the write buffer is full ({len(self._items)} records, "
                f"{self._bytes:,} bytes; limits {self.max_records} records, {self.max_bytes:,} bytes): "
                f"the {item.describe()} was NOT stored"
            )
        if old is not None:
            del self._items[item.key]
        self._items[item.key] = item
        self._bytes = size

    def first(self) -> PendingWrite | None:
        """The oldest buffered write, or ``None``."""
        return next(iter(self._items.values()), None)

    def remove(self, item: PendingWrite) -> bool:
        """Remove ``item`` if it is still buffered (not replaced by a newer write); return whether it was."""
        if self._items.get(item.key) is not item:
            return False
        del self._items[item.key]
        self._bytes -= len(item.data)
        return True

    def live(self, guild_id: int) -> PendingWrite | None:
        """The buffered write or delete of this guild's live record, if any."""
        return self._items.get(("live", guild_id, ""))

    def snapshot(self, guild_id: int, snapshot_id: str) -> PendingWrite | None:
        """The buffered snapshot with this id, if any."""
        return self._items.get(("snapshot", guild_id, snapshot_id))

    def snapshots(self, guild_id: int | None = None) -> list[PendingWrite]:
        """Buffered snapshots (of one guild, or all), oldest first."""
        return [
            item
            for item in self._items.values()
            if item.kind is PendingKind.save and (guild_id is None or item.guild_id == guild_id)
        ]

    def aux(self, name: str) -> PendingWrite | None:
        """The buffered write of this auxiliary record, if any."""
        return self._items.get(("aux", 0, name))

    def lives(self) -> list[PendingWrite]:
        """Buffered live-record writes and deletes."""
        return [item for item in self._items.values() if item.kind in (PendingKind.put_live, PendingKind.delete_live)]
