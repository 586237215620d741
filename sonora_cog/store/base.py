"""The store contract: :class:`SnapshotStore`, what every backend implements, and its small value types.

A store does I/O and nothing else. It keeps opaque bytes (codec envelopes) under two kinds of keys:

- one **live** record per guild, overwritten in place (crash recovery reads it);
- many immutable **snapshots** per guild, each named by a snapshot id (see :mod:`sonora_cog.meta`).

It never decodes a payload. To list snapshots it reads only each record's header through a
*header reader* (by default :func:`read_meta_from_stream`, which asks the codec how long the header is
and parses just that), so listing needs neither a key nor the time to read whole records.

.. versionadded:: 0.1
"""

from __future__ import annotations

import builtins
import io
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, BinaryIO, Protocol, runtime_checkable

from ..errors import InvalidIdentifier, SnapshotTooLarge, TruncatedSnapshot
from ..meta import SnapshotKind, SnapshotMeta, validate_snapshot_id

__all__ = (
    "DEFAULT_MAX_RECORD_BYTES",
    "EXPENDABLE_KINDS",
    "MAX_AUX_BYTES",
    "MAX_GUILD_ID",
    "MAX_HEADER_BYTES",
    "MAX_JOURNAL_BYTES",
    "MAX_JOURNAL_ENTRY_BYTES",
    "BatchResult",
    "HeaderReader",
    "RecordRef",
    "SnapshotStore",
    "StoreStats",
    "check_header",
    "newest_deploy_tags",
    "one_by_one",
    "plan_prune",
    "read_meta_from_bytes",
    "read_meta_from_stream",
    "split_journal",
    "validate_aux_key",
    "validate_guild_id",
    "validate_journal_entries",
)

#: Records larger than this are refused before they are read (``storage.max_record_bytes``'s default).
DEFAULT_MAX_RECORD_BYTES = 8 * 1024 * 1024
#: Discord snowflakes are unsigned 64-bit integers.
MAX_GUILD_ID = 2**64 - 1
#: A header longer than this is refused before it is read: metadata is a few hundred bytes.
MAX_HEADER_BYTES = 128 * 1024

#: Reads a record's metadata from an open binary stream positioned at the record's first byte,
#: consuming only the header. Raises a :class:`~sonora_cog.errors.SnapshotCorrupted` subclass on bad input.
HeaderReader = Callable[[BinaryIO], SnapshotMeta]


#: Auxiliary record keys: lowercase letters, digits, ``-`` and ``_`` (never a path).
_AUX_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
#: Auxiliary records are small (a heartbeat, a session id).
MAX_AUX_BYTES = 64 * 1024


def validate_aux_key(key: str, data: bytes | None = None) -> str:
    """Return ``key`` if it names an auxiliary record (and ``data`` fits), else raise :class:`InvalidIdentifier`."""
    if not isinstance(key, str) or not _AUX_KEY_RE.fullmatch(key):
        raise InvalidIdentifier(f"not an auxiliary record key: {key!r}")
    if data is not None and len(data) > MAX_AUX_BYTES:
        raise InvalidIdentifier(f"auxiliary record {key!r} is larger than {MAX_AUX_BYTES} bytes")
    return key


#: A journal entry is one line of at most this many bytes; a journal is read whole up to MAX_JOURNAL_BYTES.
MAX_JOURNAL_ENTRY_BYTES = 4096
MAX_JOURNAL_BYTES = 32 * 1024 * 1024


def validate_journal_entries(name: str, entries: Sequence[bytes]) -> list[bytes]:
    """Return ``entries`` as bytes if ``name`` is a record key and each entry is one short line, else raise
    :class:`InvalidIdentifier`."""
    validate_aux_key(name)
    checked = []
    for entry in entries:
        if not isinstance(entry, bytes | bytearray):
            raise InvalidIdentifier(f"a journal entry is bytes, got {type(entry).__name__}")
        if b"\n" in entry or not entry or len(entry) > MAX_JOURNAL_ENTRY_BYTES:
            raise InvalidIdentifier(f"a journal entry is one non-empty line of at most {MAX_JOURNAL_ENTRY_BYTES} bytes")
        checked.append(bytes(entry))
    return checked


def split_journal(data: bytes) -> list[bytes]:
    """The complete entries of a journal's bytes: a torn last line (a crash mid-append) is dropped."""
    lines = data.split(b"\n")
    return [line for line in lines[:-1] if line]


