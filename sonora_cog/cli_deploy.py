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
import os
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from rich.table import Column, Table

from . import deploy
from .deploy import GuildDeployStatus, Step
from .errors import ConfigError, InvalidIdentifier
from .manager import SessionManager

__all__ = ("add_deploy_parser", "run_deploy")

#: Seconds a rollback may take per batch beyond its pause before ``--wait`` gives up on it (a restore joins
#: voice, loads, verifies: a few seconds; paced joins may add more).
PER_BATCH_ALLOWANCE = 60.0


def _tag(text: str) -> str:
    """An argparse type: a deploy tag (a bad one is a usage error, exit 2)."""
    try:
        return deploy.validate_tag(text)
    except InvalidIdentifier as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_deploy_parser(commands: Any, common: argparse.ArgumentParser, at_least: Any) -> None:
    """Add ``deploy`` and its commands to the CLI's parser."""
    parser = commands.add_parser("deploy", help="deploy tags: prepare, list, status, rollback")
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("prepare", parents=[common], help="a pre-deploy snapshot of every guild, under a tag")
    p.add_argument("--tag", type=_tag, help="the tag (default: UTC time + $SONORA_DEPLOY_TAG or git describe)")
    sub.add_parser("list", parents=[common], help="deploy tags, newest first")
    p = sub.add_parser("status", parents=[common], help="each guild's step in a tag")
    p.add_argument("tag", type=_tag)
    p = sub.add_parser("rollback", parents=[common], help="restore every guild from a tag's snapshots")
    p.add_argument("tag", type=_tag)
    p.add_argument("--guild", type=int, action="append", metavar="ID", help="only this guild (repeatable)")
    p.add_argument(
        "--batch-size", type=at_least(int, 1), metavar="N", help="guilds at a time (default: deploy.batch_size)"
    )
    p.add_argument("--pause", type=at_least(float), metavar="S", help="seconds between batches (default: deploy.pause)")
    p.add_argument("--wait", action="store_true", help="wait until every guild is rolled back; show progress")
    p.add_argument(
        "--timeout",
        type=at_least(float),
        metavar="S",
        help="with --wait: give up after S seconds (default: from the batches)",
    )
    p.add_argument("--offline", action="store_true", help="rewrite the live records (only while no bot runs)")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace a rollback still in progress; with --offline, "
        "rewrite even though a bot announced itself (it must really be stopped)",
    )


async def run_deploy(manager: SessionManager, args: argparse.Namespace) -> int:
    """Run one ``deploy`` command; return the exit code."""
    from .cli import EXIT_BAD_RECORDS, EXIT_OK, _err

    storage = manager.settings.storage
    if storage.backend == "filesystem" and not await asyncio.to_thread(os.path.isdir, storage.path):
        raise ConfigError(f"there is no store at {storage.path} (check --store, --config or storage.path)")
    if args.action == "prepare":
        tag = args.tag or deploy.default_tag()
        with _progress_bar(args, "snapshotting") as progress:
            results = await deploy.prepare(manager, tag, progress=progress)
        if not results:
            _err.print(
                f"no guild has a live record in {_where(manager)}: nothing to snapshot (nothing plays, or "
                "this is not the bot's store)"
            )
        _report(args, tag, results, f"deploy tag {tag}: {_counts(results)}")
        return EXIT_BAD_RECORDS if any(r.step.failed for r in results) else EXIT_OK
    if args.action == "list":
        return await _list(manager, args)
    if args.action == "status":
        results = await deploy.status(manager, args.tag)
        _report(args, args.tag, results, f"deploy tag {args.tag}: {_counts(results) or 'no guilds'}")
        return EXIT_BAD_RECORDS if not results or any(r.step.failed for r in results) else EXIT_OK
    return await _rollback(manager, args)


async def _list(manager: SessionManager, args: argparse.Namespace) -> int:
    from .cli import EXIT_OK, _age, _out, _print_json

    found = await deploy.tags(manager)
    if args.json:
        _print_json(
            [
                {"tag": t.tag, "created_at": t.created_at, "guilds": t.guilds, "bytes": t.bytes, "kept": t.kept}
                for t in found
            ]
        )
        return EXIT_OK
    table = Table("tag", "last prepared", "guilds", "size", "kept by retention")
    now = time.time()
    for t in found:
        table.add_row(t.tag, _age(t.created_at, now), str(t.guilds), f"{t.bytes:,} B", "yes" if t.kept else "no")
    _out.print(table if found else "no deploy tags (python -m sonora_cog deploy prepare makes one)")
    return EXIT_OK


