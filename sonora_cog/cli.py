"""Operator CLI: ``python -m sonora_cog snapshots|deploy|nodes <command>`` over a store, without starting a bot.

Tables for people, ``--json`` for scripts, a progress bar on long runs. Exit codes:

====  =====================================================================
0     success
1     ``validate`` found bad records, ``rekey`` could not rewrite some, ``deploy`` failed for a guild, or
      ``nodes drain --wait`` ended with players left on the node
2     usage error (unknown command, bad option)
3     no such snapshot
4     configuration error (bad config file, missing key variable, missing extra)
5     a record was refused or unreadable (corrupt, wrong key, duplicate import)
====  =====================================================================
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import math
import os
import stat
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ._version import __version__
from .cli_deploy import add_deploy_parser, run_deploy
from .cli_nodes import add_nodes_parser, run_nodes
from .config import Settings, load_settings
from .deploy import prune_journals
from .errors import ConfigError, RecordChanged, SnapshotNotFound, SnapshotTooLarge, SonoraError
from .manager import SessionManager
from .meta import SnapshotMeta
from .restore_history import RestoreHistory, read_history
from .restore_history import prune_journals as prune_restore_journals
from .store.base import RecordRef

__all__ = ("main",)

EXIT_OK, EXIT_BAD_RECORDS, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_CONFIG, EXIT_REFUSED = 0, 1, 2, 3, 4, 5

#: Output to a pipe or a file is not cut to 80 columns (a table's ids must stay whole to be copied); a
#: terminal, or ``COLUMNS``, gives the width as usual.
_PIPED_WIDTH = 200
_out = Console(highlight=False, width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else _PIPED_WIDTH)
_err = Console(stderr=True, highlight=False, soft_wrap=True)


def _age(created_at: float, now: float) -> str:
    seconds = max(0, int(now - created_at))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _meta_json(meta: SnapshotMeta) -> dict[str, Any]:
    return {**meta.to_json(), "size": meta.size}


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=_err,
        disable=not enabled,
        transient=True,
    )


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


async def _find(manager: SessionManager, snapshot_id: str, guild_id: int | None) -> SnapshotMeta:
    for meta in await manager.list_snapshots(guild_id):
        if meta.id == snapshot_id:
            return meta
    raise SnapshotNotFound(f"no snapshot {snapshot_id}" + (f" in guild {guild_id}" if guild_id else ""))


# -- commands -------------------------------------------------------------------------------------------


async def cmd_list(manager: SessionManager, args: argparse.Namespace) -> int:
    metas = await manager.list_snapshots(args.guild)
    if args.json:
        _print_json([_meta_json(m) for m in metas])
        return EXIT_OK
    if not metas:
        _out.print("no snapshots" + (f" for guild {args.guild}" if args.guild else ""))
        return EXIT_OK
    now = time.time()
    table = Table()
    # The ids are what a reader copies into `snapshots show`: never shortened, whatever the terminal's width.
    table.add_column("id", no_wrap=True, min_width=max(len(m.id) for m in metas))
    table.add_column("guild", no_wrap=True, min_width=max(len(str(m.guild_id)) for m in metas))
    for name in ("age", "kind", "label", "tracks", "current", "size"):
        table.add_column(name)
    for m in metas:
        table.add_row(
            m.id,
            str(m.guild_id),
            _age(m.created_at, now),
            m.kind.value,
            m.label or "",
            str(m.track_count),
            m.current_title or "",
            f"{m.size:,} B",
        )
    _out.print(table)
    return EXIT_OK


async def cmd_show(manager: SessionManager, args: argparse.Namespace) -> int:
    meta = await _find(manager, args.id, args.guild)
    state = await manager.load_snapshot(meta.id, meta.guild_id)
    if args.json:
        _print_json(state.to_json())
        return EXIT_OK
    q = state.queue
    rows = [
        ("id", meta.id),
        ("guild", str(state.guild_id)),
        ("channel", str(state.channel_id or "-")),
        ("created", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(state.created_at))),
        ("kind / label", f"{state.kind.value} / {state.label or '-'}"),
        ("current", f"{q.current.title} @ {state.player.position / 1000:.1f}s" if q.current else "-"),
        ("paused / volume", f"{state.player.paused} / {state.player.volume}"),
        ("queue / history", f"{len(q.upcoming)} upcoming, {len(q.history)} played"),
        ("loop mode", q.loop_mode.value),
        ("filters", ", ".join(state.filters.active_filters) or "-"),
        ("autoplay", f"{state.autoplay.mode.value} ({len(state.autoplay.auto_queue)} queued)"),
        ("size", f"{meta.size:,} B"),
    ]
    table = Table(show_header=False)
    for key, value in rows:
        table.add_row(key, value)
    _out.print(table)
    for i, track in enumerate(q.upcoming[:10], 1):
        _out.print(f"  {i:>3}. {track.title}")
    if len(q.upcoming) > 10:
        _out.print(f"  … and {len(q.upcoming) - 10} more")
    return EXIT_OK


async def cmd_validate(manager: SessionManager, args: argparse.Namespace) -> int:
    with _progress(not args.json) as progress:
        progress.add_task("validating", total=None)
        results = await manager.validate_all()
    bad = [r for r in results if not r.ok]
    unsafe = manager.store.unsafe_paths()
    if args.json:
        _print_json(
            {
                "checked": len(results),
                "bad": [
                    {
                        "guild_id": str(r.guild_id),
                        "snapshot_id": r.snapshot_id or "live",
                        "error": r.error,
                        "error_type": r.error_type,
                    }
                    for r in bad
                ],
                "unsafe": [{"path": path, "problem": problem} for path, problem in sorted(unsafe.items())],
            }
        )
    else:
        for r in bad:
            where = f"guild {r.guild_id} {'live record' if r.snapshot_id is None else 'snapshot ' + r.snapshot_id}"
            _out.print(f"[red]BAD[/red] {where}: {r.error_type}: {r.error}")
        for path, problem in sorted(unsafe.items()):
            _out.print(f"[yellow]UNSAFE[/yellow] {path}: {problem}")
        _out.print(f"{len(results)} records checked, {len(bad)} bad, {len(unsafe)} unsafe or refused path(s)")
    return EXIT_BAD_RECORDS if bad or unsafe else EXIT_OK


async def cmd_prune(manager: SessionManager, args: argparse.Namespace) -> int:
    # An explicit 0 is honoured (0 per guild deletes every snapshot; 0 days deletes all but this instant's).
    snapshots = manager.settings.snapshots
    per_guild = snapshots.max_snapshots_per_guild if args.max_per_guild is None else args.max_per_guild
    days = snapshots.max_age_days if args.max_age_days is None else args.max_age_days
    removed = await manager.store.prune(
        max_per_guild=per_guild, max_age_days=days, keep_deploy_tags=manager.settings.deploy.keep_tags
    )
    journals = await prune_journals(manager, days)
    history_days = await prune_restore_journals(manager, days)
    if args.json:
        _print_json(
            {
                "removed": [_meta_json(m) for m in removed],
                "deploy_journals_removed": journals,
                "restore_history_days_removed": history_days,
            }
        )
    else:
        for m in removed:
            _out.print(f"removed {m.id} (guild {m.guild_id}, {m.kind.value})")
        kept = manager.settings.deploy.keep_tags
        _out.print(
            f"{len(removed)} snapshots removed (keep {per_guild} per guild, none older than {days:g} days; "
            f"the pre-deploy snapshots of the newest {kept} deploy tags are kept)"
        )
        if journals:
            _out.print(f"{journals} journals of old deploy tags removed")
        if history_days:
            _out.print(f"the restore history of {history_days} old days removed")
    return EXIT_OK


async def cmd_export(manager: SessionManager, args: argparse.Namespace) -> int:
    meta = await _find(manager, args.id, args.guild)
    state = await manager.load_snapshot(meta.id, meta.guild_id)
    await asyncio.to_thread(Path(args.out).write_bytes, manager.export_json(state))
    _out.print(f"exported {meta.id} (guild {meta.guild_id}, {state.track_count} tracks) to {args.out}")
    return EXIT_OK


def _read_capped(path: Path, cap: int) -> bytes:
    """The file's bytes, its size checked before anything is read (and at most ``cap + 1`` bytes read).
    Only a regular file is read: a FIFO or a device is refused without blocking on it."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as stream:
        info = os.fstat(stream.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a FIFO, a device?); not read")
        size = info.st_size
        if size > cap:
            raise SnapshotTooLarge(f"{path} is {size} bytes, over the import cap of {cap} bytes; not read")
        data = stream.read(cap + 1)
    if len(data) > cap:
        raise SnapshotTooLarge(f"{path} grew over the import cap of {cap} bytes while it was read")
    return data


