"""What an outside review of the store found (issue 11's adversarial round), each pinned by a test:
hostile Redis set members, deletes racing a rekey, dense JSON, secrets in URLs and settings, links and
FIFOs that ``validate`` must not call fine, imports that lie about their size, a Redis URL that cannot
work, a rekey that cannot catch up."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest
from factories import sample_state

from sonora_cog.cli import _rekey_one
from sonora_cog.codec import Keyring, check_json_shape
from sonora_cog.config import EncryptionSettings, Secret, Settings, StorageSettings, load_settings
from sonora_cog.errors import ConfigError, InvalidSnapshot, RecordChanged
from sonora_cog.manager import SessionManager
from sonora_cog.meta import SnapshotKind
from sonora_cog.store import filesystem
from sonora_cog.store.base import RecordRef
from sonora_cog.store.redis_link import redact_url
from sonora_cog.testing.redis_server import RedisServer

GUILD, OTHER = 111111111111111111, 222222222222222222


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SONORA_")} | {"COLUMNS": "250"} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "sonora_cog", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=full_env,
        check=False,
    )


def redis_manager(server: RedisServer, prefix: str, **storage: object) -> SessionManager:
    return SessionManager(
        Settings(
            storage=StorageSettings(
                backend="redis", redis_url=server.url, redis_prefix=prefix, redis_timeout=1.0, **storage
            )
        )
    )  # type: ignore[arg-type]


async def test_foreign_members_of_the_redis_guild_sets_are_ignored_and_reported(
    private_redis_server: RedisServer,
) -> None:
    manager = redis_manager(private_redis_server, "members")
    try:
        await manager.write_live(sample_state(guild_id=GUILD, kind=SnapshotKind.live))
        await manager.save_snapshot(sample_state(guild_id=OTHER))
        client = manager.store._client  # type: ignore[attr-defined]
        for member in (
            "not-a-guild",
            "",
            "1e3",
            "-5",
            "0",
            "../../etc",
            "\uff11\uff12\uff13",
        ):  # the last: full-width digits
            await client.sadd("members:live-guilds", member)
            await client.sadd("members:guilds", member)
        assert await manager.live_guilds() == [GUILD]  # the startup restore's listing: no ValueError
        assert [m.guild_id for m in await manager.list_snapshots()] == [OTHER]
        assert [r.guild_id async for r in manager.store.scan()] == [GUILD, OTHER]
        assert len(await manager.validate_all()) == 2
        strays = manager.store.unsafe_paths()
        assert "members:live-guilds member 'not-a-guild'" in strays and "members:guilds member '-5'" in strays
        assert all("not a guild id" in why for why in strays.values())

        snapshot = (await manager.list_snapshots(OTHER))[0]
        await client.zadd(f"members:idx:{OTHER}", {"../../x": 1})  # an index member that is no snapshot id
        await client.delete(f"members:live:{GUILD}")
        await client.hset(f"members:live:{GUILD}", "a", "b")  # a live record that is not a string
        results = await manager.validate_all()  # goes on: reports them instead of stopping at the first
        assert [r.snapshot_id for r in results] == [snapshot.id]
        strays = manager.store.unsafe_paths()
        assert f"members:idx:{OTHER} member '../../x'" in strays
        assert any(where == f"members:live:{GUILD}" and "not a string" in why for where, why in strays.items())
    finally:
        await manager.close()


async def test_a_delete_waits_for_a_rekey_between_its_compare_and_its_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worst interleaving, made certain: rekey has compared and is about to rename when the session ends
    # (in the bot: another store object, as in another process, so only the store's flock orders them).
    manager = SessionManager(Settings(storage=StorageSettings(path=str(tmp_path / "store"))))
    bot = SessionManager(manager.settings)
    await manager.write_live(sample_state(guild_id=GUILD, kind=SnapshotKind.live))
    data = await manager.store.get_live(GUILD)
    assert data is not None
    in_rename, go_on = threading.Event(), threading.Event()
    real_replace = filesystem._replace

    def slow_replace(src: str, dst: str, src_dir_fd: int, dst_dir_fd: int) -> None:
        if dst == f"{GUILD}.snr" and not in_rename.is_set():
            in_rename.set()
            go_on.wait(10)
        real_replace(src, dst, src_dir_fd, dst_dir_fd)

    monkeypatch.setattr(filesystem, "_replace", slow_replace)
    try:
        ref = RecordRef(GUILD, None, "", len(data))
        rekey = asyncio.create_task(manager.store.replace(ref, data, expected=data))
        await asyncio.to_thread(in_rename.wait, 10)
        end = asyncio.create_task(bot.end_live(GUILD))  # the session ended: its record must go for good
        await asyncio.sleep(0.3)
        assert not end.done()  # it waits for the rename: the store's lock covers deletes too
        go_on.set()
        await rekey
        assert await end is True
        assert await manager.store.get_live(GUILD) is None  # not brought back by the rename
    finally:
        go_on.set()
        await manager.close()
        await bot.close()


@pytest.mark.parametrize("element", ['"abcde"', "1.5e000", "1.5", '{"aaaaaaaaaa":0}', '{"aaaaaaaaaaaa":0}'])
def test_dense_short_values_are_refused_before_parsing(element: str) -> None:
    bomb = ('{"d":[' + ",".join([element] * 2_000_000) + "]}").encode()
    with pytest.raises(InvalidSnapshot, match="refused before parsing"):
        check_json_shape(bomb)


@pytest.mark.parametrize("width", [7, 9])
def test_an_object_of_many_short_distinct_keys_is_refused_before_parsing(width: int) -> None:
    bomb = ("{" + ",".join(f'"{i:0{width}d}":0' for i in range(2_000_000)) + "}").encode()
    with pytest.raises(InvalidSnapshot, match="keys"):
        check_json_shape(bomb)


def test_a_queue_of_the_smallest_real_tracks_passes_the_shape_check() -> None:
    track = {
        "encoded": "Q" * 120,
        "info": {
            "identifier": "a1",
            "isSeekable": True,
            "author": "A",
            "length": 1,
            "isStream": False,
            "position": 0,
            "title": "T",
            "uri": None,
            "artworkUrl": None,
            "isrc": None,
            "sourceName": "http",
        },
        "pluginInfo": {},
        "userData": {},
        "playlist": None,
        "recommended": False,
    }
    payload = orjson.dumps({"queue": {"upcoming": [track] * 100_000}})
    check_json_shape(payload)  # a record written under higher limits is read and trimmed, never refused


def test_an_import_with_more_tracks_than_the_limits_is_refused_before_parsing(tmp_path: Path) -> None:
    manager = SessionManager(Settings(storage=StorageSettings(path=str(tmp_path / "store"))))
    exported = manager.export_json(sample_state(tracks=3))
    too_many = exported + b" " + b'"encoded"' * 20_101
    with pytest.raises(InvalidSnapshot, match=r"holds 20,10[0-9] tracks; \[limits\] allow at most 20,101"):
        manager.parse_export(too_many)


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0?password=s3cr3t-in-query",
        "rediss://user:s3cr3t-in-query@host:6380/0?Password=s3cr3t-in-query&db=2",
    ],
)
def test_a_redis_password_in_the_url_query_is_never_shown(url: str) -> None:
    shown = redact_url(url)
    assert "s3cr3t" not in shown and "***" in shown


def test_a_key_pasted_into_any_setting_is_never_echoed(tmp_path: Path) -> None:
    key = Keyring.generate_key_text()
    for variable in ("SONORA_SNAPSHOTS_DEBOUNCE", "SONORA_LIMITS_MAX_QUEUE_TRACKS", "SONORA_STORAGE_COMPRESSION"):
        with pytest.raises(ConfigError) as raised:
            load_settings(env={variable: key})
        assert key not in str(raised.value) and "not shown" in str(raised.value)
        out = run_cli("snapshots", "list", "--store", str(tmp_path / "s"), env={variable: key})
        assert out.returncode == 4 and key not in out.stdout + out.stderr


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
async def test_validate_fails_on_a_link_or_fifo_where_a_record_belongs(tmp_path: Path, kind: str) -> None:
    store = tmp_path / "store"
    manager = SessionManager(Settings(storage=StorageSettings(path=str(store))))
    await manager.write_live(sample_state(guild_id=GUILD, kind=SnapshotKind.live))
    await manager.close()
    record = store / "live" / f"{OTHER}.snr"
    if kind == "symlink":
        record.symlink_to(store / "live" / f"{GUILD}.snr")
    else:
        os.mkfifo(record)
    out = run_cli("snapshots", "validate", "--store", str(store))
    assert out.returncode == 1, out.stdout
    assert str(record) in out.stdout and "1 unsafe or refused path(s)" in out.stdout


def test_importing_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "export.json"
    os.mkfifo(fifo)
    out = run_cli("snapshots", "import", str(fifo), "--store", str(tmp_path / "store"))
    assert out.returncode == 2 and "not a regular file" in out.stderr


async def test_a_redis_database_that_cannot_be_selected_is_a_configuration_error(
    private_redis_server: RedisServer,
) -> None:
    url = private_redis_server.url.rsplit("/", 1)[0] + "/99"
    manager = SessionManager(Settings(storage=StorageSettings(backend="redis", redis_url=url, redis_timeout=1.0)))
    try:
        with pytest.raises(ConfigError, match=r"refused the connection.*database number"):
            await manager.live_guilds()
    finally:
        await manager.close()


async def test_rekey_reports_a_record_that_keeps_changing(tmp_path: Path) -> None:
    key_a, key_b = Keyring.generate_key_text(), Keyring.generate_key_text()
    settings = Settings(
        storage=StorageSettings(path=str(tmp_path / "store")),
        encryption=EncryptionSettings(enabled=True),
        encryption_key=Secret(key_a),
    )
    bot = SessionManager(settings)
    tool = SessionManager(
        dataclasses.replace(settings, encryption_key=Secret(key_b), old_encryption_keys=(Secret(key_a),))
    )
    try:
        await bot.write_live(sample_state(guild_id=GUILD, kind=SnapshotKind.live))
        [ref] = [r async for r in tool.store.scan()]

        async def always_rewritten(*args: object, **kwargs: object) -> None:
            await bot.write_live(sample_state(guild_id=GUILD, kind=SnapshotKind.live))  # a writer on the old key
            raise RecordChanged("the bot wrote it meanwhile")

        tool.store.replace = always_rewritten  # type: ignore[method-assign]
        assert await _rekey_one(tool, ref) == "changing"  # not "skipped": the record still uses the old key
    finally:
        await bot.close()
        await tool.close()


@pytest.mark.parametrize("plant", ["lock-link", "lock-dir", "lock-0666", "aux-fifo", "quarantine-link", "aux-0666"])
async def test_validate_looks_at_the_lock_aux_and_quarantine_too(tmp_path: Path, plant: str) -> None:
    store = tmp_path / "store"
    manager = SessionManager(Settings(storage=StorageSettings(path=str(store))))
    await manager.write_live(sample_state(guild_id=GUILD, kind=SnapshotKind.live))
    await manager.write_heartbeat("1-all")
    await manager.close()
    where, what = plant.split("-")
    target = {
        "lock": store / ".lock",
        "aux": store / "aux" / "heartbeat-1-all.snr",
        "quarantine": store / "quarantine" / f"{GUILD}-live-x.snr",
    }[where]
    target.unlink(missing_ok=True)
    if what == "link":
        target.symlink_to(tmp_path)
    elif what == "dir":
        target.mkdir()
    elif what == "fifo":
        os.mkfifo(target)
    else:
        target.write_bytes(b"x")
        target.chmod(0o666)
    out = run_cli("snapshots", "validate", "--store", str(store))
    assert out.returncode == 1, out.stdout
    assert str(target) in out.stdout


@pytest.mark.parametrize(
    "url",
    [
        "redis://:p@ss/w0rd:Zz@127.0.0.1:6379/0",
        "redis://:pa#ssQ9xyz@127.0.0.1:6379/0",
        "redis://:p?ssQ9@h/0",
        "redis://h/0#password=s3cr3t",
    ],
)
def test_a_password_with_unencoded_characters_is_still_never_shown(url: str) -> None:
    secret = url.split("//", 1)[1].rsplit("@", 1)[0].removeprefix(":") if "@" in url else "s3cr3t"
    shown = redact_url(url)
    assert secret not in shown and "***" in shown and secret[:2] not in shown.split("//", 1)[1].split("@")[0]


@pytest.mark.parametrize(
    "url",
    [
        "redis://:pa#ssQ9xyz@127.0.0.1:6379/0",
        "redis://:pw@127.0.0.1:notaport/0",
        "redi://127.0.0.1/0",
        "redis://u:pw@[::1/0",
    ],
)
def test_a_malformed_redis_url_is_a_configuration_error_that_shows_no_password(url: str, tmp_path: Path) -> None:
    config = tmp_path / "sonora.toml"
    config.write_text(f'[storage]\nbackend = "redis"\nredis_url = "{url}"\n')
    out = run_cli("snapshots", "list", "--config", str(config))
    assert out.returncode == 4, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and "pa#" not in out.stderr and ":pw@" not in out.stderr


def test_a_key_in_a_list_setting_or_as_the_redis_prefix_is_never_shown(tmp_path: Path) -> None:
    key = Keyring.generate_key_text()
    for env in ({"SONORA_COMMANDS_ALLOWED_ROLE_IDS": f'["{key}"]'}, {"SONORA_STORAGE_REDIS_PREFIX": key}):
        with pytest.raises(ConfigError) as raised:
            load_settings(env=env)
        assert key not in str(raised.value) and "not shown" in str(raised.value)


@pytest.mark.parametrize("created_at", [1e300, -1e12, 5e9])
def test_an_impossible_capture_time_is_refused_on_import(tmp_path: Path, created_at: float) -> None:
    manager = SessionManager(Settings(storage=StorageSettings(path=str(tmp_path / "store"))))
    document = orjson.loads(manager.export_json(sample_state()))
    document["created_at"] = created_at
    with pytest.raises(InvalidSnapshot, match="created_at"):
        manager.parse_export(orjson.dumps(document))


@pytest.mark.parametrize(
    "key",
    [
        "SCgm1jyqHewaGaarrWdWvdhtnC7pjGOBfQlhWBWCMrI=",  # only two digits
        "a3f5" * 16,
        "Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eA",
    ],
)
def test_keys_with_few_digits_are_still_never_shown(key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(env={"SONORA_COMMANDS_ALLOWED_ROLE_IDS": f'["{key}"]', "SONORA_STORAGE_REDIS_PREFIX": key})
    assert key not in str(raised.value)


@pytest.mark.parametrize("name", ["production_bot_cluster_eu_west_1", "MY_VERY_LONG_APPLICATION_REDIS_PREFIX"])
def test_long_names_are_not_taken_for_keys(name: str) -> None:
    assert load_settings(env={"SONORA_STORAGE_REDIS_PREFIX": name}).storage.redis_prefix == name
