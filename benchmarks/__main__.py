"""``python -m benchmarks``: run the benchmark parts, print a table, write a JSON file of the results.

Parts: a (checkpoint vs floor), b (loop lag during it), c (incremental second cycle) run together;
d (restore of a 10,000-track queue), e (startup rehydration through the fakes), f (storage sizes),
g (shutdown of 1,000 and 10,000 players vs its durable floor and the stop grace periods).
See benchmarks/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

PARTS = ("a", "b", "c", "d", "e", "f", "g")
DEFAULT_OUT = Path(__file__).parent / "results" / "latest.json"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--guilds", type=int, default=None, help="guilds in the checkpoint (default 1000)")
    parser.add_argument("--tracks", type=int, default=None, help="tracks per guild in the checkpoint (default 200)")
    parser.add_argument("--restore-tracks", type=int, default=10_000, help="queue length for (d) (default 10000)")
    parser.add_argument("--rehydrate-guilds", type=int, default=None, help="guilds for (e) (default 100)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes (100 x 50 checkpoint, 20-guild rehydration, no default-pacing run)",
    )
    parser.add_argument(
        "--shutdown-players",
        default=None,
        help="comma-separated player counts for (g) (default 1000,10000; --quick: 200,1000)",
    )
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated parts to run (default all: a..g)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results file (default {DEFAULT_OUT})")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the stores are written (default: a fresh temp dir; its filesystem matters)",
    )
    parser.add_argument("--no-profile", action="store_true", help="skip profiling the checkpoint hot path")
    args = parser.parse_args(argv)
    args.parts = {p.strip() for p in args.only.split(",") if p.strip()}
    unknown = args.parts - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    args.guilds = args.guilds or (100 if args.quick else 1000)
    args.tracks = args.tracks or (50 if args.quick else 200)
    args.rehydrate_guilds = args.rehydrate_guilds or (20 if args.quick else 100)
    args.shutdown_players = tuple(
        int(n) for n in (args.shutdown_players or ("200,1000" if args.quick else "1000,10000")).split(",")
    )
    return args


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _fs_type(path: Path) -> str:
    try:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "unknown"
    best = ("", "unknown")
    resolved = str(path.resolve())
    for fields in mounts:
        if len(fields) > 2 and resolved.startswith(fields[1]) and len(fields[1]) > len(best[0]):
            best = (fields[1], fields[2])
    return best[1]


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _machine(workdir: Path) -> dict[str, Any]:
    commit = None
    with contextlib.suppress(OSError):
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                cwd=Path(__file__).parent,
                check=False,
            ).stdout.strip()
            or None
        )
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "workdir_filesystem": _fs_type(workdir),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
        if hasattr(os, "sysconf")
        else None,
        "packages": {
            n: _version(n)
            for n in ("sonora-cog", "wavelink", "discord.py", "orjson", "zstandard", "cryptography", "pyinstrument")
        },
        "git_commit": commit,
    }


async def _guarded(results: dict[str, Any], key: str, console: Console, coro: Any) -> None:
    """Run one part; a failure is recorded (and printed) and the other parts still run."""
    try:
        results[key] = await coro
    except Exception as exc:
        console.print(f"[red]{key} failed:[/red] {type(exc).__name__}: {exc}")
        results[key] = {"error": f"{type(exc).__name__}: {exc}"}


async def _run(args: argparse.Namespace, workdir: Path, console: Console) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if args.parts & {"a", "b", "c"}:
        from .checkpoint import run_checkpoint

        console.print(f"[bold]a/b/c[/bold] checkpoint of {args.guilds} guilds x {args.tracks} tracks ...")
        profile_dir = None if args.no_profile else args.out.parent
        await _guarded(
            results,
            "checkpoint",
            console,
            run_checkpoint(args.guilds, args.tracks, workdir / "checkpoint", profile_dir=profile_dir),
        )
        gc.collect()
    if "d" in args.parts:
        from .restore import run_restore

        console.print(f"[bold]d[/bold] restore of a {args.restore_tracks}-track queue through the fakes ...")
        await _guarded(results, "restore", console, run_restore(workdir / "restore", big=args.restore_tracks))
    if "e" in args.parts:
        from .rehydrate import run_rehydrate

        console.print(f"[bold]e[/bold] startup rehydration of {args.rehydrate_guilds} guilds through the fakes ...")
        await _guarded(
            results,
            "rehydrate",
            console,
            run_rehydrate(workdir / "rehydrate", args.rehydrate_guilds, default_run=not args.quick),
        )
    if "f" in args.parts:
        from .storage import run_storage

        console.print("[bold]f[/bold] storage sizes ...")
        await _guarded(results, "storage", console, run_storage())
    if "g" in args.parts:
        from .shutdown import run_shutdown

        console.print(f"[bold]g[/bold] shutdown of {', '.join(map(str, args.shutdown_players))} players ...")
        await _guarded(results, "shutdown", console, run_shutdown(workdir / "shutdown", args.shutdown_players))
    return results


def _yes(flag: bool | None) -> str:
    if flag is None:
        return ""
    return "[green]met[/green]" if flag else "[red]not met[/red]"


def _us(seconds: float, n: int) -> str:
    return f"{seconds / n * 1e6:,.0f} µs"


def _table(results: dict[str, Any]) -> Table:
    table = Table("part", "measure", "value", "vs floor / target", "", title="sonora_cog benchmarks")
    results = {k: v for k, v in results.items() if "error" not in v}
    ck = results.get("checkpoint")
    if ck:
        a = ck["a_checkpoint"]
        n = ck["guilds"]
        label = f"a. checkpoint {n} x {ck['tracks_per_guild']}"
        p, nf, fp, fd = a["product"], a["product_fsync_off"], a["floor_plain"], a["floor_durable"]
        table.add_row(
            label,
            "product (owner.checkpoint, durable)",
            f"{p['seconds']:.3f} s · {_us(p['seconds'], n)}/guild · {p['bytes'] / 1e6:.1f} MB",
            f"{a['ratio_product_vs_plain_floor']}x plain · {a['ratio_product_vs_durable_floor']}x durable",
            _yes((a["ratio_product_vs_durable_floor"] or 99) <= 1.2),
        )
        table.add_row(
            "",
            "product, fsync stubbed",
            f"{nf['seconds']:.3f} s · {_us(nf['seconds'], n)}/guild",
            f"{a['ratio_fsync_off_vs_plain_floor']}x plain",
            "",
        )
        table.add_row(
            "",
            "floor: orjson.dumps + plain write",
            f"{fp['seconds']:.3f} s · {_us(fp['seconds'], n)}/guild · {fp['bytes'] / 1e6:.1f} MB",
            "1.00x",
            "",
        )
        table.add_row(
            "",
            "floor: + tmp, fsync, rename, dir fsync",
            f"{fd['seconds']:.3f} s · {_us(fd['seconds'], n)}/guild",
            f"{a['ratio_product_vs_durable_floor']}x ← product",
            "",
        )
        orig = a.get("original_sonora") or {}
        if "seconds" in orig:
            table.add_row(
                "",
                f"original Sonora {orig['version']}: to_json + plain write",
                f"{orig['seconds']:.3f} s · {_us(orig['seconds'], n)}/guild · {orig['bytes'] / 1e6:.1f} MB",
                f"product {orig['ratio_product_vs_original']}x of it",
                "",
            )
        elif orig:
            table.add_row("", "original Sonora 1.2.8", "not measured: py-sonora is not installed", "", "")
        cpu = a["cpu_only"]
        table.add_row(
            "",
            "CPU only, per guild",
            f"capture {cpu['capture_us_per_guild']:,.0f} µs"
            f" · encode {cpu['encode_us_per_guild']:,.0f} µs"
            f" · bare dumps {cpu['orjson_dumps_us_per_guild']:,.0f} µs",
            f"capture + encode {cpu['ratio_capture_encode_vs_dumps']}x bare dumps",
            _yes(cpu["ratio_capture_encode_vs_dumps"] <= 2.0),
        )
        b = ck["b_loop_lag"]
        lag, idle = b["during_checkpoint"], b["idle_baseline"]
        table.add_row(
            "b. loop lag (1 ms probe)",
            "during the checkpoint",
            f"p50 {lag['p50_ms']} · p99 {lag['p99_ms']} · max {lag['max_ms']} ms",
            f"p99 < 20 ms (idle p99 {idle['p99_ms']} ms)",
            _yes(b["met"]),
        )
        c = ck["c_incremental"]
        shipped, dirty = c["checkpoint_as_shipped"], c["dirty_only_flush"]
        table.add_row(
            f"c. 2nd cycle, {c['changed_guilds']} changed",
            "checkpoint as shipped",
            f"{shipped['writes']} writes · {shipped['seconds']:.3f} s",
            f"writes = {c['changed_guilds']}",
            _yes(c["met"]),
        )
        table.add_row(
            "", "dirty-only flush (proposed checkpoint)", f"{dirty['writes']} writes · {dirty['seconds']:.3f} s", "", ""
        )
    rs = results.get("restore")
    if rs:
        for mode in ("rebuilt", "adopted"):
            for size, row in sorted(rs[mode].items(), key=lambda kv: -int(kv[0])):
                big = size == str(rs["queue_tracks"])
                first = big and mode == "rebuilt"
                table.add_row(
                    f"d. restore {size} tracks" if first else ("" if big else f"   (baseline {size})"),
                    f"startup restore, {mode} (bot log)",
                    f"{row['seconds'] * 1e3:,.0f} ms · {row['lavalink_requests']} Lavalink requests",
                    "constant requests, < 1 s" if first else "",
                    _yes(rs["met"]) if first else "",
                )
        cpu = rs.get("cpu_parts") or {}
        if cpu:
            table.add_row(
                "",
                "CPU parts (in process)",
                f"decode {cpu['decode_ms']} · validate {cpu['validate_ms']} · to_playable {cpu['to_playable_ms']} ms",
                f"{cpu['record_bytes'] / 1e6:.1f} MB record",
                "",
            )
    rh = results.get("rehydrate")
    if rh:
        for shards, layout in rh["layouts"].items():
            for name in ("unpaced", "default"):
                row = layout.get(name)
                if not row:
                    continue
                first = name == "unpaced"
                label = "pacing lifted" if first else "default pacing"
                plural = "s" if shards != "1" else ""
                table.add_row(
                    f"e. rehydrate {rh['guilds']} guilds, {shards} shard{plural}" if first else "",
                    f"{label}: {row['joins_per_window']} joins/shard/60 s, then {row['joins_per_second']:g}/s; "
                    f"concurrency {layout['concurrency']}/shard",
                    f"{row['seconds']:.2f} s · {row['ms_per_guild']} ms/guild · "
                    + "; ".join(f"{count} {what}" for what, count in row.get("outcomes", {}).items())
                    + f" · max {row['max_sends_in_60s']} sends in any 60 s per shard",
                    f"{row['ratio_vs_floor']}x floor {row['floor_s']:.2f} s (window {row['window_floor_s']:g} s, "
                    f"unpaced {layout['unpaced']['seconds']} s)",
                    "" if first else _yes(row["met"]),
                )
    st = results.get("storage")
    if st:
        for row in st["rows"]:
            first = row is st["rows"][0]
            table.add_row(
                f"f. storage {row['tracks']} tracks" if first else f"   {row['tracks']} tracks",
                "indented JSON · compact · record · zstd · zstd+AES",
                f"{row['json_indented']:,} · {row['json_compact']:,} · {row['record_none']:,} · "
                f"{row['record_zstd']:,} · {row['record_zstd_aes']:,} B",
                f"{row['ratio_indented_vs_zstd']}x smaller (target 5x)",
                _yes((row["ratio_indented_vs_zstd"] or 0) >= 5),
            )
    sd = results.get("shutdown")
    if sd:
        size = None
        for row in sd["rows"]:
            p, f, fits = row["product"], row["floor_durable"], row["players_fitting"]
            label = f"g. shutdown {row['players']:,} x {sd['tracks_per_player']}"
            table.add_row(
                label if row["players"] != size else "",
                f"{row['case']} ({row['changed']:,}): {p['live_records_written']:,} live + "
                f"{p['snapshots_written']:,} snapshots",
                f"{p['seconds']:.3f} s · {p['us_per_player']:,.0f} µs/player · loop p99 {p['loop_lag']['p99_ms']} ms",
                f"{row['ratio_product_vs_floor']}x durable floor ({f['seconds']:.3f} s; snapshots in guild "
                f"folders: {row['floor_durable_per_guild_folders']['seconds']:.3f} s, "
                f"{row['ratio_product_vs_per_guild_floor']}x) · fits "
                f"{fits['docker_10s']:,} (Docker 10 s) / {fits['kubernetes_30s']:,} (k8s 30 s)",
                _yes((row["ratio_product_vs_floor"] or 99) <= 1.2 and p["loop_lag"]["p99_ms"] < 20),
            )
            size = row["players"]
        before = sd.get("before_group_commit")
        if before:
            table.add_row(
                "",
                f"before group commit, {before['players']:,} players (all written one by one)",
                f"{before['seconds']:.3f} s · {before['us_per_player']:,.0f} µs/player",
                "",
                "",
            )
    return table


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    console = Console(highlight=False, width=200)
    base = Path(tempfile.mkdtemp(prefix="sonora-bench-", dir=args.workdir))
    started = time.time()
    try:
        machine = _machine(base)
        console.print(
            f"machine: {machine['nproc']} x {machine['cpu_model']} · Python {machine['python']} · "
            f"store on {machine['workdir_filesystem']} ({base})"
        )
        results = asyncio.run(_run(args, base, console))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    document = {
        "started_at": started,
        "duration_s": round(time.time() - started, 1),
        "argv": sys.argv[1:] if argv is None else argv,
        "machine": machine,
        "settings": {
            "guilds": args.guilds,
            "tracks": args.tracks,
            "restore_tracks": args.restore_tracks,
            "shutdown_players": list(args.shutdown_players),
            "rehydrate_guilds": args.rehydrate_guilds,
            "quick": args.quick,
            "parts": sorted(args.parts),
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    console.print(_table(results))
    console.print(f"results written to {args.out} ({document['duration_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
