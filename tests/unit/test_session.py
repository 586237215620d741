"""The session state machine's refusals and side effects (the table itself is in ``sonora_cog/session.py``)."""

from __future__ import annotations

import pytest

from sonora_cog.capture import PositionSample
from sonora_cog.errors import GuildNotOwned, RestoreError, RestoreInProgress
from sonora_cog.session import Event, GuildSession, Phase

GUILD = 123


def session_in(phase: Phase) -> GuildSession:
    return GuildSession(GUILD, phase, dirty=True, sample=PositionSample(1, 0.0), signature=7)


def test_a_second_restore_is_refused_with_the_sentence_admins_see() -> None:
    with pytest.raises(RestoreInProgress, match="a restore is already running"):
        session_in(Phase.restoring).apply(Event.begin_restore)
    with pytest.raises(GuildNotOwned, match="another process"):
        session_in(Phase.foreign).apply(Event.begin_restore)
    with pytest.raises(RestoreError, match="shutting down"):
        session_in(Phase.closed).apply(Event.begin_restore)


@pytest.mark.parametrize("phase", [p for p in Phase if p is not Phase.live])
def test_discord_saying_the_bot_left_ends_only_a_live_session(phase: Phase) -> None:
    session = session_in(phase)
    assert session.apply(Event.disconnected) is False and session.phase is phase


def test_the_bots_own_disconnect_also_ends_a_restore() -> None:
    for phase in (Phase.live, Phase.restoring):
        session = session_in(phase)
        assert session.apply(Event.end) and session.phase is Phase.ended
        assert (session.dirty, session.sample, session.signature) == (False, None, None)  # nothing left to write


def test_finishing_a_restore_depends_on_whether_a_player_plays() -> None:
    played, nothing = session_in(Phase.restoring), session_in(Phase.restoring)
    assert played.apply(Event.finish_restore, playing=True) and played.phase is Phase.live
    assert nothing.apply(Event.finish_restore, playing=False) and nothing.phase is Phase.idle
    assert session_in(Phase.live).apply(Event.finish_restore, playing=True) is False  # not restoring: no-op


def test_only_live_is_written_and_pending_or_restoring_is_held() -> None:
    assert [p for p in Phase if session_in(p).writable] == [Phase.live]
    assert {p for p in Phase if session_in(p).held} == {Phase.pending, Phase.restoring}


def test_a_new_session_may_replace_a_pending_restore_but_not_a_running_one() -> None:
    pending, restoring = session_in(Phase.pending), session_in(Phase.restoring)
    assert pending.apply(Event.start) and pending.phase is Phase.live
    assert restoring.apply(Event.start) is False and restoring.phase is Phase.restoring


def test_close_is_terminal() -> None:
    for phase in Phase:
        session = session_in(phase)
        assert session.apply(Event.close) or phase is Phase.closed
        assert session.phase is Phase.closed
        for event in (Event.start, Event.expect_restore, Event.end, Event.disconnected, Event.lose):
            assert session.apply(event) is False and session.phase is Phase.closed


def test_a_rebuild_keeps_the_auto_snapshot_schedule_and_a_new_session_starts_it_again() -> None:
    session = GuildSession(1, Phase.live)
    session.auto_from = 1200.0
    session.apply(Event.begin_restore, "the Lavalink node came back without the player")
    session.apply(Event.finish_restore, "restored", playing=True)
    assert session.phase is Phase.live and session.auto_from == 1200.0  # the same session goes on
    session.apply(Event.end, "/stop")
    assert session.auto_from is None


def test_a_guild_handed_back_can_be_reclaimed_and_restored_here() -> None:
    session = GuildSession(1, Phase.live)
    session.apply(Event.lose, "handed over")
    with pytest.raises(GuildNotOwned):
        session.apply(Event.begin_restore, "a restore")
    assert session.apply(Event.reclaim, "taken back") and session.phase is Phase.idle
    assert session.apply(Event.begin_restore, "a restore") and session.phase is Phase.restoring
