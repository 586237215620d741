"""How often a guild is snapshotted: the adaptive ``auto`` interval and the ``pre-change`` rule (pure).

The auto-snapshot interval of a guild follows its activity, between ``snapshots.auto_interval_busy``
and ``snapshots.auto_interval_quiet``:

* nobody (no member who is not a bot) listens in the bot's voice channel → **quiet**;
* :data:`BUSY_CHANGES_PER_HOUR` (12) or more changes in the last hour, with listeners → **busy**;
* otherwise linear in between: each change in the last hour takes 1/12 of the way from quiet to busy
  (0 changes → quiet, 6 changes → half way).

A *change* is one debounce window in which the guild's state changed (a track starting, a pause, a
volume change, tracks queued...): a burst of changes within ``snapshots.debounce`` (at least
:data:`MIN_CHANGE_WINDOW` s) counts once. A positive ``snapshots.auto_interval`` replaces all of this
with that fixed interval for every guild.

A ``pre-change`` snapshot is taken before a major change of a :class:`~sonora_cog.player.SonoraPlayer`'s
queue (see :func:`pre_change_label`), at most one per guild every :data:`PRE_CHANGE_MIN_GAP` seconds.

Nothing here does I/O or reads a clock: the session owner passes the counts and the time.

.. versionadded:: 0.4
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import SnapshotSettings

__all__ = (
    "ACTIVITY_SPAN",
    "BUSY_CHANGES_PER_HOUR",
    "CHANGES_COUNTED_UP_TO",
    "MAX_AUTO_TICK",
    "MIN_CHANGE_WINDOW",
    "PRE_CHANGE_MIN_GAP",
    "PRE_CHANGE_MIN_QUEUED",
    "PRE_CHANGE_MIN_REMOVED",
    "Cadence",
    "adaptive_interval",
    "auto_tick",
    "fixed_interval",
    "format_interval",
    "pre_change_label",
)

#: Changes per hour (with listeners) from which a guild is busy.
BUSY_CHANGES_PER_HOUR = 12
#: The window of activity that counts, in seconds.
ACTIVITY_SPAN = 3600.0
#: A guild remembers at most this many changes (the rule needs 12; the rest is for ``/snapshot status``).
CHANGES_COUNTED_UP_TO = 60
#: Changes closer together than ``max(snapshots.debounce, MIN_CHANGE_WINDOW)`` seconds count once.
MIN_CHANGE_WINDOW = 1.0
#: The auto-snapshot job runs at least this often (seconds).
MAX_AUTO_TICK = 60.0
#: At most one ``pre-change`` snapshot per guild within this many seconds.
PRE_CHANGE_MIN_GAP = 60.0
#: Clearing or shuffling a queue that holds at least this many tracks is a major change.
PRE_CHANGE_MIN_QUEUED = 2
#: Removing at least this many tracks in one call is a major change.
PRE_CHANGE_MIN_REMOVED = 3

_OPERATIONS = {"clear": "queue clear", "reset": "queue reset", "shuffle": "queue shuffle", "remove": "removing"}


@dataclass(frozen=True, slots=True)
class Cadence:
    """A guild's auto-snapshot interval and why.

    Attributes
    ----------
    interval:
        Seconds between the guild's ``auto`` snapshots.
    reason:
        A short sentence for people: ``"busy: 20 changes in the last hour, 3 listeners"``.
    """

    interval: float
    reason: str

    def describe(self) -> str:
        """``"every 5 min — busy: 20 changes in the last hour, 3 listeners"``."""
        return f"every {format_interval(self.interval)} \N{EM DASH} {self.reason}"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def adaptive_interval(changes: int, listeners: int, *, busy: float, quiet: float) -> Cadence:
    """The auto-snapshot interval of a guild with this activity (the rule in the module docstring).

    Parameters
    ----------
    changes:
        Changes (debounce windows) in the last hour; :data:`CHANGES_COUNTED_UP_TO` means "at least".
    listeners:
        Members who are not bots in the bot's voice channel now.
    busy, quiet:
        ``snapshots.auto_interval_busy`` and ``snapshots.auto_interval_quiet`` (``busy <= quiet``).
    """
    shown = f"{changes}+" if changes >= CHANGES_COUNTED_UP_TO else str(changes)
    activity = f"{shown} change{'' if changes == 1 else 's'} in the last hour"
    if listeners <= 0:
        return Cadence(quiet, "quiet: no listeners in the voice channel")
    heard = _plural(listeners, "listener")
    if changes >= BUSY_CHANGES_PER_HOUR:
        return Cadence(busy, f"busy: {activity}, {heard}")
    if changes <= 0:
        return Cadence(quiet, f"quiet: no changes in the last hour, {heard}")
    interval = quiet - (quiet - busy) * changes / BUSY_CHANGES_PER_HOUR
    return Cadence(interval, f"{activity} (busy from {BUSY_CHANGES_PER_HOUR}), {heard}")


def fixed_interval(interval: float) -> Cadence:
    """The cadence of every guild when ``snapshots.auto_interval`` is set."""
    return Cadence(interval, "fixed: snapshots.auto_interval")


def auto_tick(snapshots: SnapshotSettings) -> float:
    """Seconds between runs of the auto-snapshot job: ``min(60, shortest interval / 5)``.

    The shortest interval is ``auto_interval`` when it is set, else ``auto_interval_busy``; a guild's
    snapshot is therefore at most a fifth of its interval (and at most a minute) late.
    """
    shortest = snapshots.auto_interval if snapshots.auto_interval > 0 else snapshots.auto_interval_busy
    return min(MAX_AUTO_TICK, shortest / 5)


def pre_change_label(operation: str, *, queued: int, removed: int) -> str | None:
    """The label of the ``pre-change`` snapshot a queue operation calls for, or ``None`` (not major).

    Parameters
    ----------
    operation:
        ``"clear"``, ``"reset"``, ``"shuffle"`` or ``"remove"`` (any call that removes tracks:
        ``remove``, ``delete``, ``del queue[...]``).
    queued:
        Tracks in the queue before the operation.
    removed:
        Tracks the operation removes.

    Clearing (``clear``/``reset``) or shuffling a queue of at least :data:`PRE_CHANGE_MIN_QUEUED`
    tracks, or removing at least :data:`PRE_CHANGE_MIN_REMOVED` tracks in one call, is major.
    """
    if operation in ("clear", "reset", "shuffle"):
        return f"before {_OPERATIONS[operation]}" if queued >= PRE_CHANGE_MIN_QUEUED else None
    if operation == "remove":
        return f"before removing {removed} tracks" if removed >= PRE_CHANGE_MIN_REMOVED else None
    raise ValueError(f"unknown queue operation {operation!r}")


def format_interval(seconds: float) -> str:
    """``"45 s"``, ``"5 min"``, ``"28 min"``, ``"2 h"``, ``"2.5 h"``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    hours = seconds / 3600
    return f"{hours:.0f} h" if hours == int(hours) else f"{hours:.1f} h"
