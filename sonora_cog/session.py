"""One guild's session in this process: its phase, and the only transitions between phases.

Every path that changes what happens to a guild's state (player events, the checkpoint, slash-command
restores, startup rehydration, node and voice recovery, a moderator's disconnect, ``/stop``, a lease
lost to another process, shutdown) goes through :meth:`GuildSession.apply`. A transition the table
does not list is refused: :class:`~sonora_cog.errors.RestoreInProgress` for a second restore,
:class:`~sonora_cog.errors.GuildNotOwned` for a guild another process owns, and ``False`` (nothing
changes) for events that simply do not apply in the current phase, such as a voice "left" update for
a guild this process does not play in.

=================  ==============================================================  ===============
event              from                                                            to
=================  ==============================================================  ===============
expect restore     idle (startup found a live record)                              pending
begin restore      idle, pending, live, ended                                      restoring
finish restore     restoring                                                       live if a player
                                                                                   plays, else idle
start              idle, ended, foreign, pending (the bot's own code plays first)  live
end                live, restoring (the bot's own ``disconnect()``, ``/stop``)       ended
disconnected       live (Discord says the bot left voice: a moderator)             ended
lose               every phase but closed (another process holds the lease)        foreign
reclaim            foreign (this process took the lease back: a handover failed)   idle
close              every phase (shutdown; the final state is written first)        closed
=================  ==============================================================  ===============

``pending`` and ``restoring`` are *held*: nothing overwrites the guild's live record with the empty
state of a fresh process. Only ``live`` is written. Entering ``ended`` deletes the live record.

.. versionadded:: 0.3
"""

from __future__ import annotations

import logging
from array import array
from bisect import bisect_left
from dataclasses import dataclass, field
from enum import StrEnum

from .cadence import ACTIVITY_SPAN, CHANGES_COUNTED_UP_TO
from .capture import PositionSample
from .errors import GuildNotOwned, RestoreError, RestoreInProgress

__all__ = ("Event", "GuildSession", "Phase")

_log = logging.getLogger(__name__)


class Phase(StrEnum):
    """Where a guild's session stands in this process."""

    idle = "idle"
    """Nothing of this guild runs here; a live record, if any, is left as it is."""
    pending = "pending"
    """A live record waits for this process's startup restore: nothing may overwrite it."""
    restoring = "restoring"
    """A restore runs now (startup, ``/snapshot restore``, a rebuild, a voice rejoin)."""
    live = "live"
    """A player of this process plays here: every change is written."""
    ended = "ended"
    """The session ended on purpose: its live record is deleted and nothing is written."""
    foreign = "foreign"
    """Another process owns the guild (it holds the lease): nothing is restored or written here."""
    closed = "closed"
    """This process is shutting down: the final state was written; nothing changes any more."""


class Event(StrEnum):
    """What can happen to a session (the names of the transitions)."""

    expect_restore = "expect restore"
    begin_restore = "begin restore"
    finish_restore = "finish restore"
    start = "start"
    end = "end"
    disconnected = "disconnected"
    lose = "lose"
    reclaim = "reclaim"
    close = "close"


_P = Phase
#: The transition table: (phase, event) → next phase. ``finish_restore`` is resolved by whether a player plays.
_NEXT: dict[tuple[Phase, Event], Phase] = {
    (_P.idle, Event.expect_restore): _P.pending,
    (_P.idle, Event.begin_restore): _P.restoring,
    (_P.pending, Event.begin_restore): _P.restoring,
    (_P.live, Event.begin_restore): _P.restoring,
    (_P.ended, Event.begin_restore): _P.restoring,
    (_P.idle, Event.start): _P.live,
    (_P.ended, Event.start): _P.live,
    (_P.pending, Event.start): _P.live,
    (_P.foreign, Event.start): _P.live,
    (_P.live, Event.end): _P.ended,
    (_P.restoring, Event.end): _P.ended,
    (_P.live, Event.disconnected): _P.ended,
    (_P.foreign, Event.reclaim): _P.idle,
}
for _phase in (_P.idle, _P.pending, _P.restoring, _P.live, _P.ended):
    _NEXT[(_phase, Event.lose)] = _P.foreign
for _phase in Phase:
    _NEXT[(_phase, Event.close)] = _P.closed


