"""Guild ownership between processes: a lease per guild, so two processes never restore or write one guild.

A process that restores a guild, or starts writing its live record, first takes the guild's lease: a
key holding the process's *owner token* that expires after ``storage.lease_ttl`` seconds unless it is
renewed (every ``storage.lease_renew_interval`` seconds, by :class:`LeaseManager`). On a graceful
shutdown the lease is released after the last live record and the ``shutdown`` snapshot are written.

On Redis (:class:`~sonora_cog.store.redis.RedisStore`) the lease is ``SET key owner NX PX ttl`` with
compare-and-set renewal and release in Lua, and every live write is *fenced*: while another owner holds
a guild's lease, this process's writes of that guild's live record are refused
(:class:`~sonora_cog.errors.LeaseConflict`). A blue-green deploy therefore hands a guild over cleanly: the new process
waits (up to ``storage.lease_wait``) until the old one releases the lease after its shutdown snapshot,
or until the lease of a crashed process expires, then takes the lease and restores.

A store without a shared lease (the filesystem store: one process) gets :class:`LocalLeases`, which
grants leases within the process only.

.. versionadded:: 0.2
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .errors import LeaseConflict, StoreError

__all__ = (
    "LeaseBackend",
    "LeaseConflict",  # lives in sonora_cog.errors; re-exported here for the stores
    "LeaseManager",
    "LeaseStatus",
    "LocalLeases",
    "new_owner_token",
)

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LeaseStatus:
    """A guild's lease as one acquire attempt saw it.

    Attributes
    ----------
    guild_id:
        The guild.
    acquired:
        Whether the asking owner holds the lease now.
    holder:
        The owner token holding it (``None`` when nobody does).
    ttl:
        Seconds until it expires unless renewed (0 when free).
    """

    guild_id: int
    acquired: bool
    holder: str | None
    ttl: float


@runtime_checkable
class LeaseBackend(Protocol):
    """Where leases live: a store that is shared between processes implements this (RedisStore does)."""

    async def lease_acquire(self, guild_ids: Sequence[int], owner: str, ttl: float) -> list[LeaseStatus]:
        """Take (or extend, when ``owner`` already holds it) each guild's lease for ``ttl`` seconds.

        Raises
        ------
        StoreError
            The backend cannot be reached.
        """
        ...

    async def lease_release(self, guild_ids: Sequence[int], owner: str) -> int:
        """Release the leases ``owner`` holds among ``guild_ids``; return how many were released."""
        ...

    def set_lease_owner(self, owner: str | None) -> None:
        """Fence live writes with ``owner``: refuse them while another owner holds the guild's lease."""
        ...


def new_owner_token() -> str:
    """A token naming this process for operators: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class LocalLeases:
    """Leases within one process (for single-process stores such as the filesystem store)."""

    def __init__(self) -> None:
        self._leases: dict[int, tuple[str, float]] = {}

    async def lease_acquire(self, guild_ids: Sequence[int], owner: str, ttl: float) -> list[LeaseStatus]:
        """Grant free or own leases; report the holder of the others."""
        now = time.monotonic()
        out = []
        for guild_id in guild_ids:
            holder, expires = self._leases.get(guild_id, (None, 0.0))
            if holder is None or holder == owner or expires <= now:
                self._leases[guild_id] = (owner, now + ttl)
                out.append(LeaseStatus(guild_id, True, owner, ttl))
            else:
                out.append(LeaseStatus(guild_id, False, holder, expires - now))
        return out

    async def lease_release(self, guild_ids: Sequence[int], owner: str) -> int:
        """Release ``owner``'s leases among ``guild_ids``."""
        released = 0
        for guild_id in guild_ids:
            if self._leases.get(guild_id, (None, 0.0))[0] == owner:
                del self._leases[guild_id]
                released += 1
        return released

    def set_lease_owner(self, owner: str | None) -> None:
        """Nothing to fence within one process."""


