"""``python -m sonora_cog deploy …``: deploy tags from a shell step, a ``preStop`` hook or a systemd unit.

``prepare`` snapshots every guild with a live record under a tag; ``list`` shows the tags; ``status``
each guild's step in a tag; ``rollback`` asks the running bot processes to restore a tag in paced
batches (through a request record in the store), or, with no bot running, rewrites the live records from
it. Exit 0 only when every guild succeeded; 1 when any failed (the table says which and why).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from collections.abc import Sequence
from typing import Any

from rich.table import Table

from . import deploy
from .deploy import GuildDeployStatus, Step
from .manager import SessionManager

__all__ = ("add_deploy_parser", "run_deploy")

#: Seconds a rollback may take per batch beyond its pause before ``--wait`` gives up on it (a restore joins
#: voice, loads, verifies: a few seconds; paced joins may add more).
PER_BATCH_ALLOWANCE = 60.0


def add_deploy_parser(commands: Any, common: argparse.ArgumentParser, non_negative: Any) -> None:
    """Add ``deploy`` and its commands to the CLI's parser."""
    parser = commands.add_parser("deploy", help="deploy tags: prepare, list, status, rollback")
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("prepare", parents=[common], help="a pre-deploy snapshot of every guild, under a tag")
    p.add_argument("--tag", help="the tag (default: UTC time + $SONORA_DEPLOY_TAG or git describe)")
    sub.add_parser("list", parents=[common], help="deploy tags, newest first")
    p = sub.add_parser("status", parents=[common], help="each guild's step in a tag")
    p.add_argument("tag")
    p = sub.add_parser("rollback", parents=[common], help="restore every guild from a tag's snapshots")
    p.add_argument("tag")
    p.add_argument("--guild", type=int, action="append", metavar="ID", help="only this guild (repeatable)")
    p.add_argument("--batch-size", type=int, metavar="N", help="guilds at a time (default: deploy.batch_size)")
    p.add_argument("--pause", type=non_negative(float), metavar="S", help="seconds between batches "
                   "(default: deploy.pause)")
    p.add_argument("--wait", action="store_true", help="wait until every guild is rolled back; show progress")
    p.add_argument("--timeout", type=non_negative(float), metavar="S",
                   help="with --wait: give up after S seconds (default: from the batches)")
    p.add_argument("--offline", action="store_true",
                   help="rewrite the live records even if a bot seems to run (it must be stopped)")


async def run_deploy(manager: SessionManager, args: argparse.Namespace) -> int:
    """Run one ``deploy`` command; return the exit code."""
    from .cli import EXIT_BAD_RECORDS, EXIT_OK

    if args.action == "prepare":
        tag = deploy.validate_tag(args.tag) if args.tag else deploy.default_tag()
        with _progress_bar(args, "snapshotting") as progress:
            results = await deploy.prepare(manager, tag, progress=progress)
        _report(args, tag, results, f"deploy tag {tag}: {_counts(results)}")
        return EXIT_BAD_RECORDS if any(r.step.failed for r in results) else EXIT_OK
    if args.action == "list":
        return await _list(manager, args)
    if args.action == "status":
        results = await deploy.status(manager, deploy.validate_tag(args.tag))
        _report(args, args.tag, results, f"deploy tag {args.tag}: {_counts(results) or 'no guilds'}")
        return EXIT_BAD_RECORDS if not results or any(r.step.failed for r in results) else EXIT_OK
    return await _rollback(manager, args)


async def _list(manager: SessionManager, args: argparse.Namespace) -> int:
    from .cli import EXIT_OK, _age, _out, _print_json

    found = await deploy.tags(manager)
    if args.json:
        _print_json([{"tag": t.tag, "created_at": t.created_at, "guilds": t.guilds, "bytes": t.bytes,
                      "kept": t.kept} for t in found])
        return EXIT_OK
    table = Table("tag", "created", "guilds", "size", "kept by retention")
    now = time.time()
    for t in found:
        table.add_row(t.tag, _age(t.created_at, now), str(t.guilds), f"{t.bytes:,} B", "yes" if t.kept else "no")
    _out.print(table if found else "no deploy tags (python -m sonora_cog deploy prepare makes one)")
    return EXIT_OK


