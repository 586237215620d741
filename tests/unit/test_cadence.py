"""How often guilds are snapshotted: the pure rules of ``sonora_cog.cadence``, the activity a session
keeps, and the queue operations ObservedQueue reports before they happen."""

from __future__ import annotations

import pytest
import wavelink
from factories import lavalink_track

from sonora_cog.cadence import (
    CHANGES_COUNTED_UP_TO,
    adaptive_interval,
    auto_tick,
    fixed_interval,
    format_interval,
    pre_change_label,
)
from sonora_cog.config import SnapshotSettings
from sonora_cog.player import ObservedQueue
from sonora_cog.session import Event, GuildSession, Phase

BUSY, QUIET = 300.0, 1800.0


def interval(changes: int, listeners: int) -> float:
    return adaptive_interval(changes, listeners, busy=BUSY, quiet=QUIET).interval


# -- the adaptive rule ------------------------------------------------------------------------------------


def test_no_listeners_is_quiet_however_much_changes() -> None:
    for changes in (0, 5, 12, 50):
        cadence = adaptive_interval(changes, 0, busy=BUSY, quiet=QUIET)
        assert cadence.interval == QUIET
        assert cadence.reason == "quiet: no listeners in the voice channel"


def test_twelve_changes_an_hour_with_listeners_is_busy() -> None:
    assert interval(12, 1) == BUSY
    cadence = adaptive_interval(20, 3, busy=BUSY, quiet=QUIET)
    assert cadence.interval == BUSY
    assert cadence.reason == "busy: 20 changes in the last hour, 3 listeners"
    assert cadence.describe() == "every 5 min \N{EM DASH} busy: 20 changes in the last hour, 3 listeners"


def test_listeners_but_no_changes_is_quiet() -> None:
    cadence = adaptive_interval(0, 2, busy=BUSY, quiet=QUIET)
    assert cadence.interval == QUIET and cadence.reason == "quiet: no changes in the last hour, 2 listeners"


def test_in_between_is_linear_in_changes_per_hour() -> None:
    assert interval(6, 1) == (BUSY + QUIET) / 2
    assert interval(3, 1) == QUIET - (QUIET - BUSY) / 4
    cadence = adaptive_interval(1, 1, busy=BUSY, quiet=QUIET)
    assert cadence.reason == "1 change in the last hour (busy from 12), 1 listener"
    steps = [interval(n, 2) for n in range(15)]
    assert steps == sorted(steps, reverse=True)  # more activity never means a longer interval
    assert len(set(steps[:13])) == 13  # every change counts until busy


def test_the_cap_on_counted_changes_is_shown_as_at_least() -> None:
    reason = adaptive_interval(CHANGES_COUNTED_UP_TO, 1, busy=BUSY, quiet=QUIET).reason
    assert f"{CHANGES_COUNTED_UP_TO}+ changes" in reason


def test_a_fixed_interval_says_where_it_comes_from() -> None:
    assert fixed_interval(600).describe() == "every 10 min \N{EM DASH} fixed: snapshots.auto_interval"


def test_the_job_runs_a_fifth_of_the_shortest_interval_and_at_least_every_minute() -> None:
    assert auto_tick(SnapshotSettings()) == 60  # adaptive, busy = 300
    assert auto_tick(SnapshotSettings(auto_interval_busy=100)) == 20
    assert auto_tick(SnapshotSettings(auto_interval=120)) == 24  # fixed
    assert auto_tick(SnapshotSettings(auto_interval=3600)) == 60


@pytest.mark.parametrize(
    ("seconds", "text"), [(45, "45 s"), (300, "5 min"), (1675, "28 min"), (7200, "2 h"), (9000, "2.5 h")]
)
def test_format_interval(seconds: float, text: str) -> None:
    assert format_interval(seconds) == text


# -- what is a major queue change -------------------------------------------------------------------------