def validate_guild_id(guild_id: int) -> int:
    """Return ``guild_id`` if it is a positive snowflake, else raise :class:`InvalidIdentifier`.

    Parameters
    ----------
    guild_id:
        The guild id to check. ``bool`` and non-``int`` values are refused.

    Raises
    ------
    InvalidIdentifier
        The id is not an ``int`` in ``1 .. 2**64 - 1``.
    """
    if isinstance(guild_id, bool) or not isinstance(guild_id, int) or not 0 < guild_id <= MAX_GUILD_ID:
        raise InvalidIdentifier(f"not a guild id: {guild_id!r}")
    return guild_id


def read_meta_from_stream(stream: BinaryIO) -> SnapshotMeta:
    """Read and parse only the envelope header from ``stream`` (the default :data:`HeaderReader`).

    The codec is imported lazily, so importing a store module never imports the codec.

    Parameters
    ----------
    stream:
        A binary stream positioned at the first byte of a record.

    Returns
    -------
    SnapshotMeta
        The metadata from the header, with ``size`` left at 0 (the store fills it in).

    Raises
    ------
    TruncatedSnapshot
        The stream ends inside the header.
    SnapshotTooLarge
        The header claims to be longer than :data:`MAX_HEADER_BYTES`.
    SnapshotCorrupted
        Any other reason the codec refuses the header (bad magic, bad JSON, bad field).
    """
    from .. import codec  # lazy: importing a store must not import the codec

    fixed = codec.FIXED_HEADER_BYTES
    head = stream.read(fixed)
    if len(head) < fixed:
        raise TruncatedSnapshot(f"record ends after {len(head)} bytes, inside its {fixed}-byte fixed header")
    total = codec.header_length(head)
    if total > MAX_HEADER_BYTES:
        raise SnapshotTooLarge(f"header claims {total} bytes (limit {MAX_HEADER_BYTES})")
    if total > fixed:
        rest = stream.read(total - fixed)
        if len(rest) < total - fixed:
            got = fixed + len(rest)
            raise TruncatedSnapshot(f"record ends after {got} bytes, inside its {total}-byte header")
        head += rest
    return codec.read_meta(head)


def read_meta_from_bytes(data: bytes, reader: HeaderReader = read_meta_from_stream) -> SnapshotMeta:
    """Parse the header of a record held in memory with ``reader``; see :func:`read_meta_from_stream`."""
    return reader(io.BytesIO(data))


def check_header(meta: SnapshotMeta, guild_id: int, snapshot_id: str | None) -> None:
    """Refuse a record whose header names another guild (or another snapshot id) than its key.

    Parameters
    ----------
    meta:
        The metadata read from the record's header.
    guild_id:
        The guild the record is being stored under.
    snapshot_id:
        The snapshot id it is being stored under, or ``None`` for a live record (id not checked).

    Raises
    ------
    InvalidIdentifier
        The header and the key disagree.
    """
    if meta.guild_id != guild_id:
        raise InvalidIdentifier(f"record header names guild {meta.guild_id}, not guild {guild_id}")
    if snapshot_id is not None and meta.id != snapshot_id:
        raise InvalidIdentifier(f"record header names snapshot {meta.id!r}, not {snapshot_id!r}")


#: Snapshots the jobs take by themselves: retention removes them first when a guild has too many.
EXPENDABLE_KINDS = frozenset({SnapshotKind.auto, SnapshotKind.pre_change})