async def _rollback(manager: SessionManager, args: argparse.Namespace) -> int:
    from .cli import EXIT_BAD_RECORDS, EXIT_OK, _out

    tag = deploy.validate_tag(args.tag)
    settings = manager.settings.deploy
    batch_size = max(1, args.batch_size or settings.batch_size)
    pause = settings.pause if args.pause is None else args.pause
    snapshots = await deploy.tag_snapshots(manager, tag)
    wanted = sorted(snapshots) if not args.guild else list(dict.fromkeys(args.guild))
    missing = [GuildDeployStatus(g, Step.rollback_failed, f"no pre-deploy snapshot tagged {tag!r}", at=time.time(),
                                 by="cli") for g in wanted if g not in snapshots]
    targets = [g for g in wanted if g in snapshots]
    if not wanted:
        _out.print(f"deploy tag {tag} has no snapshots (deploy list shows the tags)")
        return EXIT_BAD_RECORDS
    await deploy.record(manager, tag, missing)
    processes = [] if args.offline else await deploy.running_processes(manager)
    if not processes:
        _out.print(f"no bot process runs on this store: rewriting {len(targets)} live record(s) from {tag}; "
                   "the next start restores them")
        with _progress_bar(args, "rewriting") as progress:
            results = await deploy.rollback_offline(manager, tag, targets, progress=progress)
    else:
        request = deploy.new_request(tag, targets, batch_size, pause)
        await deploy.record(manager, tag, [GuildDeployStatus(g, Step.rollback_requested, at=request.at, by="cli",
                                                             request=request.id) for g in targets])
        await deploy.write_request(manager, request)
        batches = math.ceil(len(targets) / batch_size) if targets else 0
        _out.print(f"asked {', '.join(processes)} to roll {len(targets)} guild(s) back to {tag}: {batch_size} at a "
                   f"time, {pause:g}s apart ({batches} batch(es)); request {request.id}")
        if not args.wait:
            _out.print(f"follow it with: python -m sonora_cog deploy status {tag}")
            return EXIT_OK
        timeout = args.timeout if args.timeout is not None else batches * (pause + PER_BATCH_ALLOWANCE) + 30
        results = await _wait(manager, args, request, targets, timeout)
        if all(r.step is Step.rolled_back for r in results):
            await deploy.withdraw(manager)
    results = missing + results
    _report(args, tag, results, f"rollback to {tag}: {_counts(results)}")
    return EXIT_OK if results and all(r.step is Step.rolled_back for r in results) else EXIT_BAD_RECORDS


async def _wait(manager: SessionManager, args: argparse.Namespace, request: deploy.DeployRequest,
                targets: Sequence[int], limit: float) -> list[GuildDeployStatus]:
    """Poll the journal until every target has a final step of this request, or ``limit`` seconds."""
    deadline = time.monotonic() + limit
    final: dict[int, GuildDeployStatus] = {}
    with _progress_bar(args, "rolling back") as progress:
        while True:
            for entry in await deploy.status(manager, request.tag):
                if entry.request == request.id and entry.step in (Step.rolled_back, Step.rollback_failed):
                    final[entry.guild_id] = entry
            done = sum(g in final for g in targets)
            if progress is not None:
                progress(done, len(targets))
            if done == len(targets) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    return [final.get(g) or GuildDeployStatus(g, Step.rollback_failed, f"no process finished it within {limit:g}s "
                                              "(is the bot that owns it running?)", at=time.time(), by="cli",
                                              request=request.id)
            for g in targets]


class _progress_bar:  # noqa: N801 (used as a context manager, like a function)
    """A rich progress bar on a terminal (``None`` with ``--json``), fed by ``progress(done, total)``."""

    def __init__(self, args: argparse.Namespace, what: str) -> None:
        from .cli import _progress

        self._bar = None if args.json else _progress(True)
        self._what = what
        self._task: Any = None

    def __enter__(self) -> Any:
        if self._bar is None:
            return None
        self._bar.__enter__()

        def update(done: int, total: int) -> None:
            if self._task is None:
                self._task = self._bar.add_task(self._what, total=total)  # type: ignore[union-attr]
            self._bar.update(self._task, completed=done, total=total)  # type: ignore[union-attr]

        return update

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


def _counts(results: Sequence[GuildDeployStatus]) -> str:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.step.value] = counts.get(r.step.value, 0) + 1
    return ", ".join(f"{n} {step}" for step, n in sorted(counts.items()))


def _report(args: argparse.Namespace, tag: str, results: Sequence[GuildDeployStatus], headline: str) -> None:
    from .cli import _age, _out, _print_json

    if args.json:
        _print_json({"tag": tag, "guilds": [r.to_json() for r in results]})
        return
    now = time.time()
    table = Table("guild", "step", "when", "snapshot", "by", "why")
    for r in results:
        style = "red" if r.step.failed else ""
        table.add_row(str(r.guild_id), f"[{style}]{r.step.value}[/{style}]" if style else r.step.value,
                      _age(r.at, now) if r.at else "-", r.snapshot_id or "-", r.by or "-", r.why or "")
    if results:
        _out.print(table)
    _out.print(headline)