async def cmd_import(manager: SessionManager, args: argparse.Namespace) -> int:
    try:
        data = await asyncio.to_thread(_read_capped, Path(args.file), manager.settings.storage.max_payload_bytes)
    except OSError as exc:
        _err.print(f"error: cannot read {args.file}: {exc.strerror}")
        return EXIT_USAGE
    state = manager.parse_export(data)
    meta = await manager.import_snapshot(state, guild_id=args.guild)
    if args.json:
        _print_json(_meta_json(meta))
    else:
        _out.print(f"imported as snapshot {meta.id} of guild {meta.guild_id} ({meta.track_count} tracks)")
    return EXIT_OK


async def cmd_rekey(manager: SessionManager, args: argparse.Namespace) -> int:
    if manager.codec.keyring is None or manager.codec.keyring.current_id is None or not manager.codec.encrypt:
        raise ConfigError(
            "rekey: set encryption.enabled = true and put the NEW key in "
            f"{manager.settings.encryption.key_env} (old keys in {manager.settings.encryption.old_keys_env})"
        )
    refs = [ref async for ref in manager.store.scan()]
    outcomes: Counter[str] = Counter()
    with _progress(not args.json) as progress:
        task = progress.add_task("re-encrypting", total=len(refs))
        for ref in refs:
            outcomes[await _rekey_one(manager, ref)] += 1
            progress.advance(task)
    failed, changing = outcomes["failed"], outcomes["changing"]
    summary = {
        "records": len(refs),
        "rekeyed": outcomes["rekeyed"],
        "skipped": outcomes["skipped"],
        "kept_changing": changing,
        "failed": failed,
        "key_id": manager.codec.keyring.current_id,
    }
    if args.json:
        _print_json(summary)
    else:
        _out.print(
            f"{summary['rekeyed']} of {len(refs)} records now use key {summary['key_id']}; "
            f"{summary['skipped']} skipped (removed meanwhile); {changing} kept changing (run rekey again); "
            f"{failed} failed"
        )
    return EXIT_BAD_RECORDS if failed or changing else EXIT_OK


