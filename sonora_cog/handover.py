"""Canary handover between two processes of one bot on a shared (Redis) store.

When a new process starts while an older one still holds the leases of the guilds it should restore,
it does not only wait for the old one to stop: it *asks* for them (a request record in the store,
addressed to the holder's lease token). The old process hands them over in batches of
``deploy.handover_batch_size`` with ``deploy.handover_pause`` between batches. For each guild it writes
the final state, stops writing it (``foreign``), leaves voice without ending the session and releases
the lease; the new process takes the lease, restores the guild from that record (verified) and reports
``taken over`` or ``handover failed`` in the handover's journal.

A guild the new process could not restore is given back (it leaves voice, releases the lease) and the
old process takes it back from the same record. When more than ``deploy.max_failure_ratio`` of a
batch failed, the old process stops: the remaining guilds are ``kept`` and it goes on playing them;
both processes log why. A guild the new process neither reports nor holds (it was killed) is taken back
as soon as its lease is free, so after a ``kill -9`` of either side every guild has exactly one owner
within ``storage.lease_ttl``.

Only a process that started at least ``storage.lease_ttl`` seconds before the new one is asked: two
processes started together after a crash race for the leases as before, and nothing bounces.

.. versionadded:: 0.3
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from . import deploy
from .deploy import GuildDeployStatus, Step
from .errors import RestoreError, SonoraError
from .metrics import HandoverOutcome
from .outcomes import RestorePath
from .session import Event

if TYPE_CHECKING:
    from .cog import SonoraCog
    from .lease import LeaseStatus
    from .restore import RestoreReport

__all__ = ("Handover", "HandoverRequest")

_log = logging.getLogger(__name__)

#: How often each side looks at the other's progress.
_LOOK_EVERY = 0.5


@dataclass(frozen=True, slots=True)
class HandoverRequest:
    """A new process asking the holder of some guilds to hand them over."""

    id: str
    to: str
    to_name: str
    to_started: float
    holder: str
    guilds: tuple[int, ...]
    at: float

    @property
    def journal(self) -> str:
        """The journal both sides report each guild's step in."""
        return f"handover-{self.id}"

    def to_bytes(self) -> bytes:
        """The request record's bytes."""
        return orjson.dumps(
            {
                "id": self.id,
                "to": self.to,
                "to_name": self.to_name,
                "to_started": self.to_started,
                "holder": self.holder,
                "guilds": [str(g) for g in self.guilds],
                "at": self.at,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> HandoverRequest | None:
        """Parse the record; ``None`` for a damaged one."""
        try:
            obj = orjson.loads(data)
            return cls(
                str(obj["id"]),
                str(obj["to"]),
                str(obj["to_name"]),
                float(obj["to_started"]),
                str(obj["holder"]),
                tuple(int(g) for g in obj["guilds"]),
                float(obj["at"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


@dataclass
class _Watch:
    """The giver's view of the guilds it handed over: when, which the new process confirmed or failed, and
    which it took back."""

    handed_at: dict[int, float] = field(default_factory=dict)
    confirmed: set[int] = field(default_factory=set)
    failed: set[int] = field(default_factory=set)
    back: set[int] = field(default_factory=set)

    def hand(self, guild_ids: Iterable[int]) -> None:
        now = time.monotonic()
        self.handed_at.update((g, now) for g in guild_ids)

    def settled(self, guild_id: int) -> bool:
        return guild_id in self.confirmed or guild_id in self.back or guild_id not in self.handed_at


def request_key(holder: str) -> str:
    """The auxiliary record where requests to ``holder`` go (a hash: lease tokens hold ``:``)."""
    return "handover-" + hashlib.blake2b(holder.encode(), digest_size=12).hexdigest()


class Handover:
    """Both sides of a handover for one process (``cog.handover``)."""

    def __init__(self, cog: SonoraCog) -> None:
        self.cog = cog
        self.manager = cog.manager
        self.settings = cog.settings.deploy
        self.leases = cog.owner.leases
        self._seen: set[str] = set()
        self._requests: list[HandoverRequest] = []
        self._kept: set[int] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def enabled(self) -> bool:
        """Handovers need leases shared between processes (the Redis store) and ``deploy.handover``."""
        from .lease import LocalLeases

        return self.settings.handover and not isinstance(self.leases.backend, LocalLeases)

    # -- the new process -----------------------------------------------------------------------------

    async def ask(self, held: Mapping[int, LeaseStatus]) -> tuple[set[int], float]:
        """Ask the older holders of ``held`` guilds to hand them over; return the guilds asked for and how
        long to wait for their leases (enough for every batch)."""
        if not self.enabled or not held:
            return set(), self.cog.settings.storage.lease_wait
        try:
            starts = await deploy.process_starts(self.manager)
        except SonoraError as exc:
            _log.warning("handover: cannot read which processes run (%s); waiting for the leases instead", exc)
            return set(), self.cog.settings.storage.lease_wait
        me = self.cog.deploy.started
        by_holder: dict[str, list[int]] = {}
        for guild_id, status in held.items():
            started = starts.get(status.holder or "")
            if started is not None and started <= me - self.cog.settings.storage.lease_ttl:
                by_holder.setdefault(status.holder or "", []).append(guild_id)
        asked: set[int] = set()
        for holder, guilds in by_holder.items():
            request = HandoverRequest(
                secrets.token_hex(8),
                self.leases.owner,
                self.cog.deploy.name,
                me,
                holder,
                tuple(sorted(guilds)),
                time.time(),
            )
            try:
                await self.manager.store.put_aux(request_key(holder), request.to_bytes())
            except SonoraError as exc:
                _log.warning("handover: cannot ask %s for %d guild(s): %s", holder, len(guilds), exc)
                continue
            _log.info("handover: asked %s to hand over %d guild(s) (request %s)", holder, len(guilds), request.id)
            self._requests.append(request)
            asked.update(guilds)
        if not asked:
            return asked, self.cog.settings.storage.lease_wait
        batches = math.ceil(max(len(g) for g in by_holder.values()) / self.settings.handover_batch_size)
        wait = self.cog.settings.storage.lease_wait + batches * (
            self.settings.handover_pause + self.settings.handover_timeout
        )
        self._spawn(self._follow())
        return asked, wait

    def kept(self, guild_id: int) -> bool:
        """Whether to stop waiting for this guild: the old process said it keeps it (the handover stopped), or
        a third process took it (the asked holder was gone: its lease ran out)."""
        return guild_id in self._kept

    def observe(self, status: LeaseStatus) -> None:
        """A lease poll while waiting: a guild now held by another process than the one asked is not coming."""
        request = self.request_for(status.guild_id)
        if request is not None and status.holder not in (None, request.holder) and status.guild_id not in self._kept:
            _log.info(
                "handover: guild %s went to %s, not to this process; not waiting for it", status.guild_id, status.holder
            )
            self._kept.add(status.guild_id)

    async def _follow(self) -> None:
        """Follow the journals of this process's requests: learn which guilds the old process keeps."""
        while self._requests:
            for request in list(self._requests):
                try:
                    entries = await _entries(self.manager, request.journal)
                except SonoraError:
                    continue
                kept = [e for e in entries if e.step is Step.kept and e.guild_id not in self._kept]
                if kept:
                    _log.warning(
                        "handover: %s stopped handing over (%s); %d guild(s) stay there",
                        request.holder,
                        kept[0].why,
                        len(kept),
                    )
                    self._kept.update(e.guild_id for e in kept)
                done = {e.guild_id for e in entries if e.step in (Step.kept, Step.taken_over, Step.handover_failed)}
                if done >= set(request.guilds):
                    self._requests.remove(request)
            await asyncio.sleep(_LOOK_EVERY)

    def request_for(self, guild_id: int) -> HandoverRequest | None:
        """The request that asked for this guild, if any."""
        return next((r for r in self._requests if guild_id in r.guilds), None)

    async def report(self, request: HandoverRequest, report: RestoreReport) -> None:
        """The new process restored (or failed to restore) a handed-over guild: say so; give back a failure."""
        guild_id = report.guild_id
        if report.ok:
            await self._record(
                request, GuildDeployStatus(guild_id, Step.taken_over, at=time.time(), by=self.cog.deploy.name)
            )
            return
        why = f"{report.status.value}: {report.reason}"
        _log.warning(
            "handover: guild %s could not be restored here (%s); giving it back to %s", guild_id, why, request.holder
        )
        self.cog.owner.lose(guild_id, "handed back: its restore failed here")
        player = self.cog.owner.player(guild_id)
        if player is not None:
            await self.cog._leave_quietly(player)
        await self.leases.release(guild_id)
        await self._record(
            request, GuildDeployStatus(guild_id, Step.handover_failed, why, at=time.time(), by=self.cog.deploy.name)
        )

    # -- the old process -----------------------------------------------------------------------------

    async def poll(self) -> None:
        """Called by the deploy poll job: start a new request addressed to this process."""
        if not self.enabled:
            return
        try:
            data = await self.manager.store.get_aux(request_key(self.leases.owner))
        except SonoraError as exc:
            _log.debug("handover: cannot read requests: %s", exc)
            return
        request = HandoverRequest.from_bytes(data) if data else None
        if request is None or request.id in self._seen or request.holder != self.leases.owner:
            return
        self._seen.add(request.id)
        if request.to_started <= self.cog.deploy.started:
            _log.info(
                "handover: ignoring request %s from %s: it did not start after this process",
                request.id,
                request.to_name,
            )
            return
        self._spawn(self.give(request))

    async def give(self, request: HandoverRequest) -> None:
        """Hand the requested guilds this process holds over, batch by batch (see the module docstring)."""
        guilds = [g for g in request.guilds if self.leases.holds(g)]
        size = self.settings.handover_batch_size
        batches = [guilds[i : i + size] for i in range(0, len(guilds), size)]
        _log.info(
            "handover: handing %d guild(s) over to %s in %d batch(es) of %d",
            len(guilds),
            request.to_name,
            len(batches),
            size,
        )
        watch = _Watch()
        metrics = self.cog.metrics
        metrics.handover_progress(0, len(guilds))
        kept: list[int] = []
        for number, batch in enumerate(batches, 1):
            if number > 1 and self.settings.handover_pause:
                await self._watch(request, watch, self.settings.handover_pause)
            handed = [g for g in batch if await self._hand_over(g, request)]
            watch.hand(handed)
            await self._watch(request, watch, self.settings.handover_timeout, until_settled=handed)
            failed = [g for g in batch if g not in watch.confirmed]
            metrics.handover_progress(sum(watch.settled(g) for g in guilds[: number * size]), len(guilds))
            _log.info(
                "handover: batch %d/%d: %d taken over, %d failed or unconfirmed",
                number,
                len(batches),
                len(batch) - len(failed),
                len(failed),
            )
            if failed and len(failed) / len(batch) > self.settings.max_failure_ratio:
                rest = kept = [g for later in batches[number:] for g in later]
                why = (
                    f"{len(failed)} of {len(batch)} guilds of batch {number} failed in {request.to_name}, over "
                    f"deploy.max_failure_ratio ({self.settings.max_failure_ratio:g})"
                )
                _log.error("handover: stopped: %s; keeping %d guild(s) here", why, len(rest))
                await self._record(
                    request,
                    [GuildDeployStatus(g, Step.kept, why, at=time.time(), by=self.cog.deploy.name) for g in rest],
                )
                break
        # Guilds still unconfirmed are watched until they settle: each does, when the new process reports it or
        # its lease runs out; a late failure is taken back, never left without an owner.
        await self._watch(request, watch, math.inf, until_settled=watch.handed_at.keys())
        # A new process killed during the handover loses its leases within a lease ttl: its guilds come back.
        await self._watch(request, watch, self.leases.ttl + 1)
        for guild_id in watch.handed_at:
            outcome = (
                HandoverOutcome.restored
                if guild_id in watch.confirmed
                else HandoverOutcome.rolled_back
                if guild_id in watch.back
                else HandoverOutcome.failed
            )
            metrics.handover_guild(outcome)
        for _guild in kept:
            metrics.handover_guild(HandoverOutcome.left)
        metrics.handover_progress(len(guilds), len(guilds))
        _log.info(
            "handover to %s finished: %d taken over, %d taken back",
            request.to_name,
            len(watch.confirmed),
            len(watch.back),
        )
        await self._withdraw(request)

    async def _hand_over(self, guild_id: int, request: HandoverRequest) -> bool:
        owner = self.cog.owner
        player = owner.player(guild_id)
        try:
            if player is not None and owner.session(guild_id).writable:
                await self.manager.write_live(owner.capture(player))  # the state the new process restores
        except SonoraError as exc:
            _log.error("handover: cannot write the final state of guild %s (%s); keeping it", guild_id, exc)
            return False
        owner.lose(guild_id, f"handed over to {request.to_name}")
        if player is not None:
            await self.cog._leave_quietly(player)
        # in the journal before the lease is free: the new process's report always comes after it
        await self._record(
            request, GuildDeployStatus(guild_id, Step.handed_over, at=time.time(), by=self.cog.deploy.name)
        )
        await self.leases.release(guild_id)
        return True

    async def _watch(
        self, request: HandoverRequest, watch: _Watch, seconds: float, until_settled: Iterable[int] | None = None
    ) -> None:
        """For ``seconds`` (or until every guild of ``until_settled`` is settled): read the new process's
        reports; take back each handed guild it reports failed, or whose lease is free again half a lease
        ttl after it was handed (the new process gave it back, was killed, or ended its session)."""
        deadline = time.monotonic() + seconds
        targets = None if until_settled is None else set(until_settled)
        while True:
            try:
                entries = await _entries(self.manager, request.journal)
            except SonoraError:
                entries = []
            for entry in entries:
                if entry.guild_id in watch.handed_at and entry.guild_id not in watch.back:
                    if entry.step is Step.taken_over:
                        watch.confirmed.add(entry.guild_id)
                    elif entry.step is Step.handover_failed and entry.guild_id not in watch.failed:
                        watch.failed.add(entry.guild_id)
            for guild_id in sorted(watch.failed - watch.back):
                if await self._take_back(request, guild_id, "its restore failed there"):
                    watch.back.add(guild_id)
            late = [
                g
                for g, at in watch.handed_at.items()
                if g not in watch.back and time.monotonic() - at > self.leases.ttl / 2
            ]
            for guild_id in await self._free(late):
                if await self._take_back(request, guild_id, f"{request.to_name} let it go (stopped or killed?)"):
                    watch.back.add(guild_id)
                    watch.confirmed.discard(guild_id)
            if targets is not None and all(watch.settled(g) for g in targets):
                return
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(max(0.0, min(_LOOK_EVERY, deadline - time.monotonic())))

    async def _free(self, guild_ids: Iterable[int]) -> list[int]:
        """The guilds among ``guild_ids`` whose lease this process could take now (it keeps them)."""
        taken = []
        try:
            async for status in self.leases.acquire_many(sorted(guild_ids)):
                if status.acquired:
                    taken.append(status.guild_id)
        except SonoraError:
            pass
        return taken

    async def _take_back(self, request: HandoverRequest, guild_id: int, why: str) -> bool:
        """Restore a guild the new process could not take, from the state handed over; return whether this
        process owns it again (``False``: the new process still holds its lease)."""
        status = await self.leases.acquire(guild_id, wait=self.leases.ttl + 5)
        if not status.acquired:  # the new process still holds it: it is not ownerless
            _log.error(
                "handover: guild %s failed in %s (%s) but its lease is still held by %s; it stays there",
                guild_id,
                request.to_name,
                why,
                status.holder,
            )
            return False
        self.cog.owner.session(guild_id).apply(Event.reclaim, "taken back: the handover failed")
        guild = self.cog.bot.get_guild(guild_id)
        try:
            state = await self.manager.read_live(guild_id)
            if state is None:  # the session ended on purpose meanwhile: nothing to bring back
                await self.leases.release(guild_id)
                _log.info(
                    "handover: guild %s has no live record any more (its session ended); not taken back", guild_id
                )
                return True
            if guild is None:
                raise RestoreError("the bot is not in this guild")
            report = await self.cog.restore(guild, state, path=RestorePath.handover)
        except SonoraError as exc:
            _log.error("handover: guild %s could not be taken back: %s", guild_id, exc)
            return True  # owned here (its lease), though not playing: said above
        _log.warning("handover: guild %s taken back (%s): %s", guild_id, why, report.status.value)
        self.cog._dispatch_report(report)  # restore() counted it already (path handover)
        await self._record(
            request, GuildDeployStatus(guild_id, Step.taken_back, why, at=time.time(), by=self.cog.deploy.name)
        )
        return True

    async def _withdraw(self, request: HandoverRequest) -> None:
        try:
            await self.manager.store.delete_aux(request_key(request.holder))
        except SonoraError as exc:
            _log.debug("handover: cannot remove request %s: %s", request.id, exc)

    # -- both ------------------------------------------------------------------------------------------

    async def _record(self, request: HandoverRequest, entries: GuildDeployStatus | list[GuildDeployStatus]) -> None:
        lines = [orjson.dumps(e.to_json()) for e in (entries if isinstance(entries, list) else [entries])]
        try:
            await self.manager.store.append_journal(request.journal, lines)
        except SonoraError as exc:
            _log.error("handover: cannot record %d step(s) of request %s: %s", len(lines), request.id, exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Cancel what runs (a stopping process hands nothing over any more)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)
        self._requests.clear()


async def _entries(manager: Any, journal: str) -> list[GuildDeployStatus]:
    entries = []
    for line in await manager.store.read_journal(journal):
        try:
            entry = GuildDeployStatus.from_json(orjson.loads(line))
        except orjson.JSONDecodeError:
            entry = None
        if entry is not None:
            entries.append(entry)
    return entries
