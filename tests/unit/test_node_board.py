"""NodeBoard: which Lavalink node takes a player (health, load, drained nodes), without a network."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import wavelink

from sonora_cog.nodes import PROBE_FAILURES, STATS_MAX_AGE, NodeBoard, NodeLoad, penalty


def stats(playing: int = 0, load: float = 0.0, frames: dict[str, int] | None = None) -> wavelink.StatsResponsePayload:
    data: dict[str, Any] = {
        "players": playing,
        "playingPlayers": playing,
        "uptime": 1,
        "memory": {"free": 1, "used": 1, "allocated": 1, "reservable": 1},
        "cpu": {"cores": 4, "systemLoad": load, "lavalinkLoad": 0.0},
    }
    if frames is not None:
        data["frameStats"] = frames
    return wavelink.StatsResponsePayload(data)


@dataclass(eq=False)
class StubNode:
    """What NodeBoard reads of a ``wavelink.Node``; ``answers`` = False makes ``fetch_stats`` fail."""

    identifier: str
    playing: int = 0
    load: float = 0.0
    status: wavelink.NodeStatus = wavelink.NodeStatus.CONNECTED
    session_id: str | None = "session"
    answers: bool = True
    players: dict[int, Any] = field(default_factory=dict)
    requests: int = 0

    async def fetch_stats(self) -> wavelink.StatsResponsePayload:
        self.requests += 1
        if not self.answers:
            raise OSError("connection refused")
        return stats(self.playing, self.load)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def board_of(*nodes: StubNode, clock: Clock | None = None) -> NodeBoard:
    return NodeBoard(nodes=lambda: nodes, clock=clock or Clock())  # type: ignore[arg-type,return-value]


def test_penalty_grows_with_players_cpu_and_lost_frames() -> None:
    idle = penalty(NodeLoad(playing=0, system_load=0.0))
    assert idle == 0
    assert penalty(NodeLoad(playing=10, system_load=0.0)) == 10
    assert penalty(NodeLoad(playing=0, system_load=0.5)) > 100  # 1.05^50·10 - 10 ≈ 104.7
    assert penalty(NodeLoad(playing=0, system_load=1.0)) == pytest.approx(1.05**100 * 10 - 10)
    assert penalty(NodeLoad(playing=0, system_load=0.0, deficit=300)) > penalty(NodeLoad(playing=20, system_load=0.0))
    assert penalty(NodeLoad(playing=0, system_load=0.0), added=3) == 3


def test_load_reads_lavalinks_stats_and_its_frames() -> None:
    load = NodeLoad.from_stats(stats(7, 0.25, {"sent": 3000, "nulled": 12, "deficit": 5}))
    assert load == NodeLoad(playing=7, system_load=0.25, nulled=12, deficit=5)
    assert NodeLoad.from_stats(stats(1)).deficit == 0


async def test_the_least_loaded_node_is_picked_and_each_pick_counts_until_the_next_stats() -> None:
    busy, calm = StubNode("busy", playing=30), StubNode("calm", playing=28)
    board = board_of(busy, calm)
    picks = [(await board.pick()).identifier for _ in range(4)]  # type: ignore[union-attr]
    # calm (28) takes two, then both are at 30 and they alternate
    assert picks[:2] == ["calm", "calm"] and sorted(picks[2:]) == ["busy", "calm"]
    assert busy.requests == 1 and calm.requests == 1  # stats are reused within STATS_MAX_AGE


async def test_stats_are_read_again_when_they_are_old() -> None:
    clock = Clock()
    node = StubNode("a")
    board = board_of(node, clock=clock)
    await board.pick()
    clock.now += STATS_MAX_AGE + 0.1
    await board.pick()
    assert node.requests == 2


async def test_a_busy_cpu_loses_to_more_players_on_an_idle_machine() -> None:
    hot, cool = StubNode("hot", playing=5, load=0.9), StubNode("cool", playing=50, load=0.05)
    board = board_of(hot, cool)
    assert (await board.pick()).identifier == "cool"  # type: ignore[union-attr]


async def test_drained_disconnected_sessionless_and_excluded_nodes_take_no_players() -> None:
    nodes = [
        StubNode("drained"),
        StubNode("down", status=wavelink.NodeStatus.CONNECTING),
        StubNode("no-session", session_id=None),
        StubNode("excluded"),
        StubNode("ok", playing=100),
    ]
    board = board_of(*nodes)
    assert board.drain("drained") is True and board.drain("drained") is False
    assert [n.identifier for n in board.available(exclude=["excluded"])] == ["ok"]
    assert (await board.pick(exclude=["excluded"])).identifier == "ok"  # type: ignore[union-attr]
    assert board.pick_now(exclude=["excluded", "ok"]) is None
    assert board.undrain("drained") is True and board.undrain("drained") is False
    assert "drained" not in board.drained


async def test_a_node_that_does_not_answer_ranks_last_and_is_unreachable_after_repeated_probes() -> None:
    mute, slow = StubNode("mute", answers=False), StubNode("slow", playing=500)
    board = board_of(mute, slow)
    assert (await board.pick()).identifier == "slow"  # type: ignore[union-attr]
    assert board.alive(mute)  # a failed read for a pick is not a probe
    for _ in range(PROBE_FAILURES - 1):
        await board.probe(mute)  # type: ignore[arg-type]
    assert board.alive(mute)
    await board.probe(mute)  # type: ignore[arg-type]
    assert not board.alive(mute) and [n.identifier for n in board.available()] == ["slow"]
    mute.answers = True
    assert await board.probe(mute) is True  # type: ignore[arg-type]
    assert board.alive(mute)


async def test_a_reconnected_node_counts_as_reachable_again() -> None:
    node = StubNode("a", answers=False)
    board = board_of(node)
    for _ in range(PROBE_FAILURES):
        await board.probe(node)  # type: ignore[arg-type]
    assert not board.alive(node)
    board.reachable("a")
    assert board.alive(node)


async def test_pick_now_uses_what_is_known_without_a_request_and_spreads_a_burst() -> None:
    a, b = StubNode("a", playing=10), StubNode("b", playing=11)
    a.players = {1: object(), 2: object()}
    board = board_of(a, b)
    assert board.pick_now().identifier == "b"  # type: ignore[union-attr]  # no stats yet: fewer players here
    assert a.requests == b.requests == 0
    assert (await board.pick()).identifier == "a"  # type: ignore[union-attr]  # stats: a 10, b 11 (+1 earlier)
    burst = [board.pick_now().identifier for _ in range(3)]  # type: ignore[union-attr]
    assert burst == ["a", "b", "a"]  # 11 vs 11 (a first), then 12 vs 11, then 12 vs 12
