"""``python -m sonora_cog nodes drain|undrain|status`` as a subprocess over a real store; running bot processes
are stood in for by the node views they publish (:func:`sonora_cog.node_control.write_view`)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sonora_cog import deploy, node_control
from sonora_cog.config import Settings, StorageSettings
from sonora_cog.manager import SessionManager
from sonora_cog.node_control import NodeState, NodeView


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SONORA_")} | {"COLUMNS": "250"}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sonora_cog", "nodes", *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
        check=False,
    )


async def start(*args: str) -> asyncio.subprocess.Process:
    """The same, without blocking this event loop (the test plays the bot meanwhile)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sonora_cog",
        "nodes",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[SessionManager]:
    path = tmp_path / "store"
    path.mkdir()
    manager = SessionManager(Settings(storage=StorageSettings(path=str(path))))
    yield manager
    await manager.close()


def store_of(manager: SessionManager) -> str:
    return manager.settings.storage.path


async def bot_view(manager: SessionManager, token: str, name: str, **nodes: NodeView) -> None:
    """Publish a node view as a running process named ``name`` would (only the name differs)."""
    await node_control.write_view(manager, token, nodes, ttl=60)
    key = node_control.VIEW_PREFIX + token
    body = json.loads(await manager.store.get_aux(key) or b"")
    await manager.store.put_aux(key, json.dumps(body | {"name": name}).encode())


def on(players: int, drained: bool = False, state: NodeState = NodeState.connected) -> NodeView:
    return NodeView(state, players, drained)


def test_help_and_usage_errors(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sonora_cog", "--help"], capture_output=True, text=True, env=_env(), check=False
    )
    assert "nodes" in out.stdout
    out = run("--help")
    assert out.returncode == 0 and all(c in out.stdout for c in ("drain", "undrain", "status"))
    for bad in (
        ["drain", ""],
        ["drain", "a\tb"],
        ["drain", "x" * 101],
        ["undrain", " "],
        ["drain", "a", "--timeout", "-1"],
        ["drain", "a", "--timeout", "nan"],
        ["drain", "a", "--timeout", "inf"],
        ["status", "extra"],
    ):
        out = run(*bad, "--store", str(tmp_path))
        assert out.returncode == 2, (bad, out.stderr)
    assert "not a Lavalink node identifier" in run("drain", "", "--store", str(tmp_path)).stderr
    out = run("status", "--store", str(tmp_path / "typo"))
    assert out.returncode == 4 and "there is no store at" in out.stderr and not (tmp_path / "typo").exists()