async def _rollback(manager: SessionManager, args: argparse.Namespace) -> int:
    from .cli import EXIT_BAD_RECORDS, EXIT_OK, _err, _out, _print_json

    say = _err if args.json else _out  # with --json, stdout holds the JSON only

    def refuse(message: str) -> int:
        if args.json:
            _print_json({"error": message})
        else:
            _out.print(message)
        return EXIT_BAD_RECORDS

    tag = args.tag
    settings = manager.settings.deploy
    batch_size = args.batch_size or settings.batch_size
    pause = settings.pause if args.pause is None else args.pause
    snapshots = await deploy.tag_snapshots(manager, tag)
    wanted = sorted(snapshots) if not args.guild else list(dict.fromkeys(args.guild))
    missing = [
        GuildDeployStatus(g, Step.rollback_failed, f"no pre-deploy snapshot tagged {tag!r}", at=time.time(), by="cli")
        for g in wanted
        if g not in snapshots
    ]
    targets = [g for g in wanted if g in snapshots]
    if not wanted:
        return refuse(f"deploy tag {tag} has no snapshots (deploy list shows the tags)")
    processes = await deploy.running_processes(manager)
    if args.offline and processes and not args.force:
        return refuse(
            f"refused: {', '.join(processes)} runs on this store; stop it first (or drop --offline to roll "
            "back through it); a rewrite under a running bot is overwritten by its next write"
        )
    pending = await deploy.read_request(manager) if processes and not args.offline else None
    fresh = pending is not None and time.time() - pending.at < settings.request_max_age
    if pending is not None and fresh and not args.force and await deploy.unfinished(manager, pending):
        return refuse(
            f"refused: a rollback to {pending.tag} (request {pending.id}, {time.time() - pending.at:.0f}s "
            f"ago) is still in progress; follow it with deploy status {pending.tag}, or pass --force "
            "(the running one then stops before its next batch)"
        )
    if args.offline or not processes:
        why = (
            f"--offline --force although {', '.join(processes)} runs (it overwrites these at its next write)"
            if processes
            else "no bot process runs on this store"
        )
        say.print(f"{why}: rewriting {len(targets)} live record(s) from {tag}; the next start restores them")
        with _progress_bar(args, "rewriting") as progress:
            results = await deploy.rollback_offline(manager, tag, targets, progress=progress)
    else:
        request = deploy.new_request(tag, targets, batch_size, pause)
        await deploy.record(
            manager,
            tag,
            [
                GuildDeployStatus(g, Step.rollback_requested, at=request.at, by="cli", request=request.id)
                for g in targets
            ],
        )
        await deploy.write_request(manager, request)
        batches = math.ceil(len(targets) / batch_size) if targets else 0
        say.print(
            f"asked {', '.join(processes)} to roll {len(targets)} guild(s) back to {tag}: {batch_size} at a "
            f"time, {pause:g}s apart ({batches} batch(es)); request {request.id}"
        )
        if not args.wait:
            if args.json:
                _print_json(
                    {"tag": tag, "request": request.id, "guilds": [str(g) for g in targets], "processes": processes}
                )
            else:
                _out.print(f"follow it with: python -m sonora_cog deploy status {tag}")
            return EXIT_OK
        timeout = args.timeout if args.timeout is not None else batches * (pause + PER_BATCH_ALLOWANCE) + 30
        results = await _wait(manager, args, request, targets, timeout)
        # Done, or given up: a running process stops before its next batch, and none that starts later acts on it.
        if await deploy.withdraw(manager) and any(r.step is not Step.rolled_back for r in results):
            say.print(
                "the request was withdrawn: a process still rolling back stops before its next batch; "
                "guilds it is restoring now may still finish (deploy status shows them)"
            )
    results = missing + results
    _report(args, tag, results, f"rollback to {tag}: {_counts(results)}")
    return EXIT_OK if results and all(r.step is Step.rolled_back for r in results) else EXIT_BAD_RECORDS


async def _wait(
    manager: SessionManager,
    args: argparse.Namespace,
    request: deploy.DeployRequest,
    targets: Sequence[int],
    limit: float,
) -> list[GuildDeployStatus]:
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
    return [
        final.get(g)
        or GuildDeployStatus(
            g,
            Step.rollback_failed,
            f"no process finished it within {limit:g}s (--timeout; or is the bot that owns it running?)",
            at=time.time(),
            by="cli",
            request=request.id,
        )
        for g in targets
    ]


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

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)


def _where(manager: SessionManager) -> str:
    storage = manager.settings.storage
    return storage.path if storage.backend == "filesystem" else f"Redis prefix {storage.redis_prefix!r}"


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
    table = Table("step", "when", "snapshot", "by", "why")
    table.columns.insert(0, Column("guild", no_wrap=True, min_width=19))  # ids are never cut
    for r in results:
        style = "red" if r.step.failed else ""
        table.add_row(
            str(r.guild_id),
            f"[{style}]{r.step.value}[/{style}]" if style else r.step.value,
            _age(r.at, now) if r.at else "-",
            r.snapshot_id or "-",
            r.by or "-",
            r.why or "",
        )
    if results:
        _out.print(table)
    _out.print(headline)
