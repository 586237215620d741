"""Writers racing and dying: no record is ever torn, and no process ever moves a record backwards.

- a writer process SIGKILLed at 50 random instants leaves every record either as it last acknowledged
  it or as the write in flight made it: never torn, never older (one record at a time, and group commits
  of every guild at once);
- ``snapshots rekey`` and ``snapshots prune`` running while a bot-like writer rewrites the same live
  records never put an older version back, and count a record removed meanwhile as skipped, not failed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from factories import sample_state

from sonora_cog.cli import _rekey_one
from sonora_cog.codec import describe
from sonora_cog.config import EncryptionSettings, Secret, Settings, StorageSettings
from sonora_cog.keyring import Keyring
from sonora_cog.manager import SessionManager
from sonora_cog.meta import SnapshotKind
from sonora_cog.store.base import RecordRef

GUILDS = [111111111111111111 + i for i in range(8)]
RACING_GUILDS = [222222222222222222 + i for i in range(24)]

WRITER = """
import asyncio, sys
from factories import sample_state
from sonora_cog.config import Settings, StorageSettings
from sonora_cog.manager import SessionManager
from sonora_cog.meta import SnapshotKind
from sonora_cog.store.base import RecordRef

async def main():
    manager = SessionManager(Settings(storage=StorageSettings(path=sys.argv[1])))
    guilds = [int(g) for g in sys.argv[2].split(",")]
    version = int(sys.argv[3])
    batch = sys.argv[4] == "batch"
    print("ready", flush=True)
    while True:
        states = [sample_state(guild_id=g, kind=SnapshotKind.live, tracks=40, extras={"v": version}) for g in guilds]
        if batch:  # one group commit of every guild
            for guild in guilds:
                print(f"writing {guild} {version}", flush=True)
            outcomes = await manager.write_live_many(states)
            assert all(o.ok for o in outcomes)
            for guild in guilds:
                print(f"acked {guild} {version}", flush=True)
        for state in [] if batch else states:
            print(f"writing {state.guild_id} {version}", flush=True)
            await manager.write_live(state)
            print(f"acked {state.guild_id} {version}", flush=True)
        version += 1

