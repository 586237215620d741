"""Fixtures for the store contract suite: one ``store`` per backend, and records made by the real codec.

To add a backend, append its name to ``BACKENDS`` and give it a branch in ``backend``: the contract
tests in ``test_contract.py`` must then pass unchanged.

The ``redis`` backend runs against a real ``redis-server`` that ``redis_server`` starts on a free
loopback port for the session (each test gets its own key prefix). Without ``redis-server`` those tests
are skipped, except under ``CI`` where they fail: ``scripts/test`` installs it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import pytest

from sonora_cog.meta import SnapshotKind, SnapshotMeta, new_snapshot_id
from sonora_cog.store import FilesystemStore, SnapshotStore
from sonora_cog.testing.redis_server import RedisServer, require_redis_server

BACKENDS = ["filesystem", "redis"]

GUILD_A = 111111111111111111
GUILD_B = 222222222222222222
#: A fixed "now" so creation times, ages and ids are reproducible.
T0 = 1_790_000_000.0


@dataclass(frozen=True, slots=True)
class Record:
    """A record as the manager would hand it to a store: its metadata and its envelope bytes."""

    meta: SnapshotMeta
    data: bytes


class RecordFactory(Protocol):
    def __call__(
        self,
        guild_id: int = GUILD_A,
        *,
        kind: SnapshotKind = SnapshotKind.manual,
        created_at: float | None = None,
        label: str | None = None,
        titles: tuple[str, ...] = ("First song", "Second song"),
        padding: int = 0,
        compression: Literal["none", "zstd"] = "none",
        snapshot_id: str | None = None,
    ) -> Record: ...


class LiveFactory(Protocol):
    def __call__(self, guild_id: int = GUILD_A, *, marker: str = "", padding: int = 0) -> bytes: ...


@dataclass(slots=True)
class Backend:
    """A store under test plus what the backend-agnostic tests need to peek behind it."""

    name: str
    store: SnapshotStore
    #: Read the raw bytes at a location returned by ``quarantine_live`` (a path, a key, ...).
    read_location: Callable[[str], Awaitable[bytes]]


def _track(title: str, n: int) -> dict[str, Any]:
    return {
        "encoded": f"QAAA{n:04d}",
        "info": {
            "identifier": f"id{n}",
            "isSeekable": True,
            "author": "Artist",
            "length": 180_000,
            "isStream": False,
            "position": 0,
            "title": title,
            "uri": f"https://example.invalid/{n}",
            "artworkUrl": None,
            "isrc": None,
            "sourceName": "http",
        },
        "pluginInfo": {},
        "userData": {},
    }


def _payload(guild_id: int, meta: SnapshotMeta, titles: tuple[str, ...], padding: int) -> dict[str, Any]:
    tracks = [_track(title, i) for i, title in enumerate(titles)]
    return {
        "schema": 1,
        "guild_id": str(guild_id),
        "channel_id": "333333333333333333",
        "node": "main",
        "created_at": meta.created_at,
        "kind": meta.kind.value,
        "label": meta.label,
        "player": {
            "volume": 100,
            "paused": False,
            "position": 1234,
            "position_at": meta.created_at,
            "connected": True,
            "session_id": None,
        },
        "queue": {
            "current": tracks[0] if tracks else None,
            "upcoming": tracks[1:],
            "history": [],
            "loop_mode": "none",
            "shuffle_enabled": False,
        },
        "filters": {"active_filters": [], "filter_config": {}},
        "autoplay": {"enabled": False, "mode": "disabled", "auto_queue": [], "max_history": 100},
        "extras": {"padding": "x" * padding} if padding else {},
    }


def encode(
    guild_id: int,
    meta: SnapshotMeta,
    *,
    titles: tuple[str, ...] = ("Song",),
    padding: int = 0,
    compression: Literal["none", "zstd"] = "none",
) -> Record:
    """Encode a small session with the real codec (imported here so collection works without it)."""
    from sonora_cog.codec import Codec

    encoded = Codec(compression=compression).encode(_payload(guild_id, meta, titles, padding), meta)
    return Record(encoded.meta, encoded.data)


@pytest.fixture
def make_record() -> RecordFactory:
    """Build snapshot records; each call gets a later ``created_at`` than the previous one by default."""
    clock = itertools.count()

    def make(
        guild_id: int = GUILD_A,
        *,
        kind: SnapshotKind = SnapshotKind.manual,
        created_at: float | None = None,
        label: str | None = None,
        titles: tuple[str, ...] = ("First song", "Second song"),
        padding: int = 0,
        compression: Literal["none", "zstd"] = "none",
        snapshot_id: str | None = None,
    ) -> Record:
        when = T0 + next(clock) if created_at is None else created_at
        meta = SnapshotMeta(
            id=snapshot_id or new_snapshot_id(when),
            guild_id=guild_id,
            created_at=when,
            kind=kind,
            label=label,
            track_count=len(titles),
            current_title=titles[0] if titles else None,
            content_hash="",
        )
        return encode(guild_id, meta, titles=titles, padding=padding, compression=compression)

    return make


@pytest.fixture
def make_live() -> LiveFactory:
    """Build live-record bytes; ``marker`` (a title) makes two records of one guild differ."""

    def make(guild_id: int = GUILD_A, *, marker: str = "", padding: int = 0) -> bytes:
        meta = SnapshotMeta(
            id="live",
            guild_id=guild_id,
            created_at=T0,
            kind=SnapshotKind.live,
            label=None,
            track_count=1,
            current_title=f"Live {marker}",
            content_hash="",
        )
        return encode(guild_id, meta, titles=(f"Live {marker}",), padding=padding).data

    return make


async def _read_path(location: str) -> bytes:
    return await asyncio.to_thread(Path(location).read_bytes)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real ``redis-server`` on a free loopback port for the whole session, stopped afterwards."""
    require_redis_server()
    server = RedisServer(persistent=False)
    server.start()
    yield server
    server.cleanup()


