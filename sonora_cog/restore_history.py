"""The store's own history of restores: a journal per UTC day, read by ``snapshots stats``.

A running bot counts its restores (by path, outcome and reason category, see :mod:`sonora_cog.outcomes`)
in memory and appends them to the store journal ``restores-YYYYMMDD`` of the current UTC day a couple
of seconds after a restore (one entry per flush, whatever the number of guilds: a startup restore of
10,000 guilds is a few entries), with the last few failures and their reasons. The history is therefore
bounded: per flush one entry of at most :data:`~sonora_cog.store.base.MAX_JOURNAL_ENTRY_BYTES`, per day
one journal, and retention (the retention job and ``snapshots prune``) deletes the journals of the days
older than ``snapshots.max_age_days``. Any process may append to a day's journal (journals take many
writers). Recording never fails a restore: a store error is logged and the counts are tried again later.

Entry (one JSON line)::

    {"v": 1, "at": <unix s>, "by": "host:pid",
     "counts": [[path, outcome, reason, count], ...],
     "failures": [{"at", "guild", "path", "outcome", "reason", "detail"}, ...]}

.. versionadded:: 0.3
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from .errors import SonoraError
from .outcomes import OUTCOMES, REASONS, RestorePath, outcome_of, path_of, reason_category
from .store.base import MAX_JOURNAL_ENTRY_BYTES

if TYPE_CHECKING:
    from .manager import SessionManager
    from .restore import RestoreReport

__all__ = (
    "JOURNAL_PREFIX",
    "RestoreFailure",
    "RestoreHistory",
    "RestoreRecorder",
    "journal_name",
    "prune_journals",
    "read_history",
)

_log = logging.getLogger(__name__)

JOURNAL_PREFIX = "restores-"
#: Seconds between a restore and the append of its counts (restores of a burst share one entry).
FLUSH_DELAY = 2.0
#: Seconds before a failed append is tried again.
RETRY_DELAY = 30.0
#: Failures kept with their reason per entry (the counts are exact; these are examples).
FAILURES_PER_ENTRY = 5
#: Characters of a failure's reason kept.
DETAIL_CHARS = 200
_SCHEMA = 1


def journal_name(at: float) -> str:
    """The journal of the UTC day of ``at`` (Unix seconds): ``restores-YYYYMMDD``."""
    return JOURNAL_PREFIX + time.strftime("%Y%m%d", time.gmtime(at))


def _journal_day(name: str) -> float | None:
    """Unix time of the start of a restore journal's UTC day, or ``None`` for another name."""
    if not name.startswith(JOURNAL_PREFIX):
        return None
    try:
        day = time.strptime(name[len(JOURNAL_PREFIX) :], "%Y%m%d")
    except ValueError:
        return None
    return float(calendar.timegm(day))