asyncio.run(main())
"""


def version_of(state: object) -> int | None:
    return None if state is None else state.extras["v"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("writes", ["single", "batch"])
async def test_fifty_sigkills_of_a_writer_never_tear_or_move_back_a_record(tmp_path: Path, writes: str) -> None:
    store = tmp_path / "store"
    rng = random.Random(20261129)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    acked: dict[int, int] = {}
    version = 0
    manager = SessionManager(Settings(storage=StorageSettings(path=str(store))))
    try:
        for kill in range(50):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                WRITER,
                str(store),
                ",".join(map(str, GUILDS)),
                str(version),
                writes,
                stdout=subprocess.PIPE,
                env=env,
            )
            assert proc.stdout is not None
            assert await proc.stdout.readline() == b"ready\n"
            await asyncio.sleep(rng.uniform(0.0, 0.06))  # a random instant: before, inside or between writes
            proc.kill()
            output = (await proc.stdout.read()).decode()
            await proc.wait()
            in_flight: dict[int, int] = {}
            for line in output.splitlines():
                word, guild, number = line.split()
                (acked if word == "acked" else in_flight)[int(guild)] = int(number)
            for guild in GUILDS:
                found = version_of(await manager.read_live(guild))  # raises if a record were torn
                allowed = {acked.get(guild), in_flight.get(guild)}
                assert found in allowed, f"kill {kill}: guild {guild} holds v{found}, expected one of {allowed}"
                if found is not None:
                    acked[guild] = found
            version = max([version, *acked.values()]) + 1
        assert len(acked) == len(GUILDS)  # every guild was written, and survived 50 kills
    finally:
        await manager.close()
    assert not list((store / "quarantine").iterdir())


def encrypted(store: Path, key: str, *old: str) -> Settings:
    return Settings(
        storage=StorageSettings(path=str(store)),
        encryption=EncryptionSettings(enabled=True),
        encryption_key=Secret(key),
        old_encryption_keys=tuple(Secret(k) for k in old),
    )


async def test_rekey_and_prune_racing_a_writer_never_move_a_record_backwards(tmp_path: Path) -> None:
    store = tmp_path / "store"
    key_a, key_b = Keyring.generate_key_text(), Keyring.generate_key_text()
    writer = SessionManager(encrypted(store, key_a))  # the bot, still on key A
    acked: dict[int, int] = {}
    for guild in RACING_GUILDS:
        for n in range(3):
            await writer.save_snapshot(sample_state(guild_id=guild, extras={"v": -n}))
        await writer.write_live(sample_state(guild_id=guild, kind=SnapshotKind.live, extras={"v": 0}))
        acked[guild] = 0
    stop = asyncio.Event()
    went_back: list[str] = []
    checker = SessionManager(encrypted(store, key_b, key_a))  # reads what is on disk now, either key

    async def write_forever() -> None:
        # Like the bot: rewrite every live record, again and again. Before each write, look at what is on
        # disk: a version older than the last one this writer wrote means a tool moved the record back.
        version = 1
        while not stop.is_set():
            for guild in RACING_GUILDS:
                found = version_of(await checker.read_live(guild))
                if found is None or found < acked[guild]:
                    went_back.append(f"guild {guild}: v{found} on disk after v{acked[guild]} was written")
                await writer.write_live(sample_state(guild_id=guild, kind=SnapshotKind.live, extras={"v": version}))
                acked[guild] = version
            version += 1

    env = {
        **os.environ,
        "SONORA_ENCRYPTION_ENABLED": "true",
        "SONORA_ENCRYPTION_KEY": key_b,
        "SONORA_OLD_ENCRYPTION_KEYS": key_a,
    }

    def tool(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sonora_cog", "snapshots", *args, "--store", str(store)],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )

    writing = asyncio.create_task(write_forever())
    try:
        rekey, prune = await asyncio.gather(
            asyncio.to_thread(tool, "rekey", "--json"),
            asyncio.to_thread(tool, "prune", "--max-per-guild", "1", "--json"),
        )
    finally:
        stop.set()
        await writing
    await checker.close()
    assert went_back == []
    assert rekey.returncode == 0, rekey.stdout + rekey.stderr
    assert prune.returncode == 0, prune.stdout + prune.stderr
    summary = json.loads(rekey.stdout)
    assert summary["failed"] == 0  # a snapshot pruned meanwhile is skipped, not failed
    reader = SessionManager(encrypted(store, key_b, key_a))
    try:
        for guild in RACING_GUILDS:
            state = await reader.read_live(guild)
            assert version_of(state) == acked[guild], f"guild {guild}: the record moved back"
        assert [r for r in await reader.validate_all() if not r.ok] == []
    finally:
        await reader.close()
        await writer.close()


class WriterBetweenReadAndReplace:
    """The worst interleaving, made certain: just before rekey replaces a live record it read, the bot
    writes a newer version of it (as it does any second)."""

    def __init__(self, store: Any, bot: SessionManager) -> None:
        self._store = store
        self._bot = bot
        self.interleaved = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def replace(self, ref: RecordRef, data: bytes, *, expected: bytes | None = None) -> None:
        if ref.snapshot_id is None and self.interleaved < 1:
            self.interleaved += 1
            await self._bot.write_live(sample_state(guild_id=ref.guild_id, kind=SnapshotKind.live, extras={"v": 2}))
        await self._store.replace(ref, data, expected=expected)


@pytest.mark.parametrize("backend", ["filesystem", "redis"])
async def test_rekey_never_puts_back_what_the_bot_rewrote_after_it_was_read(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    key_a, key_b = Keyring.generate_key_text(), Keyring.generate_key_text()
    if backend == "redis":
        server = request.getfixturevalue("private_redis_server")
        storage = StorageSettings(backend="redis", redis_url=server.url, redis_prefix="rekey")
    else:
        storage = StorageSettings(path=str(tmp_path / "store"))

    def settings(key: str, *old: str) -> Settings:
        return dataclasses.replace(encrypted(tmp_path, key, *old), storage=storage)

    bot = SessionManager(settings(key_a))
    tool = SessionManager(settings(key_b, key_a))
    guild = GUILDS[0]
    try:
        await bot.write_live(sample_state(guild_id=guild, kind=SnapshotKind.live, extras={"v": 1}))
        [ref] = [r async for r in tool.store.scan()]
        racing = WriterBetweenReadAndReplace(tool.store, bot)
        tool._store = racing  # type: ignore[assignment]  # the tool's own store, wrapped to interleave the bot
        assert await _rekey_one(tool, ref) == "rekeyed"
        assert racing.interleaved == 1
        state = await tool.read_live(guild)
        assert version_of(state) == 2  # the bot's newer write, re-encrypted: not the older one put back
        raw = await racing.get_live(guild)
        assert raw is not None and describe(raw).key_id == tool.codec.keyring.current_id  # type: ignore[union-attr]
    finally:
        await bot.close()
        await tool.close()
