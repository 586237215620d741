"""Hostile or broken input is refused with one clear error, before it costs memory, from every entry point.

Records are crafted as an attacker (or a bug) would write them: valid envelopes around JSON that the
writer itself could never produce (300 levels of nesting), element bombs (``[[],[],...]``), files far
over the size caps (sparse, so the test costs no disk). Peak memory is measured in a subprocess.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import xxhash
from factories import sample_state

from sonora_cog.codec import Codec
from sonora_cog.config import Settings, StorageSettings
from sonora_cog.errors import InvalidSnapshot
from sonora_cog.manager import SessionManager
from sonora_cog.meta import SnapshotKind

GUILD = 111111111111111111
OTHER = 222222222222222222
DEEP = 300


def deep_json(levels: int) -> str:
    return "[" * levels + "]" * levels


def crafted_record(payload_json: bytes, guild_id: int = GUILD, snapshot_id: str = "live") -> bytes:
    """A valid envelope (checksums right) around JSON bytes the writer would never produce."""
    state = sample_state(guild_id=guild_id, kind=SnapshotKind.live)
    digest = xxhash.xxh3_128_digest(payload_json)
    meta = dataclasses.replace(SessionManager(Settings())._meta_for(state, snapshot_id), content_hash=digest.hex())
    return Codec()._seal(payload_json, digest, meta)


def payload_with_deep_extras(guild_id: int = GUILD) -> bytes:
    obj = sample_state(guild_id=guild_id, kind=SnapshotKind.live).to_json()
    text = orjson.dumps(obj).decode()
    return text.replace('"extras":{', f'"extras":{{"deep":{deep_json(DEEP)},', 1).encode()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sonora_cog", *args], capture_output=True, text=True, timeout=120)


async def test_deep_nesting_is_invalid_with_its_path_from_every_entry_point(tmp_path: Path) -> None:
    store = tmp_path / "store"
    manager = SessionManager(Settings(storage=StorageSettings(path=str(store))))
    try:
        await manager.write_live(sample_state(guild_id=OTHER, kind=SnapshotKind.live))
        await manager.store.put_live(GUILD, crafted_record(payload_with_deep_extras()))
        with pytest.raises(InvalidSnapshot) as raised:  # read_live: not a TypeError, and quarantined
            await manager.read_live(GUILD)
        assert raised.value.path == "extras" and "nested too deep to be written back" in str(raised.value)
        assert await manager.read_live(OTHER) is not None
        assert list((store / "quarantine").glob("*.snr"))
        await manager.store.put_live(GUILD, crafted_record(payload_with_deep_extras()))
    finally:
        await manager.close()

    validate = run_cli("snapshots", "validate", "--store", str(store), "--json")
    assert validate.returncode == 1 and "Traceback" not in validate.stderr
    bad = json.loads(validate.stdout)["bad"]
    assert [b["error_type"] for b in bad] == ["InvalidSnapshot"] and "extras" in bad[0]["error"]

    export = tmp_path / "deep.json"
    export.write_bytes(payload_with_deep_extras())
    imported = run_cli("snapshots", "import", str(export), "--store", str(store))
    assert (
        imported.returncode == 5
        and "Traceback" not in imported.stderr
        and "extras" in imported.stdout + imported.stderr
    )


def test_an_element_bomb_is_refused_before_it_is_parsed() -> None:
    bomb = b'{"x":' + b"[" + b"[]," * 3_000_000 + b"[]]}"  # 9 MB of empty lists: about 200 MB once parsed
    manager = SessionManager(Settings())
    import tracemalloc

    tracemalloc.start()
    with pytest.raises(InvalidSnapshot, match="refused before parsing"):
        manager.parse_export(bomb, max_bytes=len(bomb))
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 4 * len(bomb), peak  # the input and a copy at most, never the parsed lists


def test_a_real_large_state_passes_the_element_check() -> None:
    state = sample_state(tracks=3_000, extras={"list": list(range(2_000))})
    manager = SessionManager(Settings())
    assert manager.parse_export(manager.export_json(state)).track_count == state.track_count


PEAK_RSS = """
import asyncio, sys
from sonora_cog.config import Settings, StorageSettings
from sonora_cog.manager import SessionManager

async def main():
    manager = SessionManager(Settings(storage=StorageSettings(path=sys.argv[1])))
    try:
        await manager.read_live(int(sys.argv[2]))
    except Exception as exc:
        print(type(exc).__name__, str(exc)[:200])
    await manager.close()

asyncio.run(main())
# VmHWM: this program's own peak (ru_maxrss would include the forking parent's pages, kept across exec)
print("peak_kb", next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")))
"""


def sparse(path: Path, size: int, head: bytes = b"") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as stream:
        stream.write(head)
        stream.truncate(size)


def test_a_300_mb_live_record_is_refused_without_being_read(tmp_path: Path) -> None:
    store = tmp_path / "store"
    sparse(store / "live" / f"{GUILD}.snr", 300 * 1024 * 1024, b"SNRA")
    out = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, str(store), str(GUILD)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "SnapshotTooLarge" in out.stdout and "not read" in out.stdout
    peak_mb = int(out.stdout.split("peak_kb")[1]) / 1024
    assert peak_mb < 150, peak_mb  # an interpreter with sonora_cog loaded is ~60-90 MB; the file is 300 MB
    assert list((store / "quarantine").glob("*.snr"))  # moved aside (a rename), still not read


def test_importing_a_1_gb_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    big = tmp_path / "huge.json"
    sparse(big, 1024 * 1024 * 1024, b"{")
    script = PEAK_RSS.replace(
        "await manager.read_live(int(sys.argv[2]))",
        "from sonora_cog.cli import _read_capped; from pathlib import Path; "
        "_read_capped(Path(sys.argv[2]), manager.settings.storage.max_payload_bytes)",
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "store"), str(big)], capture_output=True, text=True, timeout=120
    )
    assert "SnapshotTooLarge" in out.stdout and "not read" in out.stdout, out.stdout + out.stderr
    assert int(out.stdout.split("peak_kb")[1]) / 1024 < 150
    cli = run_cli("snapshots", "import", str(big), "--store", str(tmp_path / "store"))
    assert cli.returncode == 5 and "over the import cap" in cli.stdout + cli.stderr


async def test_one_bad_live_record_never_stops_the_others(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    store = tmp_path / "store"
    manager = SessionManager(Settings(storage=StorageSettings(path=str(store))))
    try:
        await manager.write_live(sample_state(guild_id=OTHER, kind=SnapshotKind.live))
        await manager.store.put_live(GUILD, crafted_record(payload_with_deep_extras()))
        results = {r.guild_id: r.ok for r in await manager.validate_all() if r.snapshot_id is None}
        assert results == {GUILD: False, OTHER: True}
    finally:
        await manager.close()
    assert (store / "live" / f"{OTHER}.snr").exists()