@dataclass(slots=True)
class GuildSession:
    """One guild's session as this process sees it. Change :attr:`phase` only through :meth:`apply`.

    Attributes
    ----------
    guild_id:
        The guild.
    phase:
        Where the session stands (see :class:`Phase`).
    dirty:
        The state changed since it was last written.
    sample:
        The playback clock: the last position Lavalink reported, or the bot set, and when.
    signature:
        :func:`~sonora_cog.capture.change_signature` of the state last written (``None``: not written yet).
    auto_signature:
        The same for the last ``auto`` snapshot.
    saved_at:
        Unix time of the last live-record write by this process.
    reason:
        Why the session is in its phase, for ``/snapshot status`` and the log.
    auto_from:
        When (the owner's clock) the guild's auto-snapshot interval started: when it went live, then
        at each ``auto`` snapshot. ``None`` while it is not live.
    pre_change_at:
        When (the owner's clock) its last ``pre-change`` snapshot was taken.

    The guild's recent activity (see :mod:`sonora_cog.cadence`) is kept with :meth:`note_change` and
    read with :meth:`recent_changes`.
    """

    guild_id: int
    phase: Phase = Phase.idle
    dirty: bool = False
    sample: PositionSample | None = None
    signature: int | None = None
    auto_signature: int | None = None
    saved_at: float | None = None
    reason: str = ""
    auto_from: float | None = None
    pre_change_at: float | None = None
    warned_unobserved: bool = field(default=False, repr=False)
    _changes: array[float] = field(default_factory=lambda: array("d"), repr=False)

    @property
    def held(self) -> bool:
        """Whether the live record must not be overwritten (a restore is pending or running)."""
        return self.phase in (Phase.pending, Phase.restoring)

    @property
    def writable(self) -> bool:
        """Whether this process writes the guild's live record now."""
        return self.phase is Phase.live

    def apply(self, event: Event, reason: str = "", *, playing: bool = False) -> bool:
        """Move to the phase ``event`` leads to; return whether anything changed.

        ``playing`` (for :attr:`Event.finish_restore`) says whether a player of this process plays in
        the guild afterwards: ``live`` if so, ``idle`` if not.

        Raises
        ------
        RestoreInProgress
            ``begin_restore`` while a restore runs.
        GuildNotOwned
            ``begin_restore`` in a guild another process owns.
        RestoreError
            ``begin_restore`` while this process shuts down.
        """
        if event is Event.finish_restore:
            if self.phase is not Phase.restoring:
                return False
            target = Phase.live if playing else Phase.idle
        else:
            next_phase = _NEXT.get((self.phase, event))
            if next_phase is None:
                if event is Event.begin_restore:
                    raise self._refusal()
                _log.debug("guild %s: %s does not apply while %s", self.guild_id, event.value, self.phase.value)
                return False
            target = next_phase
        _log.debug("guild %s: %s -> %s (%s)", self.guild_id, self.phase.value, target.value, event.value)
        self.phase = target
        self.reason = reason
        if target is not Phase.live:
            self.dirty = False
        if target in (Phase.ended, Phase.foreign, Phase.idle, Phase.closed):
            self.auto_from = None  # a new session starts its interval again (a rebuild keeps its schedule)
        if target in (Phase.ended, Phase.foreign, Phase.idle):
            self.sample = None
            self.signature = None
        return True

    def note_change(self, now: float, window: float) -> None:
        """The state changed at ``now``: count it, unless a change was counted less than ``window`` s ago.

        Changes older than an hour are forgotten, and at most
        :data:`~sonora_cog.cadence.CHANGES_COUNTED_UP_TO` are kept.
        """
        changes = self._changes
        if changes and now - changes[-1] <= window:
            return
        del changes[: bisect_left(changes, now - ACTIVITY_SPAN)]
        if len(changes) >= CHANGES_COUNTED_UP_TO:
            del changes[0]
        changes.append(now)

    def recent_changes(self, now: float) -> int:
        """Changes counted within the hour before ``now`` (at most ``CHANGES_COUNTED_UP_TO``)."""
        changes = self._changes
        return len(changes) - bisect_left(changes, now - ACTIVITY_SPAN)

    def _refusal(self) -> RestoreError:
        if self.phase is Phase.restoring:
            return RestoreInProgress(f"a restore is already running in guild {self.guild_id}")
        if self.phase is Phase.foreign:
            return GuildNotOwned(f"guild {self.guild_id} is owned by another process ({self.reason})")
        return RestoreError(f"guild {self.guild_id} cannot be restored now: the bot is shutting down")
