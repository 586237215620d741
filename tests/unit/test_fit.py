"""Every record sonora_cog writes can be read back: a state over the ``[limits]`` is fitted, never lost."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
from factories import lavalink_track, sample_state

from sonora_cog.config import LimitSettings, Settings, StorageSettings
from sonora_cog.fit import fit_to_limits
from sonora_cog.manager import SessionManager
from sonora_cog.model import Limits, SessionState, TrackState

LIMITS = Limits(max_queue_tracks=10, max_string_length=200, max_encoded_length=4_000, max_extras_bytes=300)


def track(title: str = "Song", **user_data: object) -> TrackState:
    return TrackState({**lavalink_track(title, user_data=dict(user_data) or None), "playlist": None,
                       "recommended": False})


def roundtrips(state: SessionState, limits: Limits) -> SessionState:
    """Encode and decode with these limits, as a restart would (raises if the record is refused)."""
    settings = Settings(limits=LimitSettings(max_queue_tracks=limits.max_queue_tracks,
                                             max_string_length=limits.max_string_length,
                                             max_extras_bytes=limits.max_extras_bytes))
    manager = SessionManager(settings)
    manager.limits = limits  # also max_encoded_length, which has no setting
    record = manager.codec.encode(state.to_json(), manager._meta_for(state, "live"))
    return manager.decode(record.data)[1]


def test_a_state_within_the_limits_is_kept_as_it_is() -> None:
    state = sample_state(tracks=5)
    fitted, notes = fit_to_limits(state, LIMITS)
    assert fitted is state and notes == []


def test_everything_over_a_limit_is_fitted_and_said() -> None:
    long_title = "L" * 500  # its encoded form is over max_string_length, and so is the title
    queue = tuple(track(f"Q{i}") for i in range(14))
    state = sample_state(tracks=3)
    state = dataclasses.replace(
        state,
        queue=dataclasses.replace(state.queue, upcoming=(track(long_title), *queue[:12]), current=track("now")),
        autoplay=dataclasses.replace(state.autoplay, auto_queue=(track("auto", note="y" * 400),)),
        extras={"blob": "z" * 400, "keep": "no"},
    )
    with pytest.raises(Exception, match="exceed"):
        roundtrips(state, LIMITS)  # as it is, the record would be refused: the guild lost after a crash
    fitted, notes = fit_to_limits(state, LIMITS)
    back = roundtrips(fitted, LIMITS)
    assert len(back.queue.upcoming) == 10 and back.queue.upcoming[0].title == long_title[:200]
    assert [t.title for t in back.queue.upcoming[1:]] == [f"Q{i}" for i in range(9)]  # the ones that play next
    assert back.queue.current is not None and back.queue.current.title == "now"
    assert back.extras == {} and back.autoplay.auto_queue[0].user_data == {}
    assert back.queue.current.encoded == state.queue.current.encoded  # nothing else touched
    kinds = {note.split(":", 1)[0] for note in notes}
    assert {"extras", "queue", "queue track 1", "auto queue track 1"} <= kinds


def test_a_track_too_large_to_store_is_left_out() -> None:
    huge = track("H" * 5_000)
    assert len(huge.encoded) > LIMITS.max_encoded_length
    state = sample_state(tracks=2)
    state = dataclasses.replace(state, queue=dataclasses.replace(state.queue, upcoming=(huge, track("after"))))
    fitted, notes = fit_to_limits(state, LIMITS)
    assert [t.title for t in roundtrips(fitted, LIMITS).queue.upcoming] == ["after"]
    assert any("encoded form" in note for note in notes)


async def test_the_manager_fits_every_write_and_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sonora_cog.manager")
    settings = Settings(storage=StorageSettings(path=str(tmp_path)), limits=LimitSettings(max_extras_bytes=300))
    manager = SessionManager(settings)
    try:
        state = sample_state(extras={"big": "x" * 1_000})
        await manager.write_live(state)
        await manager.write_live(dataclasses.replace(state, extras={"big": "x" * 2_000}))
        back = await manager.read_live(state.guild_id)
        assert back is not None and back.extras == {} and back.queue.current is not None
        warned = [r.getMessage() for r in caplog.records if "limits.max_extras_bytes" in r.getMessage()]
        assert len(warned) == 1 and str(state.guild_id) in warned[0] and "[limits]" in warned[0]
        meta = await manager.save_snapshot(state)
        assert (await manager.load_snapshot(meta.id, state.guild_id)).extras == {}
    finally:
        await manager.close()
