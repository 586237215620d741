"""Schema v1: strict decoding with paths, unknown fields kept, versions, caps."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from factories import lavalink_track, sample_state

from sonora_cog.errors import InvalidSnapshot, SchemaVersionError
from sonora_cog.model import SCHEMA_VERSION, Limits, SessionState, register_migration


def as_json() -> dict[str, Any]:
    return copy.deepcopy(sample_state(tracks=6).to_json())


def test_round_trip_is_identity() -> None:
    state = sample_state()
    assert SessionState.from_json(state.to_json()) == state


def test_ids_are_strings_in_json_and_ints_are_accepted() -> None:
    data = as_json()
    assert data["guild_id"] == "111111111111111111"
    data["guild_id"] = 111111111111111111
    assert SessionState.from_json(data).guild_id == 111111111111111111


@pytest.mark.parametrize(
    ("mutate", "path", "reason"),
    [
        (
            lambda d: d["queue"]["upcoming"][3]["info"].__setitem__("length", "long"),
            "queue.upcoming[3].info.length",
            "expected int",
        ),
        (lambda d: d["queue"]["upcoming"][0].pop("encoded"), "queue.upcoming[0].encoded", "missing"),
        (lambda d: d["player"].__setitem__("volume", 5000), "player.volume", "expected int in 0..1000"),
        (lambda d: d["player"].__setitem__("paused", "yes"), "player.paused", "expected bool"),
        (lambda d: d["queue"].__setitem__("loop_mode", "forever"), "queue.loop_mode", "expected one of"),
        (lambda d: d.__setitem__("guild_id", "../../etc"), "guild_id", "snowflake"),
        (
            lambda d: d["queue"]["current"]["info"].__setitem__("title", 5),
            "queue.current.info.title",
            "expected string",
        ),
        (lambda d: d["autoplay"].__setitem__("mode", "always"), "autoplay.mode", "expected one of"),
        (lambda d: d.pop("filters"), "filters", "missing"),
        (lambda d: d["filters"].__setitem__("active_filters", [1]), "filters.active_filters[0]", "expected string"),
    ],
)
def test_first_bad_field_is_named(mutate: Any, path: str, reason: str) -> None:
    data = as_json()
    mutate(data)
    with pytest.raises(InvalidSnapshot) as info:
        SessionState.from_json(data)
    assert info.value.path == path
    assert reason in str(info.value)
    assert str(info.value).startswith(f"{path}: ")


def test_unknown_fields_inside_known_objects_are_kept() -> None:
    data = as_json()
    data["future_top_level"] = {"x": 1}
    data["player"]["crossfade_ms"] = 300
    data["queue"]["upcoming"][0]["info"]["chapter"] = "intro"
    data["queue"]["upcoming"][0]["somePluginField"] = [1, 2]
    again = SessionState.from_json(data).to_json()
    assert again["future_top_level"] == {"x": 1}
    assert again["player"]["crossfade_ms"] == 300
    assert again["queue"]["upcoming"][0]["info"]["chapter"] == "intro"
    assert again["queue"]["upcoming"][0]["somePluginField"] == [1, 2]


def test_newer_schema_is_refused_clearly() -> None:
    data = as_json()
    data["schema"] = SCHEMA_VERSION + 1
    with pytest.raises(SchemaVersionError, match="newer than this sonora_cog understands"):
        SessionState.from_json(data)


def test_older_schema_without_migration_is_refused() -> None:
    data = as_json()
    data["schema"] = -7
    with pytest.raises(SchemaVersionError, match="cannot be migrated"):
        SessionState.from_json(data)


def test_migration_hook_upgrades_older_records() -> None:
    data = as_json()
    data["schema"] = -1
    data["player"]["vol"] = data["player"].pop("volume")

    @register_migration(-1)
    def rename_volume(obj: dict[str, Any]) -> dict[str, Any]:
        obj["player"] = {**obj["player"], "volume": obj["player"]["vol"]}
        del obj["player"]["vol"]
        return {**obj, "schema": 1}

    assert SessionState.from_json(data).player.volume == 80


def test_queue_over_the_cap_is_refused() -> None:
    data = as_json()
    data["queue"]["upcoming"] = [lavalink_track(f"t{i}") for i in range(11)]
    with pytest.raises(InvalidSnapshot) as info:
        SessionState.from_json(data, Limits(max_queue_tracks=10))
    assert info.value.path == "queue.upcoming"
    assert "11 items exceed the cap of 10" in str(info.value)


def test_long_strings_and_big_extras_are_refused() -> None:
    data = as_json()
    data["queue"]["current"]["info"]["title"] = "x" * 5000
    with pytest.raises(InvalidSnapshot, match=r"queue.current.info.title: string of 5000 characters"):
        SessionState.from_json(data)
    data = as_json()
    data["extras"] = {"blob": "y" * 20_000}
    with pytest.raises(InvalidSnapshot, match=r"^extras: .* exceeds the cap of 16384"):
        SessionState.from_json(data)


def test_not_an_object_is_refused() -> None:
    with pytest.raises(InvalidSnapshot, match="expected a JSON object"):
        SessionState.from_json([1, 2, 3])


def test_track_list_reads_like_a_tuple_of_tracks_without_a_wrapper_per_track() -> None:
    from sonora_cog.model import TrackList

    state = sample_state(tracks=6)
    objects = [t.data for t in state.queue.upcoming]
    tracks = TrackList(objects)
    assert len(tracks) == 5 and bool(tracks) and not TrackList()
    assert tracks[0] == state.queue.upcoming[0] and tracks[-1].title == "Track 5"
    assert isinstance(tracks[1:3], TrackList) and [t.title for t in tracks[1:3]] == ["Track 2", "Track 3"]
    assert [t.title for t in tracks] == [f"Track {i}" for i in range(1, 6)]
    assert tracks == tuple(state.queue.upcoming) and tuple(state.queue.upcoming) == tracks
    assert tracks != tuple(state.queue.upcoming)[:-1] and tracks != TrackList(objects[:-1])
    assert tracks.json is objects  # taken as it is: the encoder writes these very objects
    assert TrackList.of(tracks) is tracks and TrackList.of(tuple(state.queue.upcoming)) == tracks
    with pytest.raises(TypeError):
        hash(tracks)


def test_a_decoded_state_holds_its_parsed_track_objects() -> None:
    from sonora_cog.model import TrackList

    original = sample_state(tracks=4)
    payload = original.to_json()
    state = SessionState.from_json(payload)
    assert isinstance(state.queue.upcoming, TrackList)
    assert state.queue.upcoming.json is payload["queue"]["upcoming"]
    assert state.to_json()["queue"]["upcoming"] is payload["queue"]["upcoming"]
    assert state == original and original == state  # equal to the same state built from tuples