async def test_with_no_bot_running_drain_undrain_and_status_say_so(manager: SessionManager) -> None:
    store = store_of(manager)
    out = run("status", "--store", store)
    assert out.returncode == 0 and "no bot process runs on this store" in out.stdout

    out = run("drain", "lava-1", "--store", store)
    assert out.returncode == 0, out.stderr
    assert "node lava-1 is drained" in out.stdout and "no bot process runs on this store" in out.stdout
    [entry] = (await node_control.read_drained(manager)).values()
    assert entry.identifier == "lava-1" and entry.by.startswith("cli ")

    out = run("drain", "lava-1", "--store", store)
    assert out.returncode == 0 and "was drained already" in out.stdout

    out = run("status", "--store", store)
    assert "lava-1" in out.stdout and "unknown" in out.stdout and "no bot process runs" in out.stdout
    out = run("status", "--store", store, "--json")
    report = json.loads(out.stdout)
    assert report["processes"] == []
    assert [(n["identifier"], n["drained"], n["known"]) for n in report["nodes"]] == [("lava-1", True, False)]

    out = run("undrain", "lava-1", "--store", store, "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["was_drained"] is True
    assert await node_control.read_drained(manager) == {}
    out = run("undrain", "lava-1", "--store", store)
    assert out.returncode == 0 and "was not drained" in out.stdout


async def test_status_lists_every_node_of_every_process_and_drained_nodes_none_knows(
    manager: SessionManager,
) -> None:
    await bot_view(manager, "t1", "host-a:1", **{"lava-1": on(3, True), "lava-2": on(1)})
    await bot_view(manager, "t2", "host-b:2", **{"lava-1": on(0), "lava-2": on(2, state=NodeState.connecting)})
    await node_control.drain(manager, "lava-1", by="cli ops@host")
    await node_control.drain(manager, "old-node", by="cli ops@host")
    await deploy.announce(manager, "legacy", ttl=60)  # a process that publishes no view

    out = run("status", "--store", store_of(manager), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["processes"] == ["host-a:1", "host-b:2"]
    assert report["without_view"] == [deploy.process_name()]
    nodes = {n["identifier"]: n for n in report["nodes"]}
    assert list(nodes) == ["lava-1", "lava-2", "old-node"]
    assert nodes["lava-1"]["drained"] and nodes["lava-1"]["players"] == 3
    assert [(p["name"], p["status"], p["players"], p["drained"]) for p in nodes["lava-1"]["processes"]] == [
        ("host-a:1", "connected", 3, True),
        ("host-b:2", "connected", 0, False),
    ]
    assert not nodes["lava-2"]["drained"] and nodes["lava-2"]["players"] == 3
    assert nodes["lava-2"]["processes"][1]["status"] == "connecting"
    assert nodes["old-node"] == {
        "identifier": "old-node",
        "drained": True,
        "drained_at": nodes["old-node"]["drained_at"],
        "drained_by": "cli ops@host",
        "known": False,
        "players": 0,
        "processes": [],
    }

    out = run("status", "--store", store_of(manager))
    lines = out.stdout.splitlines()
    assert "2 bot process(es) running: host-a:1, host-b:2" in out.stdout
    assert "without a node view" in out.stdout
    assert any("lava-1" in line and "yes" in line and "host-a:1" in line and "3" in line for line in lines)
    assert any("host-b:2" in line and "drain not finished yet" in line for line in lines)
    assert any("old-node" in line and "unknown" in line for line in lines)


async def test_drain_names_the_processes_and_warns_when_none_has_the_node(manager: SessionManager) -> None:
    await bot_view(manager, "t1", "host-a:1", **{"lava-1": on(2)})
    out = run("drain", "lava-1", "--store", store_of(manager), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"node": "lava-1", "newly_drained": True, "processes": ["host-a:1"], "known": True}
    assert "host-a:1 moves its players to other nodes" in out.stderr  # with --json, stdout holds the JSON only

    out = run("drain", "lava-typo", "--store", store_of(manager))
    assert out.returncode == 0
    assert "no running process has a Lavalink node named lava-typo" in out.stderr and "lava-1" in out.stderr
    out = run("drain", "lava-typo", "--store", store_of(manager), "--wait")
    assert out.returncode == 1 and "nothing to wait for" in out.stdout


async def test_drain_wait_follows_the_views_until_no_process_has_a_player_on_the_node(
    manager: SessionManager,
) -> None:
    store = store_of(manager)
    await bot_view(manager, "t1", "host-a:1", **{"lava-1": on(2), "lava-2": on(0)})
    await bot_view(manager, "t2", "host-b:2", **{"lava-1": on(1), "lava-2": on(4)})
    process = await start("drain", "lava-1", "--store", store, "--wait", "--timeout", "60")
    try:
        seen = await read_until(process, "node lava-1: 3 player(s) left in 2 process(es)")  # before any moved
        assert "lava-1" in await node_control.read_drained(manager)  # written before that first look
        # the processes see the record: one has moved its players, the other is still at it
        await bot_view(manager, "t1", "host-a:1", **{"lava-1": on(0, True), "lava-2": on(2)})
        await bot_view(manager, "t2", "host-b:2", **{"lava-1": on(1, True), "lava-2": on(4)})
        seen += await read_until(process, "node lava-1: 1 player(s) left in 1 process(es)")
        await bot_view(manager, "t2", "host-b:2", **{"lava-1": on(0, True), "lava-2": on(5)})
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, (seen, out.decode(), err.decode())
        assert "node lava-1 is drained: no running process has a player on it" in out.decode()
    finally:
        if process.returncode is None:  # a failed assertion leaves no process behind
            process.kill()
            await process.communicate()


async def read_until(process: asyncio.subprocess.Process, text: str, timeout: float = 30.0) -> str:  # noqa: ASYNC109
    """What ``process`` printed up to the line holding ``text`` (it still runs: it waits for the rest)."""
    assert process.stdout is not None
    seen = ""
    async with asyncio.timeout(timeout):
        while text not in seen:
            line = await process.stdout.readline()
            assert line, f"the command ended before printing {text!r}: {seen}"
            seen += line.decode()
    return seen


async def test_drain_wait_times_out_with_what_is_left_and_the_drain_stays(manager: SessionManager) -> None:
    store = store_of(manager)
    await bot_view(manager, "t1", "host-a:1", **{"lava-1": on(3, True)})
    out = run("drain", "lava-1", "--store", store, "--wait", "--timeout", "0.5")
    assert out.returncode == 1, out.stdout
    assert "node lava-1: 3 player(s) left in 1 process(es)" in out.stdout
    assert "still has 3 player(s)" in out.stdout and "host-a:1: 3" in out.stdout
    assert "lava-1" in await node_control.read_drained(manager)  # not withdrawn: the bots go on

    out = run("drain", "lava-1", "--store", store, "--wait", "--timeout", "0", "--json")
    assert out.returncode == 1
    assert json.loads(out.stdout) == {
        "node": "lava-1",
        "done": False,
        "left": {"host-a:1": 3},
        "not_seen_by": [],
        "processes": ["host-a:1"],
    }


async def test_drain_wait_also_waits_for_each_process_to_see_the_drain(manager: SessionManager) -> None:
    # no players on the node, but the process has not marked it drained yet: it could still place new ones
    await bot_view(manager, "t1", "host-a:1", **{"lava-1": on(0)})
    out = run("drain", "lava-1", "--store", store_of(manager), "--wait", "--timeout", "0", "--json")
    assert out.returncode == 1
    assert json.loads(out.stdout)["not_seen_by"] == ["host-a:1"]
    assert "1 process(es) have not finished draining it yet" in out.stderr