class LeaseManager:
    """The leases one process holds: acquire (waiting if asked), renew in the background, release.

    Parameters
    ----------
    backend:
        Where leases live (a :class:`LeaseBackend`; see :meth:`for_store`).
    owner:
        This process's owner token (a fresh :func:`new_owner_token` by default).
    ttl:
        Seconds a lease lasts without renewal: how long a crashed process keeps its guilds.
    renew_interval:
        Seconds between renewals; must be well below ``ttl``.
    poll_interval:
        Seconds between two looks at leases held by another process while waiting for them.
    on_lost:
        Called with a guild id when a renewal finds that another process took the guild.

    .. versionadded:: 0.2
    """

    def __init__(
        self,
        backend: LeaseBackend,
        *,
        owner: str | None = None,
        ttl: float = 15.0,
        renew_interval: float = 5.0,
        poll_interval: float = 0.5,
        on_lost: Callable[[int], Any] | None = None,
    ) -> None:
        if not 0 < renew_interval < ttl:
            raise ValueError(f"the lease renew interval ({renew_interval}s) must be below its ttl ({ttl}s)")
        self.backend = backend
        self.owner = owner or new_owner_token()
        self.ttl = ttl
        self.renew_interval = renew_interval
        self.poll_interval = poll_interval
        self.on_lost = on_lost
        self._held: set[int] = set()
        self._wanted: set[int] = set()
        self._refused: set[int] = set()
        self._renewer: asyncio.Task[None] | None = None
        self._closed = False
        self._stop = asyncio.Event()

    @classmethod
    def for_store(cls, store: object, **kwargs: Any) -> LeaseManager:
        """A manager over ``store``'s shared leases, or over :class:`LocalLeases` when it has none."""
        backend = store if isinstance(store, LeaseBackend) else LocalLeases()
        return cls(backend, **kwargs)

    def __repr__(self) -> str:
        return f"<LeaseManager owner={self.owner!r} held={len(self._held)}>"

    @property
    def held(self) -> frozenset[int]:
        """The guilds whose lease this process holds (as of the last acquire or renewal)."""
        return frozenset(self._held)

    def holds(self, guild_id: int) -> bool:
        """Whether this process holds the guild's lease."""
        return guild_id in self._held

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Fence this process's live writes with its owner token and start renewing (idempotent)."""
        self.backend.set_lease_owner(self.owner)
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_loop(), name="sonora-lease-renew")

    def stop(self) -> None:
        """Stop renewing (the loop ends at its next look at the flag); leases then expire after ``ttl``."""
        self._stop.set()

    async def close(self, *, grace: float = 5.0) -> None:
        """Stop renewing and release every lease held (call after the shutdown snapshot is written).

        Returns within about ``2 * grace`` seconds whatever the backend does: the renewal loop is told
        to stop through a flag it checks, and is only waited for ``grace`` seconds (a renewal stuck in
        the backend is abandoned, and its leases expire after ``ttl``); the release gets as long.
        """
        self._closed = True
        self._stop.set()
        renewer, self._renewer = self._renewer, None
        if renewer is not None and not renewer.done():
            _done, pending = await asyncio.wait({renewer}, timeout=grace)
            if pending:
                renewer.cancel()  # not awaited: a backend that swallows the cancellation must not hang us
                _log.warning("a lease renewal did not finish within %gs; abandoning it", grace)
        try:
            async with asyncio.timeout(grace):
                await self.release_all()
        except TimeoutError:
            _log.warning("could not release the leases within %gs; they expire within %gs", grace, self.ttl)

    # -- acquiring ------------------------------------------------------------------------------------

    async def acquire(self, guild_id: int, *, wait: float = 0.0) -> LeaseStatus:
        """Take the guild's lease, waiting up to ``wait`` seconds for another holder to let it go.

        Raises
        ------
        StoreError
            The lease backend cannot be reached.
        """
        statuses = [status async for status in self.acquire_many([guild_id], wait=wait)]
        return statuses[-1]

    async def acquire_many(
        self,
        guild_ids: Iterable[int],
        *,
        wait: float = 0.0,
        on_held: Callable[[LeaseStatus], Any] | None = None,
        give_up: Callable[[int], bool] | None = None,
    ) -> AsyncIterator[LeaseStatus]:
        """Take many guilds' leases; yield each guild's status as soon as it is decided.

        Free guilds are yielded at once (acquired). Guilds held by another process are polled together,
        every ``poll_interval`` seconds, and yielded when their holder releases them or its lease
        expires (acquired), or when ``wait`` seconds have passed (not acquired, ``holder`` set).
        ``on_held`` is called with each status that is still held by another process, at every poll
        (the caller learns who holds a guild while it waits). A guild for which ``give_up`` returns true is
        no longer waited for (yielded, not acquired, at the next poll).

        Raises
        ------
        StoreError
            The lease backend cannot be reached (guilds already yielded keep their leases).
        """
        pending = list(dict.fromkeys(guild_ids))
        deadline = time.monotonic() + wait
        announced = False
        while pending:
            statuses = await self.backend.lease_acquire(pending, self.owner, self.ttl)
            waiting = []
            for status in statuses:
                if status.acquired:
                    self._held.add(status.guild_id)
                    self._refused.discard(status.guild_id)
                    yield status
                else:
                    waiting.append(status)
                    if on_held is not None:
                        on_held(status)
            if give_up is not None:
                for status in [s for s in waiting if give_up(s.guild_id)]:
                    waiting.remove(status)
                    yield status
            remaining = deadline - time.monotonic()
            if not waiting or remaining <= 0:
                for status in waiting:
                    yield status
                return
            if not announced:
                holders = sorted({s.holder or "?" for s in waiting})
                _log.info(
                    "waiting up to %.0fs for %d guild(s) held by %s to be released",
                    remaining,
                    len(waiting),
                    ", ".join(holders),
                )
                announced = True
            pending = [s.guild_id for s in waiting]
            soonest = min(max(s.ttl, 0.0) for s in waiting)
            await asyncio.sleep(max(0.01, min(self.poll_interval, soonest + 0.01, remaining)))

    async def ensure(self, guild_id: int) -> bool:
        """Whether this process may write the guild now: hold its lease, or take it if it is free.

        Used before each live write. When the backend cannot be reached, the write is allowed (the
        store buffers it, and the fence is checked when it is flushed) and the lease is taken later.
        """
        if guild_id in self._held:
            return True
        if self._closed:
            return False
        try:
            status = await self.acquire(guild_id)
        except StoreError as exc:
            _log.debug("cannot take the lease of guild %s now (%s); will retry", guild_id, exc)
            self._wanted.add(guild_id)
            return True
        if not status.acquired:
            if guild_id not in self._refused:
                _log.warning(
                    "guild %s is owned by another process (%s); not writing its state here", guild_id, status.holder
                )
                self._refused.add(guild_id)
            return False
        return True

    # -- releasing ------------------------------------------------------------------------------------

    async def release(self, guild_id: int) -> bool:
        """Release the guild's lease (a session ended on purpose); return whether it was held."""
        self._wanted.discard(guild_id)
        if guild_id not in self._held:
            return False
        self._held.discard(guild_id)
        try:
            return await self.backend.lease_release([guild_id], self.owner) > 0
        except StoreError as exc:
            _log.warning("could not release the lease of guild %s (it expires by itself): %s", guild_id, exc)
            return False

    async def release_all(self) -> int:
        """Release every lease held; return how many were released."""
        held, self._held = sorted(self._held), set()
        self._wanted.clear()
        if not held:
            return 0
        try:
            released = await self.backend.lease_release(held, self.owner)
        except StoreError as exc:
            _log.warning("could not release %d lease(s) (they expire within %.0fs): %s", len(held), self.ttl, exc)
            return 0
        _log.info("released the leases of %d guild(s)", released)
        return released

    # -- renewing -------------------------------------------------------------------------------------

    async def renew(self) -> None:
        """Renew every lease held (and take those wanted while the backend was down) once."""
        targets = sorted(self._held | self._wanted)
        if not targets or self._closed:
            return
        statuses = await self.backend.lease_acquire(targets, self.owner, self.ttl)
        if self._closed:  # a renewal that outlived close(): give back what it just took
            await self.backend.lease_release([s.guild_id for s in statuses if s.acquired], self.owner)
            return
        for status in statuses:
            guild_id = status.guild_id
            self._wanted.discard(guild_id)
            if status.acquired:
                self._held.add(guild_id)
            elif guild_id in self._held:
                self._held.discard(guild_id)
                _log.warning("lost the lease of guild %s to %s; this process stops writing it", guild_id, status.holder)
                if self.on_lost is not None:
                    self.on_lost(guild_id)

    async def _renew_loop(self) -> None:
        """Renew every ``renew_interval`` seconds until :meth:`close` sets the stop flag."""
        failing = False
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.renew_interval):
                    await self._stop.wait()
            if self._stop.is_set():
                return
            try:
                await self.renew()
            except StoreError as exc:
                if not failing:
                    _log.warning("cannot renew leases (%s); retrying every %.0fs", exc, self.renew_interval)
                failing = True
                continue
            except Exception:  # the loop must survive anything; the error is logged
                _log.exception("lease renewal failed")
                continue
            if failing:
                _log.info("lease renewal works again (%d guild(s) held)", len(self._held))
            failing = False
