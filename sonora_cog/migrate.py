"""Copy every record from one store to another (filesystem ⇄ Redis), then check the counts.

``python -m sonora_cog snapshots migrate --from PATH|redis://… --to PATH|redis://…`` runs
:func:`migrate_locations`. Records are copied as they are stored (the codec envelope, byte for byte),
so compression and encryption carry over and no key is needed. Snapshots keep their ids; a snapshot
already in the target with the same bytes counts as present, with other bytes as a conflict (never
overwritten). A live record already in the target is left alone unless ``overwrite_live`` is set.
At the end the target is scanned and every copied or present record must be there with the same size.

Stop the bot (or point it at the target) before migrating: records it writes meanwhile are not copied.
Quarantined records are not copied.

.. versionadded:: 0.2
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from .config import Settings
from .errors import DuplicateSnapshot, RecordChanged, SonoraError, StoreError
from .store.base import RecordRef, SnapshotStore, read_meta_from_bytes

__all__ = ("MigrationReport", "is_redis_location", "migrate", "migrate_locations", "open_location")

_log = logging.getLogger(__name__)

#: Called after each record with (records done, records in total).
Progress = Callable[[int, int], None]
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


@dataclass(slots=True)
class MigrationReport:
    """What :func:`migrate` did.

    Attributes
    ----------
    source, target:
        The two stores, for people (URLs with passwords redacted).
    live_records, snapshots:
        Records found in the source.
    copied:
        Records written to the target.
    already_present:
        Records the target already held, byte for byte.
    conflicts:
        Records the target holds with other bytes (left as they were), as ``"guild/id"`` strings.
    failed:
        Records that could not be read or written, with the reason.
    missing:
        Records copied or present that the final check did not find in the target (should be empty).
    """

    source: str
    target: str
    live_records: int = 0
    snapshots: int = 0
    copied: int = 0
    already_present: int = 0
    conflicts: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Records in the source."""
        return self.live_records + self.snapshots

    @property
    def ok(self) -> bool:
        """Every source record is in the target with the same bytes, and the count check passed."""
        return not (self.conflicts or self.failed or self.missing) and self.copied + self.already_present == self.total

    def to_json(self) -> dict[str, object]:
        """A JSON-ready summary (for ``--json``)."""
        return {
            "source": self.source,
            "target": self.target,
            "live_records": self.live_records,
            "snapshots": self.snapshots,
            "copied": self.copied,
            "already_present": self.already_present,
            "conflicts": self.conflicts,
            "failed": self.failed,
            "missing": self.missing,
            "ok": self.ok,
        }


def _name(ref: RecordRef) -> str:
    return f"{ref.guild_id}/{ref.snapshot_id or 'live'}"


async def _copy_one(source: SnapshotStore, target: SnapshotStore, ref: RecordRef, overwrite_live: bool) -> str:
    """Copy one record; return ``"copied"``, ``"present"`` or ``"conflict"`` (errors propagate)."""
    if ref.snapshot_id is None:
        data = await source.get_live(ref.guild_id)
        if data is None:
            raise StoreError("the live record vanished from the source while migrating")
        existing = await target.get_live(ref.guild_id)
        if existing == data:
            return "present"
        if existing is not None and not overwrite_live:
            return "conflict"
        if existing is None:
            await target.put_live(ref.guild_id, data)
            return "copied"
        try:  # compare-and-replace: a record the bot rewrote since it was read here is not overwritten
            await target.replace(RecordRef(ref.guild_id, None, ref.location, len(existing)), data, expected=existing)
        except RecordChanged:
            return "conflict"
        return "copied"
    data = await source.load(ref.guild_id, ref.snapshot_id)
    meta = read_meta_from_bytes(data)
    try:
        await target.save(meta, data)
    except DuplicateSnapshot:
        same = await target.load(ref.guild_id, ref.snapshot_id) == data
        return "present" if same else "conflict"
    return "copied"


