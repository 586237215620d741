"""Capture from real wavelink objects, and tracks back to ``wavelink.Playable`` without a network call.

The player is a real ``wavelink.Player`` attached to stand-in channel objects (no Discord here). Its
volume, pause, current track and last position are the values Lavalink's answers would have set;
they are set directly because there is no node to answer (the end-to-end tests do it for real).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from types import SimpleNamespace

import aiohttp
import pytest
import wavelink
from factories import lavalink_track

from sonora_cog.capture import (
    PositionSample,
    active_filter_names,
    capture_state,
    change_signature,
    to_filters,
    to_playable,
    track_state,
    tracks_json,
)
from sonora_cog.meta import SnapshotKind
from sonora_cog.model import AutoplayMode, Limits, LoopMode, SessionState

GUILD, CHANNEL = 900000000000000001, 900000000000000002


@pytest.fixture
async def player() -> AsyncIterator[wavelink.Player]:
    # wavelink never closes a session it made itself (Node.close leaves it open): give it ours
    async with aiohttp.ClientSession() as session:
        node = wavelink.Node(uri="http://127.0.0.1:9", password="unused", identifier="main-node", session=session)
        player = wavelink.Player(nodes=[node])
        guild = SimpleNamespace(id=GUILD)
        player(SimpleNamespace(), SimpleNamespace(id=CHANNEL, guild=guild))  # what channel.connect(cls=...) does
        yield player
        await node.close()


def playable(title: str, **user_data: object) -> wavelink.Playable:
    track = wavelink.Playable(lavalink_track(title))  # type: ignore[arg-type]
    if user_data:
        track.extras = dict(user_data)
    return track


def set_playing(player: wavelink.Player, track: wavelink.Playable, position: int, *, paused: bool = False) -> None:
    player._connected = True
    player._current = track
    player._paused = paused
    player._last_update = time.monotonic_ns()
    player._last_position = position


def test_playable_round_trip_keeps_everything() -> None:
    playlist = wavelink.Playlist(
        {
            "info": {"name": "Mix", "selectedTrack": 2},
            "pluginInfo": {"url": "https://x/pl", "author": "dj"},
            "tracks": [lavalink_track("a"), lavalink_track("b"), lavalink_track("c")],
        }  # type: ignore[typeddict-item]
    )
    original = playlist[1]
    original.extras = {"requester_id": "123456789012345678", "note": "hi"}
    original._recommended = True  # as wavelink's AutoPlay marks a recommendation
    rebuilt = to_playable(track_state(original))
    assert rebuilt.encoded == original.encoded
    assert rebuilt.raw_data["info"] == original.raw_data["info"]
    assert dict(rebuilt.extras) == {"requester_id": "123456789012345678", "note": "hi"}
    assert rebuilt.recommended is True
    assert rebuilt.playlist is not None and original.playlist is not None
    assert (rebuilt.playlist.name, rebuilt.playlist.selected, rebuilt.playlist.tracks) == ("Mix", 2, 3)
    assert (rebuilt.playlist.url, rebuilt.playlist.author) == ("https://x/pl", "dj")
    assert rebuilt == original


def test_zero_copy_track_objects_equal_the_public_api_capture() -> None:
    """``tracks_json`` reads wavelink's private attributes for speed; it must agree with the public API
    for every kind of track (a wavelink upgrade that renames them fails here, not in a user's bot)."""
    playlist = wavelink.Playlist(
        {
            "info": {"name": "Mix", "selectedTrack": 0},
            "pluginInfo": {"type": "album", "artworkUrl": "https://a"},
            "tracks": [lavalink_track("p1"), lavalink_track("p2")],
        }  # type: ignore[typeddict-item]
    )
    recommended = playable("rec")
    recommended._recommended = True
    replaced = playable("replaced", requester_id="1")
    replaced.extras = {"requester_id": "2"}
    in_place = playable("in place", requester_id="3")
    in_place.extras.note = "changed in place"
    bare = wavelink.Playable({**lavalink_track("no plugin info"), "pluginInfo": {}})  # type: ignore[arg-type]
    tracks = [*playlist, recommended, replaced, in_place, bare, playable("plain")]
    assert tracks_json(tracks) == [track_state(t).data for t in tracks]
    objects = tracks_json(tracks)
    assert objects[2]["recommended"] is True and objects[0]["playlist"]["name"] == "Mix"
    assert objects[3]["userData"] == {"requester_id": "2"}
    assert objects[4]["userData"] == {"requester_id": "3", "note": "changed in place"}
    assert objects[0]["info"] is playlist[0].raw_data["info"]  # referenced, not copied


async def test_capture_reads_every_part(player: wavelink.Player) -> None:
    tracks = [playable(f"T{i}", requester_id=str(1000 + i)) for i in range(6)]
    for done in tracks[:2]:
        player.queue.history.put(done)  # type: ignore[union-attr]
    set_playing(player, tracks[2], 42_000, paused=True)
    player.queue.put(tracks[3:])
    player.queue.mode = wavelink.QueueMode.loop_all
    player.autoplay = wavelink.AutoPlayMode.partial
    player.auto_queue.put(playable("Recommended"))
    player._volume = 70
    filters = wavelink.Filters()
    filters.equalizer.set(bands=[{"band": 0, "gain": 0.25}])
    filters.timescale.set(speed=1.0, pitch=1.1)
    filters.karaoke.set(level=0.8)
    player._filters = filters

    state = capture_state(player, kind=SnapshotKind.manual, label="x", extras={"announce": "5"}, now=1000.0)

    assert (state.guild_id, state.channel_id, state.node) == (GUILD, CHANNEL, "main-node")
    assert state.queue.current is not None and state.queue.current.title == "T2"
    assert state.player.position == 42_000 and state.player.paused is True and state.player.volume == 70
    assert state.player.position_at == 1000.0
    assert [t.title for t in state.queue.upcoming] == ["T3", "T4", "T5"]
    assert [t.title for t in state.queue.history] == ["T0", "T1"]
    assert state.queue.upcoming[0].user_data == {"requester_id": "1003"}
    assert state.queue.loop_mode is LoopMode.queue
    assert state.autoplay.mode is AutoplayMode.partial and state.autoplay.enabled
    assert [t.title for t in state.autoplay.auto_queue] == ["Recommended"]
    assert set(state.filters.active_filters) == {"equalizer", "timescale", "karaoke"}
    assert state.filters.filter_config["karaoke"] == {"level": 0.8}
    assert state.extras == {"announce": "5"}
    assert state.kind is SnapshotKind.manual and state.label == "x"


async def test_history_is_bounded_to_the_newest(player: wavelink.Player) -> None:
    for i in range(10):
        player.queue.history.put(playable(f"H{i}"))  # type: ignore[union-attr]
    state = capture_state(player, limits=Limits(max_history_tracks=3))
    assert [t.title for t in state.queue.history] == ["H7", "H8", "H9"]


async def test_modes_map_both_ways(player: wavelink.Player) -> None:
    expected = {
        wavelink.QueueMode.normal: LoopMode.none,
        wavelink.QueueMode.loop: LoopMode.track,
        wavelink.QueueMode.loop_all: LoopMode.queue,
    }
    for mode, loop in expected.items():
        player.queue.mode = mode
        assert capture_state(player).queue.loop_mode is loop
    player.autoplay = wavelink.AutoPlayMode.disabled
    state = capture_state(player)
    assert state.autoplay.mode is AutoplayMode.disabled and not state.autoplay.enabled


async def test_position_under_timescale_is_track_time(player: wavelink.Player) -> None:
    track = playable("Fast")
    set_playing(player, track, 10_000)
    filters = wavelink.Filters()
    filters.timescale.set(speed=1.5, rate=1.0)
    player._filters = filters
    sample = PositionSample(position=10_000, monotonic=100.0)
    state = capture_state(player, position_sample=sample, monotonic_now=104.0)
    assert state.player.position == 16_000  # 4 s of wall time at 1.5x = 6 s of track time
    player._paused = True
    assert capture_state(player, position_sample=sample, monotonic_now=104.0).player.position == 10_000


async def test_a_paused_clock_is_the_position_where_the_pause_happened(player: wavelink.Player) -> None:
    # wavelink freezes a paused player's position at its last playerUpdate (10 s here); the clock knows
    # where the pause really happened (SonoraPlayer sets it when it pauses).
    set_playing(player, playable("Paused"), 10_000, paused=True)
    paused_at = PositionSample(position=13_750, monotonic=100.0, paused=True)
    assert capture_state(player, position_sample=paused_at, monotonic_now=900.0).player.position == 13_750
    # A clock that says "paused" for a player that plays again (a plain player resumed behind its back)
    # is not trusted: wavelink's own extrapolation is.
    player._paused = False
    assert capture_state(player, position_sample=paused_at, monotonic_now=time.monotonic()).player.position >= 10_000
    assert capture_state(player, position_sample=paused_at, monotonic_now=time.monotonic()).player.position < 13_750


async def test_signature_ignores_a_playing_track_moving_on_but_not_a_change(player: wavelink.Player) -> None:
    track = playable("Now", requester_id="1")
    set_playing(player, track, 10_000)
    player.queue.put([playable("Next", requester_id="2")])
    first = change_signature(player, sample=PositionSample(10_000, 0.0), extras={"a": 1})
    assert change_signature(player, sample=PositionSample(90_000, 0.0), extras={"a": 1}) == first
    assert change_signature(player, sample=PositionSample(10_000, 0.0), extras={"a": 2}) != first
    player.queue[0].extras = {"requester_id": "3"}  # a queued track's extras changed in place
    changed = change_signature(player, sample=PositionSample(10_000, 0.0), extras={"a": 1})
    assert changed != first
    player._volume = 5
    assert change_signature(player, sample=PositionSample(10_000, 0.0), extras={"a": 1}) != changed


async def test_signature_of_a_paused_player_follows_its_position(player: wavelink.Player) -> None:
    set_playing(player, playable("Now"), 10_000, paused=True)
    here = change_signature(player, sample=PositionSample(10_000, 0.0, paused=True))
    assert change_signature(player, sample=PositionSample(10_000, 50.0, paused=True)) == here
    assert change_signature(player, sample=PositionSample(12_000, 0.0, paused=True)) != here


async def test_signature_of_unserialisable_extras_always_differs(player: wavelink.Player) -> None:
    set_playing(player, playable("Now"), 0)
    assert change_signature(player, extras={"x": object()}) != change_signature(player, extras={"x": object()})


async def test_position_never_exceeds_track_length(player: wavelink.Player) -> None:
    track = wavelink.Playable(lavalink_track("Short", length=5_000))  # type: ignore[arg-type]
    set_playing(player, track, 4_900)
    assert capture_state(player, position_sample=PositionSample(4_900, 0.0), monotonic_now=0.0).player.position <= 5_000


async def test_capture_survives_the_codec_boundary(player: wavelink.Player) -> None:
    set_playing(player, playable("Now", requester_id="77"), 1_000)
    player.queue.put([playable("Next")])
    state = capture_state(player, now=5.0)
    again = SessionState.from_json(state.to_json())
    assert again == state
    assert to_playable(again.queue.current).extras.requester_id == "77"  # type: ignore[arg-type]


def test_filters_rebuild_from_state() -> None:
    filters = wavelink.Filters()
    filters.timescale.set(speed=1.2)
    filters.karaoke.set(level=0.5)
    from sonora_cog.model import FilterState

    rebuilt = to_filters(FilterState(active_filters=active_filter_names(filters()), filter_config=filters()))
    assert rebuilt() == filters()


def test_active_filter_names_ignore_neutral_values() -> None:
    flat_eq = [{"band": i, "gain": 0.0} for i in range(15)]
    assert active_filter_names({"equalizer": flat_eq, "volume": 1.0}) == ()
    assert active_filter_names({"volume": 0.5, "rotation": {"rotationHz": 0.2}}) == ("volume", "rotation")


async def test_capture_refuses_a_player_without_guild() -> None:
    async with aiohttp.ClientSession() as session:
        node = wavelink.Node(uri="http://127.0.0.1:9", password="unused", session=session)
        try:
            with pytest.raises(ValueError, match="no guild"):
                capture_state(wavelink.Player(nodes=[node]))
        finally:
            await node.close()
