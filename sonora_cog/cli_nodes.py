"""``python -m sonora_cog nodes …``: drain a Lavalink node for every running bot process, through the store.

``drain`` lists a node in the store's drained record; every running bot process moves its players off it
in paced batches within ``deploy.poll_interval`` and gives it no new ones, and a process that starts later
drains it too. ``--wait`` follows the processes' node views until none has a player left on it. ``undrain``
takes it off the list (players do not move back). ``status`` shows every node of every running process.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import math
import os
import socket
import time
from typing import Any

from rich.markup import escape
from rich.table import Table

from . import deploy, node_control
from .errors import ConfigError, InvalidIdentifier
from .manager import SessionManager
from .node_control import NodeSummary, ProcessView

__all__ = ("add_nodes_parser", "run_nodes")

#: Seconds a drain may take per batch beyond its pause before ``--wait`` gives up (a move leaves a node,
#: joins another, plays and is confirmed: seconds; one that fails tries the next node).
PER_BATCH_ALLOWANCE = 60.0
#: Seconds ``--wait`` allows beyond the batches: the processes see the record at their next poll.
WAIT_MARGIN = 30.0


def _identifier(text: str) -> str:
    """An argparse type: a node identifier (a bad one is a usage error, exit 2)."""
    try:
        return node_control.validate_identifier(text)
    except InvalidIdentifier as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_nodes_parser(commands: Any, common: argparse.ArgumentParser, at_least: Any) -> None:
    """Add ``nodes`` and its commands to the CLI's parser."""
    parser = commands.add_parser("nodes", help="Lavalink nodes of the running bots: drain, undrain, status")
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("drain", parents=[common], help="move every player off a node; it takes no new ones")
    p.add_argument("identifier", type=_identifier, metavar="ID", help="the node's wavelink identifier")
    p.add_argument("--wait", action="store_true", help="wait until no running process has a player on it")
    p.add_argument(
        "--timeout",
        type=at_least(float),
        metavar="S",
        help="with --wait: give up after S seconds (default: from the players and the batches)",
    )
    p = sub.add_parser("undrain", parents=[common], help="let a drained node take new players again")
    p.add_argument("identifier", type=_identifier, metavar="ID", help="the node's wavelink identifier")
    sub.add_parser("status", parents=[common], help="every node of every running process, and the drained ones")


async def run_nodes(manager: SessionManager, args: argparse.Namespace) -> int:
    """Run one ``nodes`` command; return the exit code."""
    storage = manager.settings.storage
    if storage.backend == "filesystem" and not await asyncio.to_thread(os.path.isdir, storage.path):
        raise ConfigError(f"there is no store at {storage.path} (check --store, --config or storage.path)")
    if args.action == "drain":
        return await _drain(manager, args)
    if args.action == "undrain":
        return await _undrain(manager, args)
    return await _status(manager, args)