@dataclass(frozen=True, slots=True)
class RestoreFailure:
    """One failed (or rolled back) guild restore as the history keeps it."""

    at: float
    guild_id: int
    path: str
    outcome: str
    reason: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        """The journal (and ``--json``) form: the guild id as a string."""
        return {
            "at": self.at,
            "guild": str(self.guild_id),
            "path": self.path,
            "outcome": self.outcome,
            "reason": self.reason,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, obj: Any) -> RestoreFailure | None:
        """Parse one; ``None`` when it is not well-formed (skipped, never fatal)."""
        try:
            return cls(
                at=float(obj["at"]),
                guild_id=int(obj["guild"]),
                path=str(obj["path"]),
                outcome=str(obj["outcome"]),
                reason=str(obj["reason"]),
                detail=str(obj["detail"]),
            )
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(slots=True)
class RestoreHistory:
    """Restore counts read from the store's journals (``snapshots stats``)."""

    #: ``(path, outcome, reason) -> count``.
    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    #: The newest failures, newest first.
    failures: list[RestoreFailure] = field(default_factory=list)
    first: float | None = None
    last: float | None = None
    days: int = 0
    #: Journals that could not be read (too large, the store failing), with why.
    unreadable: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Every restore counted."""
        return sum(self.counts.values())

    def by_outcome(self) -> dict[str, int]:
        """Restores per outcome (every outcome, 0 when none)."""
        out = dict.fromkeys(OUTCOMES, 0)
        for (_path, outcome, _reason), count in self.counts.items():
            out[outcome] = out.get(outcome, 0) + count
        return out

    def by_path(self) -> dict[str, dict[str, int]]:
        """Per path, restores per outcome (paths with none are left out)."""
        out: dict[str, dict[str, int]] = {}
        for (path, outcome, _reason), count in sorted(self.counts.items()):
            out.setdefault(path, {})
            out[path][outcome] = out[path].get(outcome, 0) + count
        return out

    def by_reason(self, outcome: str = "skipped") -> dict[str, int]:
        """Per reason category, the restores with ``outcome`` (``skipped`` by default), most frequent first."""
        found: Counter[str] = Counter()
        for (_path, seen, reason), count in self.counts.items():
            if seen == outcome:
                found[reason] += count
        return dict(found.most_common())

    def to_json(self) -> dict[str, Any]:
        """The ``snapshots stats --json`` form."""
        return {
            "total": self.total,
            "by_outcome": self.by_outcome(),
            "by_path": self.by_path(),
            "skip_reasons": self.by_reason("skipped"),
            "failure_reasons": self.by_reason("failed"),
            "rollback_reasons": self.by_reason("rolled_back"),
            "last_failures": [f.to_json() for f in self.failures],
            "first": self.first,
            "last": self.last,
            "days": self.days,
            "unreadable_journals": dict(self.unreadable),
        }


def _encode_entries(at: float, by: str, counts: list[list[Any]], failures: list[dict[str, Any]]) -> list[bytes]:
    """The journal lines for one flush, each within :data:`MAX_JOURNAL_ENTRY_BYTES` (split when needed)."""
    line = orjson.dumps({"v": _SCHEMA, "at": at, "by": by, "counts": counts, "failures": failures})
    if len(line) <= MAX_JOURNAL_ENTRY_BYTES:
        return [line]
    if failures:
        return _encode_entries(at, by, counts, []) + [
            line for failure in failures for line in _encode_entries(at, by, [], [failure])
        ]
    if len(counts) <= 1:  # cannot happen with the bounded labels; never write a line the store refuses
        return []
    half = len(counts) // 2
    return _encode_entries(at, by, counts[:half], []) + _encode_entries(at, by, counts[half:], [])


class RestoreRecorder:
    """Counts this process's restores and appends them to the day's journal (``cog.restore_history``).

    Parameters
    ----------
    manager:
        The manager whose store keeps the journals.
    by:
        How this process signs its entries (``host:pid``).
    delay:
        Seconds between a restore and the append (:data:`FLUSH_DELAY`).

    .. versionadded:: 0.3
    """

    def __init__(self, manager: SessionManager, *, by: str, delay: float = FLUSH_DELAY) -> None:
        self.manager = manager
        self.by = by[:100]
        self.delay = delay
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._failures: list[dict[str, Any]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[bool] | None = None
        self._closed = False
        self._warned = False

    @property
    def pending(self) -> int:
        """Restores counted and not yet appended."""
        return sum(self._counts.values())

    def record(self, report: RestoreReport, path: RestorePath) -> None:
        """Count one guild's restore; it is appended within :attr:`delay` seconds. Never raises."""
        try:
            counted = path_of(report, RestorePath(path)).value
            outcome = outcome_of(report)
            reason = reason_category(report.reason)
            self._counts[(counted, outcome, reason)] += 1
            if outcome in ("failed", "rolled_back"):
                self._failures.append(
                    RestoreFailure(
                        time.time(), report.guild_id, counted, outcome, reason, (report.reason or "")[:DETAIL_CHARS]
                    ).to_json()
                )
                del self._failures[:-FAILURES_PER_ENTRY]
            self._schedule(self.delay)
        except Exception:  # the history must never break a restore
            _log.warning("could not count a restore in the history", exc_info=True)

    def _schedule(self, delay: float) -> None:
        if self._closed or self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a unit test): flush() appends
        self._timer = loop.call_later(delay, self._start_flush)

    def _start_flush(self) -> None:
        self._timer = None
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self.flush())

    async def flush(self) -> bool:
        """Append what was counted to today's journal now; return whether everything pending was written."""
        if not self._counts and not self._failures:
            return True
        counts, failures = self._counts, self._failures
        self._counts, self._failures = Counter(), []
        at = time.time()
        rows = [[path, outcome, reason, n] for (path, outcome, reason), n in sorted(counts.items())]
        try:
            with self.manager.metrics.store_operation("append_journal"):
                await self.manager.store.append_journal(journal_name(at), _encode_entries(at, self.by, rows, failures))
        except (SonoraError, OSError) as exc:
            self._counts.update(counts)  # bounded: the labels are a fixed set; failures keep the newest few
            self._failures = (failures + self._failures)[-FAILURES_PER_ENTRY:]
            if not self._warned:
                self._warned = True
                _log.warning("could not append the restore history to the store (%s); trying again", exc)
            self._schedule(RETRY_DELAY)
            return False
        self._warned = False
        return True

    async def close(self, timeout: float = 2.0) -> None:  # noqa: ASYNC109 - a bound on the last append
        """Append what is pending (within ``timeout`` seconds) and stop scheduling appends."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            async with asyncio.timeout(timeout):
                if self._flushing is not None and not self._flushing.done():
                    await asyncio.shield(self._flushing)
                await self.flush()
        except TimeoutError:
            _log.warning(
                "the restore history was not appended within %gs (%d restore(s) left out)", timeout, self.pending
            )
        if self._flushing is not None and not self._flushing.done():
            self._flushing.cancel()


async def read_history(manager: SessionManager, *, failures: int = 5) -> RestoreHistory:
    """Fold every ``restores-*`` journal of the store into one :class:`RestoreHistory`.

    ``failures``: how many of the newest failures to keep. A journal that cannot be read is reported in
    :attr:`RestoreHistory.unreadable`; a line that is not a well-formed entry is skipped.
    """
    history = RestoreHistory()
    kept: list[RestoreFailure] = []
    names = sorted(n for n in await manager.store.journal_names() if _journal_day(n) is not None)
    for name in names:
        try:
            lines = await manager.store.read_journal(name)
        except SonoraError as exc:
            history.unreadable[name] = f"{type(exc).__name__}: {exc}"
            continue
        history.days += 1
        for line in lines:
            _fold(history, kept, line)
    kept.sort(key=lambda f: f.at, reverse=True)
    history.failures = kept[: max(0, failures)]
    return history


def _fold(history: RestoreHistory, failures: list[RestoreFailure], line: bytes) -> None:
    try:
        entry = orjson.loads(line)
        at = float(entry["at"])
        rows: Iterable[Any] = entry.get("counts") or []
        examples: Iterable[Any] = entry.get("failures") or []
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return
    history.first = at if history.first is None else min(history.first, at)
    history.last = at if history.last is None else max(history.last, at)
    for row in rows:
        with contextlib.suppress(TypeError, ValueError):
            path, outcome, reason, count = row
            if outcome in OUTCOMES and isinstance(count, int) and count > 0:
                history.counts[(str(path)[:32], outcome, reason if reason in REASONS else "other")] += count
    for example in examples:
        failure = RestoreFailure.from_json(example)
        if failure is not None:
            failures.append(failure)


async def prune_journals(manager: SessionManager, max_age_days: float, now: float | None = None) -> int:
    """Delete the restore journals of the UTC days that ended more than ``max_age_days`` ago; return how many."""
    cutoff = (time.time() if now is None else now) - max_age_days * 86_400
    removed = 0
    for name in await manager.store.journal_names():
        day = _journal_day(name)
        if day is not None and day + 86_400 <= cutoff and await manager.store.delete_journal(name):
            removed += 1
    return removed
