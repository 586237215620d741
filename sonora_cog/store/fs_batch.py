"""Group commit for :class:`~sonora_cog.store.filesystem.FilesystemStore`: many records, one flush.

A single write makes one record durable with four steps (temp file, ``fsync``, rename, ``fsync`` of the
directory). A batch does the same steps for every record *together*, in one worker thread:

1. each item is checked (its header names its guild and snapshot id): a bad item fails alone;
2. every record is written to a temporary file in its destination directory (``O_EXCL | O_NOFOLLOW``,
   ``0600``, relative to a directory descriptor opened without following links);
3. the temporary files are made durable: each one ``fsync``\\ ed, or, for a batch of at least
   :attr:`FilesystemStore.syncfs_batch_min` records on Linux 5.8 or later, one ``syncfs(2)`` of each
   filesystem the batch touches (one journal commit instead of one per file; measured in
   ``benchmarks/README.md``, "Group commit");
4. they are published: live records renamed over the old ones under the store's ``flock`` (a symbolic
   link in the way fails that item), snapshots hard-linked to their name (an existing name, link or not,
   fails that item: a snapshot is never overwritten);
5. each directory touched is ``fsync``\\ ed once, and each folder a new guild folder was made in (or the
   filesystem ``syncfs``\\ ed once).

Nothing is published before every temporary file of the batch is durable, so a ``kill -9`` at any instant
leaves each record old or new, never torn. An error in one item (disk full, a link planted in the way)
fails that item only, and its old record stays; an error making the batch durable (step 3) fails every
item not yet published, and publishes none. ``syncfs`` reports write-back errors only since Linux 5.8;
before that (and off Linux) the per-file ``fsync`` is used.

.. versionadded:: 0.5
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..errors import SonoraError, StoreError
from . import filesystem as fs
from .base import check_header

if TYPE_CHECKING:
    from .filesystem import FilesystemStore

__all__ = ("BatchItem", "group_commit", "syncfs_available")

#: Kernel release from which ``syncfs(2)`` reports write-back errors (before 5.8 it always returned 0).
_SYNCFS_ERRORS_SINCE = (5, 8)


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One record of a batch, named and checked on the event loop.

    Attributes
    ----------
    index:
        Its position in the caller's list (errors are reported there).
    guild_id, snapshot_id:
        The record's key (``snapshot_id`` ``None`` for a live record): its header must agree.
    folder:
        The directory below the store root, as components (``("live",)``, ``("snapshots", "<guild>")``).
    filename:
        The record's file name in ``folder``.
    data:
        The record's bytes.
    what:
        The record for people ("the live record of guild 1").
    """

    index: int
    guild_id: int
    snapshot_id: str | None
    folder: tuple[str, ...]
    filename: str
    data: bytes
    what: str


def _kernel_reports_syncfs_errors() -> bool:
    try:
        release = tuple(int(part) for part in os.uname().release.split("-")[0].split(".")[:2])
    except (AttributeError, ValueError):
        return False
    return release >= _SYNCFS_ERRORS_SINCE


def _load_syncfs() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux") or not _kernel_reports_syncfs_errors():
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_SYNCFS = _load_syncfs()


def syncfs_available() -> bool:
    """Whether this system has a ``syncfs(2)`` that reports write-back errors (Linux 5.8 or later)."""
    return _SYNCFS is not None


def _syncfs(fd: int) -> None:
    """Flush the whole filesystem holding ``fd`` (data and metadata); a seam, like the store's ``_fsync``."""
    assert _SYNCFS is not None
    if _SYNCFS(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


class _Dirs:
    """The directory descriptors of a batch, each folder opened once, without following a link."""

    def __init__(self, store: FilesystemStore, stack: contextlib.ExitStack) -> None:
        self._store = store
        self._stack = stack
        self.fds: dict[tuple[str, ...], int] = {}
        self.failed: dict[tuple[str, ...], Exception] = {}
        #: Folders in which this batch made a folder (flushed with the batch, not once per folder made).
        self.grown: set[tuple[str, ...]] = set()

    def get(self, folder: tuple[str, ...]) -> int:
        """The descriptor of ``folder`` (created if missing); raises what opening it raised, each time."""
        if folder in self.failed:
            raise self.failed[folder]
        if folder not in self.fds:
            try:
                if len(folder) == 1:
                    self.fds[folder] = self._stack.enter_context(self._store._dir(*folder, create=True))
                else:
                    parent = self.get(folder[:-1])
                    path = self._store.root.joinpath(*folder)
                    try:
                        os.stat(folder[-1], dir_fd=parent, follow_symlinks=False)
                    except FileNotFoundError:
                        self.grown.add(folder[:-1])
                    fd = self._store._open_child(parent, folder[-1], path, True, sync_parent=False)
                    self._stack.callback(os.close, fd)
                    self.fds[folder] = fd
            except (OSError, StoreError) as exc:
                self.failed[folder] = exc
                raise
        return self.fds[folder]

    def devices(self, folders: set[tuple[str, ...]]) -> list[int]:
        """One descriptor per filesystem among ``folders`` (``syncfs`` flushes a whole filesystem)."""
        by_device: dict[int, int] = {}
        for folder in sorted(folders):
            fd = self.fds[folder]
            by_device.setdefault(os.fstat(fd).st_dev, fd)
        return list(by_device.values())


def _error(store: FilesystemStore, item: BatchItem, exc: BaseException) -> Exception:
    """The error an item fails with: a store error as :meth:`FilesystemStore._write` words it."""
    if isinstance(exc, SonoraError):
        return exc
    path = store.root.joinpath(*item.folder, item.filename)
    detail = fs._describe(exc) if isinstance(exc, OSError) else str(exc)
    error = StoreError(f"could not write {item.what} to {path}: {detail}")
    error.__cause__ = exc
    return error


def _write_temp(directory: int, item: BatchItem, *, durable: bool) -> str:
    """Write ``item`` to a new temp file in ``directory`` (``fsync``\\ ed when ``durable``); return its name.

    A temp file that could not be written whole is removed before the error propagates.
    """
    tmp = f".{item.filename}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, fs._CREATE_FLAGS, fs.FILE_MODE, dir_fd=directory)
    try:
        os.fchmod(fd, fs.FILE_MODE)  # whatever the umask
        fs._write_all(fd, item.data)
        if durable:
            fs._fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=directory)
        raise
    os.close(fd)
    return tmp


