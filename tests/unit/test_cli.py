"""The operator CLI, run as a real subprocess (``python -m sonora_cog ...``) over a real store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from factories import sample_state

from sonora_cog.codec import Keyring
from sonora_cog.config import Settings, StorageSettings
from sonora_cog.manager import SessionManager
from sonora_cog.meta import SnapshotKind

GUILD, OTHER = 111111111111111111, 444444444444444444


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SONORA_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "sonora_cog", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=120,
        check=False,
    )


@pytest.fixture
async def store(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    manager = SessionManager(Settings(storage=StorageSettings(path=str(path))))
    for i in range(3):
        await manager.save_snapshot(sample_state(created_at=time.time() - 100 + i), label=f"snap {i}")
    await manager.save_snapshot(sample_state(guild_id=OTHER, created_at=time.time() - 50, kind=SnapshotKind.auto))
    await manager.write_live(sample_state())
    return path


def test_help_works() -> None:
    out = run("--help")
    assert out.returncode == 0 and "snapshots" in out.stdout
    out = run("snapshots", "--help")
    assert out.returncode == 0
    for command in ("list", "show", "validate", "prune", "export", "import", "rekey", "stats"):
        assert command in out.stdout


def test_list_json_and_table(store: Path) -> None:
    out = run("snapshots", "list", "--store", str(store), "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert len(rows) == 4
    assert [r["created_at"] for r in rows] == sorted((r["created_at"] for r in rows), reverse=True)
    only = json.loads(run("snapshots", "list", "--store", str(store), "--json", "--guild", str(OTHER)).stdout)
    assert [r["guild_id"] for r in only] == [str(OTHER)]
    table = run("snapshots", "list", "--store", str(store))
    assert "snap 2" in table.stdout and "Track 0" in table.stdout
    # Piped output is 80 columns wide: the ids a reader copies into `snapshots show` are there whole.
    narrow = run("snapshots", "list", "--store", str(store), env={"COLUMNS": "80"})
    assert all(r["id"] in narrow.stdout and r["guild_id"] in narrow.stdout for r in rows)


def test_show_export_import_round_trip(store: Path, tmp_path: Path) -> None:
    snapshot_id = json.loads(run("snapshots", "list", "--store", str(store), "--json", "--guild", str(GUILD)).stdout)[
        0
    ]["id"]
    shown = run("snapshots", "show", snapshot_id, "--store", str(store))
    assert shown.returncode == 0 and "Track 0" in shown.stdout and "queue" in shown.stdout
    out_file = tmp_path / "export.json"
    assert run("snapshots", "export", snapshot_id, "--out", str(out_file), "--store", str(store)).returncode == 0
    exported = json.loads(out_file.read_text())
    assert exported["schema"] == 1 and exported["guild_id"] == str(GUILD)
    first = run("snapshots", "import", str(out_file), "--store", str(store), "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["kind"] == "import"
    second = run("snapshots", "import", str(out_file), "--store", str(store))
    assert second.returncode == 5 and "already stored" in second.stderr
    foreign = run("snapshots", "import", str(out_file), "--store", str(store), "--guild", str(OTHER))
    assert foreign.returncode == 5 and "belongs to guild" in foreign.stderr


def test_show_unknown_id_exits_3(store: Path) -> None:
    out = run("snapshots", "show", "20200101T000000000-aaaaaa", "--store", str(store))
    assert out.returncode == 3 and "no snapshot" in out.stderr


def test_import_of_bad_file_is_refused_with_the_field(store: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    data = sample_state().to_json()
    data["queue"]["upcoming"][3]["info"]["length"] = "long"
    bad.write_text(json.dumps(data))
    out = run("snapshots", "import", str(bad), "--store", str(store))
    assert out.returncode == 5 and "queue.upcoming[3].info.length: expected int" in out.stderr


def test_validate_reports_each_bad_record_and_changes_nothing(store: Path) -> None:
    assert run("snapshots", "validate", "--store", str(store)).returncode == 0
    files = sorted(p for p in store.rglob("*") if p.is_file())
    victim = next(p for p in files if "snapshots" in p.parts)
    blob = bytearray(victim.read_bytes())
    blob[-40] ^= 0xFF
    victim.write_bytes(bytes(blob))
    before = {p: p.read_bytes() for p in files}
    out = run("snapshots", "validate", "--store", str(store), "--json")
    assert out.returncode == 1
    report = json.loads(out.stdout)
    assert report["checked"] == 5 and len(report["bad"]) == 1
    assert report["bad"][0]["error_type"] == "ChecksumMismatch"
    assert report["bad"][0]["snapshot_id"] == victim.name.split(".")[0]
    assert {p: p.read_bytes() for p in files} == before


def test_prune_and_stats(store: Path) -> None:
    out = run("snapshots", "prune", "--store", str(store), "--max-per-guild", "1", "--json")
    assert out.returncode == 0
    assert len(json.loads(out.stdout)["removed"]) == 2
    stats = json.loads(run("snapshots", "stats", "--store", str(store), "--json").stdout)
    assert stats["total_snapshots"] == 2 and stats["live_records"] == 1
    assert stats["per_guild"] == {str(GUILD): 1, str(OTHER): 1}


def test_prune_honours_an_explicit_zero(store: Path) -> None:
    out = run("snapshots", "prune", "--store", str(store), "--max-per-guild", "0", "--json")
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["removed"]) == 4  # every snapshot of both guilds
    stats = json.loads(run("snapshots", "stats", "--store", str(store), "--json").stdout)
    assert stats["total_snapshots"] == 0 and stats["live_records"] == 1  # live records are never pruned


def test_prune_max_age_zero_removes_everything_older_than_now(store: Path) -> None:
    out = run("snapshots", "prune", "--store", str(store), "--max-age-days", "0", "--max-per-guild", "100", "--json")
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["removed"]) == 4


def test_prune_refuses_a_negative_limit(store: Path) -> None:
    out = run("snapshots", "prune", "--store", str(store), "--max-per-guild", "-1")
    assert out.returncode == 2 and "must be 0 or more" in out.stderr
    assert len(json.loads(run("snapshots", "list", "--store", str(store), "--json").stdout)) == 4


def test_rekey_rotates_every_record(store: Path, tmp_path: Path) -> None:
    config = tmp_path / "sonora.toml"
    config.write_text(f'[storage]\npath = "{store}"\n[encryption]\nenabled = true\n')
    key_a, key_b = Keyring.generate_key_text(), Keyring.generate_key_text()
    first = run("snapshots", "rekey", "--config", str(config), env={"SONORA_ENCRYPTION_KEY": key_a})
    assert first.returncode == 0, first.stderr
    plain = run("snapshots", "validate", "--store", str(store), "--json")
    assert plain.returncode == 1 and {b["error_type"] for b in json.loads(plain.stdout)["bad"]} == {"WrongKeyError"}
    second = run(
        "snapshots",
        "rekey",
        "--config",
        str(config),
        "--json",
        env={"SONORA_ENCRYPTION_KEY": key_b, "SONORA_OLD_ENCRYPTION_KEYS": key_a},
    )
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["rekeyed"] == 5
    only_b = run("snapshots", "validate", "--config", str(config), env={"SONORA_ENCRYPTION_KEY": key_b})
    assert only_b.returncode == 0, only_b.stdout
    assert key_a not in second.stdout + second.stderr and key_b not in second.stdout + second.stderr


def test_rekey_without_key_is_a_config_error(store: Path) -> None:
    out = run("snapshots", "rekey", "--store", str(store))
    assert out.returncode == 4 and "SONORA_ENCRYPTION_KEY" in out.stderr


def test_bad_config_exits_4_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "sonora.toml"
    config.write_text('[snapshots]\nauto_interval = "5m"\n')
    out = run("snapshots", "list", "--config", str(config))
    assert out.returncode == 4 and 'snapshots.auto_interval: expected a number of seconds >= 0, got "5m"' in out.stderr


def test_keygen_prints_a_usable_key() -> None:
    out = run("keygen")
    assert out.returncode == 0
    Keyring.from_text(out.stdout.strip())
