"""SessionManager: the public Python API over capture → codec → store (and back).

Constructing a manager does no I/O; the store is opened lazily on first use. Every method that
touches the store is a coroutine; encoding and decoding of large states run in a worker thread so
the event loop is never blocked for long.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import orjson

from ._typing import AnyBot
from .batching import LoopSlicer, WriteOutcome
from .capture import PositionSample, capture_state
from .codec import Codec, EncodedRecord, Keyring, check_json_shape
from .config import Settings
from .errors import (
    ConfigError,
    DuplicateSnapshot,
    ForeignGuildError,
    InvalidSnapshot,
    NotReadableHere,
    RestoreError,
    SnapshotCorrupted,
    SnapshotNotFound,
    SnapshotTooLarge,
    SonoraError,
    StoreError,
)
from .fit import fit_to_limits, read_limits, shrink
from .meta import SnapshotKind, SnapshotMeta, new_snapshot_id, validate_label, validate_snapshot_id
from .metrics import Metrics
from .model import SessionState
from .store.base import BatchResult, RecordRef, SnapshotStore

if TYPE_CHECKING:
    import wavelink

    from .owner import SessionOwner

__all__ = ("SessionManager", "StoreAnalysis", "ValidationResult", "WriteOutcome", "build_codec", "build_store")

_log = logging.getLogger(__name__)

#: States with more tracks than this are encoded / decoded in a worker thread.
_THREAD_THRESHOLD_TRACKS = 200
#: Records larger than this are re-wrapped in a worker thread.
_THREAD_THRESHOLD_BYTES = 256 * 1024
#: Times a state over ``storage.max_record_bytes`` is shrunk before the write gives up.
_SHRINK_ATTEMPTS = 6
_LIVE_ID = "live"
#: Hex digits of a content hash in a record of envelope format 1 (SHA-256; format 2's XXH3-128 has 32).
_FORMAT_1_HASH_LENGTH = 64


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """The outcome of checking one stored record: ``ok``, or the error that reading it raised."""

    guild_id: int
    snapshot_id: str | None
    ok: bool
    error: str | None = None
    error_type: str | None = None


@dataclass(frozen=True, slots=True)
class StoreAnalysis:
    """What :meth:`SessionManager.analyze` reports."""

    total_snapshots: int
    live_records: int
    per_guild: Mapping[int, int]
    total_bytes: int
    average_size: float
    oldest: float | None
    newest: float | None
    by_kind: Mapping[str, int]


def build_codec(settings: Settings) -> Codec:
    """The codec the settings describe (compression, encryption keys)."""
    keys = settings.encryption_key
    keyring = None
    if keys is not None or settings.old_encryption_keys:
        try:
            keyring = Keyring.from_text(
                keys.reveal() if keys is not None else None,
                [k.reveal() for k in settings.old_encryption_keys],
            )
        except ValueError as exc:  # the message says which key, never its text; name its variable too
            encryption = settings.encryption
            variable = encryption.key_env if "current" in str(exc) else encryption.old_keys_env
            raise ConfigError(f"{variable} (environment): {exc}") from None
    return Codec(
        compression=settings.storage.compression,  # type: ignore[arg-type]
        compression_level=settings.storage.compression_level,
        keyring=keyring,
        encrypt=settings.encryption.enabled,
        max_record_bytes=settings.storage.max_record_bytes,
        max_payload_bytes=settings.storage.max_payload_bytes,
    )


def build_store(settings: Settings) -> SnapshotStore:
    """The store the settings describe."""
    if settings.storage.backend == "filesystem":
        from .store.filesystem import DEFAULT_SYNCFS_BATCH_MIN, FilesystemStore

        return FilesystemStore(
            settings.storage.path,
            max_record_bytes=settings.storage.max_record_bytes,
            syncfs_batch_min=DEFAULT_SYNCFS_BATCH_MIN if settings.storage.syncfs else None,
        )
    if settings.storage.backend == "redis":
        try:
            from .store.redis import RedisStore  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise ConfigError(f"storage.backend: the redis backend is not available ({exc})") from None
        return RedisStore.from_settings(settings)  # type: ignore[no-any-return,unused-ignore]
    raise ConfigError(f"storage.backend: unknown backend {settings.storage.backend!r}")


class SessionManager:
    """Create, save, load, list, validate and delete guild snapshots and live records.

    Parameters
    ----------
    settings:
        Loaded settings (defaults when omitted).
    store, codec:
        Override the store or codec the settings describe (tests, custom backends).
    metrics:
        The :class:`~sonora_cog.metrics.Metrics` its writes and store errors are reported to (off when
        omitted; the cog gives its manager ``cog.metrics``).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: SnapshotStore | None = None,
        codec: Codec | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings or Settings()
        #: Where writes and store errors are reported (:class:`~sonora_cog.metrics.Metrics`; off by default).
        self.metrics = metrics or Metrics()
        self._store = store
        self.codec = codec or build_codec(self.settings)
        self.limits = self.settings.limits.to_limits()
        self._read_limits = read_limits(self.limits)
        self._scheduler: Any = None
        self._owner: SessionOwner | None = None
        self._unfit_reported: set[tuple[int, str]] = set()

    # -- configuration ------------------------------------------------------------------------------

    @property
    def store(self) -> SnapshotStore:
        """The backing store (created from the settings on first use)."""
        if self._store is None:
            self._store = build_store(self.settings)
        return self._store

    @property
    def auto_snapshot_interval(self) -> float:
        """Seconds between each guild's automatic snapshots, or ``0``: adaptive, per guild (see
        :mod:`sonora_cog.cadence` and ``SessionOwner.cadence``)."""
        return self.settings.snapshots.auto_interval

    @property
    def max_snapshots_per_guild(self) -> int:
        """Snapshots kept per guild by retention."""
        return self.settings.snapshots.max_snapshots_per_guild

    # -- encoding -----------------------------------------------------------------------------------

    def _meta_for(self, state: SessionState, snapshot_id: str) -> SnapshotMeta:
        current = state.queue.current
        return SnapshotMeta(
            id=snapshot_id,
            guild_id=state.guild_id,
            created_at=state.created_at,
            kind=state.kind,
            label=state.label,
            track_count=state.track_count,
            current_title=None if current is None else current.title,
            content_hash="",
        )

    async def _encode(self, state: SessionState, snapshot_id: str) -> tuple[bytes, SnapshotMeta]:
        """Encode ``state``, fitted to the limits and to ``storage.max_record_bytes``, so that what is
        written can always be read back (what was left out is logged, see :mod:`sonora_cog.fit`)."""
        notes: list[str] = []
        for _attempt in range(_SHRINK_ATTEMPTS):
            try:
                if state.track_count + len(state.queue.history) > _THREAD_THRESHOLD_TRACKS:
                    record = await asyncio.to_thread(self._encode_fitted, state, snapshot_id, notes)
                else:
                    record = self._encode_fitted(state, snapshot_id, notes)
            except SnapshotTooLarge as exc:
                state, _ = fit_to_limits(state, self.limits)  # its notes are in ``notes`` already
                smaller = shrink(state, 0.9 * exc.cap / exc.size) if exc.size and exc.cap else None
                if smaller is None:
                    raise
                state, note = smaller
                notes.append(note)
                continue
            if notes:
                self._report_unfit(state.guild_id, notes, "saved")
            return record.data, record.meta
        raise SnapshotTooLarge(f"guild {state.guild_id}: the state does not fit storage.max_record_bytes")

    def _encode_fitted(self, state: SessionState, snapshot_id: str, notes: list[str]) -> EncodedRecord:
        """Encode ``state``, then fit it to the limits (adding to ``notes``) and encode again if that changed it.

        The fit reads every track; right after the encoder has, the tracks are in the CPU's caches and
        that costs a fraction of what it costs first. A state that does not fit is rare.
        """
        try:
            record: EncodedRecord | None = self.codec.encode(state.to_json(), self._meta_for(state, snapshot_id))
        except (SnapshotTooLarge, TypeError):
            record = None  # the fitted state may fit the record cap, or leave out what is not JSON
        fitted, more = fit_to_limits(state, self.limits)
        notes.extend(more)
        if record is None or fitted is not state:
            record = self.codec.encode(fitted.to_json(), self._meta_for(fitted, snapshot_id))
        return record

    def _report_unfit(self, guild_id: int, notes: list[str], how: str) -> None:
        """Log what was left out to fit the limits: each kind of thing once per guild per process."""
        for note in notes:
            key = (guild_id, re.sub(r"[\d,.]+", "#", note))  # the same note with other numbers is the same
            if key not in self._unfit_reported:
                self._unfit_reported.add(key)
                _log.warning("guild %s (%s): %s (raise the limit to keep it)", guild_id, how, note)

    def decode(self, data: bytes) -> tuple[SnapshotMeta, SessionState]:
        """Decode one record's bytes (any codec error or :class:`InvalidSnapshot` propagates).

        The record is parsed with generous caps and then fitted to the configured ``[limits]``: a record
        written under higher limits (the limits were lowered since) is trimmed, with a warning, never
        refused.
        """
        record = self.codec.decode(data)
        state = SessionState.from_json(record.payload, self._read_limits)
        state, notes = fit_to_limits(state, self.limits)
        if notes:
            self._report_unfit(state.guild_id, notes, "read from a record written under higher limits")
        return record.meta, state

    async def _decode(self, data: bytes) -> tuple[SnapshotMeta, SessionState]:
        if len(data) > 256 * 1024:
            return await asyncio.to_thread(self.decode, data)
        return self.decode(data)

    # -- snapshots ----------------------------------------------------------------------------------

    def create_snapshot(
        self,
        player: wavelink.Player,
        *,
        kind: SnapshotKind = SnapshotKind.manual,
        label: str | None = None,
        extras: Mapping[str, Any] | None = None,
        position_sample: PositionSample | None = None,
    ) -> SessionState:
        """Capture ``player`` now (pure, no I/O). Save it with :meth:`save_snapshot`."""
        return capture_state(
            player,
            kind=kind,
            label=validate_label(label),
            limits=self.limits,
            extras=extras,
            position_sample=position_sample,
        )

    async def save_snapshot(self, snapshot: SessionState, label: str | None = None) -> SnapshotMeta:
        """Store ``snapshot`` as a new immutable snapshot and return its metadata (with its id).

        A ``live`` state is saved as a ``manual`` snapshot. ``label`` overrides the state's label.
        """
        kind = SnapshotKind.manual if snapshot.kind is SnapshotKind.live else snapshot.kind
        chosen = validate_label(label) if label is not None else validate_label(snapshot.label)
        state = replace(snapshot, kind=kind, label=chosen)
        data, meta = await self._encode(state, new_snapshot_id(state.created_at))
        with self.metrics.store_operation("save"):
            await self.store.save(meta, data)
        self.metrics.record_written(kind, len(data))
        _log.info("saved %s snapshot %s for guild %s", kind.value, meta.id, meta.guild_id)
        return meta.with_size(len(data))

    async def load_snapshot(self, snapshot_id: str, guild_id: int) -> SessionState:
        """Load one of ``guild_id``'s snapshots.

        Raises
        ------
        SnapshotNotFound, InvalidIdentifier
            No such snapshot in that guild, or a malformed id.
        ForeignGuildError
            The record inside claims another guild (it was copied into the wrong folder).
        SnapshotCorrupted, DecryptionError, SchemaVersionError
            The record cannot be read, or the file holds another snapshot than its name says; see the
            exception for why.
        """
        validate_snapshot_id(snapshot_id)
        with self.metrics.store_operation("load"):
            data = await self.store.load(guild_id, snapshot_id)
        meta, state = await self._decode(data)
        if state.guild_id != guild_id or meta.guild_id != guild_id:
            raise ForeignGuildError(
                f"snapshot {snapshot_id} is stored under guild {guild_id} but belongs to guild {state.guild_id}"
            )
        if meta.id != snapshot_id:
            raise SnapshotCorrupted(f"snapshot file {snapshot_id} holds snapshot {meta.id} (renamed or copied by hand)")
        return as_named(state, meta)

    async def list_snapshots(self, guild_id: int | None = None) -> list[SnapshotMeta]:
        """Snapshots newest first (one guild's, or every guild's), read from headers only."""
        with self.metrics.store_operation("list"):
            return await self.store.list(guild_id)

    async def delete_snapshot(self, snapshot_id: str, guild_id: int) -> None:
        """Delete one of ``guild_id``'s snapshots; :class:`SnapshotNotFound` if it does not exist."""
        validate_snapshot_id(snapshot_id)
        if not await self.store.delete(guild_id, snapshot_id):
            raise SnapshotNotFound(f"no snapshot {snapshot_id} in guild {guild_id}")
        _log.info("deleted snapshot %s of guild %s", snapshot_id, guild_id)

    async def validate_snapshot(self, snapshot_id: str, guild_id: int) -> ValidationResult:
        """Fully decode and check one snapshot without changing anything."""
        try:
            await self.load_snapshot(snapshot_id, guild_id)
        except SonoraError as exc:
            return ValidationResult(guild_id, snapshot_id, False, str(exc), type(exc).__name__)
        return ValidationResult(guild_id, snapshot_id, True)

    async def cleanup_old_snapshots(self, max_age_days: float | None = None) -> int:
        """Delete snapshots older than ``max_age_days`` (the configured age when omitted)."""
        days = self.settings.snapshots.max_age_days if max_age_days is None else max_age_days
        removed = await self.store.prune(
            max_per_guild=None, max_age_days=days, keep_deploy_tags=self.settings.deploy.keep_tags
        )
        return len(removed)

    async def apply_retention(self, now: float | None = None) -> list[SnapshotMeta]:
        """Apply both retention rules (count per guild, age) and return what was deleted."""
        with self.metrics.store_operation("prune"):
            return await self.store.prune(
                max_per_guild=self.settings.snapshots.max_snapshots_per_guild,
                max_age_days=self.settings.snapshots.max_age_days,
                now=now,
                keep_deploy_tags=self.settings.deploy.keep_tags,
            )

    async def analyze(self) -> StoreAnalysis:
        """Totals over the whole store: snapshots per guild and kind, sizes, oldest and newest."""
        metas = await self.store.list(None)
        live = await self.store.live_guilds()
        total_bytes = sum(m.size for m in metas)
        return StoreAnalysis(
            total_snapshots=len(metas),
            live_records=len(live),
            per_guild=dict(Counter(m.guild_id for m in metas)),
            total_bytes=total_bytes,
            average_size=total_bytes / len(metas) if metas else 0.0,
            oldest=min((m.created_at for m in metas), default=None),
            newest=max((m.created_at for m in metas), default=None),
            by_kind=dict(Counter(m.kind.value for m in metas)),
        )

    # -- import / export ------------------------------------------------------------------------------

    @staticmethod
    def export_json(state: SessionState) -> bytes:
        """The plain schema-v1 JSON of a state (indented, for people and other tools)."""
        return orjson.dumps(state.to_json(), option=orjson.OPT_INDENT_2)

    def parse_export(self, data: bytes, *, max_bytes: int | None = None) -> SessionState:
        """Parse and strictly validate exported JSON (a file from :meth:`export_json`).

        Raises
        ------
        SnapshotTooLarge, InvalidSnapshot, SchemaVersionError
        """
        cap = self.settings.storage.max_payload_bytes if max_bytes is None else max_bytes
        if len(data) > cap:
            raise SnapshotTooLarge(f"{len(data)} bytes exceeds the import cap of {cap} bytes")
        check_json_shape(data, "the file")
        tracks, most = data.count(b'"encoded"'), 2 * self.limits.max_queue_tracks + self.limits.max_history_tracks + 1
        if tracks > most:  # an import over a limit is refused anyway: before the parse, not after it
            raise InvalidSnapshot("queue", f"the file holds {tracks:,} tracks; [limits] allow at most {most:,}")
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise InvalidSnapshot("", f"not valid JSON ({exc})") from None
        return SessionState.from_json(obj, self.limits)

    async def import_snapshot(self, state: SessionState, *, guild_id: int | None = None) -> SnapshotMeta:
        """Store an exported state as an ``import`` snapshot of its guild.

        Raises
        ------
        ForeignGuildError
            ``guild_id`` is given and the state belongs to another guild.
        DuplicateSnapshot
            The same content was already imported into that guild (the same export imported twice; also
            when the first import was stored by a release before envelope format 2).
        """
        if guild_id is not None and state.guild_id != guild_id:
            raise ForeignGuildError(f"this snapshot belongs to guild {state.guild_id}, not to guild {guild_id}")
        state = replace(state, kind=SnapshotKind.imported)
        data, meta = await self._encode(state, new_snapshot_id(time.time()))
        legacy_hash: str | None = None  # the SHA-256 a format-1 record's meta holds, computed when one is met
        for existing in await self.store.list(state.guild_id):
            if len(existing.content_hash) == _FORMAT_1_HASH_LENGTH and legacy_hash is None:
                legacy_hash = hashlib.sha256(orjson.dumps(self.codec.decode(data).payload)).hexdigest()
            if existing.content_hash in (meta.content_hash, legacy_hash):
                raise DuplicateSnapshot(f"this content is already stored as snapshot {existing.id}")
        with self.metrics.store_operation("save"):
            await self.store.save(meta, data)
        self.metrics.record_written(SnapshotKind.imported, len(data))
        return meta.with_size(len(data))

    # -- live records -------------------------------------------------------------------------------

    async def write_live(self, state: SessionState) -> SnapshotMeta:
        """Overwrite the guild's live (crash-recovery) record with ``state``."""
        data, meta = await self._encode(replace(state, kind=SnapshotKind.live), _LIVE_ID)
        with self.metrics.store_operation("put_live"):
            await self.store.put_live(state.guild_id, data)
        self.metrics.record_written(SnapshotKind.live, len(data))
        return meta.with_size(len(data))

    async def write_live_many(self, states: Sequence[SessionState]) -> list[WriteOutcome]:
        """Overwrite many guilds' live records with one group commit (see :meth:`SnapshotStore.put_live_many`).

        The states are encoded on the loop in slices (a state too big for that in a worker thread), so
        the loop never waits long; then one store call writes them all. One guild's failure (its state
        does not fit, the store refused its record) is reported in its own outcome and logged by the
        caller; the others are written.

        Returns
        -------
        list[WriteOutcome]
            One per state, in order, with the record's bytes when it was written.

        .. versionadded:: 0.5
        """
        encoded = await self._encode_many([replace(s, kind=SnapshotKind.live) for s in states], lambda _: _LIVE_ID)
        return await self.write_live_records([s.guild_id for s in states], encoded)

    async def encode_live(self, state: SessionState) -> EncodedRecord:
        """Encode ``state`` as the guild's live record (fitted to the limits, as :meth:`write_live` does),
        without writing it (write it with :meth:`write_live_records`).

        The session writer encodes each guild right after capturing it, so a batch waiting for its group
        commit holds bytes, not thousands of Python objects the garbage collector would walk.

        .. versionadded:: 0.5
        """
        data, meta = await self._encode(replace(state, kind=SnapshotKind.live), _LIVE_ID)
        return EncodedRecord(data, meta)

    async def write_live_records(
        self, guild_ids: Sequence[int], records: Sequence[EncodedRecord | Exception]
    ) -> list[WriteOutcome]:
        """Write encoded live records with one group commit; an ``Exception`` in ``records`` (the guild's
        record could not be made) passes through as that guild's outcome.

        .. versionadded:: 0.5
        """
        ready = [r for r in records if isinstance(r, EncodedRecord)]
        with self.metrics.store_operation("put_live"):
            result = await self.store.put_live_many([(r.meta.guild_id, r.data) for r in ready])
        return self._outcomes(guild_ids, records, result, "put_live")

    async def encode_snapshot(self, snapshot: SessionState) -> EncodedRecord:
        """Encode ``snapshot`` as a new snapshot record (a new id), as :meth:`save_snapshot` would, without
        storing it (store it with :meth:`save_records_many`).

        .. versionadded:: 0.5
        """
        kind = SnapshotKind.manual if snapshot.kind is SnapshotKind.live else snapshot.kind
        state = replace(snapshot, kind=kind, label=validate_label(snapshot.label))
        data, meta = await self._encode(state, new_snapshot_id(state.created_at))
        return EncodedRecord(data, meta)

    async def save_records_many(
        self, guild_ids: Sequence[int], records: Sequence[EncodedRecord | Exception]
    ) -> list[WriteOutcome]:
        """Store already encoded snapshots with one group commit; an ``Exception`` in ``records`` (the
        guild's record could not be made) passes through as that guild's outcome.

        .. versionadded:: 0.5
        """
        ready = [r for r in records if isinstance(r, EncodedRecord)]
        with self.metrics.store_operation("save"):
            result = await self.store.save_many([(r.meta, r.data) for r in ready])
        outcomes = self._outcomes(guild_ids, records, result, "save")
        saved = [o for o in outcomes if o.ok]
        if saved:
            kinds = Counter(o.meta.kind.value for o in saved if o.meta is not None)
            _log.info("saved %s", ", ".join(f"{n} {kind} snapshot(s)" for kind, n in sorted(kinds.items())))
        return outcomes

    def snapshot_from_live_bytes(
        self, data: bytes, *, kind: SnapshotKind = SnapshotKind.shutdown, created_at: float | None = None
    ) -> EncodedRecord:
        """A new snapshot (``kind``, a new id, created now) holding the same state as a live record's bytes,
        without capturing or encoding the state again (the codec re-wraps the record's body).

        Parameters
        ----------
        data:
            A live record as the store holds it.
        kind:
            The snapshot's kind.
        created_at:
            Its creation time (default: now).

        Raises
        ------
        SnapshotCorrupted, NotReadableHere
            The record cannot be read.

        .. versionadded:: 0.5
        """
        now = time.time() if created_at is None else created_at
        return self.codec.rewrap(data, id=new_snapshot_id(now), kind=kind, created_at=now, label=None)

    async def snapshots_from_live_bytes(
        self, datas: Sequence[bytes], *, kind: SnapshotKind = SnapshotKind.shutdown
    ) -> list[EncodedRecord | Exception]:
        """:meth:`snapshot_from_live_bytes` of each record, on the loop in slices (a large record in a worker
        thread); a record that cannot be re-wrapped gives its error.

        .. versionadded:: 0.5
        """
        slicer = LoopSlicer()
        records: list[EncodedRecord | Exception] = []
        for data in datas:
            try:
                if len(data) > _THREAD_THRESHOLD_BYTES:
                    records.append(await asyncio.to_thread(self.snapshot_from_live_bytes, data, kind=kind))
                else:
                    records.append(self.snapshot_from_live_bytes(data, kind=kind))
            except (SonoraError, ValueError, TypeError) as exc:
                records.append(exc)
            await slicer.tick()
        return records

    async def _encode_many(
        self, states: Sequence[SessionState], snapshot_id: Callable[[SessionState], str]
    ) -> list[EncodedRecord | Exception]:
        """Encode each state (see :meth:`_encode`), yielding to the loop between slices; an error per state."""
        slicer = LoopSlicer()
        records: list[EncodedRecord | Exception] = []
        for state in states:
            try:
                data, meta = await self._encode(state, snapshot_id(state))
            except (SonoraError, ValueError, TypeError) as exc:
                records.append(exc)
            else:
                records.append(EncodedRecord(data, meta))
            await slicer.tick()
        return records

    def _outcomes(
        self,
        guild_ids: Sequence[int],
        records: Sequence[EncodedRecord | Exception],
        result: BatchResult,
        operation: str,
    ) -> list[WriteOutcome]:
        """One outcome per guild, from its record (or the error making it) and the store's result."""
        errors = iter(result.errors)
        outcomes = []
        for guild_id, record in zip(guild_ids, records, strict=True):
            if not isinstance(record, EncodedRecord):
                outcomes.append(WriteOutcome(guild_id, error=record))
                continue
            error = next(errors)
            if error is not None:
                if isinstance(error, StoreError):
                    self.metrics.store_error(operation)
                outcomes.append(WriteOutcome(guild_id, error=error))
                continue
            self.metrics.record_written(record.meta.kind, len(record.data))
            outcomes.append(WriteOutcome(guild_id, record.meta.with_size(len(record.data)), record.data))
        return outcomes

    async def read_live(self, guild_id: int, *, quarantine: bool = True) -> SessionState | None:
        """The guild's live record, or ``None``.

        A damaged record is quarantined (moved aside, never deleted; with ``quarantine=False``, for tools
        that only look, left where it is) and the error is raised, so one bad guild never stops the others.
        A record this process is not configured to read
        (:class:`~sonora_cog.errors.NotReadableHere`: a key that is not configured, a newer release's
        format) is left where it is and the error raised: fix the configuration and it is read again.
        """
        try:
            with self.metrics.store_operation("get_live"):
                data = await self.store.get_live(guild_id)  # an oversized record is refused before it is read
            if data is None:
                return None
            _meta, state = await self._decode(data)
            if state.guild_id != guild_id:
                raise ForeignGuildError(f"live record of guild {guild_id} belongs to guild {state.guild_id}")
        except (NotReadableHere, StoreError):  # a configuration problem, or the store failing: not damage
            raise
        except SonoraError as exc:
            if not quarantine:
                raise
            where = await self.store.quarantine_live(guild_id, type(exc).__name__)
            _log.error("live record of guild %s is unreadable (%s); moved aside to %s", guild_id, exc, where)
            raise
        return state

    async def end_live(self, guild_id: int) -> bool:
        """Delete the guild's live record: the session ended on purpose and must not come back."""
        with self.metrics.store_operation("delete_live"):
            return await self.store.delete_live(guild_id)

    async def write_heartbeat(self, owner: str, at: float | None = None) -> None:
        """Record that ``owner`` (one bot process's shards) was alive and checkpointing at ``at``."""
        record = {"at": time.time() if at is None else at}
        with self.metrics.store_operation("put_aux"):
            await self.store.put_aux(_owner_key("heartbeat", owner), orjson.dumps(record))

    async def read_heartbeat(self, owner: str) -> float | None:
        """When ``owner`` last checkpointed (Unix seconds), or ``None``; a damaged value reads as ``None``."""
        record = await self._read_owner_record("heartbeat", owner)
        at = record.get("at")
        return float(at) if isinstance(at, int | float) and not isinstance(at, bool) else None

    async def newest_heartbeat(self) -> float | None:
        """The latest checkpoint heartbeat of any process on this store (Unix seconds), or ``None``."""
        newest = None
        for key in await self.store.aux_keys("heartbeat-"):
            at = await self.read_heartbeat(key.removeprefix("heartbeat-"))
            if at is not None and (newest is None or at > newest):
                newest = at
        return newest

    async def write_lavalink_sessions(
        self, owner: str, sessions: Mapping[str, str], *, lease_owner: str | None = None
    ) -> None:
        """Record ``owner``'s Lavalink session id per node URI, for resuming after a restart.

        ``lease_owner`` is the writing process's lease token: the next process knows which lease
        holder is the process whose session it resumed (see :meth:`read_lavalink_lease_owner`).
        """
        record = {"sessions": dict(sessions), "at": time.time(), "lease_owner": lease_owner}
        await self.store.put_aux(_owner_key("lavalink", owner), orjson.dumps(record))

    async def read_lavalink_lease_owner(self, owner: str) -> str | None:
        """The lease token of the process that last recorded ``owner``'s Lavalink sessions, or ``None``."""
        token = (await self._read_owner_record("lavalink", owner)).get("lease_owner")
        return token if isinstance(token, str) else None

    async def read_lavalink_sessions(self, owner: str) -> dict[str, str]:
        """``owner``'s last Lavalink session id per node URI; a damaged record reads as none."""
        sessions = (await self._read_owner_record("lavalink", owner)).get("sessions")
        if not isinstance(sessions, dict):
            return {}
        return {uri: sid for uri, sid in sessions.items() if isinstance(uri, str) and isinstance(sid, str)}

    async def _read_owner_record(self, kind: str, owner: str) -> dict[str, Any]:
        data = await self.store.get_aux(_owner_key(kind, owner))
        if data is None:
            return {}
        try:
            record = orjson.loads(data)
        except orjson.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            _log.warning("the %s record of %s is damaged; ignoring it", kind, owner)
            return {}
        return record

    async def live_guilds(self) -> list[int]:
        """Guilds that have a live record."""
        with self.metrics.store_operation("live_guilds"):
            return await self.store.live_guilds()

    # -- whole-store checks -------------------------------------------------------------------------

    async def read_ref(self, ref: RecordRef) -> bytes | None:
        """The bytes of a record :meth:`SnapshotStore.scan` yielded (``None``: a live record removed meanwhile)."""
        if ref.snapshot_id is None:
            return await self.store.get_live(ref.guild_id)
        return await self.store.load(ref.guild_id, ref.snapshot_id)

    async def validate_all(self) -> list[ValidationResult]:
        """Decode every record in the store (live and snapshots) and report each one's outcome."""
        results: list[ValidationResult] = []
        async for ref in self.store.scan():
            try:
                data = await self.read_ref(ref)
                if data is None:
                    raise SnapshotNotFound("record vanished while validating")
                meta, state = await self._decode(data)
                if state.guild_id != ref.guild_id or meta.guild_id != ref.guild_id:
                    raise ForeignGuildError(f"stored under guild {ref.guild_id} but belongs to guild {state.guild_id}")
                if ref.snapshot_id is not None and meta.id != ref.snapshot_id:
                    raise SnapshotCorrupted(f"file {ref.snapshot_id} holds snapshot {meta.id} (renamed by hand?)")
            except SonoraError as exc:
                results.append(ValidationResult(ref.guild_id, ref.snapshot_id, False, str(exc), type(exc).__name__))
            else:
                results.append(ValidationResult(ref.guild_id, ref.snapshot_id, True))
        return results

    # -- restoring and automatic snapshots ----------------------------------------------------------

    async def restore_snapshot(
        self, snapshot: SessionState, player: wavelink.Player, parts: Iterable[str] | None = None
    ) -> None:
        """Apply ``parts`` of ``snapshot`` to a connected ``player`` (no Lavalink request per track).

        The cog's restore (``SonoraCog.restore``) also joins the channel, verifies and rolls back;
        this is the bare application for bots that manage their players themselves.

        Raises
        ------
        RestoreError
            Lavalink refused the state (the wavelink error is the ``__cause__``).
        """
        import wavelink

        from .restore import ALL_PARTS, apply_state

        try:
            await apply_state(player, snapshot, ALL_PARTS if parts is None else parts, self.settings.restore)
        except (wavelink.WavelinkException, OSError) as exc:
            raise RestoreError(f"guild {snapshot.guild_id}: Lavalink refused the state: {exc}") from exc

    def start_auto_snapshot(self, bot: AnyBot) -> SessionOwner:
        """Persist ``bot``'s players without the cog: the same session owner and jobs the cog runs.

        Every :class:`~sonora_cog.player.SonoraPlayer` change is written within ``snapshots.debounce``
        seconds, plain ``wavelink.Player`` guilds at each checkpoint, auto snapshots and retention run
        on their intervals. Call it from async code (``setup_hook``), and ``await manager.close()`` at
        shutdown to write the final state. It does not restore anything after a restart: use the cog
        for that, or :meth:`read_live` and :meth:`restore_snapshot`. Calling it twice returns the same
        owner.

        Raises
        ------
        RuntimeError
            The cog (or another manager) already serves this bot.
        """
        from .jobs import build_scheduler
        from .owner import SessionOwner

        if self._owner is not None:
            return self._owner
        owner = SessionOwner(bot, self)
        owner.attach()
        owner.leases.start()
        self._scheduler = build_scheduler(owner, self.settings)
        self._scheduler.start()
        self._owner = owner
        return owner

    def stop_auto_snapshot(self) -> None:
        """Stop the jobs started by :meth:`start_auto_snapshot` (nothing more is written)."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        if self._owner is not None:
            self._owner.detach()
            self._owner.leases.stop()
            self._owner = None

    async def close(self) -> None:
        """Write the final state of :meth:`start_auto_snapshot`'s players (if any), stop, close the store."""
        owner = self._owner
        if owner is not None:
            await owner.shutdown()
            self.stop_auto_snapshot()
            await owner.leases.close()
        if self._store is not None:
            await self._store.close()


def as_named(state: SessionState, meta: SnapshotMeta) -> SessionState:
    """A snapshot's state as its meta names it: kind, label and creation time from the meta.

    They differ only for a snapshot made from a live record's bytes (:meth:`Codec.rewrap`, a ``shutdown``
    snapshot of a guild whose live record was current): its payload is the live record's, captured at
    the last change. A track that was playing then has played on until the snapshot was made, as a
    restore from the live record would count it with the heartbeat.
    """
    from .restore import advance_position

    if (state.kind, state.label, state.created_at) == (meta.kind, meta.label, meta.created_at):
        return state
    if meta.created_at > state.player.position_at:
        state = advance_position(state, meta.created_at)
    return replace(state, kind=meta.kind, label=meta.label, created_at=meta.created_at)


def _owner_key(kind: str, owner: str) -> str:
    """The auxiliary record key of ``kind`` for one process (hashed when the shard list is long)."""
    key = f"{kind}-{owner}"
    if len(key) <= 64:
        return key
    return f"{kind}-{hashlib.blake2b(owner.encode(), digest_size=16).hexdigest()}"