def plan_prune(
    snapshots: Iterable[SnapshotMeta],
    *,
    max_per_guild: int | None,
    max_age_days: float | None,
    now: float,
    keep_deploy_tags: int = 0,
) -> list[SnapshotMeta]:
    """Choose which snapshots retention deletes (pure; every backend's ``prune`` uses it).

    Parameters
    ----------
    snapshots:
        The snapshots to consider, any guilds, any order.
    max_per_guild:
        Keep at most this many per guild; the oldest :data:`EXPENDABLE_KINDS` (``auto`` and
        ``pre-change``) go first, then the oldest of the other kinds. ``None``: no limit.
    max_age_days:
        Everything created more than this many days before ``now`` goes, whatever its kind.
        ``None``: no limit.
    now:
        The current Unix time.
    keep_deploy_tags:
        The ``pre-deploy`` snapshots of the newest this many deploy tags (their label) are never deleted
        and do not count against ``max_per_guild``.

    Returns
    -------
    list[SnapshotMeta]
        The snapshots to delete, grouped by guild, oldest first within a guild.

    Raises
    ------
    ValueError
        A negative limit.
    """
    if max_per_guild is not None and max_per_guild < 0:
        raise ValueError(f"max_per_guild must be >= 0, got {max_per_guild}")
    if max_age_days is not None and max_age_days < 0:
        raise ValueError(f"max_age_days must be >= 0, got {max_age_days}")
    snapshots = list(snapshots)
    kept_tags = newest_deploy_tags(snapshots, keep_deploy_tags)
    by_guild: dict[int, list[SnapshotMeta]] = {}
    for meta in snapshots:
        if meta.kind is SnapshotKind.pre_deploy and meta.label in kept_tags:
            continue
        by_guild.setdefault(meta.guild_id, []).append(meta)
    cutoff = None if max_age_days is None else now - max_age_days * 86400.0
    doomed: list[SnapshotMeta] = []
    for guild_id in sorted(by_guild):
        oldest_first = sorted(by_guild[guild_id], key=lambda m: (m.created_at, m.id))
        expired = [m for m in oldest_first if cutoff is not None and m.created_at < cutoff]
        kept = [m for m in oldest_first if not (cutoff is not None and m.created_at < cutoff)]
        excess: list[SnapshotMeta] = []
        if max_per_guild is not None and len(kept) > max_per_guild:
            autos = [m for m in kept if m.kind in EXPENDABLE_KINDS]
            others = [m for m in kept if m.kind not in EXPENDABLE_KINDS]
            excess = (autos + others)[: len(kept) - max_per_guild]
        doomed.extend(sorted(expired + excess, key=lambda m: (m.created_at, m.id)))
    return doomed


def newest_deploy_tags(snapshots: Iterable[SnapshotMeta], count: int) -> set[str]:
    """The labels of the newest ``count`` deploy tags among ``pre-deploy`` snapshots (a tag is as new as its
    newest snapshot)."""
    newest: dict[str, float] = {}
    for meta in snapshots:
        if meta.kind is SnapshotKind.pre_deploy and meta.label is not None:
            newest[meta.label] = max(newest.get(meta.label, 0.0), meta.created_at)
    return set(sorted(newest, key=lambda tag: (newest[tag], tag), reverse=True)[: max(count, 0)])


@dataclass(frozen=True, slots=True)
class RecordRef:
    """One stored record as :meth:`SnapshotStore.scan` reports it, for operator tools.

    Attributes
    ----------
    guild_id:
        The guild the record is filed under (its header may disagree: that is what ``validate`` checks).
    snapshot_id:
        The snapshot id, or ``None`` for the guild's live record.
    location:
        Where the record lives, for people: a file path, a Redis key.
    size:
        Bytes the record occupies.
    """

    guild_id: int
    snapshot_id: str | None
    location: str
    size: int

    @property
    def is_live(self) -> bool:
        """Whether this is the guild's live record rather than a snapshot."""
        return self.snapshot_id is None

    def __post_init__(self) -> None:
        validate_guild_id(self.guild_id)
        if self.snapshot_id is not None:
            validate_snapshot_id(self.snapshot_id)


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counts over a whole store, from headers only.

    Attributes
    ----------
    snapshots:
        Readable snapshots (records whose header cannot be read are not counted; ``scan`` lists them).
    live_records:
        Live records.
    total_bytes:
        Bytes of every counted record, live and snapshots.
    per_guild:
        Snapshot count per guild id (read-only mapping).
    oldest_created_at, newest_created_at:
        Creation times of the oldest and newest snapshot, or ``None`` when there are none.
    """

    snapshots: int = 0
    live_records: int = 0
    total_bytes: int = 0
    per_guild: Mapping[int, int] = field(default_factory=lambda: MappingProxyType({}))
    oldest_created_at: float | None = None
    newest_created_at: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.per_guild, MappingProxyType):
            object.__setattr__(self, "per_guild", MappingProxyType(dict(self.per_guild)))

    @classmethod
    def from_records(cls, snapshots: list[SnapshotMeta], live_sizes: list[int]) -> StoreStats:
        """Build the stats from listed snapshot metadata (sizes filled in) and live record sizes."""
        per_guild: dict[int, int] = {}
        for meta in snapshots:
            per_guild[meta.guild_id] = per_guild.get(meta.guild_id, 0) + 1
        times = [meta.created_at for meta in snapshots]
        return cls(
            snapshots=len(snapshots),
            live_records=len(live_sizes),
            total_bytes=sum(meta.size for meta in snapshots) + sum(live_sizes),
            per_guild=MappingProxyType(per_guild),
            oldest_created_at=min(times) if times else None,
            newest_created_at=max(times) if times else None,
        )


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What a group commit (:meth:`SnapshotStore.put_live_many`, :meth:`SnapshotStore.save_many`) did, per item.

    Attributes
    ----------
    errors:
        One entry per item, in the order given: ``None`` when the item was written, else the exception
        that item alone failed with (the same one the single-record method would have raised). A failed
        item's previous record is intact; the other items do not depend on it.

    .. versionadded:: 0.5
    """

    errors: tuple[Exception | None, ...]

    @property
    def ok(self) -> bool:
        """Whether every item was written."""
        return all(error is None for error in self.errors)

    @property
    def written(self) -> int:
        """How many items were written."""
        return sum(error is None for error in self.errors)

    def failures(self) -> builtins.list[tuple[int, Exception]]:
        """``(index, error)`` of each failed item, in order."""
        return [(i, error) for i, error in enumerate(self.errors) if error is not None]