async def migrate(
    source: SnapshotStore,
    target: SnapshotStore,
    *,
    overwrite_live: bool = False,
    progress: Progress | None = None,
    source_name: str | None = None,
    target_name: str | None = None,
) -> MigrationReport:
    """Copy every live record and snapshot of ``source`` into ``target``, then verify the target.

    Parameters
    ----------
    source, target:
        Opened stores (any backends).
    overwrite_live:
        Replace live records the target already has with the source's (default: keep the target's,
        and report a conflict).
    progress:
        Called after each record with (done, total).
    source_name, target_name:
        How to name the stores in the report (``repr`` by default).

    Returns
    -------
    MigrationReport
        Counts and problems; ``report.ok`` when every record is in the target.

    Raises
    ------
    StoreError
        A store cannot be listed at all (unreadable records are reported, not raised).
    """
    report = MigrationReport(source_name or repr(source), target_name or repr(target))
    refs = [ref async for ref in source.scan()]
    report.live_records = sum(ref.is_live for ref in refs)
    report.snapshots = len(refs) - report.live_records
    _log.info(
        "migrating %d live record(s) and %d snapshot(s) from %s to %s",
        report.live_records,
        report.snapshots,
        report.source,
        report.target,
    )
    expected: dict[tuple[int, str | None], int] = {}
    for done, ref in enumerate(refs, 1):
        try:
            outcome = await _copy_one(source, target, ref, overwrite_live)
        except SonoraError as exc:
            report.failed.append(f"{_name(ref)}: {type(exc).__name__}: {exc}")
            _log.error("could not migrate %s: %s", _name(ref), exc)
        else:
            if outcome == "conflict":
                report.conflicts.append(_name(ref))
            else:
                expected[(ref.guild_id, ref.snapshot_id)] = ref.size
                if outcome == "copied":
                    report.copied += 1
                else:
                    report.already_present += 1
        if progress is not None:
            progress(done, len(refs))
    wait = getattr(target, "wait_available", None)
    if wait is not None and not await wait(30.0):
        raise StoreError(f"{report.target} did not take every record (unreachable); the copy is incomplete")
    found = {(ref.guild_id, ref.snapshot_id): ref.size async for ref in target.scan()}
    report.missing = sorted(
        f"{guild}/{snapshot_id or 'live'}"
        for (guild, snapshot_id), size in expected.items()
        if found.get((guild, snapshot_id)) != size
    )
    _log.info(
        "migration: %d copied, %d already present, %d conflict(s), %d failed, %d missing after the copy",
        report.copied,
        report.already_present,
        len(report.conflicts),
        len(report.failed),
        len(report.missing),
    )
    return report


def is_redis_location(location: str) -> bool:
    """Whether ``location`` is a Redis URL rather than a filesystem path."""
    return location.startswith(_REDIS_SCHEMES)


def open_location(location: str, settings: Settings, *, prefix: str | None = None) -> SnapshotStore:
    """The store at ``location``: a Redis URL (password, timeout and TLS CA from ``settings``) or a directory.

    Parameters
    ----------
    location:
        ``redis://…``, ``rediss://…``, ``unix://…``, or a filesystem store directory.
    settings:
        Settings for the Redis password, prefix and timeouts.
    prefix:
        The Redis key prefix (default ``storage.redis_prefix``).
    """
    if is_redis_location(location):
        from .store.redis import RedisStore

        storage = replace(settings.storage, redis_url=location, redis_prefix=prefix or settings.storage.redis_prefix)
        return RedisStore.from_settings(replace(settings, storage=storage))
    from .store.filesystem import FilesystemStore

    return FilesystemStore(location)


def describe_location(location: str) -> str:
    """``location`` for people (a Redis URL with its password redacted)."""
    if is_redis_location(location):
        from .store.redis import redact_url

        return redact_url(location)
    return location


async def migrate_locations(
    source: str,
    target: str,
    settings: Settings,
    *,
    source_prefix: str | None = None,
    target_prefix: str | None = None,
    overwrite_live: bool = False,
    progress: Progress | None = None,
) -> MigrationReport:
    """Open the two locations (see :func:`open_location`), :func:`migrate`, and close them.

    Raises
    ------
    StoreError
        A Redis location cannot be reached (checked before anything is copied), or the two
        locations are the same store.
    """
    if source == target and source_prefix == target_prefix:
        raise StoreError("--from and --to name the same store")
    stores = [
        open_location(source, settings, prefix=source_prefix),
        open_location(target, settings, prefix=target_prefix),
    ]
    try:
        for store, location in zip(stores, (source, target), strict=True):
            opener = getattr(store, "open", None)
            if opener is not None:
                await opener()
            if getattr(store, "available", True) is False:
                raise StoreError(f"cannot reach {describe_location(location)}; nothing was copied")
        return await migrate(
            stores[0],
            stores[1],
            overwrite_live=overwrite_live,
            progress=progress,
            source_name=describe_location(source),
            target_name=describe_location(target),
        )
    finally:
        for store in stores:
            await store.close()
