"""Writing live records and auto snapshots: the part of the session owner that talks to the manager.

A change marks the guild dirty; a debounce timer writes every dirty guild ``snapshots.debounce``
seconds later, and the checkpoint job writes what changed since the last write. Only ``live``
sessions are written (see :mod:`sonora_cog.session`): a guild whose restore is pending or running is
*held*, so restarting twice in a row never overwrites its record with the empty state of a fresh
process; an ended session is never written again.

:class:`~sonora_cog.player.SonoraPlayer` reports its changes, so an unchanged guild costs nothing at a
checkpoint. A plain ``wavelink.Player`` cannot: each checkpoint compares its
:func:`~sonora_cog.capture.change_signature` with the one last written. SonoraPlayer guilds are
compared too, a slice per checkpoint so that each is compared once a minute: a change nobody
reported (a queued track's extras changed in place) is written then, and logged once per guild.

Guilds are captured on the loop one at a time (cheap, pure), then encoded and written in group commits
of :data:`~sonora_cog.batching.BATCH_SIZE` guilds through the manager, which encodes in slices (large
states in a worker thread) and does all file I/O off the loop; while one batch is in the store the next
one is captured. Each guild's failure is its own (logged, the guild stays dirty).

Snapshots the writer takes by itself (see :mod:`sonora_cog.cadence` for the rules): ``auto`` ones, each
guild at its own interval (fixed, or following its activity), and ``pre-change`` ones, captured at the
moment a SonoraPlayer's queue is about to be cleared, shuffled or cut, and saved in the background.
Time comes from :attr:`SessionWriter.clock`, which tests replace to drive the intervals.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ._typing import AnyBot
from .batching import BATCH_SIZE, WriteOutcome
from .cadence import MIN_CHANGE_WINDOW, PRE_CHANGE_MIN_GAP, Cadence, adaptive_interval, fixed_interval, pre_change_label
from .capture import change_signature
from .errors import SonoraError
from .meta import SnapshotKind
from .session import Event, GuildSession, Phase

if TYPE_CHECKING:
    import wavelink

    from .codec import EncodedRecord
    from .lease import LeaseManager
    from .manager import SessionManager
    from .model import SessionState

__all__ = ("SessionWriter",)

_log = logging.getLogger(__name__)
#: Seconds of floating-point noise tolerated when an interval is compared with a clock difference (an
#: interval of exactly 300 s between two readings of a clock around 30,000 s can compute as 299.99999999).
CLOCK_SLACK = 1e-6


@dataclass(frozen=True, slots=True)
class _Captured:
    """A guild captured and encoded for a live write, with the signature it is written at."""

    guild_id: int
    record: EncodedRecord
    signature: int


class SessionWriter:
    """Dirty marks, the debounced flush, the checkpoint, auto and pre-change snapshots, retention, the shutdown write.

    The base of :class:`~sonora_cog.owner.SessionOwner`, which provides the sessions and players.
    """

    # provided by SessionOwner
    session: Callable[[int], GuildSession]
    player: Callable[[int], wavelink.Player | None]
    players: Callable[[], list[wavelink.Player]]
    listener_count: Callable[[int], int]
    start: Callable[[int, str], bool]
    sweep_size: Callable[[int], int]

    @property
    def key(self) -> str:
        """This process's identity in heartbeat records (given by the session owner)."""
        raise NotImplementedError

    def __init__(
        self,
        bot: AnyBot,
        manager: SessionManager,
        leases: LeaseManager,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bot = bot
        #: Seconds on a monotonic scale: when changes happened, when auto snapshots are due, the
        #: ``pre-change`` rate limit. Tests replace it to drive those without sleeping.
        self.clock = clock
        self.manager = manager
        self.settings = manager.settings
        #: Guild ownership between processes (within this process only, for the filesystem store).
        self.leases = leases
        self._sessions: dict[int, GuildSession] = {}
        self._flush_handle: asyncio.TimerHandle | None = None
        self._flush_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweep_from = 0
        #: Set when shutdown begins: no new writes are scheduled.
        self.closing = False
        #: After :meth:`shutdown`: whether every player's final state was written.
        self.shutdown_complete = False

    # -- signals ------------------------------------------------------------------------------------

    def mark_dirty(self, guild_id: int) -> None:
        """The guild's state changed: write its live record within the debounce window (if it is ``live``)."""
        session = self.session(guild_id)
        if self.closing or session.phase in (Phase.ended, Phase.closed, Phase.foreign):
            return
        session.dirty = True
        now = self.clock()
        session.note_change(now, max(self.settings.snapshots.debounce, MIN_CHANGE_WINDOW))
        if session.writable and session.auto_from is None:
            session.auto_from = now  # it went live: its first auto snapshot is one interval from now
        if self._flush_handle is None and session.writable:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(self.settings.snapshots.debounce, self._debounced_flush)

    def is_dirty(self, guild_id: int) -> bool:
        """Whether the guild has changes not yet written."""
        session = self._sessions.get(guild_id)
        return session is not None and session.dirty

    def last_saved_at(self, guild_id: int) -> float | None:
        """Unix time of this guild's last live-record write by this process."""
        session = self._sessions.get(guild_id)
        return session.saved_at if session is not None else None

    # -- capture ------------------------------------------------------------------------------------

    def capture(self, player: wavelink.Player, kind: SnapshotKind = SnapshotKind.live) -> SessionState:
        """Capture a player now, with the bot's extras and the guild's playback clock."""
        assert player.guild is not None
        return self.manager.create_snapshot(
            player,
            kind=kind,
            extras=getattr(player, "extras", None),
            position_sample=self.session(player.guild.id).sample,
        )

    def signature(self, player: wavelink.Player) -> int:
        """The player's :func:`~sonora_cog.capture.change_signature` now."""
        assert player.guild is not None
        return change_signature(
            player,
            sample=self.session(player.guild.id).sample,
            extras=getattr(player, "extras", None),
            history_limit=self.settings.limits.max_history_tracks,
        )

    # -- writing ------------------------------------------------------------------------------------

    async def flush(self, guild_ids: Iterable[int] | None = None, *, unless_unchanged: Iterable[int] = ()) -> int:
        """Write the live record of ``guild_ids`` (default: every dirty guild); return how many were written.

        Guilds in ``unless_unchanged`` are written only if their signature changed since their last write.
        """
        return len(await self._flush(guild_ids, set(unless_unchanged)))

    async def _flush(self, guild_ids: Iterable[int] | None, compare: set[int]) -> set[int]:
        """Capture each guild on the loop, one at a time, and write them in group commits of
        :data:`~sonora_cog.batching.BATCH_SIZE`: while one batch is in the store, the next is captured."""
        async with self._flush_lock:
            if guild_ids is None:
                guild_ids = [s.guild_id for s in self._sessions.values() if s.dirty]
            written: set[int] = set()
            batch: list[_Captured] = []
            in_store: asyncio.Task[set[int]] | None = None
            try:
                for guild_id in sorted(set(guild_ids)):
                    captured = await self._capture_live(guild_id, only_if_changed=guild_id in compare)
                    if captured is not None:
                        batch.append(captured)
                    await asyncio.sleep(0)  # one guild at a time: the loop runs between them
                    if len(batch) >= BATCH_SIZE:
                        if in_store is not None:
                            written |= await in_store
                        in_store, batch = asyncio.ensure_future(self._commit_live(batch)), []
                if in_store is not None:
                    written |= await in_store
                    in_store = None
                if batch:
                    written |= await self._commit_live(batch)
            finally:
                if in_store is not None and not in_store.done():  # cancelled: the batch in the store goes too
                    in_store.cancel()
            return written

    async def _capture_live(self, guild_id: int, *, only_if_changed: bool) -> _Captured | None:
        """The guild's state to write now, or ``None``: not ``live``, its lease lost, or unchanged."""
        session = self.session(guild_id)
        player = self.player(guild_id)
        if not session.writable or player is None:
            return None
        if not await self.leases.ensure(guild_id):
            session.apply(Event.lose, "another process holds its lease")
            return None
        if not session.writable:  # it ended (or was lost) while the lease was checked
            return None
        signature = self.signature(player)
        if only_if_changed and not session.dirty and signature == session.signature:
            return None
        session.dirty = False  # a change from here on marks it again
        try:  # encoded now: a batch waiting for the store holds bytes, not objects the GC walks
            return _Captured(guild_id, await self.manager.encode_live(self.capture(player)), signature)
        except Exception as exc:  # one guild's failure must never stop the others
            _log.error("could not save the live record of guild %s: %s: %s", guild_id, type(exc).__name__, exc)
            session.dirty = True
            return None

    async def _commit_live(self, batch: list[_Captured]) -> set[int]:
        """Write a batch of captured guilds (one group commit); settle each guild by its own outcome."""
        try:
            outcomes = await self.manager.write_live_records([c.guild_id for c in batch], [c.record for c in batch])
        except Exception as exc:  # a bug, not one guild's failure: every guild of the batch stays dirty
            outcomes = [WriteOutcome(c.guild_id, error=exc) for c in batch]
        written = set()
        for captured, outcome in zip(batch, outcomes, strict=True):
            guild_id = captured.guild_id
            session = self.session(guild_id)
            if outcome.error is not None or outcome.meta is None:
                error = outcome.error
                _log.error("could not save the live record of guild %s: %s: %s", guild_id, type(error).__name__, error)
                session.dirty = True
                continue
            if session.phase is Phase.ended:  # ended while it was being written: take the write back
                await self._end_live(guild_id)
                continue
            session.signature = captured.signature
            session.saved_at = time.time()
            self.bot.dispatch("sonora_state_saved", guild_id, outcome.meta)
            written.add(guild_id)
        return written

    async def checkpoint(self) -> int:
        """The checkpoint job: write what changed since the last write, then one heartbeat.

        Dirty guilds are written; plain ``wavelink.Player`` guilds are compared (they cannot report
        their changes); a slice of the other guilds is compared too (see the module docstring). The
        heartbeat lets a restore work out how far each unchanged track has played since its record was
        written (see :func:`~sonora_cog.restore.advance_position`).
        """
        from .player import SonoraPlayer

        measured = self.manager.metrics.checkpoint_started()
        players = self.players()
        reporting: list[int] = []
        compare: set[int] = set()
        for player in players:
            assert player.guild is not None
            guild_id = player.guild.id
            if self.session(guild_id).phase is Phase.idle:
                self.start(guild_id, "found playing at a checkpoint")
            if isinstance(player, SonoraPlayer):
                reporting.append(guild_id)
            else:
                compare.add(guild_id)
        swept = self._sweep(reporting)
        dirty = {s.guild_id for s in self._sessions.values() if s.dirty}
        written = await self._flush(dirty | compare | swept, (compare | swept) - dirty)
        for guild_id in sorted((written & swept) - dirty):
            self._warn_unreported(guild_id)
        if players and not self.closing:
            try:
                await self.manager.write_heartbeat(self.key)
            except SonoraError as exc:
                _log.error("could not write the checkpoint heartbeat: %s", exc)
        measured.finish()
        return len(written)

    def _sweep(self, guild_ids: list[int]) -> set[int]:
        """The next slice of ``guild_ids`` to compare, so that each is compared about once a minute."""
        if not guild_ids:
            return set()
        size = self.sweep_size(len(guild_ids))
        start = self._sweep_from % len(guild_ids)
        self._sweep_from = start + size
        return set((guild_ids[start:] + guild_ids[:start])[:size])

    def _warn_unreported(self, guild_id: int) -> None:
        session = self.session(guild_id)
        if session.warned_unobserved:
            return
        session.warned_unobserved = True
        _log.warning(
            "guild %s changed without SonoraPlayer seeing it (a track's or the player's extras changed in place?); "
            "the checkpoint saved it, up to a minute late. Call player.mark_dirty() after such a change.",
            guild_id,
        )

    def cadence(self, guild_id: int) -> Cadence:
        """The guild's auto-snapshot interval now, and why (see :mod:`sonora_cog.cadence`)."""
        snapshots = self.settings.snapshots
        if snapshots.auto_interval > 0:
            return fixed_interval(snapshots.auto_interval)
        return adaptive_interval(
            self.session(guild_id).recent_changes(self.clock()),
            self.listener_count(guild_id),
            busy=snapshots.auto_interval_busy,
            quiet=snapshots.auto_interval_quiet,
        )

    def next_auto_in(self, guild_id: int) -> float | None:
        """Seconds until the guild's next ``auto`` snapshot is due (``<= 0``: due now, taken at the next
        run of the job if its state changed), or ``None`` while none is scheduled (not live)."""
        session = self._sessions.get(guild_id)
        if session is None or not session.writable or session.auto_from is None:
            return None
        return session.auto_from + self.cadence(guild_id).interval - self.clock()

    async def auto_snapshot(self) -> int:
        """The auto-snapshot job: an ``auto`` snapshot of each ``live``, playing guild that is due and changed.

        A guild is due once its interval (:meth:`cadence`) has passed since its last ``auto`` snapshot,
        or since it went live. A due guild whose state did not change since its last ``auto`` snapshot
        gets none and stays due. Returns how many were taken.
        """
        taken = 0
        for player in self.players():
            assert player.guild is not None
            session = self.session(player.guild.id)
            if not session.writable or player.current is None:
                continue
            now = self.clock()
            if session.auto_from is None:  # live without a change seen yet: its interval starts now
                session.auto_from = now
                continue
            if now - session.auto_from < self.cadence(session.guild_id).interval - CLOCK_SLACK:
                continue
            try:
                signature = self.signature(player)
                if session.auto_signature == signature:
                    continue
                await self.manager.save_snapshot(self.capture(player, SnapshotKind.auto))
            except Exception as exc:  # one guild's failure must never stop the others
                _log.error("auto snapshot of guild %s failed: %s: %s", session.guild_id, type(exc).__name__, exc)
                continue
            session.auto_signature = signature
            if session.writable:  # still live after the write: the next interval starts now
                session.auto_from = now
            taken += 1
        if taken:
            _log.info("auto snapshot: %d guild(s) due and changed were saved", taken)
        return taken

    def pre_change(self, guild_id: int, operation: str, *, queued: int, removed: int) -> bool:
        """A SonoraPlayer's queue is about to change: keep a ``pre-change`` snapshot if the change is major.

        Called *before* the operation (see :func:`~sonora_cog.cadence.pre_change_label` for what is
        major). The state is captured now, synchronously, and saved in the background. Only ``live``
        guilds, at most one per guild every :data:`~sonora_cog.cadence.PRE_CHANGE_MIN_GAP` seconds.
        Returns whether a snapshot was captured.
        """
        label = pre_change_label(operation, queued=queued, removed=removed)
        if label is None or self.closing:
            return False
        session = self._sessions.get(guild_id)
        player = self.player(guild_id)
        if session is None or not session.writable or player is None:
            return False
        now = self.clock()
        if session.pre_change_at is not None and now - session.pre_change_at < PRE_CHANGE_MIN_GAP:
            _log.debug(
                "guild %s: no pre-change snapshot %s (one was taken %.0f s ago)",
                guild_id,
                label,
                now - session.pre_change_at,
            )
            return False
        try:
            state = replace(self.capture(player, SnapshotKind.pre_change), label=label)
        except Exception as exc:  # the bot's queue operation must go on whatever happens here
            _log.error("pre-change snapshot of guild %s failed: %s: %s", guild_id, type(exc).__name__, exc)
            return False
        session.pre_change_at = now
        self._spawn(self._save_pre_change(state))
        return True

    async def _save_pre_change(self, state: SessionState) -> None:
        try:
            await self.manager.save_snapshot(state)
        except Exception as exc:  # a background task: log it, never raise it into the loop
            _log.error("pre-change snapshot of guild %s failed: %s: %s", state.guild_id, type(exc).__name__, exc)

    async def drain(self) -> None:
        """Wait for the background writes started so far (debounced flushes, ``pre-change`` snapshots, ends)."""
        while pending := [t for t in self._tasks if t is not asyncio.current_task()]:
            await asyncio.gather(*pending, return_exceptions=True)

    async def retention(self) -> int:
        """The retention job: apply ``max_snapshots_per_guild`` and ``max_age_days``."""
        from .deploy import prune_journals
        from .restore_history import prune_journals as prune_restore_journals

        removed = await self.manager.apply_retention()
        if removed:
            _log.info("retention removed %d snapshot(s)", len(removed))
        journals = await prune_journals(self.manager, self.settings.snapshots.max_age_days)
        if journals:
            _log.info("retention removed the journals of %d old deploy tag(s)", journals)
        days = await prune_restore_journals(self.manager, self.settings.snapshots.max_age_days)
        if days:
            _log.info("retention removed the restore history of %d old day(s)", days)
        return len(removed)

    async def shutdown(self) -> None:
        """Write the live record of every ``live`` player that changed since its last write, and a ``shutdown``
        snapshot of every one, then close every session.

        A guild whose live record is current (not dirty, its signature the one last written) is not written
        again: a heartbeat says it played on until now, and its ``shutdown`` snapshot re-wraps the live
        record's bytes. Both kinds of writes are group commits (see :mod:`sonora_cog.final_write`).

        Takes at most ``snapshots.shutdown_timeout`` seconds whatever the store does: a guild not
        written by then keeps its last checkpoint (the log says how many live records and snapshots
        were written; a batch a worker thread was already writing may still land).
        """
        from .final_write import FinalProgress, write_final

        self.closing = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        grace = self.settings.snapshots.shutdown_timeout
        players = [p for p in self.players() if p.guild is not None and self.session(p.guild.id).writable]
        progress = FinalProgress(len(players))
        try:
            async with asyncio.timeout(grace):
                async with self._flush_lock:  # an in-flight flush finishes first
                    await write_final(self, players, progress)
                if self._tasks:
                    await asyncio.gather(*self._tasks, return_exceptions=True)
        except TimeoutError:
            _log.error(
                "shutdown: the final write did not finish within %gs (snapshots.shutdown_timeout): %s",
                grace,
                progress.report(),
            )
        for task in self._tasks:  # a write still stuck in the store must not land after the handover
            task.cancel()
        for session in self._sessions.values():
            session.apply(Event.close, "the bot shut down")
        self.shutdown_complete = progress.complete

    # -- internals ----------------------------------------------------------------------------------

    def _debounced_flush(self) -> None:
        self._flush_handle = None
        self._spawn(self.flush())

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in a task that :meth:`shutdown` waits for (then cancels) with the others."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _end_live(self, guild_id: int) -> None:
        try:
            await self.manager.end_live(guild_id)
        except SonoraError as exc:
            _log.error("could not delete the live record of guild %s: %s", guild_id, exc)
            return
        await self.leases.release(guild_id)