async def one_by_one(write: Callable[..., Awaitable[object]], items: Iterable[tuple[Any, bytes]]) -> BatchResult:
    """The loop any store can use for a batch: ``await write(*item)`` per item (``put_live`` or ``save``),
    each item's error kept for that item (one bad record never stops the others)."""
    errors: list[Exception | None] = []
    for item in items:
        try:
            await write(*item)
        except Exception as exc:  # reported per item
            errors.append(exc)
        else:
            errors.append(None)
    return BatchResult(tuple(errors))


@runtime_checkable
class SnapshotStore(Protocol):
    """Where live records and snapshots are kept. Every backend passes ``tests/store/test_contract.py``.

    All methods are coroutines and never block the event loop. Guild ids must be positive ints and
    snapshot ids well-formed (:func:`~sonora_cog.meta.validate_snapshot_id`), else
    :class:`~sonora_cog.errors.InvalidIdentifier` is raised before the backend is touched. A backend
    failure (disk full, permission denied, connection lost) raises :class:`~sonora_cog.errors.StoreError`
    and leaves the previous record untouched.

    .. versionadded:: 0.1
    """

    async def put_live(self, guild_id: int, data: bytes) -> None:
        """Atomically write (or overwrite) the guild's live record.

        Raises
        ------
        InvalidIdentifier
            Bad guild id, or the record's header names another guild.
        SnapshotCorrupted
            ``data`` has no readable header.
        StoreError
            The write failed; the previous live record is intact.
        """
        ...

    async def put_live_many(self, items: Sequence[tuple[int, bytes]]) -> BatchResult:
        """Write many guilds' live records as one group commit: each item as :meth:`put_live` would.

        Each record is atomic on its own (a reader, even after ``kill -9`` at any instant, sees its old
        record or its new one), but the batch is not one transaction: some items may be written and
        others not. A backend makes the batch cheaper than the loop (one ``fsync`` of each directory,
        one Redis round trip); this default is the loop (:func:`one_by_one`).

        Returns
        -------
        BatchResult
            Per item, ``None`` or the error it failed with (an invalid id, a foreign header, the disk
            full...): never raised, so one bad record never costs the others theirs.

        .. versionadded:: 0.5
        """
        return await one_by_one(self.put_live, items)

    async def get_live(self, guild_id: int) -> bytes | None:
        """Return the guild's live record, or ``None`` when it has none."""
        ...

    async def delete_live(self, guild_id: int) -> bool:
        """Delete the guild's live record; return whether there was one."""
        ...

    async def live_guilds(self) -> list[int]:
        """Return the ids of the guilds that have a live record, ascending."""
        ...

    async def quarantine_live(self, guild_id: int, reason: str) -> str | None:
        """Move the guild's live record aside (never delete it) and return where it went.

        Parameters
        ----------
        guild_id:
            The guild whose live record cannot be used.
        reason:
            Why, for the operator (kept next to the record).

        Returns
        -------
        str | None
            The new location (a path, a key), or ``None`` when the guild had no live record.
        """
        ...

    async def put_aux(self, key: str, data: bytes) -> None:
        """Atomically write a small auxiliary record (a process heartbeat, a Lavalink session id).

        Raises
        ------
        InvalidIdentifier
            The key is not ``[a-z0-9][a-z0-9_-]{0,63}`` or the data exceeds :data:`MAX_AUX_BYTES`.
        StoreError
            The write failed; the previous value is intact.
        """
        ...

    async def get_aux(self, key: str) -> bytes | None:
        """Return an auxiliary record, or ``None`` when there is none."""
        ...

    async def delete_aux(self, key: str) -> bool:
        """Delete an auxiliary record; return whether there was one."""
        ...

    async def aux_keys(self, prefix: str) -> builtins.list[str]:
        """Return the keys of the auxiliary records whose key starts with ``prefix``, sorted."""
        ...

    async def append_journal(self, name: str, entries: Sequence[bytes]) -> None:
        """Append lines to the journal ``name`` (created on first use), durably, as one write.

        Any number of processes may append to one journal at once; no entry is lost or interleaved with
        another. Each entry is one line without a newline, at most :data:`MAX_JOURNAL_ENTRY_BYTES`.

        Raises
        ------
        InvalidIdentifier
            A bad name (as an auxiliary key) or entry.
        StoreError
            The append failed.
        """
        ...

    async def read_journal(self, name: str) -> builtins.list[bytes]:
        """Return the journal's entries in the order they were appended (``[]`` when there is none).

        Raises
        ------
        SnapshotTooLarge
            The journal is over :data:`MAX_JOURNAL_BYTES` (nothing of it is read).
        """
        ...

    async def journal_names(self) -> builtins.list[str]:
        """Return the names of every journal, sorted."""
        ...

    async def delete_journal(self, name: str) -> bool:
        """Delete a journal; return whether there was one."""
        ...

    async def save(self, meta: SnapshotMeta, data: bytes) -> None:
        """Store a new, immutable snapshot named by ``meta.guild_id`` and ``meta.id``.

        Raises
        ------
        InvalidIdentifier
            Bad ids, or the record's header disagrees with ``meta``.
        DuplicateSnapshot
            A snapshot with that id already exists for that guild (it is left as it was).
        StoreError
            The write failed; nothing was stored.
        """
        ...

    async def save_many(self, items: Sequence[tuple[SnapshotMeta, bytes]]) -> BatchResult:
        """Store many new snapshots as one group commit: each item as :meth:`save` would (never overwriting
        an existing id), each item's error reported for that item (see :meth:`put_live_many`).

        .. versionadded:: 0.5
        """
        return await one_by_one(self.save, items)

    async def load(self, guild_id: int, snapshot_id: str) -> bytes:
        """Return a snapshot's bytes.

        Raises
        ------
        SnapshotNotFound
            The guild has no snapshot with that id.
        """
        ...

    async def list(self, guild_id: int | None = None) -> list[SnapshotMeta]:
        """Return snapshot metadata, newest first, from headers only, with ``size`` filled in.

        Parameters
        ----------
        guild_id:
            Only this guild's snapshots; ``None`` for every guild.

        Records whose header cannot be read, or names another guild or id than the record's key,
        are skipped with a warning log (:meth:`scan` still reports them).
        """
        ...

    def scan(self) -> AsyncIterator[RecordRef]:
        """Yield every record, live and snapshots, readable or not (for ``validate`` and ``rekey``)."""
        ...

    async def replace(self, ref: RecordRef, data: bytes, *, expected: bytes | None = None) -> None:
        """Atomically rewrite an existing record in place. For operator tools (re-keying) only.

        With ``expected`` (the bytes the caller read before), this is a compare-and-replace shared by every
        process using the store: the record is replaced only if it still holds exactly those bytes, so a
        tool never moves back a record the bot (or another tool) rewrote meanwhile.

        Raises
        ------
        SnapshotNotFound
            The record does not exist (removed meanwhile).
        RecordChanged
            ``expected`` was given and the record holds other bytes now.
        InvalidIdentifier
            The new record's header disagrees with ``ref``.
        """
        ...

    async def delete(self, guild_id: int, snapshot_id: str) -> bool:
        """Delete a snapshot; return whether it existed."""
        ...

    async def prune(
        self,
        *,
        max_per_guild: int | None,
        max_age_days: float | None,
        now: float | None = None,
        keep_deploy_tags: int = 0,
    ) -> builtins.list[SnapshotMeta]:  # `list` is a method name here
        """Apply retention and return the metadata of the snapshots deleted.

        Parameters
        ----------
        max_per_guild:
            Keep at most this many snapshots per guild: the oldest ``auto`` and ``pre-change`` ones
            go first, then the oldest of the other kinds. ``None``: no limit.
        max_age_days:
            Delete snapshots of any kind created more than this many days before ``now``.
            ``None``: no limit.
        now:
            The current Unix time (defaults to :func:`time.time`).
        keep_deploy_tags:
            Never delete the ``pre-deploy`` snapshots of the newest this many deploy tags.

        Live records are never touched.
        """
        ...

    async def stats(self) -> StoreStats:
        """Return counts over the whole store."""
        ...

    def unsafe_paths(self) -> dict[str, str]:
        """Places of the store others could change (group/world-writable, a foreign owner) seen so far, with
        why. ``validate`` reports them; the store never changes their permissions itself."""
        ...

    async def close(self) -> None:
        """Release resources; the store cannot be used afterwards."""
        ...
