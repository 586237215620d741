"""The default backend: one file per record under a root directory, written atomically.

Layout::

    root/live/<guild_id>.snr                        one live record per guild, overwritten in place
    root/snapshots/<guild_id>/<snapshot_id>.snr     immutable snapshots
    root/quarantine/<guild_id>-live-<utc>-<rand>.snr (+ .json with the reason)  bad live records

Directories are created ``0700`` and files ``0600``. Every write goes to a temporary file in the
destination directory (``.<name>.<random>.tmp``), which is flushed and fsynced, then renamed over the
destination, then the directory is fsynced: a reader sees the old record or the new one, never a torn
file. A new snapshot is published with a hard link, which fails if the id exists, so a snapshot can
never be overwritten. Temporary files left by a crash are ignored by every listing and removed when a
store opens. All blocking I/O runs in worker threads; a per-guild :class:`asyncio.Lock` serialises the
writes of one guild.

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import json
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from ..errors import DuplicateSnapshot, SnapshotNotFound, SnapshotTooLarge, SonoraError, StoreError
from ..meta import SNAPSHOT_ID_RE, SnapshotMeta, validate_snapshot_id
from .base import (
    DEFAULT_MAX_RECORD_BYTES,
    MAX_AUX_BYTES,
    HeaderReader,
    RecordRef,
    StoreStats,
    check_header,
    plan_prune,
    read_meta_from_bytes,
    read_meta_from_stream,
    validate_aux_key,
    validate_guild_id,
)

__all__ = ("DIR_MODE", "FILE_MODE", "SUFFIX", "FilesystemStore")

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

SUFFIX = ".snr"
DIR_MODE = 0o700
FILE_MODE = 0o600
_REASON_MAX = 2000
_LIVE_NAME_RE = re.compile(r"^([1-9][0-9]{0,19})\.snr$")
_GUILD_DIR_RE = re.compile(r"^[1-9][0-9]{0,19}$")
_TEMP_NAME_RE = re.compile(r"^\..+\.tmp$")
_O_EXTRA = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
# Filesystems without hard links: fall back to "check, then rename" (safe in-process under the lock).
_NO_LINK_ERRNOS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}


# --- the system calls the store makes, one seam each, so tests can inject faults or count bytes ---
def _open_read(path: Path) -> BinaryIO:
    """Open ``path`` unbuffered for reading (so reading a header reads only the header)."""
    return os.fdopen(os.open(path, os.O_RDONLY | _O_EXTRA), "rb", buffering=0)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


_fsync = os.fsync
_replace = os.replace
_link = os.link


def _fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        _fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _describe(exc: OSError) -> str:
    return exc.strerror or str(exc)


class FilesystemStore:
    """A :class:`~sonora_cog.store.base.SnapshotStore` keeping one file per record under ``root``.

    Parameters
    ----------
    root:
        The store directory; created (``0700``) if missing.
    read_header:
        Reads a record's metadata from an open binary file, consuming only its header. Defaults to
        :func:`~sonora_cog.store.base.read_meta_from_stream`, which uses the codec.
    stale_temp_age:
        Temporary files older than this many seconds are removed when the store opens (younger ones
        may belong to another process writing right now, e.g. the bot while the CLI runs).
    max_record_bytes:
        A record file larger than this is refused (:class:`~sonora_cog.errors.SnapshotTooLarge`) before
        anything of it is read.

    The store opens itself on first use; ``await store.open()`` or ``async with store`` does it early.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        read_header: HeaderReader = read_meta_from_stream,
        stale_temp_age: float = 60.0,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ) -> None:
        self._root = Path(root)
        #: Records larger than this are refused before they are read (``storage.max_record_bytes``).
        self.max_record_bytes = max_record_bytes
        self._live_dir = self._root / "live"
        self._snapshot_dir = self._root / "snapshots"
        self._quarantine_dir = self._root / "quarantine"
        self._aux_dir = self._root / "aux"
        self._read_header = read_header
        self._stale_temp_age = stale_temp_age
        self._locks: dict[int, asyncio.Lock] = {}
        self._open_lock = asyncio.Lock()
        self._opened = False
        self._closed = False
        self._reported: set[str] = set()

    def __repr__(self) -> str:
        return f"<FilesystemStore root={str(self._root)!r}>"

    @property
    def root(self) -> Path:
        """The store directory."""
        return self._root

    async def __aenter__(self) -> FilesystemStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- plumbing ------------------------------------------------------------------------------------
    async def open(self) -> None:
        """Create the directories and remove stale temporary files (idempotent).

        Raises
        ------
        StoreError
            The directories cannot be created.
        """
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        if self._opened:
            return
        async with self._open_lock:
            if not self._opened:
                await self._thread(self._setup_sync)
                self._opened = True

    async def close(self) -> None:
        """Mark the store closed; later calls raise :class:`StoreError`. There is nothing to release."""
        self._closed = True

    async def _thread(self, fn: Callable[..., _T], /, *args: Any) -> _T:
        """Run ``fn`` in a worker thread. If the caller is cancelled, still wait for the thread to finish
        (it cannot be stopped) so a lock held by the caller covers the whole write."""
        task = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            await asyncio.wait({task})
            if not task.cancelled():
                task.exception()  # mark retrieved; the caller was cancelled anyway
            raise

    async def _run(self, fn: Callable[..., _T], /, *args: Any) -> _T:
        await self.open()
        return await self._thread(fn, *args)

    async def _run_locked(self, guild_id: int, fn: Callable[..., _T], /, *args: Any) -> _T:
        await self.open()
        lock = self._locks.setdefault(guild_id, asyncio.Lock())
        async with lock:
            return await self._thread(fn, *args)

    def _live_path(self, guild_id: int) -> Path:
        return self._live_dir / f"{validate_guild_id(guild_id)}{SUFFIX}"

    def _guild_dir(self, guild_id: int) -> Path:
        return self._snapshot_dir / str(validate_guild_id(guild_id))

    def _snapshot_path(self, guild_id: int, snapshot_id: str) -> Path:
        validate_guild_id(guild_id)
        return self._guild_dir(guild_id) / f"{validate_snapshot_id(snapshot_id)}{SUFFIX}"

    @staticmethod
    def _as_bytes(data: bytes) -> bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"a record is bytes, got {type(data).__name__}")
        return bytes(data)

    # --- blocking helpers (run in threads) -------------------------------------------------------------
    def _setup_sync(self) -> None:
        try:
            self._root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            for directory in (self._live_dir, self._snapshot_dir, self._quarantine_dir, self._aux_dir):
                directory.mkdir(mode=DIR_MODE, exist_ok=True)
                directory.chmod(DIR_MODE)
        except OSError as exc:
            message = f"cannot create the store directories under {self._root}: {_describe(exc)}"
            raise StoreError(message) from exc
        folders = [self._live_dir, self._quarantine_dir, self._aux_dir]
        with contextlib.suppress(OSError):
            folders += [p for p in self._snapshot_dir.iterdir() if _GUILD_DIR_RE.fullmatch(p.name)]
        cutoff = time.time() - self._stale_temp_age
        removed = 0
        for folder in folders:
            try:
                with os.scandir(folder) as entries:
                    stale = [e.path for e in entries if _TEMP_NAME_RE.fullmatch(e.name)]
            except OSError:
                continue
            for path in stale:
                with contextlib.suppress(OSError):
                    if os.lstat(path).st_mtime < cutoff:
                        os.unlink(path)  # noqa: PTH108
                        removed += 1
        if removed:
            _log.info("removed %d stale temp file(s) left in %s by interrupted writes", removed, self._root)

    def _ensure_dir(self, directory: Path) -> None:
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:
            return
        directory.chmod(DIR_MODE)
        _fsync_dir(directory.parent)

    def _atomic_write(self, path: Path, data: bytes, *, exclusive: bool, what: str) -> None:
        """Write ``data`` to ``path`` via a fsynced temp file; ``exclusive`` refuses an existing ``path``."""
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            self._ensure_dir(path.parent)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_EXTRA, FILE_MODE)
            try:
                if hasattr(os, "fchmod"):
                    os.fchmod(fd, FILE_MODE)  # whatever the umask
                _write_all(fd, data)
                _fsync(fd)
            finally:
                os.close(fd)
            if exclusive:
                self._publish_new(tmp, path, what)
            else:
                _replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            raise StoreError(f"could not write {what} to {path}: {_describe(exc)}") from exc
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)  # noqa: PTH108 - gone already after a rename; removes it after a link or failure

    @staticmethod
    def _publish_new(tmp: Path, path: Path, what: str) -> None:
        try:
            _link(tmp, path)
        except FileExistsError:
            raise DuplicateSnapshot(f"{what} already exists; snapshots are immutable") from None
        except OSError as exc:
            if exc.errno not in _NO_LINK_ERRNOS:
                raise
            if path.exists():
                raise DuplicateSnapshot(f"{what} already exists; snapshots are immutable") from None
            _replace(tmp, path)

    def _read_file(self, path: Path, what: str, cap: int | None = None) -> bytes | None:
        """The file's bytes, its size checked first: a file over ``cap`` is never read, and at most
        ``cap + 1`` bytes are read in any case (a file growing meanwhile is refused too)."""
        cap = self.max_record_bytes if cap is None else cap
        try:
            with _open_read(path) as stream:
                size = os.fstat(stream.fileno()).st_size
                data = stream.read(cap + 1) if size <= cap else b""
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"could not read {what} from {path}: {_describe(exc)}") from exc
        if size > cap or len(data) > cap:
            size = max(size, len(data))
            raise SnapshotTooLarge(f"{what} at {path} is {size} bytes, over the {cap}-byte cap; not read",
                                   size=size, cap=cap)
        return data

    def _unlink(self, path: Path, what: str) -> bool:
        try:
            os.unlink(path)  # noqa: PTH108
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StoreError(f"could not delete {what} at {path}: {_describe(exc)}") from exc
        with contextlib.suppress(OSError):
            _fsync_dir(path.parent)
        return True

    def _header(self, data: bytes) -> SnapshotMeta:
        return read_meta_from_bytes(data, self._read_header)

    def _snapshot_entries(self, guild_id: int | None) -> list[tuple[int, str, str, int]]:
        """Every snapshot file as (guild, id, path, size); temp files and stray names are skipped."""
        guilds = [guild_id] if guild_id is not None else [int(p.name) for p in self._guild_folders_sync()]
        found: list[tuple[int, str, str, int]] = []
        for guild in guilds:
            folder = self._guild_dir(guild)
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        if entry.name.startswith("."):
                            continue  # temp files of writes in progress or interrupted
                        stem = entry.name.removesuffix(SUFFIX)
                        if stem == entry.name or not SNAPSHOT_ID_RE.fullmatch(stem):
                            _log.warning("ignoring stray file %s in the snapshot store", entry.path)
                            continue
                        try:
                            info = entry.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue  # deleted meanwhile
                        if not stat.S_ISREG(info.st_mode):
                            _log.warning("ignoring %s: not a regular file", entry.path)
                            continue
                        found.append((guild, stem, entry.path, info.st_size))
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StoreError(f"cannot list {folder}: {_describe(exc)}") from exc
        return found

    def _guild_folders_sync(self) -> list[Path]:
        try:
            return sorted(
                (p for p in self._snapshot_dir.iterdir() if _GUILD_DIR_RE.fullmatch(p.name)),
                key=lambda p: int(p.name),
            )
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"cannot list {self._snapshot_dir}: {_describe(exc)}") from exc

    def _list_sync(self, guild_id: int | None) -> list[SnapshotMeta]:
        metas: list[SnapshotMeta] = []
        for guild, snapshot_id, path, size in self._snapshot_entries(guild_id):
            try:
                with _open_read(Path(path)) as stream:
                    meta = self._read_header(stream)
                check_header(meta, guild, snapshot_id)
            except FileNotFoundError:
                continue  # deleted while listing
            except (OSError, SonoraError) as exc:
                # warn once per file and process: listings run often (autocomplete), the file stays put
                level = logging.DEBUG if path in self._reported else logging.WARNING
                self._reported.add(path)
                _log.log(level, "skipping snapshot %s: %s", path, exc)
                continue
            metas.append(meta.with_size(size))
        metas.sort(key=lambda m: (m.created_at, m.id), reverse=True)
        return metas

    def _live_sizes_sync(self) -> list[tuple[int, str, int]]:
        try:
            with os.scandir(self._live_dir) as entries:
                found = []
                for entry in entries:
                    match = _LIVE_NAME_RE.fullmatch(entry.name)
                    if not match:
                        continue
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISREG(info.st_mode):
                        found.append((int(match[1]), entry.path, info.st_size))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"cannot list {self._live_dir}: {_describe(exc)}") from exc
        return sorted(found)

    # --- live records ----------------------------------------------------------------------------------
    async def put_live(self, guild_id: int, data: bytes) -> None:
        """Atomically write the guild's live record; see :meth:`SnapshotStore.put_live`."""
        path, data = self._live_path(guild_id), self._as_bytes(data)

        def work() -> None:
            check_header(self._header(data), guild_id, None)
            self._atomic_write(path, data, exclusive=False, what=f"the live record of guild {guild_id}")

        await self._run_locked(guild_id, work)

    async def put_aux(self, key: str, data: bytes) -> None:
        """Atomically write an auxiliary record; see :meth:`SnapshotStore.put_aux`."""
        data = self._as_bytes(data)
        path = self._aux_dir / f"{validate_aux_key(key, data)}{SUFFIX}"

        def work() -> None:
            self._atomic_write(path, data, exclusive=False, what=f"auxiliary record {key!r}")

        await self._run(work)

    async def get_aux(self, key: str) -> bytes | None:
        """Return an auxiliary record, or ``None``."""
        path = self._aux_dir / f"{validate_aux_key(key)}{SUFFIX}"
        return await self._run(self._read_file, path, f"auxiliary record {key!r}", MAX_AUX_BYTES)

    async def get_live(self, guild_id: int) -> bytes | None:
        """Return the guild's live record, or ``None``."""
        path = self._live_path(guild_id)
        return await self._run(self._read_file, path, f"the live record of guild {guild_id}")

    async def delete_live(self, guild_id: int) -> bool:
        """Delete the guild's live record; return whether there was one."""
        path = self._live_path(guild_id)
        return await self._run_locked(guild_id, self._unlink, path, f"the live record of guild {guild_id}")

    async def live_guilds(self) -> list[int]:
        """Return the ids of the guilds with a live record, ascending."""
        return [guild for guild, _, _ in await self._run(self._live_sizes_sync)]

    async def quarantine_live(self, guild_id: int, reason: str) -> str | None:
        """Move the live record into ``root/quarantine/`` next to a ``.json`` note of ``reason``."""
        source = self._live_path(guild_id)
        now = time.time()
        name = f"{guild_id}-live-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}-{secrets.token_hex(3)}"
        target = self._quarantine_dir / f"{name}{SUFFIX}"
        note = json.dumps(
            {
                "guild_id": str(guild_id),
                "record": "live",
                "quarantined_at": now,
                "reason": str(reason)[:_REASON_MAX],
            },
            indent=2,
        ).encode()

        def work() -> str | None:
            try:
                self._ensure_dir(self._quarantine_dir)
                _replace(source, target)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise StoreError(f"could not quarantine {source}: {_describe(exc)}") from exc
            try:
                _fsync_dir(self._quarantine_dir)
                _fsync_dir(self._live_dir)
                note_path = target.with_suffix(".json")
                self._atomic_write(note_path, note, exclusive=False, what="a quarantine note")
            except (OSError, StoreError) as exc:
                _log.warning("quarantined %s but could not write its note: %s", target, exc)
            return str(target)

        location = await self._run_locked(guild_id, work)
        if location is not None:
            _log.warning("quarantined the live record of guild %s to %s: %s", guild_id, location, reason)
        return location

    # --- snapshots ---------------------------------------------------------------------------------------
    async def save(self, meta: SnapshotMeta, data: bytes) -> None:
        """Store a new immutable snapshot; see :meth:`SnapshotStore.save`."""
        guild_id, snapshot_id = meta.guild_id, meta.id
        path, data = self._snapshot_path(guild_id, snapshot_id), self._as_bytes(data)

        def work() -> None:
            check_header(self._header(data), guild_id, snapshot_id)
            self._atomic_write(path, data, exclusive=True, what=f"snapshot {snapshot_id} of guild {guild_id}")

        await self._run_locked(guild_id, work)

    async def load(self, guild_id: int, snapshot_id: str) -> bytes:
        """Return a snapshot's bytes, or raise :class:`SnapshotNotFound`."""
        path = self._snapshot_path(guild_id, snapshot_id)
        data = await self._run(self._read_file, path, f"snapshot {snapshot_id} of guild {guild_id}")
        if data is None:
            raise SnapshotNotFound(f"guild {guild_id} has no snapshot {snapshot_id!r}")
        return data

    async def list(self, guild_id: int | None = None) -> list[SnapshotMeta]:
        """Return snapshot metadata newest first, reading only headers; see :meth:`SnapshotStore.list`."""
        if guild_id is not None:
            validate_guild_id(guild_id)
        return await self._run(self._list_sync, guild_id)

    async def scan(self) -> AsyncIterator[RecordRef]:
        """Yield every live record, then every snapshot file, readable or not (one guild per thread hop)."""
        for guild, location, size in await self._run(self._live_sizes_sync):
            yield RecordRef(guild, None, location, size)
        for folder in await self._run(self._guild_folders_sync):
            entries = await self._run(self._snapshot_entries, int(folder.name))
            for guild, snapshot_id, location, size in entries:
                yield RecordRef(guild, snapshot_id, location, size)

    async def replace(self, ref: RecordRef, data: bytes) -> None:
        """Atomically rewrite an existing record (operator tools only); see :meth:`SnapshotStore.replace`."""
        if ref.snapshot_id is None:
            path, what = self._live_path(ref.guild_id), f"the live record of guild {ref.guild_id}"
        else:
            path = self._snapshot_path(ref.guild_id, ref.snapshot_id)
            what = f"snapshot {ref.snapshot_id} of guild {ref.guild_id}"
        data = self._as_bytes(data)

        def work() -> None:
            if not path.is_file():
                raise SnapshotNotFound(f"cannot replace {what}: it does not exist")
            check_header(self._header(data), ref.guild_id, ref.snapshot_id)
            self._atomic_write(path, data, exclusive=False, what=what)

        await self._run_locked(ref.guild_id, work)

    async def delete(self, guild_id: int, snapshot_id: str) -> bool:
        """Delete a snapshot; return whether it existed."""
        path = self._snapshot_path(guild_id, snapshot_id)
        what = f"snapshot {snapshot_id} of guild {guild_id}"
        return await self._run_locked(guild_id, self._unlink, path, what)

    async def prune(
        self, *, max_per_guild: int | None, max_age_days: float | None, now: float | None = None
    ) -> builtins.list[SnapshotMeta]:  # `list` is a method name here
        """Apply retention (see :func:`~sonora_cog.store.base.plan_prune`); return what was deleted."""
        doomed = plan_prune(
            await self.list(),
            max_per_guild=max_per_guild,
            max_age_days=max_age_days,
            now=time.time() if now is None else now,
        )
        deleted: list[SnapshotMeta] = []
        for meta in doomed:
            if await self.delete(meta.guild_id, meta.id):
                deleted.append(meta)
        if deleted:
            _log.info("retention deleted %d snapshot(s)", len(deleted))
        return deleted

    async def stats(self) -> StoreStats:
        """Return counts over the store (readable snapshots and live records)."""
        snapshots = await self.list()
        live = await self._run(self._live_sizes_sync)
        return StoreStats.from_records(snapshots, [size for _, _, size in live])