def _who() -> str:
    """How the CLI signs a drain: ``cli user@host``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = str(os.getuid()) if hasattr(os, "getuid") else "?"
    return f"cli {user}@{socket.gethostname()}"


def _knowing(views: list[ProcessView], identifier: str) -> list[ProcessView]:
    return [v for v in views if identifier in v.nodes]


async def _drain(manager: SessionManager, args: argparse.Namespace) -> int:
    from .cli import EXIT_BAD_RECORDS, EXIT_OK, _age, _err, _out, _print_json

    say = _err if args.json else _out  # with --json, stdout holds the JSON only
    node = args.identifier
    shown = escape(node)
    views = await node_control.read_views(manager)
    new = await node_control.drain(manager, node, by=_who())
    processes = [v.name for v in views] or await deploy.running_processes(manager)
    knowing = _knowing(views, node)
    settings = manager.settings.failover
    if not new:
        entry = (await node_control.read_drained(manager)).get(node)
        since = f" ({_age(entry.at, time.time())}, by {escape(entry.by)})" if entry else ""
        say.print(f"node {shown} was drained already{since}")
    else:
        say.print(f"node {shown} is drained: it takes no new players")
    if not processes:
        say.print("no bot process runs on this store: a process that starts gives it no players")
    elif views and not knowing:
        known = sorted({n for v in views for n in v.nodes})
        _err.print(
            f"[yellow]no running process has a Lavalink node named {shown}[/yellow] (they have: "
            f"{escape(', '.join(known)) or 'none'}); it is drained when one connects it; if this is a typo: "
            f"python -m sonora_cog nodes undrain {shown}"
        )
    else:
        say.print(
            f"{escape(', '.join(processes))} move{'s' if len(processes) == 1 else ''} its players to other "
            f"nodes within {manager.settings.deploy.poll_interval:g}s, {settings.drain_batch_size} at a time, "
            f"{settings.drain_pause:g}s apart (failover.drain_batch_size, failover.drain_pause)"
        )
    if not args.wait:
        if args.json:
            _print_json({"node": node, "newly_drained": new, "processes": processes, "known": bool(knowing)})
        else:
            _out.print(f"follow it with: python -m sonora_cog nodes status (or drain {shown} --wait)")
        return EXIT_OK
    if views and not knowing:
        if args.json:
            _print_json({"node": node, "done": False, "error": "no running process has this node"})
        else:
            _out.print(f"nothing to wait for: no running process has a node named {shown}")
        return EXIT_BAD_RECORDS
    players = sum(v.nodes[node].players for v in knowing)
    batches = math.ceil(players / settings.drain_batch_size)
    timeout = (
        args.timeout
        if args.timeout is not None
        else (batches * (settings.drain_pause + PER_BATCH_ALLOWANCE) + WAIT_MARGIN)
    )
    left, waiting = await _wait(manager, node, timeout, say.print)
    done = not left and not waiting
    if args.json:
        _print_json({"node": node, "done": done, "left": left, "not_seen_by": waiting, "processes": processes})
    elif done:
        _out.print(f"node {shown} is drained: no running process has a player on it")
    else:
        where = ", ".join(f"{escape(name)}: {n}" for name, n in sorted(left.items()))
        unseen = f"; not drained yet in {escape(', '.join(waiting))}" if waiting else ""
        _out.print(
            f"[red]node {shown} still has {sum(left.values())} player(s) after {timeout:g}s[/red] "
            f"({where or 'none'}{unseen}); the drain stays requested and the bots go on (nodes status "
            "follows it; a player no other node takes stays where it is: see the bot's log)"
        )
    return EXIT_OK if done else EXIT_BAD_RECORDS


async def _wait(manager: SessionManager, node: str, limit: float, say: Any) -> tuple[dict[str, int], list[str]]:
    """Poll the views until no process has a player on ``node`` and each that has it calls it drained, or
    ``limit`` seconds; return the players left by process, and the processes that have not drained it."""
    deadline = time.monotonic() + limit
    interval = max(0.2, min(2.0, manager.settings.deploy.poll_interval / 2))
    while True:
        knowing = _knowing(await node_control.read_views(manager), node)
        left = {v.name: v.nodes[node].players for v in knowing if v.nodes[node].players}
        waiting = sorted(v.name for v in knowing if not v.nodes[node].drained)
        line = f"node {escape(node)}: {sum(left.values())} player(s) left in {len(left)} process(es)"
        say(line + (f" ({len(waiting)} process(es) have not finished draining it yet)" if waiting else ""))
        if (not left and not waiting) or time.monotonic() > deadline:
            return left, waiting
        await asyncio.sleep(interval)


async def _undrain(manager: SessionManager, args: argparse.Namespace) -> int:
    from .cli import EXIT_OK, _out, _print_json

    node = args.identifier
    was = await node_control.undrain(manager, node)
    processes = await _process_names(manager)
    if args.json:
        _print_json({"node": node, "was_drained": was, "processes": processes})
    elif was:
        where = (
            f"{escape(', '.join(processes))} give{'s' if len(processes) == 1 else ''} it new players again "
            f"within {manager.settings.deploy.poll_interval:g}s"
            if processes
            else "no bot process runs now"
        )
        _out.print(f"node {escape(node)} is no longer drained: {where} (players do not move back)")
    else:
        _out.print(f"node {escape(node)} was not drained in the store; nothing changed")
    return EXIT_OK


async def _process_names(manager: SessionManager) -> list[str]:
    views = await node_control.read_views(manager)
    return [v.name for v in views] or await deploy.running_processes(manager)


async def _status(manager: SessionManager, args: argparse.Namespace) -> int:
    from .cli import EXIT_OK, _out, _print_json

    drained = await node_control.read_drained(manager)
    views = await node_control.read_views(manager)
    nodes = node_control.summarize(drained, views)
    processes = [v.name for v in views]
    silent = sorted(set(await deploy.running_processes(manager)) - set(processes))
    if args.json:
        _print_json({"processes": processes, "without_view": silent, "nodes": [n.to_json() for n in nodes]})
        return EXIT_OK
    if nodes:
        _out.print(_table(nodes))
    if processes:
        _out.print(f"{len(processes)} bot process(es) running: {escape(', '.join(processes))}")
    if silent:
        _out.print(f"running without a node view (an older version?): {escape(', '.join(silent))}")
    if not processes and not silent:
        _out.print(
            "no bot process runs on this store"
            + (": the drained nodes above stay drained for the next start" if drained else "")
        )
    elif not nodes:
        _out.print("the running processes have no Lavalink node")
    return EXIT_OK


def _table(nodes: list[NodeSummary]) -> Table:
    now = time.time()
    from .cli import _age

    table = Table("node", "drained", "process", "status", "players")
    for summary in nodes:
        drained = summary.drained
        flag = f"yes, {_age(drained.at, now)} by {escape(drained.by)}" if drained else "no"
        if not summary.processes:
            table.add_row(
                escape(summary.identifier), flag, "-", "[yellow]unknown[/yellow] (no running process has it)", "-"
            )
        for index, row in enumerate(summary.processes):
            state = row.state.value + (" (drained here)" if row.drained and not drained else "")
            if drained and not row.drained:
                state += " [yellow](drain not finished yet)[/yellow]"
            table.add_row(
                escape(summary.identifier) if index == 0 else "",
                flag if index == 0 else "",
                escape(row.process),
                state,
                str(row.players),
            )
    return table