async def _rekey_one(manager: SessionManager, ref: RecordRef) -> str:
    """Re-encrypt one record with compare-and-replace: ``rekeyed``, ``skipped`` (removed meanwhile),
    ``changing`` (rewritten by another writer each of three times it was read) or ``failed`` (said on stderr)."""
    for _attempt in range(3):
        try:
            data = await manager.read_ref(ref)
            if data is None:
                return "skipped"
            await manager.store.replace(ref, await asyncio.to_thread(manager.codec.reencode, data), expected=data)
        except RecordChanged:
            continue  # the bot wrote it meanwhile: re-encrypt what is there now
        except SnapshotNotFound:
            return "skipped"  # removed meanwhile (retention, the session ended): nothing to re-encrypt
        except SonoraError as exc:
            _err.print(f"[red]could not rekey[/red] {ref.location}: {type(exc).__name__}: {exc}")
            return "failed"
        return "rekeyed"
    _err.print(
        f"[yellow]not rekeyed[/yellow] {ref.location}: it kept changing while being re-encrypted (a writer "
        "still on the old key?); run rekey again"
    )
    return "changing"


async def cmd_stats(manager: SessionManager, args: argparse.Namespace) -> int:
    a = await manager.analyze()
    history = await read_history(manager, failures=args.failures)
    if args.json:
        _print_json(
            {
                "total_snapshots": a.total_snapshots,
                "live_records": a.live_records,
                "per_guild": {str(k): v for k, v in a.per_guild.items()},
                "by_kind": dict(a.by_kind),
                "total_bytes": a.total_bytes,
                "average_size": a.average_size,
                "oldest": a.oldest,
                "newest": a.newest,
                "restores": history.to_json(),
            }
        )
        return EXIT_OK
    now = time.time()
    table = Table(show_header=False)
    table.add_row("snapshots", str(a.total_snapshots))
    table.add_row("live records", str(a.live_records))
    table.add_row("guilds", str(len(a.per_guild)))
    table.add_row("by kind", ", ".join(f"{k}: {v}" for k, v in sorted(a.by_kind.items())) or "-")
    table.add_row("total size", f"{a.total_bytes:,} B")
    table.add_row("average size", f"{a.average_size:,.0f} B")
    table.add_row("oldest", _age(a.oldest, now) if a.oldest else "-")
    table.add_row("newest", _age(a.newest, now) if a.newest else "-")
    _add_restore_rows(table, history, now)
    _out.print(table)
    if history.failures:
        failures = Table(title=f"last {len(history.failures)} failed restores")
        for column in ("when", "guild", "path", "outcome", "reason"):
            failures.add_column(column)
        for f in history.failures:
            failures.add_row(
                _age(f.at, now), str(f.guild_id), f.path, f.outcome.replace("_", " "), f.detail or f.reason
            )
        _out.print(failures)
    for name, why in sorted(history.unreadable.items()):
        _err.print(f"[yellow]restore history {name} not read[/yellow]: {why}")
    return EXIT_OK