_prefixes = itertools.count(1)


def new_redis_store(server: RedisServer, **kwargs: Any) -> Any:
    """A RedisStore on ``server`` with a key prefix no other test uses."""
    from sonora_cog.store.redis import RedisStore

    return RedisStore(server.url, prefix=f"test{next(_prefixes)}", **kwargs)


@pytest.fixture
def make_redis_store(redis_server: RedisServer) -> Callable[..., Any]:
    """``make_redis_store(**kwargs)``: a new RedisStore on the session's server with its own prefix."""
    return lambda **kwargs: new_redis_store(redis_server, **kwargs)


@pytest.fixture
async def redis_store(redis_server: RedisServer) -> AsyncIterator[Any]:
    """An opened RedisStore with a fresh key prefix on the session's server."""
    store = new_redis_store(redis_server)
    await store.open()
    yield store
    await store.close()


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """One opened store per backend in ``BACKENDS``, closed after the test."""
    if request.param == "filesystem":
        store = FilesystemStore(tmp_path / "store")
        await store.open()
        yield Backend("filesystem", store, _read_path)
        await store.close()
    elif request.param == "redis":
        redis_store = new_redis_store(request.getfixturevalue("redis_server"))
        await redis_store.open()

        async def read_key(location: str) -> bytes:
            data = await redis_store._client.get(location)
            assert data is not None, f"no key {location}"
            return bytes(data)

        yield Backend("redis", redis_store, read_key)
        await redis_store.close()
    else:  # pragma: no cover - a new backend must add its branch
        raise AssertionError(f"unknown backend {request.param!r}")


@pytest.fixture
def store(backend: Backend) -> SnapshotStore:
    """The store under test (parametrised over every backend)."""
    return backend.store


@pytest.fixture
async def fs_store(tmp_path: Path) -> AsyncIterator[FilesystemStore]:
    """A filesystem store, for the backend-specific tests."""
    store = FilesystemStore(tmp_path / "store")
    await store.open()
    yield store
    await store.close()
