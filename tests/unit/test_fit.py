"""Every record sonora_cog writes can be read back: a state over the ``[limits]`` is fitted, never lost."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
from factories import lavalink_track, sample_state

from sonora_cog.config import LimitSettings, Settings, StorageSettings
from sonora_cog.errors import InvalidSnapshot
from sonora_cog.fit import fit_to_limits
from sonora_cog.manager import SessionManager
from sonora_cog.model import Limits, SessionState, TrackList, TrackState

LIMITS = Limits(max_queue_tracks=10, max_string_length=200, max_encoded_length=4_000, max_extras_bytes=300)


def track(title: str = "Song", **user_data: object) -> TrackState:
    return TrackState(
        {**lavalink_track(title, user_data=dict(user_data) or None), "playlist": None, "recommended": False}
    )


def roundtrips(state: SessionState, limits: Limits) -> SessionState:
    """Encode, then parse *strictly* with these limits (raises if any field is over a cap)."""
    manager = SessionManager(Settings())
    record = manager.codec.encode(state.to_json(), manager._meta_for(state, "live"))
    return SessionState.from_json(manager.codec.decode(record.data).payload, limits)


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
    with pytest.raises(InvalidSnapshot, match="exceed"):
        roundtrips(state, LIMITS)  # as it is, it is over the caps
    fitted, notes = fit_to_limits(state, LIMITS)
    back = roundtrips(fitted, LIMITS)
    assert len(back.queue.upcoming) == 10 and back.queue.upcoming[0].title == long_title[:200]
    assert [t.title for t in back.queue.upcoming[1:]] == [f"Q{i}" for i in range(9)]  # the ones that play next
    assert back.queue.current is not None and back.queue.current.title == "now"
    assert back.extras == {"keep": "no"}  # only the key that did not fit is left out
    assert back.autoplay.auto_queue[0].user_data == {}
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


@pytest.mark.parametrize("where", ["playlist", "userData"])
def test_track_objects_without_the_optional_keys_are_checked_too(where: str) -> None:
    """A record's tracks may lack ``playlist`` and ``userData`` (they are optional); the quick whole-list
    check reads them another way then, and still finds the one over a limit."""
    bare = [{k: v for k, v in track(f"T{i}").data.items() if k not in ("playlist", "userData")} for i in range(3)]
    over = (
        dict(bare[1], playlist={"name": "P" * 300, "selectedTrack": 0})
        if where == "playlist"
        else dict(bare[1], userData={"note": "n" * 400})
    )
    state = sample_state(tracks=1)
    state = dataclasses.replace(
        state, queue=dataclasses.replace(state.queue, upcoming=TrackList([bare[0], over, bare[2]]))
    )
    fitted, notes = fit_to_limits(state, LIMITS)
    assert [note.split(":", 1)[0] for note in notes] == ["queue track 2"]
    kept = fitted.queue.upcoming[1]
    assert (kept.playlist or {}).get("name", "") == "P" * 200 if where == "playlist" else kept.user_data == {}
    untouched, none = fit_to_limits(
        dataclasses.replace(state, queue=dataclasses.replace(state.queue, upcoming=TrackList(bare))), LIMITS
    )
    assert none == [] and untouched.queue.upcoming.json == bare


async def test_the_manager_fits_every_write_and_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sonora_cog.manager")
    settings = Settings(storage=StorageSettings(path=str(tmp_path)), limits=LimitSettings(max_extras_bytes=300))
    manager = SessionManager(settings)
    try:
        state = sample_state(extras={"big": "x" * 1_000, "small": 1})
        await manager.write_live(state)
        await manager.write_live(dataclasses.replace(state, extras={"big": "x" * 2_000, "small": 1}))
        back = await manager.read_live(state.guild_id)
        assert back is not None and back.extras == {"small": 1} and back.queue.current is not None
        warned = [r.getMessage() for r in caplog.records if "limits.max_extras_bytes" in r.getMessage()]
        assert len(warned) == 1 and str(state.guild_id) in warned[0] and "'big'" in warned[0]
        meta = await manager.save_snapshot(state)
        assert (await manager.load_snapshot(meta.id, state.guild_id)).extras == {"small": 1}
    finally:
        await manager.close()


@pytest.mark.parametrize("where", ["extras", "userData"])
async def test_the_manager_writes_a_state_holding_what_json_cannot(tmp_path: Path, where: str) -> None:
    """The encoder meets the non-JSON value first (it runs before the fit); the write still succeeds,
    without that value, for the state's extras and for a track's userData alike."""
    manager = SessionManager(Settings(storage=StorageSettings(path=str(tmp_path))))
    state = sample_state(tracks=3)
    if where == "extras":
        state = dataclasses.replace(state, extras={"not json": object(), "dj": "ana"})
    else:
        odd = TrackState({**state.queue.upcoming[0].data, "userData": {"not json": object()}})
        state = dataclasses.replace(state, queue=dataclasses.replace(state.queue, upcoming=(odd,)))
    try:
        await manager.write_live(state)
        back = await manager.read_live(state.guild_id)
        assert back is not None and back.queue.current is not None
        if where == "extras":
            assert back.extras == {"dj": "ana"}
        else:
            assert back.queue.upcoming[0].user_data == {} and back.queue.upcoming[0].title == odd.title
    finally:
        await manager.close()


async def test_each_thing_left_out_is_warned_even_in_one_track(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sonora_cog.manager")
    settings = Settings(
        storage=StorageSettings(path=str(tmp_path)), limits=LimitSettings(max_string_length=200, max_extras_bytes=300)
    )
    manager = SessionManager(settings)
    try:
        state = sample_state(tracks=2)
        both = track("T" * 300, requester="r" * 400)  # a long title and a large userData in one track
        state = dataclasses.replace(state, queue=dataclasses.replace(state.queue, upcoming=(both,)))
        await manager.write_live(state)
        text = caplog.text
        assert "title over limits.max_string_length" in text and "userData is over" in text
    finally:
        await manager.close()


async def test_lowering_a_limit_trims_old_records_instead_of_losing_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Written under the defaults, read by a process whose limits were lowered meanwhile (a redeploy).
    big = sample_state(tracks=300, extras={"note": "n" * 5_000, "dj": "7"})
    writer = SessionManager(Settings(storage=StorageSettings(path=str(tmp_path))))
    try:
        await writer.write_live(big)
        snapshot = await writer.save_snapshot(big)
    finally:
        await writer.close()
    caplog.set_level(logging.WARNING, logger="sonora_cog.manager")
    lowered = LimitSettings(max_queue_tracks=100, max_extras_bytes=1_024, max_string_length=1_000)
    reader = SessionManager(Settings(storage=StorageSettings(path=str(tmp_path)), limits=lowered))
    try:
        live = await reader.read_live(big.guild_id)
        assert live is not None and len(live.queue.upcoming) == 100 and live.extras == {"dj": "7"}
        assert (await reader.load_snapshot(snapshot.id, big.guild_id)).queue.upcoming == live.queue.upcoming
        assert [r.ok for r in await reader.validate_all()] == [True, True]
        assert not (tmp_path / "quarantine").exists() or not any((tmp_path / "quarantine").iterdir())
        assert "written under higher limits" in caplog.text and "limits.max_queue_tracks" in caplog.text
    finally:
        await reader.close()


async def test_a_state_over_the_record_size_cap_keeps_what_fits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sonora_cog.manager")
    settings = Settings(storage=StorageSettings(path=str(tmp_path), max_record_bytes=64 * 1024))
    manager = SessionManager(settings)
    try:
        tracks = tuple(track(f"Q{i}", note="u" * 1_000) for i in range(200))  # about 300 KB as a record
        state = sample_state(tracks=2)
        state = dataclasses.replace(state, queue=dataclasses.replace(state.queue, upcoming=tracks))
        meta = await manager.write_live(state)
        assert meta.size <= 64 * 1024
        back = await manager.read_live(state.guild_id)
        assert back is not None and 0 < len(back.queue.upcoming) < 200
        assert [t.title for t in back.queue.upcoming] == [f"Q{i}" for i in range(len(back.queue.upcoming))]
        assert back.queue.current is not None and back.queue.current.title == state.queue.current.title  # type: ignore[union-attr]
        assert "over storage.max_record_bytes" in caplog.text and "compression" in caplog.text
    finally:
        await manager.close()


def test_extras_the_writer_cannot_write_lose_only_that_key() -> None:
    deep: list[object] = []
    inner = deep
    for _ in range(300):  # deeper than the JSON writer goes (about 254 levels)
        inner.append([])
        inner = inner[0]  # type: ignore[assignment]
    state = sample_state(extras={"deep": deep, "dj": "7"})
    fitted, notes = fit_to_limits(state, LIMITS)
    assert fitted.extras == {"dj": "7"} and roundtrips(fitted, LIMITS).extras == {"dj": "7"}
    assert any(note.startswith("extras:") and "'deep'" in note for note in notes)