def _add_restore_rows(table: Table, history: RestoreHistory, now: float) -> None:
    """The restore history's rows of ``snapshots stats`` (from the store's ``restores-*`` journals)."""
    if not history.total:
        table.add_row("restores", "none recorded")
        return
    since = _age(history.first, now) if history.first is not None else "?"
    outcomes = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in history.by_outcome().items() if v)
    table.add_row("restores", f"{history.total} since {since} ({outcomes})")
    for path, counts in history.by_path().items():
        table.add_row(f"  {path}", ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counts.items()))
    for outcome, title in (("skipped", "skip reasons"), ("failed", "failure reasons"), ("rolled_back", "rolled back")):
        reasons = history.by_reason(outcome)
        if reasons:
            table.add_row(title, ", ".join(f"{k}: {v}" for k, v in reasons.items()))


async def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from .migrate import describe_location, migrate_locations

    with _progress(not args.json) as progress:
        task = progress.add_task(f"copying to {describe_location(args.to)}", total=None)
        report = await migrate_locations(
            args.source,
            args.to,
            settings,
            source_prefix=args.from_prefix,
            target_prefix=args.to_prefix,
            overwrite_live=args.overwrite_live,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    if args.json:
        _print_json(report.to_json())
    else:
        for name in report.conflicts:
            _out.print(f"[yellow]conflict[/yellow] {name}: the target holds other bytes (left as they were)")
        for line in report.failed:
            _out.print(f"[red]failed[/red] {line}")
        for name in report.missing:
            _out.print(f"[red]missing after the copy[/red] {name}")
        _out.print(
            f"{report.total} records in {report.source} ({report.live_records} live, {report.snapshots} snapshots): "
            f"{report.copied} copied, {report.already_present} already in {report.target}, "
            f"{len(report.conflicts)} conflicts, {len(report.failed)} failed; "
            f"count check {'passed' if report.ok else 'FAILED'}"
        )
    return EXIT_OK if report.ok else EXIT_BAD_RECORDS


def cmd_keygen(args: argparse.Namespace) -> int:
    from .codec import Keyring

    sys.stdout.write(Keyring.generate_key_text() + "\n")
    return EXIT_OK


_SNAPSHOT_COMMANDS = {
    "list": cmd_list,
    "show": cmd_show,
    "validate": cmd_validate,
    "prune": cmd_prune,
    "export": cmd_export,
    "import": cmd_import,
    "rekey": cmd_rekey,
    "stats": cmd_stats,
}


def _at_least(kind: type[int] | type[float], low: int = 0) -> Any:
    """An argparse type: a number of ``kind`` that is ``low`` or more (0 is a real value, not "unset")."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {low} or more, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="python -m sonora_cog",
        description="sonora_cog: persistence for wavelink music bots. Operator tools over the snapshot store.",
    )
    parser.add_argument("--version", action="version", version=f"sonora-cog {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{snapshots,deploy,nodes,keygen,demo}")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", help="config file (default: $SONORA_CONFIG, ./sonora.toml)")
    common.add_argument("--store", metavar="PATH", help="filesystem store directory (default: storage.path)")
    common.add_argument("--json", action="store_true", help="machine-readable output")

    snapshots = commands.add_parser("snapshots", help="list, inspect, validate, prune, export/import, rekey")
    sub = snapshots.add_subparsers(dest="action", required=True)
    p = sub.add_parser("list", parents=[common], help="snapshots, newest first")
    p.add_argument("--guild", type=int, metavar="ID")
    p = sub.add_parser("show", parents=[common], help="one snapshot in detail")
    p.add_argument("id")
    p.add_argument("--guild", type=int, metavar="ID")
    sub.add_parser("validate", parents=[common], help="check every record; changes nothing")
    p = sub.add_parser("prune", parents=[common], help="apply retention now")
    p.add_argument("--max-per-guild", type=_at_least(int), metavar="N")
    p.add_argument("--max-age-days", type=_at_least(float), metavar="DAYS")
    p = sub.add_parser("export", parents=[common], help="write a snapshot as plain schema-v1 JSON")
    p.add_argument("id")
    p.add_argument("--out", required=True, metavar="FILE.json")
    p.add_argument("--guild", type=int, metavar="ID")
    p = sub.add_parser("import", parents=[common], help="validate and store an exported JSON file")
    p.add_argument("file", metavar="FILE.json")
    p.add_argument("--guild", type=int, metavar="ID", help="refuse the file unless it belongs to this guild")
    sub.add_parser("rekey", parents=[common], help="re-encrypt every record with the current key")
    p = sub.add_parser("stats", parents=[common], help="totals, sizes, oldest and newest; restores by outcome and path")
    p.add_argument(
        "--failures",
        type=_at_least(int),
        default=5,
        metavar="N",
        help="show the last N failed restores with their reason (default 5)",
    )
    p = sub.add_parser("migrate", help="copy every record to another store (filesystem <-> Redis), check counts")
    p.add_argument("--config", metavar="FILE", help="config file (Redis password variable, prefix, timeouts)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--from", dest="source", required=True, metavar="PATH|redis://...", help="where records are now")
    p.add_argument("--to", required=True, metavar="PATH|redis://...", help="where to copy them")
    p.add_argument("--from-prefix", metavar="PREFIX", help="Redis key prefix of --from (default: storage.redis_prefix)")
    p.add_argument("--to-prefix", metavar="PREFIX", help="Redis key prefix of --to (default: storage.redis_prefix)")
    p.add_argument("--overwrite-live", action="store_true", help="replace live records the target already has")

    add_deploy_parser(commands, common, _at_least)
    add_nodes_parser(commands, common, _at_least)
    commands.add_parser("keygen", help="print a new random encryption key (put it in the key variable)")
    demo = commands.add_parser("demo", help="crash-and-recover demo against the bundled fakes")
    demo.add_argument("--guilds", type=int, default=3)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    if args.store:
        settings = replace(settings, storage=replace(settings.storage, backend="filesystem", path=args.store))
    return settings


async def _run_snapshots(args: argparse.Namespace) -> int:
    if args.action == "migrate":
        return await cmd_migrate(load_settings(args.config), args)
    manager = SessionManager(_settings(args))
    try:
        if args.command == "deploy":
            return await run_deploy(manager, args)
        if args.command == "nodes":
            return await run_nodes(manager, args)
        return await _SNAPSHOT_COMMANDS[args.action](manager, args)
    finally:
        await manager.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m sonora_cog`` and the ``sonora-cog`` script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "keygen":
            return cmd_keygen(args)
        if args.command == "demo":
            from .demo import run_demo

            return asyncio.run(run_demo(guilds=args.guilds))
        return asyncio.run(_run_snapshots(args))
    except ConfigError as exc:
        _err.print(f"config error: {exc}")
        return EXIT_CONFIG
    except SnapshotNotFound as exc:
        _err.print(f"not found: {exc}")
        return EXIT_NOT_FOUND
    except SonoraError as exc:
        _err.print(f"refused: {type(exc).__name__}: {exc}")
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 130