def group_commit(
    store: FilesystemStore, items: Sequence[BatchItem], mode: Literal["replace", "new"]
) -> dict[int, Exception]:
    """Write ``items`` as one group commit (run it in a worker thread); return the errors by item index.

    ``mode``: ``"replace"`` overwrites (live records, renamed under the store lock), ``"new"`` refuses an
    existing name (snapshots, published with a hard link).
    """
    errors: dict[int, Exception] = {}
    for item in items:
        try:
            check_header(store._header(item.data), item.guild_id, item.snapshot_id)
        except SonoraError as exc:
            errors[item.index] = exc
    use_syncfs = (
        _SYNCFS is not None
        and store.syncfs_batch_min is not None
        and len(items) - len(errors) >= store.syncfs_batch_min
    )
    temps: dict[int, tuple[int, str]] = {}  # index -> (directory fd, temp name)
    with contextlib.ExitStack() as stack:
        dirs = _Dirs(store, stack)
        try:
            for item in items:
                if item.index in errors:
                    continue
                try:
                    directory = dirs.get(item.folder)
                    temps[item.index] = (directory, _write_temp(directory, item, durable=not use_syncfs))
                except (OSError, StoreError) as exc:
                    errors[item.index] = _error(store, item, exc)
            folders = {item.folder for item in items if item.index in temps}
            if use_syncfs and temps:
                try:
                    for fd in dirs.devices(folders):
                        _syncfs(fd)
                except OSError as exc:  # nothing is known durable: publish nothing
                    for item in items:
                        if item.index in temps:
                            errors[item.index] = _error(store, item, exc)
                    return errors
            published = _publish(store, [item for item in items if item.index in temps], temps, mode, errors)
            _sync_folders(store, dirs, published, use_syncfs, errors)
        finally:
            for directory, tmp in temps.values():
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=directory)  # gone after a rename; removes it after a link or a failure
    return errors


def _publish(
    store: FilesystemStore,
    items: list[BatchItem],
    temps: dict[int, tuple[int, str]],
    mode: Literal["replace", "new"],
    errors: dict[int, Exception],
) -> dict[tuple[str, ...], list[BatchItem]]:
    """Rename (or link) each durable temp file to its name; return the items published, by folder."""
    published: dict[tuple[str, ...], list[BatchItem]] = {}

    def one(item: BatchItem) -> None:
        directory, tmp = temps[item.index]
        path = store.root.joinpath(*item.folder, item.filename)
        try:
            if mode == "new":
                store._publish_new(directory, tmp, item.filename, path, item.what)
            else:
                store._refuse_link(directory, item.filename, path)  # a link planted in the way: refused
                fs._replace(tmp, item.filename, directory, directory)
        except (OSError, SonoraError) as exc:
            errors[item.index] = _error(store, item, exc)
        else:
            published.setdefault(item.folder, []).append(item)

    if mode == "new" or not items:
        for item in items:
            one(item)
        return published
    try:
        with store._store_lock():  # taken once for every rename of the batch
            for item in items:
                one(item)
    except StoreError as exc:  # the lock could not be taken (each item's own errors are caught in one())
        for item in items:
            errors.setdefault(item.index, exc)
    return published


def _sync_folders(
    store: FilesystemStore,
    dirs: _Dirs,
    published: dict[tuple[str, ...], list[BatchItem]],
    use_syncfs: bool,
    errors: dict[int, Exception],
) -> None:
    """Make the renames durable: each folder ``fsync``\\ ed once, or each filesystem ``syncfs``\\ ed once.

    A failure fails the items of the folders not known durable (they are renamed, but a crash could undo
    that: reported, as a single write reports a failed directory ``fsync``).
    """
    if use_syncfs:
        try:
            for fd in dirs.devices(set(published) | dirs.grown):
                _syncfs(fd)
        except OSError as exc:
            for items in published.values():
                for item in items:
                    errors[item.index] = _error(store, item, exc)
        return
    for folder, items in published.items():
        try:
            fs._fsync_dir(dirs.fds[folder])
        except OSError as exc:
            for item in items:
                errors[item.index] = _error(store, item, exc)
    for parent in sorted(dirs.grown):  # the folders the batch made, in their parent: once per parent
        try:
            fs._fsync_dir(dirs.fds[parent])
        except OSError as exc:
            for folder, items in published.items():
                if folder[:-1] == parent:
                    for item in items:
                        errors[item.index] = _error(store, item, exc)
