"""Positions of unchanged guilds are worked out from the checkpoint heartbeat at restore time."""

from __future__ import annotations

import dataclasses

from factories import sample_state

from sonora_cog.model import FilterState
from sonora_cog.restore import advance_position


def test_a_playing_track_advances_to_the_heartbeat() -> None:
    state = sample_state()  # position 61 s at position_at, timescale speed 1.25 in the sample
    later = advance_position(state, state.player.position_at + 10)
    assert later.player.position == 61_000 + 12_500
    assert later.player.position_at == state.player.position_at + 10


def test_normal_speed_and_caps() -> None:
    state = dataclasses.replace(sample_state(), filters=FilterState())
    assert advance_position(state, state.player.position_at + 4).player.position == 65_000
    assert advance_position(state, state.player.position_at + 10_000).player.position == state.queue.current.length  # type: ignore[union-attr]


def test_paused_streams_and_older_heartbeats_do_not_move() -> None:
    state = sample_state()
    paused = dataclasses.replace(state, player=dataclasses.replace(state.player, paused=True))
    assert advance_position(paused, state.player.position_at + 10) == paused
    assert advance_position(state, state.player.position_at - 10) == state
    current = state.queue.current
    assert current is not None
    stream = dataclasses.replace(current, data={**current.data, "info": {**current.info, "isStream": True}})
    streaming = dataclasses.replace(state, queue=dataclasses.replace(state.queue, current=stream))
    assert advance_position(streaming, state.player.position_at + 10) == streaming
