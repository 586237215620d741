"""The default backend: one file per record under a root directory, written atomically.

Layout::

    root/live/<guild_id>.snr                        one live record per guild, overwritten in place
    root/snapshots/<guild_id>/<snapshot_id>.snr     immutable snapshots
    root/quarantine/<guild_id>-live-<utc>-<rand>.snr (+ .json with the reason)  bad live records
    root/aux/<key>.snr                              small records (heartbeats, Lavalink session ids)
    root/journal/<name>.log                         append-only journals (deploy status), one entry per line
    root/.lock                                      the advisory lock every process of this store shares

**The store touches only what it created.** Every directory below the root is opened component by
component with ``O_NOFOLLOW | O_DIRECTORY``, and every file is opened, created, renamed, linked and
removed *relative to those directory descriptors* (``openat`` and friends), never through a path: a
symbolic link anywhere inside the store is refused with a :class:`~sonora_cog.errors.StoreError` that
names it, and nothing outside the store is read, written, chmodded, moved or deleted. (The root itself
may be a symbolic link: that is the operator's choice of where the store lives.) Directories the store
creates are ``0700`` and files ``0600``; existing ones are never re-chmodded, but a group- or
world-writable mode, or a foreign owner, is reported once in the log and by ``snapshots validate``.
Temporary-file cleanup removes only names the store itself generates. A read-only store (an inspection
host's read-only mount) can be listed, shown, validated and exported.

**Writes are atomic and never move a record backwards.** A write goes to a temporary file in the
destination directory, which is fsynced, then renamed over the destination, then the directory is
fsynced: a reader sees the old record or the new one, never a torn file. A new snapshot is published
with a hard link, which fails if the id exists, so a snapshot is never overwritten. Renames of live
records and every compare-and-replace (:meth:`FilesystemStore.replace` with ``expected``) happen under
an ``flock`` on ``root/.lock`` shared by every process using the store (the bot, ``rekey``, ``migrate``),
so an operator tool never replaces a record the bot rewrote after the tool read it.

**Many records at once** (:meth:`FilesystemStore.put_live_many`, :meth:`FilesystemStore.save_many`) go
through a group commit (:mod:`sonora_cog.store.fs_batch`): the same steps with the same guarantees, but
every temp file of the batch is made durable before any is published, the store lock is taken once for
all the renames, and each directory is fsynced once, not once per record.

All blocking I/O runs in worker threads; a per-guild :class:`asyncio.Lock` serialises the writes of one
guild within a process.

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeVar

from ..errors import DuplicateSnapshot, RecordChanged, SnapshotNotFound, SnapshotTooLarge, SonoraError, StoreError
from ..meta import SNAPSHOT_ID_RE, SnapshotMeta, validate_snapshot_id
from .base import (
    DEFAULT_MAX_RECORD_BYTES,
    MAX_AUX_BYTES,
    MAX_JOURNAL_BYTES,
    BatchResult,
    HeaderReader,
    RecordRef,
    StoreStats,
    check_header,
    plan_prune,
    read_meta_from_bytes,
    read_meta_from_stream,
    split_journal,
    validate_aux_key,
    validate_guild_id,
    validate_journal_entries,
)

__all__ = ("DIR_MODE", "FILE_MODE", "SUFFIX", "FilesystemStore")

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

SUFFIX = ".snr"
DIR_MODE = 0o700
FILE_MODE = 0o600
LOCK_NAME = ".lock"
_REASON_MAX = 2000
#: A group commit of at least this many records uses one ``syncfs(2)`` (see :mod:`~sonora_cog.store.fs_batch`).
DEFAULT_SYNCFS_BATCH_MIN = 32
_LIVE_NAME_RE = re.compile(r"^([1-9][0-9]{0,19})\.snr$")
_GUILD_DIR_RE = re.compile(r"^[1-9][0-9]{0,19}$")
#: Exactly the temporary names this store generates (``.<name>.snr.<12 hex>.tmp``): nothing else is removed.
_TEMP_NAME_RE = re.compile(r"^\.[A-Za-z0-9_.-]+\.(?:snr|json)\.[0-9a-f]{12}\.tmp$")
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | _CLOEXEC
#: O_NONBLOCK: opening a FIFO planted in the store must not block; a regular file ignores it.
_READ_FLAGS = os.O_RDONLY | _NOFOLLOW | _CLOEXEC | getattr(os, "O_NONBLOCK", 0)
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
_APPEND_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | _NOFOLLOW | _CLOEXEC | getattr(os, "O_NONBLOCK", 0)
JOURNAL_SUFFIX = ".log"
_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
#: What opening a symbolic link (or a non-directory) with those flags fails with.
_REFUSED_ERRNOS = {errno.ELOOP, errno.ENOTDIR, getattr(errno, "EFTYPE", errno.ELOOP)}
_READ_ONLY_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM}
# Filesystems without hard links: fall back to "check, then rename" (safe in-process under the lock).
_NO_LINK_ERRNOS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}


# --- the system calls the store makes, one seam each, so tests can inject faults or count bytes ---
def _open_read(name: str, dir_fd: int) -> BinaryIO:
    """Open ``name`` in ``dir_fd`` unbuffered for reading, never through a symlink."""
    return os.fdopen(os.open(name, _READ_FLAGS, dir_fd=dir_fd), "rb", buffering=0)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


_fsync = os.fsync


def _replace(src: str, dst: str, src_dir_fd: int, dst_dir_fd: int) -> None:
    os.replace(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)


def _link(src: str, dst: str, dir_fd: int) -> None:
    os.link(src, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)


def _fsync_dir(dir_fd: int) -> None:
    """Make a rename or unlink in a directory durable (a no-op where directories cannot be fsynced)."""
    try:
        _fsync(dir_fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise


def _describe(exc: OSError) -> str:
    return exc.strerror or str(exc)


class FilesystemStore:
    """A :class:`~sonora_cog.store.base.SnapshotStore` keeping one file per record under ``root``.

    Parameters
    ----------
    root:
        The store directory; created (``0700``) when the first write needs it.
    read_header:
        Reads a record's metadata from an open binary file, consuming only its header. Defaults to
        :func:`~sonora_cog.store.base.read_meta_from_stream`, which uses the codec.
    stale_temp_age:
        Temporary files older than this many seconds are removed when the store opens (younger ones
        may belong to another process writing right now, e.g. the bot while the CLI runs).
    max_record_bytes:
        A record file larger than this is refused (:class:`~sonora_cog.errors.SnapshotTooLarge`) before
        anything of it is read.
    syncfs_batch_min:
        A group commit of at least this many records makes its temp files and directories durable with one
        ``syncfs(2)`` per filesystem instead of one ``fsync`` per file and directory (Linux 5.8 or later;
        elsewhere always per file). ``None``: always per file (a store on a filesystem other processes
        write a lot to, where flushing everything would cost more than it saves).

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
        syncfs_batch_min: int | None = DEFAULT_SYNCFS_BATCH_MIN,
    ) -> None:
        self._root = Path(root)
        #: Group commits of at least this many records use ``syncfs(2)`` (see the class docstring).
        self.syncfs_batch_min = syncfs_batch_min
        #: Records larger than this are refused before they are read (``storage.max_record_bytes``).
        self.max_record_bytes = max_record_bytes
        self._read_header = read_header
        self._stale_temp_age = stale_temp_age
        self._locks: dict[int, asyncio.Lock] = {}
        self._open_lock = asyncio.Lock()
        self._opened = False
        self._closed = False
        self._reported: set[str] = set()
        #: Paths whose permissions are unsafe (group/world-writable, a foreign owner), or that were refused (a
        #: symbolic link, not a regular file), with why: ``validate`` reports them.
        self.unsafe: dict[str, str] = {}
        #: Whether opening found the store read-only (listing and reading still work).
        self.read_only = False
        self._checked_folders: set[Path] = set()

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
        """Check the directories, create missing ones if it can, remove its own stale temp files (idempotent).

        A store that cannot be written (a read-only mount) opens anyway, for reading.

        Raises
        ------
        StoreError
            A directory of the store is a symbolic link, or cannot be opened.
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

    async def _run_locked_many(self, guild_ids: Sequence[int], fn: Callable[..., _T], /, *args: Any) -> _T:
        """Run ``fn`` in a worker thread holding the locks of every guild in ``guild_ids`` (taken in
        ascending order: every other caller holds one at a time, so this never deadlocks)."""
        await self.open()
        async with contextlib.AsyncExitStack() as stack:
            for guild_id in sorted(set(guild_ids)):
                await stack.enter_async_context(self._locks.setdefault(guild_id, asyncio.Lock()))
            return await self._thread(fn, *args)

    @staticmethod
    def _as_bytes(data: bytes) -> bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"a record is bytes, got {type(data).__name__}")
        return bytes(data)

    # --- directories, opened without following a symlink (run in threads) -------------------------------
    @contextlib.contextmanager
    def _dir(self, *names: str, create: bool = False) -> Iterator[int]:
        """A descriptor of ``root/names...``, each component opened with ``O_NOFOLLOW``.

        Raises ``FileNotFoundError`` when a component is missing (and ``create`` is false), and
        :class:`StoreError` naming the path when one is a symbolic link or not a directory.
        """
        fds: list[int] = []
        try:
            fds.append(self._open_root(create))
            path = self._root
            for name in names:
                path = path / name
                fds.append(self._open_child(fds[-1], name, path, create))
            yield fds[-1]
        finally:
            for fd in reversed(fds):
                os.close(fd)

    def _open_root(self, create: bool) -> int:
        made = False
        if create and not self._root.exists():
            try:
                self._root.mkdir(mode=DIR_MODE, parents=True)
                made = True
            except FileExistsError:
                pass
            except OSError as exc:
                raise StoreError(f"cannot create the store directories under {self._root}: {_describe(exc)}") from exc
        try:
            fd = os.open(self._root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StoreError(f"cannot open the store directories under {self._root}: {_describe(exc)}") from exc
        if made:
            os.fchmod(fd, DIR_MODE)
        else:
            self._check_mode(fd, self._root)
        return fd

    def _open_child(self, parent: int, name: str, path: Path, create: bool, *, sync_parent: bool = True) -> int:
        """Open (and with ``create``, make) the folder ``name`` in ``parent``; a folder it makes is made durable
        in ``parent`` at once unless ``sync_parent`` is false (a group commit flushes ``parent`` later)."""
        made = False
        if create:
            try:
                os.mkdir(name, DIR_MODE, dir_fd=parent)
                made = True
            except FileExistsError:
                pass
            except OSError as exc:
                raise StoreError(f"cannot create {path}: {_describe(exc)}") from exc
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            raise
        except OSError as exc:
            if exc.errno in _REFUSED_ERRNOS:
                self.unsafe.setdefault(str(path), "a symbolic link or not a directory: refused")
                raise StoreError(
                    f"refusing {path}: it is a symbolic link or not a directory (the store never "
                    "follows a link out of itself)"
                ) from None
            raise StoreError(f"cannot open {path}: {_describe(exc)}") from exc
        if made:
            os.fchmod(fd, DIR_MODE)  # whatever the umask
            if sync_parent:
                _fsync_dir(parent)
        else:
            self._check_mode(fd, path)
        return fd

    def _check_mode(self, fd: int, path: Path) -> None:
        """Report (once) a store path others could write or that another user owns; never change it.

        Each folder is looked at once per process (it is opened on every operation); files every time.
        """
        if path in self._checked_folders:
            return
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            self._checked_folders.add(path)
        problems = []
        if info.st_mode & 0o022:
            problems.append(f"group- or world-writable (mode {stat.S_IMODE(info.st_mode):o})")
        if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
            problems.append(f"owned by uid {info.st_uid}, not by this process's uid {os.geteuid()}")
        if problems and str(path) not in self.unsafe:
            self.unsafe[str(path)] = "; ".join(problems)
            _log.warning(
                "unsafe permissions on %s: %s (left as it is; fix them with chmod/chown)", path, self.unsafe[str(path)]
            )

    # --- files (run in threads) ---------------------------------------------------------------------------
    def _read_in(self, dir_fd: int, name: str, path: Path, what: str, cap: int) -> bytes | None:
        """A file's bytes, its size checked first: a file over ``cap`` is never read, and at most ``cap + 1``
        bytes are read in any case (a file growing meanwhile is refused too)."""
        try:
            with _open_read(name, dir_fd) as stream:
                info = os.fstat(stream.fileno())
                if not stat.S_ISREG(info.st_mode):
                    self.unsafe.setdefault(str(path), "not a regular file: refused")
                    raise StoreError(f"refusing {path}: not a regular file")
                self._check_mode(stream.fileno(), path)
                data = stream.read(cap + 1) if info.st_size <= cap else b""
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in _REFUSED_ERRNOS:
                self.unsafe.setdefault(str(path), "a symbolic link: refused")
                raise StoreError(f"refusing {path}: it is a symbolic link (the store never follows one)") from None
            raise StoreError(f"could not read {what} from {path}: {_describe(exc)}") from exc
        size = max(info.st_size, len(data))
        if size > cap:
            raise SnapshotTooLarge(
                f"{what} at {path} is {size} bytes, over the {cap}-byte cap; not read", size=size, cap=cap
            )
        return data

    def _read_file(self, names: tuple[str, ...], filename: str, what: str, cap: int | None = None) -> bytes | None:
        try:
            with self._dir(*names) as fd:
                return self._read_in(
                    fd,
                    filename,
                    self._root.joinpath(*names, filename),
                    what,
                    self.max_record_bytes if cap is None else cap,
                )
        except FileNotFoundError:
            return None

    def _refuse_link(self, dir_fd: int, name: str, path: Path) -> bool:
        """Whether ``name`` exists in ``dir_fd``; a symbolic link there is refused."""
        try:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISLNK(info.st_mode):
            self.unsafe.setdefault(str(path), "a symbolic link: refused")
            raise StoreError(f"refusing {path}: it is a symbolic link (the store never follows one)")
        return True

    @contextlib.contextmanager
    def _store_lock(self) -> Iterator[None]:
        """The advisory lock every process of this store takes around renames and compare-and-replace.

        Opened through the root's path (the root may be a link: the operator's choice), never through a
        link named ``.lock``.
        """
        try:
            fd = os.open(self._root / LOCK_NAME, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC, FILE_MODE)
        except OSError as exc:
            if exc.errno in _REFUSED_ERRNOS:
                raise StoreError(f"refusing {self._root / LOCK_NAME}: it is a symbolic link") from None
            raise StoreError(f"cannot open the store's lock {self._root / LOCK_NAME}: {_describe(exc)}") from exc
        try:
            self._check_mode(fd, self._root / LOCK_NAME)
            self._checked_folders.add(self._root / LOCK_NAME)  # once per process, like the folders
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _write(
        self, names: tuple[str, ...], filename: str, data: bytes, *, mode: str, what: str, expected: bytes | None = None
    ) -> None:
        """Write ``data`` to ``root/names/filename`` via a fsynced temp file.

        ``mode``: ``"new"`` refuses an existing file (snapshots are immutable), ``"replace"`` overwrites
        (under the store lock), ``"existing"`` requires the file to exist and, with ``expected``, to hold
        exactly those bytes (compare-and-replace, under the store lock).
        """
        path = self._root.joinpath(*names, filename)
        tmp = f".{filename}.{secrets.token_hex(6)}.tmp"
        try:
            with self._dir(*names, create=True) as directory:
                try:
                    fd = os.open(tmp, _CREATE_FLAGS, FILE_MODE, dir_fd=directory)
                    try:
                        os.fchmod(fd, FILE_MODE)  # whatever the umask
                        _write_all(fd, data)
                        _fsync(fd)
                    finally:
                        os.close(fd)
                    if mode == "new":
                        self._publish_new(directory, tmp, filename, path, what)
                    else:
                        with self._store_lock():
                            self._check_current(directory, filename, path, what, mode, expected)
                            _replace(tmp, filename, directory, directory)
                    _fsync_dir(directory)
                finally:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp, dir_fd=directory)  # gone after a rename; removes it after a link or failure
        except OSError as exc:
            raise StoreError(f"could not write {what} to {path}: {_describe(exc)}") from exc

    def _check_current(
        self, directory: int, filename: str, path: Path, what: str, mode: str, expected: bytes | None
    ) -> None:
        exists = self._refuse_link(directory, filename, path)
        if mode != "existing":
            return
        if not exists:
            raise SnapshotNotFound(f"cannot replace {what}: it does not exist (removed meanwhile?)")
        if expected is not None and self._read_in(directory, filename, path, what, self.max_record_bytes) != expected:
            raise RecordChanged(f"{what} changed after it was read; not replaced")

    def _publish_new(self, directory: int, tmp: str, filename: str, path: Path, what: str) -> None:
        try:
            _link(tmp, filename, directory)
        except FileExistsError:
            raise DuplicateSnapshot(f"{what} already exists; snapshots are immutable") from None
        except OSError as exc:
            if exc.errno not in _NO_LINK_ERRNOS:
                raise
            if self._refuse_link(directory, filename, path):
                raise DuplicateSnapshot(f"{what} already exists; snapshots are immutable") from None
            _replace(tmp, filename, directory, directory)

    def _exists(self, names: tuple[str, ...], filename: str) -> bool:
        try:
            with self._dir(*names) as directory:
                return self._refuse_link(directory, filename, self._root.joinpath(*names, filename))
        except FileNotFoundError:
            return False

    def _unlink(self, names: tuple[str, ...], filename: str, what: str) -> bool:
        path = self._root.joinpath(*names, filename)
        try:
            with self._dir(*names) as directory, self._store_lock():  # never between a tool's compare and its rename
                if not self._refuse_link(directory, filename, path):
                    return False
                os.unlink(filename, dir_fd=directory)
                with contextlib.suppress(OSError):
                    _fsync_dir(directory)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StoreError(f"could not delete {what} at {path}: {_describe(exc)}") from exc
        return True

    def _header(self, data: bytes) -> SnapshotMeta:
        return read_meta_from_bytes(data, self._read_header)

    # --- opening: modes, read-only, stale temp files -----------------------------------------------------
    def _setup_sync(self) -> None:
        folders = ("live", "snapshots", "quarantine", "aux")
        try:
            for name in folders:
                with self._dir(name, create=True):
                    pass
        except (StoreError, OSError) as exc:
            cause = exc.__cause__ if isinstance(exc, StoreError) else exc
            if not isinstance(cause, OSError) or cause.errno not in _READ_ONLY_ERRNOS:
                if not isinstance(exc, StoreError):
                    raise StoreError(f"cannot set up the store under {self._root}: {_describe(exc)}") from exc
                # A folder is a link (refused, and said so): the store opens, and what needs it fails.
                _log.warning("%s", exc)
            else:
                self.read_only = True
                _log.info("the store %s is read-only (%s): listing and reading only", self._root, _describe(cause))
        removed = 0
        for names in [("live",), ("quarantine",), ("aux",), *(("snapshots", g) for g in self._guild_folders_sync())]:
            removed += self._remove_stale_temp(names)
        if removed:
            _log.info("removed %d stale temp file(s) left in %s by interrupted writes", removed, self._root)

    def _remove_stale_temp(self, names: tuple[str, ...]) -> int:
        """Remove this store's own temp files older than ``stale_temp_age`` in one folder; return how many."""
        cutoff = time.time() - self._stale_temp_age
        removed = 0
        try:
            with self._dir(*names) as directory, os.scandir(directory) as entries:
                for entry in entries:
                    if not _TEMP_NAME_RE.fullmatch(entry.name):
                        continue
                    with contextlib.suppress(OSError):
                        info = entry.stat(follow_symlinks=False)
                        if stat.S_ISREG(info.st_mode) and info.st_mtime < cutoff and not self.read_only:
                            os.unlink(entry.name, dir_fd=directory)
                            removed += 1
        except (FileNotFoundError, StoreError) as exc:
            if isinstance(exc, StoreError):
                _log.warning("%s", exc)
        return removed

    # --- listing (run in threads) -------------------------------------------------------------------------
    def _guild_folders_sync(self) -> list[str]:
        """The guild folders under ``snapshots/`` (real directories only; a link is reported and skipped)."""
        folders = []
        try:
            with self._dir("snapshots") as directory, os.scandir(directory) as entries:
                for entry in entries:
                    if not _GUILD_DIR_RE.fullmatch(entry.name):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.name)
                    else:
                        self._report_once(
                            f"{self._root / 'snapshots' / entry.name}",
                            "ignoring it: a symbolic link or not a directory",
                            refused=True,
                        )
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"cannot list {self._root / 'snapshots'}: {_describe(exc)}") from exc
        return sorted(folders, key=int)

    def _report_once(self, path: str, message: str, *, refused: bool = False) -> None:
        """Log a problem with a path once; a ``refused`` one (a link, a FIFO) is also reported by ``validate``."""
        level = logging.DEBUG if path in self._reported else logging.WARNING
        self._reported.add(path)
        _log.log(level, "%s: %s", path, message)
        if refused:
            self.unsafe.setdefault(path, message)

    def _snapshot_files(self, guild: str, directory: int) -> list[tuple[str, os.stat_result]]:
        """(snapshot id, stat) of every snapshot file in a guild folder; temp files and stray names skipped."""
        found = []
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue  # temp files of writes in progress or interrupted
                stem = entry.name.removesuffix(SUFFIX)
                path = f"{self._root / 'snapshots' / guild / entry.name}"
                if stem == entry.name or not SNAPSHOT_ID_RE.fullmatch(stem):
                    self._report_once(path, "ignoring a stray file in the snapshot store")
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted meanwhile
                if not stat.S_ISREG(info.st_mode):
                    self._report_once(path, "ignoring it: not a regular file (a link?)", refused=True)
                    continue
                found.append((stem, info))
        return found

    def _list_sync(self, guild_id: int | None) -> list[SnapshotMeta]:
        guilds = [str(guild_id)] if guild_id is not None else self._guild_folders_sync()
        metas: list[SnapshotMeta] = []
        for guild in guilds:
            try:
                with self._dir("snapshots", guild) as directory:
                    for snapshot_id, info in self._snapshot_files(guild, directory):
                        path = self._root / "snapshots" / guild / f"{snapshot_id}{SUFFIX}"
                        try:
                            with _open_read(f"{snapshot_id}{SUFFIX}", directory) as stream:
                                meta = self._read_header(stream)
                            check_header(meta, int(guild), snapshot_id)
                        except FileNotFoundError:
                            continue  # deleted while listing
                        except (OSError, SonoraError) as exc:
                            # warn once per file and process: listings run often (autocomplete); the file stays
                            self._report_once(str(path), f"skipping this snapshot: {exc}")
                            continue
                        metas.append(meta.with_size(info.st_size))
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StoreError(f"cannot list {self._root / 'snapshots' / guild}: {_describe(exc)}") from exc
        metas.sort(key=lambda m: (m.created_at, m.id), reverse=True)
        return metas

    def _live_sizes_sync(self) -> list[tuple[int, str, int]]:
        found = []
        try:
            with self._dir("live") as directory, os.scandir(directory) as entries:
                for entry in entries:
                    match = _LIVE_NAME_RE.fullmatch(entry.name)
                    if not match:
                        continue
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISREG(info.st_mode):
                        found.append((int(match[1]), str(self._root / "live" / entry.name), info.st_size))
                    else:
                        self._report_once(
                            str(self._root / "live" / entry.name), "ignoring it: not a regular file", refused=True
                        )
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"cannot list {self._root / 'live'}: {_describe(exc)}") from exc
        return sorted(found)

    def _snapshot_entries(self, guild: str) -> list[tuple[int, str, str, int]]:
        try:
            with self._dir("snapshots", guild) as directory:
                return [
                    (
                        int(guild),
                        snapshot_id,
                        str(self._root / "snapshots" / guild / f"{snapshot_id}{SUFFIX}"),
                        info.st_size,
                    )
                    for snapshot_id, info in self._snapshot_files(guild, directory)
                ]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"cannot list {self._root / 'snapshots' / guild}: {_describe(exc)}") from exc

    # --- live records ----------------------------------------------------------------------------------
    async def put_live(self, guild_id: int, data: bytes) -> None:
        """Atomically write the guild's live record; see :meth:`SnapshotStore.put_live`."""
        name, data = self._live_name(guild_id), self._as_bytes(data)
        what = f"the live record of guild {guild_id}"

        def work() -> None:
            check_header(self._header(data), guild_id, None)
            self._write(("live",), name, data, mode="replace", what=what)

        await self._run_locked(guild_id, work)

    async def put_live_many(self, items: Sequence[tuple[int, bytes]]) -> BatchResult:
        """Write many live records as one group commit; see :meth:`SnapshotStore.put_live_many` and
        :mod:`~sonora_cog.store.fs_batch`."""
        from .fs_batch import BatchItem

        batch: list[BatchItem] = []
        errors: dict[int, Exception] = {}
        for index, (guild_id, data) in enumerate(items):
            try:
                name = self._live_name(guild_id)
                batch.append(
                    BatchItem(
                        index,
                        guild_id,
                        None,
                        ("live",),
                        name,
                        self._as_bytes(data),
                        f"the live record of guild {guild_id}",
                    )
                )
            except (SonoraError, TypeError) as exc:
                errors[index] = exc
        return await self._commit(len(items), batch, errors, "replace")

    async def save_many(self, items: Sequence[tuple[SnapshotMeta, bytes]]) -> BatchResult:
        """Store many new snapshots as one group commit; see :meth:`SnapshotStore.save_many`."""
        from .fs_batch import BatchItem

        batch: list[BatchItem] = []
        errors: dict[int, Exception] = {}
        for index, (meta, data) in enumerate(items):
            try:
                folder, name = self._snapshot_place(meta.guild_id, meta.id)
                batch.append(
                    BatchItem(
                        index,
                        meta.guild_id,
                        meta.id,
                        folder,
                        name,
                        self._as_bytes(data),
                        f"snapshot {meta.id} of guild {meta.guild_id}",
                    )
                )
            except (SonoraError, TypeError) as exc:
                errors[index] = exc
        return await self._commit(len(items), batch, errors, "new")

    async def _commit(
        self, count: int, batch: list[Any], errors: dict[int, Exception], mode: Literal["replace", "new"]
    ) -> BatchResult:
        from .fs_batch import group_commit

        if batch:
            errors.update(
                await self._run_locked_many([item.guild_id for item in batch], group_commit, self, batch, mode)
            )
        return BatchResult(tuple(errors.get(index) for index in range(count)))

    async def put_aux(self, key: str, data: bytes) -> None:
        """Atomically write an auxiliary record; see :meth:`SnapshotStore.put_aux`."""
        data = self._as_bytes(data)
        name = f"{validate_aux_key(key, data)}{SUFFIX}"
        what = f"auxiliary record {key!r}"
        await self._run(lambda: self._write(("aux",), name, data, mode="replace", what=what))

    async def get_aux(self, key: str) -> bytes | None:
        """Return an auxiliary record, or ``None``."""
        name = f"{validate_aux_key(key)}{SUFFIX}"
        return await self._run(self._read_file, ("aux",), name, f"auxiliary record {key!r}", MAX_AUX_BYTES)

    async def delete_aux(self, key: str) -> bool:
        """Delete an auxiliary record; return whether there was one."""
        name = f"{validate_aux_key(key)}{SUFFIX}"
        return await self._run(self._unlink, ("aux",), name, f"auxiliary record {key!r}")

    async def aux_keys(self, prefix: str) -> list[str]:
        """Return the keys of the auxiliary records starting with ``prefix``, sorted."""
        names = await self._run(self._names_sync, "aux", SUFFIX)
        return [name for name in names if name.startswith(prefix)]

    async def append_journal(self, name: str, entries: Sequence[bytes]) -> None:
        """Append lines to a journal with one ``O_APPEND`` write, then fsync (see the protocol)."""
        lines = validate_journal_entries(name, entries)
        if lines:
            await self._run(self._append_sync, f"{name}{JOURNAL_SUFFIX}", b"".join(line + b"\n" for line in lines))

    async def read_journal(self, name: str) -> list[bytes]:
        """Return a journal's complete entries, in order (``[]`` when there is none)."""
        validate_aux_key(name)
        data = await self._run(
            self._read_file, ("journal",), f"{name}{JOURNAL_SUFFIX}", f"journal {name!r}", MAX_JOURNAL_BYTES
        )
        return split_journal(data) if data else []

    async def journal_names(self) -> list[str]:
        """Return the names of every journal, sorted."""
        return await self._run(self._names_sync, "journal", JOURNAL_SUFFIX)

    async def delete_journal(self, name: str) -> bool:
        """Delete a journal; return whether there was one."""
        validate_aux_key(name)
        return await self._run(self._unlink, ("journal",), f"{name}{JOURNAL_SUFFIX}", f"journal {name!r}")

    def _names_sync(self, folder: str, suffix: str) -> list[str]:
        """The record keys in ``folder`` (regular files named ``<key><suffix>``), sorted."""
        keys = []
        try:
            with self._dir(folder) as directory, os.scandir(directory) as entries:
                for entry in entries:
                    key = entry.name.removesuffix(suffix)
                    if key != entry.name and _KEY_RE.fullmatch(key) and entry.is_file(follow_symlinks=False):
                        keys.append(key)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"cannot list {self._root / folder}: {_describe(exc)}") from exc
        return sorted(keys)

    def _append_sync(self, filename: str, data: bytes) -> None:
        path = self._root / "journal" / filename
        try:
            with self._dir("journal", create=True) as directory:
                try:
                    fd = os.open(filename, _APPEND_FLAGS, FILE_MODE, dir_fd=directory)
                except OSError as exc:
                    if exc.errno in _REFUSED_ERRNOS:
                        raise StoreError(
                            f"refusing {path}: it is a symbolic link (the store never follows one)"
                        ) from None
                    raise
                try:
                    info = os.fstat(fd)
                    if not stat.S_ISREG(info.st_mode):
                        raise StoreError(f"refusing {path}: not a regular file")
                    if info.st_size + len(data) > MAX_JOURNAL_BYTES:
                        raise StoreError(f"journal {path} would grow over {MAX_JOURNAL_BYTES} bytes; not appended")
                    # one write with O_APPEND: appends of several processes never interleave
                    if os.write(fd, data) != len(data):
                        raise StoreError(f"journal {path}: a short write (disk full?); the last entry may be torn")
                    _fsync(fd)
                finally:
                    os.close(fd)
                _fsync_dir(directory)
        except OSError as exc:
            raise StoreError(f"could not append to {path}: {_describe(exc)}") from exc

    async def get_live(self, guild_id: int) -> bytes | None:
        """Return the guild's live record, or ``None``."""
        return await self._run(
            self._read_file, ("live",), self._live_name(guild_id), f"the live record of guild {guild_id}"
        )

    async def delete_live(self, guild_id: int) -> bool:
        """Delete the guild's live record; return whether there was one."""
        what = f"the live record of guild {guild_id}"
        return await self._run_locked(guild_id, self._unlink, ("live",), self._live_name(guild_id), what)

    async def live_guilds(self) -> list[int]:
        """Return the ids of the guilds with a live record, ascending."""
        return [guild for guild, _, _ in await self._run(self._live_sizes_sync)]

    async def quarantine_live(self, guild_id: int, reason: str) -> str | None:
        """Move the live record into ``root/quarantine/`` next to a ``.json`` note of ``reason``."""
        source = self._live_name(guild_id)
        now = time.time()
        name = f"{guild_id}-live-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}-{secrets.token_hex(3)}"
        note = json.dumps(
            {"guild_id": str(guild_id), "record": "live", "quarantined_at": now, "reason": str(reason)[:_REASON_MAX]},
            indent=2,
        ).encode()
        target = self._root / "quarantine" / f"{name}{SUFFIX}"

        def work() -> str | None:
            try:
                with self._dir("live") as live, self._dir("quarantine", create=True) as quarantine:
                    if not self._refuse_link(live, source, self._root / "live" / source):
                        return None
                    with self._store_lock():
                        _replace(source, target.name, live, quarantine)
                    _fsync_dir(quarantine)
                    _fsync_dir(live)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise StoreError(f"could not quarantine {self._root / 'live' / source}: {_describe(exc)}") from exc
            try:
                self._write(("quarantine",), f"{name}.json", note, mode="replace", what="a quarantine note")
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
        folder, name = self._snapshot_place(guild_id, snapshot_id)
        data = self._as_bytes(data)

        def work() -> None:
            check_header(self._header(data), guild_id, snapshot_id)
            self._write(folder, name, data, mode="new", what=f"snapshot {snapshot_id} of guild {guild_id}")

        await self._run_locked(guild_id, work)

    async def load(self, guild_id: int, snapshot_id: str) -> bytes:
        """Return a snapshot's bytes, or raise :class:`SnapshotNotFound`."""
        folder, name = self._snapshot_place(guild_id, snapshot_id)
        data = await self._run(self._read_file, folder, name, f"snapshot {snapshot_id} of guild {guild_id}")
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
            for guild, snapshot_id, location, size in await self._run(self._snapshot_entries, folder):
                yield RecordRef(guild, snapshot_id, location, size)
        await self._run(self._audit_sync)  # the rest of the store, for validate: unsafe_paths() says what it found

    def _audit_sync(self) -> None:
        """Look at what holds no record but the store relies on (``.lock``, ``aux/``, ``quarantine/``,
        ``journal/``, stray names in ``live/``): a link, a FIFO or a device is refused, an unsafe mode or a
        foreign owner reported."""
        checks = [self._root / LOCK_NAME]
        for folder in ("aux", "quarantine", "journal", "live"):
            try:
                with self._dir(folder) as directory, os.scandir(directory) as entries:
                    names = [e.name for e in entries if not _TEMP_NAME_RE.fullmatch(e.name)]
            except (FileNotFoundError, StoreError):
                continue  # missing, or already reported as a link
            checks += [
                self._root / folder / name for name in names if folder != "live" or not _LIVE_NAME_RE.fullmatch(name)
            ]
        for path in checks:
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(info.st_mode):
                kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a regular file"
                self.unsafe.setdefault(str(path), f"{kind}: the store cannot use it")
            elif info.st_mode & 0o022 or (hasattr(os, "geteuid") and info.st_uid != os.geteuid()):
                self.unsafe.setdefault(
                    str(path), f"mode {stat.S_IMODE(info.st_mode):o}, owner uid {info.st_uid}: others could change it"
                )

    async def replace(self, ref: RecordRef, data: bytes, *, expected: bytes | None = None) -> None:
        """Atomically rewrite an existing record in place (operator tools only); see :meth:`SnapshotStore.replace`.

        With ``expected`` (the bytes the caller read), the record is replaced only if it still holds
        exactly those bytes, checked under the store's lock: :class:`~sonora_cog.errors.RecordChanged`
        otherwise.
        """
        folder: tuple[str, ...]
        if ref.snapshot_id is None:
            folder, name = ("live",), self._live_name(ref.guild_id)
            what = f"the live record of guild {ref.guild_id}"
        else:
            folder, name = self._snapshot_place(ref.guild_id, ref.snapshot_id)
            what = f"snapshot {ref.snapshot_id} of guild {ref.guild_id}"
        data = self._as_bytes(data)

        def work() -> None:
            if not self._exists(folder, name):
                raise SnapshotNotFound(f"cannot replace {what}: it does not exist")
            check_header(self._header(data), ref.guild_id, ref.snapshot_id)
            self._write(folder, name, data, mode="existing", what=what, expected=expected)

        await self._run_locked(ref.guild_id, work)

    async def delete(self, guild_id: int, snapshot_id: str) -> bool:
        """Delete a snapshot; return whether it existed."""
        folder, name = self._snapshot_place(guild_id, snapshot_id)
        what = f"snapshot {snapshot_id} of guild {guild_id}"
        return await self._run_locked(guild_id, self._unlink, folder, name, what)

    async def prune(
        self,
        *,
        max_per_guild: int | None,
        max_age_days: float | None,
        now: float | None = None,
        keep_deploy_tags: int = 0,
    ) -> builtins.list[SnapshotMeta]:  # `list` is a method name here
        """Apply retention (see :func:`~sonora_cog.store.base.plan_prune`); return what was deleted."""
        doomed = plan_prune(
            await self.list(),
            max_per_guild=max_per_guild,
            max_age_days=max_age_days,
            now=time.time() if now is None else now,
            keep_deploy_tags=keep_deploy_tags,
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

    def unsafe_paths(self) -> dict[str, str]:
        """Store paths with unsafe permissions seen so far (see :meth:`SnapshotStore.unsafe_paths`)."""
        return dict(self.unsafe)

    # --- names ---------------------------------------------------------------------------------------
    @staticmethod
    def _live_name(guild_id: int) -> str:
        return f"{validate_guild_id(guild_id)}{SUFFIX}"

    @staticmethod
    def _snapshot_place(guild_id: int, snapshot_id: str) -> tuple[tuple[str, str], str]:
        return ("snapshots", str(validate_guild_id(guild_id))), f"{validate_snapshot_id(snapshot_id)}{SUFFIX}"
