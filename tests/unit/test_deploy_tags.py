"""Deploy tags from the store alone: prepare, status, the offline rollback, requests, presence, retention,
and the ``deploy`` CLI as a subprocess (the bot-side rollback is in ``tests/e2e/test_deploy.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from factories import sample_state

from sonora_cog import deploy
from sonora_cog.config import DeploySettings, Settings, SnapshotSettings, StorageSettings
from sonora_cog.deploy import GuildDeployStatus, Step
from sonora_cog.errors import InvalidIdentifier
from sonora_cog.manager import SessionManager
from sonora_cog.meta import SnapshotKind
from sonora_cog.model import SessionState

GUILDS = [111111111111111111, 222222222222222222, 333333333333333333]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SONORA_")}
    full_env.update(env or {}, COLUMNS="250")
    return subprocess.run(
        [sys.executable, "-m", "sonora_cog", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
        check=False,
    )


def state(guild_id: int, volume: int, tracks: int = 5) -> SessionState:
    made = sample_state(guild_id=guild_id, tracks=tracks, created_at=time.time())
    return replace(made, player=replace(made.player, volume=volume, position_at=made.created_at))


def settings_for(path: Path, keep_tags: int = 3) -> Settings:
    return Settings(
        storage=StorageSettings(path=str(path)),
        deploy=DeploySettings(keep_tags=keep_tags),
        snapshots=SnapshotSettings(max_snapshots_per_guild=1),
    )


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[SessionManager]:
    manager = SessionManager(settings_for(tmp_path / "store"))
    for guild_id in GUILDS:
        await manager.write_live(state(guild_id, 40))
    yield manager
    await manager.close()


@pytest.mark.parametrize("tag", ["v1.2.3", "20261130T010203Z-v1.2-3-gabc+dirty", "A"])
def test_valid_tags(tag: str) -> None:
    assert deploy.validate_tag(tag) == tag


@pytest.mark.parametrize("tag", ["", "-lead", "has space", "a/b", "x" * 65, "../up", 3])
def test_bad_tags_are_refused(tag: object) -> None:
    with pytest.raises(InvalidIdentifier, match="not a deploy tag"):
        deploy.validate_tag(tag)


def test_default_tag_is_time_then_the_variable_cleaned() -> None:
    tag = deploy.default_tag({"SONORA_DEPLOY_TAG": "release 4.2/rc1"}, now=1_790_000_000)
    assert tag == "20260921T141320Z-release-4.2-rc1"
    assert deploy.validate_tag(tag) == tag


async def test_prepare_snapshots_every_live_guild_and_status_reads_it(manager: SessionManager) -> None:
    results = await deploy.prepare(manager, "v1")
    assert [r.guild_id for r in results] == GUILDS and all(r.step is Step.snapshotted for r in results)
    for result in results:
        saved = await manager.load_snapshot(result.snapshot_id or "", result.guild_id)
        assert saved.kind is SnapshotKind.pre_deploy and saved.label == "v1" and saved.player.volume == 40
    status = await deploy.status(manager, "v1")
    assert [(s.guild_id, s.step, s.snapshot_id) for s in status] == [
        (r.guild_id, Step.snapshotted, r.snapshot_id) for r in results
    ]
    assert [(t.tag, t.guilds, t.kept) for t in await deploy.tags(manager)] == [("v1", 3, True)]


async def test_a_damaged_live_record_fails_its_guild_and_stays_where_it_is(manager: SessionManager) -> None:
    broken = GUILDS[1]
    root = Path(manager.settings.storage.path)
    (root / "live" / f"{broken}.snr").write_bytes(b"SNR1 garbage")
    results = {r.guild_id: r for r in await deploy.prepare(manager, "v1")}
    assert results[broken].step is Step.snapshot_failed and "BadMagic" in (results[broken].why or "")
    assert (root / "live" / f"{broken}.snr").read_bytes() == b"SNR1 garbage"  # not quarantined
    assert [results[g].step for g in (GUILDS[0], GUILDS[2])] == [Step.snapshotted] * 2
    status = {s.guild_id: s for s in await deploy.status(manager, "v1")}
    assert status[broken].step is Step.snapshot_failed and status[broken].why == results[broken].why


async def test_offline_rollback_rewrites_the_live_records_as_of_now(manager: SessionManager) -> None:
    await deploy.prepare(manager, "v1")
    for guild_id in GUILDS:
        await manager.write_live(state(guild_id, 90, tracks=1))
    before = time.time()
    results = await deploy.rollback_offline(manager, "v1", [GUILDS[0], GUILDS[2], 999])
    assert [(r.guild_id, r.step) for r in results] == [
        (GUILDS[0], Step.rolled_back),
        (GUILDS[2], Step.rolled_back),
        (999, Step.rollback_failed),
    ]
    for guild_id, volume in ((GUILDS[0], 40), (GUILDS[1], 90), (GUILDS[2], 40)):
        live = await manager.read_live(guild_id)
        assert live is not None and live.player.volume == volume
        if volume == 40:  # rewritten now: not too old to restore, and not moved forward by an old heartbeat
            assert live.created_at >= before and live.player.position_at >= before
    status = {s.guild_id: s.step for s in await deploy.status(manager, "v1")}
    assert status == {
        GUILDS[0]: Step.rolled_back,
        GUILDS[1]: Step.snapshotted,
        GUILDS[2]: Step.rolled_back,
        999: Step.rollback_failed,
    }


async def test_retention_keeps_the_newest_tags_and_drops_old_journals(manager: SessionManager) -> None:
    for number in range(5):
        await deploy.prepare(manager, f"v{number}")
    kept = await deploy.tags(manager)
    assert [t.tag for t in kept] == ["v4", "v3", "v2", "v1", "v0"]
    assert [t.kept for t in kept] == [True, True, True, False, False]
    removed = await manager.apply_retention()
    # 1 per guild allowed besides the 3 newest tags, which never count
    assert {(m.label, m.guild_id) for m in removed} == {("v0", g) for g in GUILDS}
    assert [t.tag for t in await deploy.tags(manager)] == ["v4", "v3", "v2", "v1"]
    assert await deploy.prune_journals(manager, 30) == 0  # recent entries: kept for status
    assert await deploy.prune_journals(manager, 30, now=time.time() + 31 * 86400) == 1
    assert set(await manager.store.journal_names()) == {deploy.journal_name(f"v{n}") for n in (1, 2, 3, 4)}


async def test_requests_and_presence(manager: SessionManager) -> None:
    assert await deploy.read_request(manager) is None
    request = deploy.new_request("v1", [GUILDS[0]], 2, 1.5)
    await deploy.write_request(manager, request)
    assert await deploy.read_request(manager) == request
    await manager.store.put_aux(deploy.REQUEST_KEY, b"{not json")
    assert await deploy.read_request(manager) is None
    assert await deploy.withdraw(manager) is True
    assert await deploy.running_processes(manager) == []
    await deploy.announce(manager, "abc123", ttl=30)
    await manager.store.put_aux("process-gone", json.dumps({"name": "old:1", "until": time.time() - 90_000}).encode())
    assert await deploy.running_processes(manager) == [deploy.process_name()]
    assert await manager.store.get_aux("process-gone") is None  # expired a day ago: removed
    await deploy.retire(manager, "abc123")
    assert await deploy.running_processes(manager) == []


async def test_journal_lines_that_are_not_entries_are_skipped(manager: SessionManager) -> None:
    await deploy.prepare(manager, "v1")
    await manager.store.append_journal(deploy.journal_name("v1"), [b"{broken", b'{"guild": "x", "step": "?"}'])
    entry = GuildDeployStatus(GUILDS[0], Step.rolled_back, at=time.time(), by="test")
    await deploy.record(manager, "v1", [entry])
    status = {s.guild_id: s for s in await deploy.status(manager, "v1")}
    assert status[GUILDS[0]].step is Step.rolled_back and status[GUILDS[0]].snapshot_id is not None
    assert len(status) == 3


# -- the CLI ------------------------------------------------------------------------------------------------


async def test_cli_prepare_list_status_and_offline_rollback(manager: SessionManager) -> None:
    store = manager.settings.storage.path
    out = run("deploy", "prepare", "--tag", "v1", "--store", store)
    assert out.returncode == 0, out.stderr
    assert "deploy tag v1: 3 snapshotted" in out.stdout
    out = run("deploy", "list", "--store", store, "--json")
    assert [(t["tag"], t["guilds"], t["kept"]) for t in json.loads(out.stdout)] == [("v1", 3, True)]
    for guild_id in GUILDS:
        await manager.write_live(state(guild_id, 77))
    out = run("deploy", "rollback", "v1", "--store", store, "--guild", str(GUILDS[1]), "--guild", "999")
    assert out.returncode == 1, out.stdout  # 999 has no snapshot: said, and the exit code says it
    assert "no bot process runs on this store" in out.stdout and "no pre-deploy snapshot tagged 'v1'" in out.stdout
    live = await manager.read_live(GUILDS[1])
    assert live is not None and live.player.volume == 40
    out = run("deploy", "status", "v1", "--store", store, "--json")
    steps = {g["guild"]: g["step"] for g in json.loads(out.stdout)["guilds"]}
    # a guild the tag never had (a typo) is reported by that rollback, never written into the tag's status
    assert steps == {str(GUILDS[0]): "snapshotted", str(GUILDS[1]): "rolled back", str(GUILDS[2]): "snapshotted"}
    assert out.returncode == 0


def test_cli_prepare_default_tag_uses_the_variable_and_bad_input_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "empty"
    out = run("deploy", "prepare", "--store", str(store))  # a typo in a pipeline must not "succeed"
    assert out.returncode == 4 and "there is no store at" in out.stderr and not store.exists()
    store.mkdir()
    out = run("deploy", "prepare", "--store", str(store), "--json", env={"SONORA_DEPLOY_TAG": "build-7"})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["tag"].endswith("Z-build-7")
    for bad in (
        ["prepare", "--tag", "../x"],
        ["prepare", "--tag", ""],
        ["rollback", "x", "--batch-size", "0"],
        ["rollback", "x", "--batch-size", "-1"],
        ["status", "a b"],
    ):
        out = run("deploy", *bad, "--store", str(store))
        assert out.returncode == 2, (bad, out.stderr)  # usage errors
    out = run("deploy", "rollback", "nothing", "--store", str(store))
    assert out.returncode == 1 and "has no snapshots" in out.stdout