def test_clearing_or_shuffling_two_tracks_or_removing_three_is_major() -> None:
    assert pre_change_label("clear", queued=2, removed=2) == "before queue clear"
    assert pre_change_label("reset", queued=5, removed=5) == "before queue reset"
    assert pre_change_label("shuffle", queued=2, removed=0) == "before queue shuffle"
    assert pre_change_label("remove", queued=10, removed=3) == "before removing 3 tracks"
    assert pre_change_label("clear", queued=1, removed=1) is None
    assert pre_change_label("shuffle", queued=1, removed=0) is None
    assert pre_change_label("remove", queued=10, removed=2) is None
    with pytest.raises(ValueError, match="unknown queue operation"):
        pre_change_label("explode", queued=3, removed=3)


# -- a session's activity -----------------------------------------------------------------------------------


def test_changes_within_a_window_count_once_and_an_hour_later_they_are_gone() -> None:
    session = GuildSession(1, Phase.live)
    for t in (0.0, 0.5, 1.0, 1.5):  # one burst: the window is 1 s from the last counted change
        session.note_change(t, 1.0)
    assert session.recent_changes(2.0) == 2  # 0.0 and 1.5
    session.note_change(10.0, 1.0)
    assert session.recent_changes(10.0) == 3
    assert session.recent_changes(3602.0) == 1  # 0.0 and 1.5 are more than an hour old
    assert session.recent_changes(3611.0) == 0


def test_a_session_keeps_a_bounded_number_of_changes() -> None:
    session = GuildSession(1, Phase.live)
    for minute in range(CHANGES_COUNTED_UP_TO + 30):
        session.note_change(minute * 30.0, 1.0)  # every 30 s: all within the hour
    now = (CHANGES_COUNTED_UP_TO + 29) * 30.0
    assert session.recent_changes(now) == CHANGES_COUNTED_UP_TO


def test_leaving_live_stops_the_auto_interval() -> None:
    session = GuildSession(1, Phase.live, auto_from=5.0)
    session.apply(Event.end, "stop")
    assert session.auto_from is None


# -- ObservedQueue reports what an operation is about to do -------------------------------------------------


def observed(count: int) -> tuple[ObservedQueue, list[tuple[str, int, int]], list[wavelink.Playable]]:
    calls: list[tuple[str, int, int]] = []
    queue = ObservedQueue(lambda: None, before_major=lambda *args: calls.append(args))
    tracks = [wavelink.Playable(lavalink_track(f"Song {i}")) for i in range(count)]  # type: ignore[arg-type]
    for track in tracks:
        queue.put(track)
    return queue, calls, tracks


def test_the_queue_reports_before_it_changes() -> None:
    queue, calls, _ = observed(6)
    seen: list[int] = []
    queue._before_major = lambda *args: (calls.append(args), seen.append(len(queue)))  # type: ignore[assignment]
    queue.shuffle()
    del queue[1:4]
    queue.delete(0)
    queue.clear()
    assert calls == [("shuffle", 6, 0), ("remove", 6, 3), ("remove", 3, 1), ("clear", 2, 2)]
    assert seen == [6, 6, 3, 2]  # each call came before the operation changed anything


def test_remove_reports_how_many_it_will_remove() -> None:
    queue, calls, tracks = observed(2)
    for _ in range(3):
        queue.put(tracks[0])  # tracks[0] is queued 4 times now
    queue.remove(tracks[0], count=2)
    queue.remove(tracks[0], count=None)
    queue.remove(tracks[1], count=5)
    assert calls == [("remove", 5, 2), ("remove", 3, 2), ("remove", 1, 1)]


def test_reset_is_reported_once_not_again_as_its_inner_clear() -> None:
    queue, calls, _ = observed(3)
    queue.reset()
    assert calls == [("reset", 3, 3)] and len(queue) == 0


def test_a_queue_without_before_major_reports_nothing() -> None:
    queue = ObservedQueue(lambda: None)
    queue.put(wavelink.Playable(lavalink_track("Solo")))  # type: ignore[arg-type]
    queue.clear()  # no error, nothing to report to
    assert len(queue) == 0
