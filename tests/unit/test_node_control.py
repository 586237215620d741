"""Drained nodes and node views from the store alone (:mod:`sonora_cog.node_control`); the ``nodes`` CLI is in
``tests/unit/test_cli_nodes.py`` and the bot side in ``tests/e2e/test_nodes.py``."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from sonora_cog import node_control
from sonora_cog.config import Settings, StorageSettings
from sonora_cog.errors import InvalidIdentifier
from sonora_cog.manager import SessionManager
from sonora_cog.node_control import DRAINED_KEY, VIEW_PREFIX, NodeState, NodeView, ViewPublisher


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[SessionManager]:
    manager = SessionManager(Settings(storage=StorageSettings(path=str(tmp_path / "store"))))
    yield manager
    await manager.close()


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def view(players: int = 0, drained: bool = False, state: NodeState = NodeState.connected) -> NodeView:
    return NodeView(state, players, drained)


# -- identifiers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("identifier", ["main", "e2e-1", "lavalink eu-west #2", "nœud", "x" * 100])
def test_valid_identifiers(identifier: str) -> None:
    assert node_control.validate_identifier(identifier) == identifier


@pytest.mark.parametrize(
    ("identifier", "why"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("a\nb", "control characters"),
        ("tab\there", "control characters"),
        ("\x1b[31mred", "control characters"),
        ("x" * 101, "at most 100"),
        (None, "empty"),
        (7, "empty"),
    ],
)
def test_bad_identifiers_are_refused_with_the_reason(identifier: object, why: str) -> None:
    with pytest.raises(InvalidIdentifier, match="not a Lavalink node identifier") as raised:
        node_control.validate_identifier(identifier)
    assert why in str(raised.value)


async def test_drain_and_undrain_refuse_a_bad_identifier_and_write_nothing(manager: SessionManager) -> None:
    with pytest.raises(InvalidIdentifier):
        await node_control.drain(manager, "a\nb")
    with pytest.raises(InvalidIdentifier):
        await node_control.undrain(manager, "")
    assert await manager.store.get_aux(DRAINED_KEY) is None


# -- the drained record ---------------------------------------------------------------------------------------


async def test_drained_record_round_trip(manager: SessionManager) -> None:
    assert await node_control.read_drained(manager) == {}
    assert await node_control.drain(manager, "node-a", by="cli ops@host", now=100.0) is True
    assert await node_control.drain(manager, "node b", by="owner", now=200.0) is True
    assert await node_control.drain(manager, "node-a", by="someone else", now=300.0) is False  # the first stays
    drained = await node_control.read_drained(manager)
    assert drained == {
        "node-a": node_control.DrainedNode("node-a", 100.0, "cli ops@host"),
        "node b": node_control.DrainedNode("node b", 200.0, "owner"),
    }
    assert orjson.loads(await manager.store.get_aux(DRAINED_KEY) or b"") == {
        "node-a": {"at": 100.0, "by": "cli ops@host"},
        "node b": {"at": 200.0, "by": "owner"},
    }
    assert await node_control.undrain(manager, "node-a") is True
    assert await node_control.undrain(manager, "node-a") is False
    assert set(await node_control.read_drained(manager)) == {"node b"}
    assert await node_control.undrain(manager, "node b") is True
    assert await manager.store.get_aux(DRAINED_KEY) is None  # an empty list leaves no record behind


@pytest.mark.parametrize("data", [b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe"])
async def test_a_corrupt_record_counts_as_empty_with_a_warning_and_the_next_drain_replaces_it(
    manager: SessionManager, data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    await manager.store.put_aux(DRAINED_KEY, data)
    with caplog.at_level(logging.WARNING, logger="sonora_cog.node_control"):
        assert await node_control.read_drained(manager) == {}
    assert "treating it as empty" in caplog.text
    assert await node_control.undrain(manager, "node-a") is False
    assert await node_control.drain(manager, "node-a", now=1.0) is True
    assert set(await node_control.read_drained(manager)) == {"node-a"}


async def test_malformed_entries_are_skipped_with_a_warning_and_the_others_kept(
    manager: SessionManager, caplog: pytest.LogCaptureFixture
) -> None:
    body = {
        "good": {"at": 5, "by": "cli"},
        "": {"at": 5, "by": "cli"},
        "no-by": {"at": 5},
        "text-at": {"at": "yesterday", "by": "cli"},
        "bool-at": {"at": True, "by": "cli"},
        "not-a-dict": 3,
        "x" * 101: {"at": 5, "by": "cli"},
    }
    await manager.store.put_aux(DRAINED_KEY, orjson.dumps(body))
    with caplog.at_level(logging.WARNING, logger="sonora_cog.node_control"):
        drained = await node_control.read_drained(manager)
    assert drained == {"good": node_control.DrainedNode("good", 5.0, "cli")}
    assert caplog.text.count("skipping the entry") == 6


# -- views ----------------------------------------------------------------------------------------------------


async def test_views_run_out_and_old_ones_are_removed(manager: SessionManager) -> None:
    now = 1_800_000_000.0
    await node_control.write_view(manager, "live", {"a": view(2)}, ttl=15, now=now - 5)
    await node_control.write_view(manager, "expired", {"a": view(1)}, ttl=15, now=now - 60)
    await node_control.write_view(manager, "ancient", {"a": view(1)}, ttl=15, now=now - 2 * 86_400)
    views = await node_control.read_views(manager, now=now)
    assert [(v.token, v.nodes) for v in views] == [("live", {"a": view(2)})]
    assert views[0].until == now + 10
    assert await manager.store.get_aux(VIEW_PREFIX + "expired") is not None  # kept a day, for a late look
    assert await manager.store.get_aux(VIEW_PREFIX + "ancient") is None
    assert await node_control.remove_view(manager, "live") is True
    assert await node_control.read_views(manager, now=now) == []


async def test_damaged_views_and_nodes_are_skipped(manager: SessionManager) -> None:
    until = time.time() + 60
    await manager.store.put_aux(VIEW_PREFIX + "broken", b"{nope")
    await manager.store.put_aux(VIEW_PREFIX + "nodes-list", orjson.dumps({"name": "h:1", "until": until, "nodes": []}))
    await manager.store.put_aux(
        VIEW_PREFIX + "good",
        orjson.dumps(
            {
                "name": "h:2",
                "until": until,
                "nodes": {
                    "ok": {"status": "connecting", "players": 3, "drained": True},
                    "bad-status": {"status": "asleep", "players": 1},
                    "negative": {"status": "connected", "players": -1},
                    "bool-players": {"status": "connected", "players": True},
                    "a\nb": {"status": "connected", "players": 1},
                },
            }
        ),
    )
    [found] = await node_control.read_views(manager)
    assert found.name == "h:2" and found.nodes == {"ok": view(3, True, NodeState.connecting)}


async def test_the_publisher_writes_only_when_the_view_changed_or_half_its_ttl_passed(
    manager: SessionManager,
) -> None:
    clock = Clock()
    publisher = ViewPublisher(manager, "tok", ttl=20, clock=clock)
    writes: list[bytes] = []
    put = manager.store.put_aux

    async def counting_put(key: str, data: bytes) -> None:
        writes.append(data)
        await put(key, data)

    manager.store.put_aux = counting_put  # type: ignore[method-assign]
    assert await publisher.publish({"a": view(1)}) is True
    clock.now += 9
    assert await publisher.publish({"a": view(1)}) is False  # the same, and 9 s < 10 s: nothing written
    assert len(writes) == 1
    assert await publisher.publish({"a": view(0)}) is True  # changed: written at once
    clock.now += 10
    assert await publisher.publish({"a": view(0)}) is True  # unchanged, but half the ttl passed: renewed
    assert len(writes) == 3
    [published] = await node_control.read_views(manager, now=clock.now)
    assert published.until == clock.now + 20 and published.nodes == {"a": view(0)}
    await publisher.retire()
    assert await node_control.read_views(manager, now=clock.now) == []
    assert await publisher.publish({"a": view(0)}) is True  # after a retire, the next publish writes again


def test_summarize_joins_the_views_and_lists_drained_nodes_no_process_knows() -> None:
    drained = {"a": node_control.DrainedNode("a", 1.0, "cli"), "gone": node_control.DrainedNode("gone", 2.0, "cli")}
    views = [
        node_control.ProcessView("t1", "host:1", 0.0, {"a": view(2, True), "b": view(1)}),
        node_control.ProcessView("t2", "host:2", 0.0, {"a": view(0, False, NodeState.connecting)}),
    ]
    rows = {s.identifier: s for s in node_control.summarize(drained, views)}
    assert list(rows) == ["a", "b", "gone"]
    assert rows["a"].players == 2 and rows["a"].drained == drained["a"] and rows["a"].known
    assert [(p.process, p.state, p.drained) for p in rows["a"].processes] == [
        ("host:1", NodeState.connected, True),
        ("host:2", NodeState.connecting, False),
    ]
    assert rows["b"].drained is None and rows["b"].players == 1
    assert not rows["gone"].known and rows["gone"].to_json()["known"] is False
    assert rows["gone"].to_json()["drained_by"] == "cli"
