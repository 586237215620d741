"""The shared backend: every record in one Redis, for sharded, clustered and blue-green deployed bots.

Needs the ``redis`` extra (``pip install "sonora-cog[redis]"``); the driver is imported when the store
is created, not when this module is. Key layout under ``prefix`` (``storage.redis_prefix``)::

    {prefix}:live:{guild}             the guild's live record (bytes: the codec envelope, unchanged)
    {prefix}:live-guilds              SET of guilds with a live record
    {prefix}:snap:{guild}:{id}        a snapshot (bytes)
    {prefix}:idx:{guild}              ZSET of the guild's snapshot ids, scored by creation time
    {prefix}:meta:{guild}             HASH id -> header metadata JSON (with the record size), for listing
    {prefix}:guilds                   SET of guilds with snapshots
    {prefix}:quarantine:{guild}:{utc}-{rand}   a live record moved aside; notes in {prefix}:quarantine-notes
    {prefix}:lease:{guild}            the owner token of the process that owns the guild (PX ttl)
    {prefix}:aux:{key}                a small auxiliary record (heartbeats, Lavalink session ids)
    {prefix}:journal:{name}           an append-only journal (deploy status): a list, one entry per item
    {prefix}:journals                 set of journal names

Every multi-key change is one Lua script (:mod:`~sonora_cog.store.redis_scripts`), so readers never
see half of it. Listing reads the metadata hashes only, never the records. Values are the codec's
envelopes, so compression and encryption apply unchanged.

Connection faults: when Redis cannot be reached (at startup or later) the store logs it once and
retries with exponential backoff. Meanwhile writes (live records, snapshots) are kept in a bounded
:class:`~sonora_cog.store.redis_buffer.WriteBuffer` and written, in order, when Redis is back; a write
that does not fit raises :class:`~sonora_cog.store.redis_buffer.BufferFull` and is logged. Reads that
need Redis raise :class:`~sonora_cog.errors.StoreError` at once (a buffered record is served from the
buffer). Redis Cluster is not supported (the global sets span hash slots); use one primary (with
replicas or Sentinel).

.. versionadded:: 0.2
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import (
    ConfigError,
    DuplicateSnapshot,
    InvalidIdentifier,
    RecordChanged,
    SnapshotNotFound,
    SnapshotTooLarge,
    SonoraError,
    StoreError,
)
from ..lease import LeaseConflict, LeaseStatus
from ..meta import SNAPSHOT_ID_RE, SnapshotMeta, validate_snapshot_id
from . import redis_scripts as lua
from .base import (
    DEFAULT_MAX_RECORD_BYTES,
    MAX_JOURNAL_BYTES,
    BatchResult,
    HeaderReader,
    RecordRef,
    StoreStats,
    check_header,
    plan_prune,
    read_meta_from_bytes,
    read_meta_from_stream,
    validate_aux_key,
    validate_guild_id,
    validate_journal_entries,
)
from .redis_buffer import BufferFull, PendingKind, PendingWrite, WriteBuffer
from .redis_link import RedisLink, redact_url

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ("BufferFull", "RedisStore", "redact_url")


#: Connections the store opens to Redis at most; more concurrent calls wait for one.
MAX_CONNECTIONS = 32


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis ``MATCH`` pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


_log = logging.getLogger(__name__)
_REASON_MAX = 2000
_CHUNK = 500


def _driver() -> Any:
    try:
        import redis.asyncio as aioredis  # the driver is optional
    except ImportError:
        raise ConfigError('storage.backend = "redis" needs the redis driver: pip install "sonora-cog[redis]"') from None
    return aioredis


class RedisStore:
    """A :class:`~sonora_cog.store.base.SnapshotStore` in Redis, shared by every process of a bot.

    Parameters
    ----------
    url:
        ``redis://host:port/db``, ``rediss://`` for TLS, or ``unix:///path.sock``. A password in the
        URL works but is better given as ``password`` (from the environment).
    prefix:
        Prefix of every key; processes sharing a prefix share their records.
    password:
        The Redis password (``AUTH``); never logged.
    timeout:
        Seconds to wait for a connection or a reply before Redis counts as unreachable.
    buffer_max_records, buffer_max_bytes:
        Bounds of the write buffer used while Redis is unreachable.
    retry_initial, retry_max:
        Backoff between reconnection attempts: doubles from ``retry_initial`` up to ``retry_max`` seconds.
    tls_ca_file:
        A CA bundle to verify a ``rediss://`` server with (the system's CAs when omitted).
    client:
        An existing ``redis.asyncio.Redis`` (created with ``decode_responses=False``) to use instead.
    read_header:
        Reads a record's header (see :class:`~sonora_cog.store.base.HeaderReader`).

    .. versionadded:: 0.2
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "sonora",
        password: str | None = None,
        timeout: float = 5.0,
        buffer_max_records: int = 10_000,
        buffer_max_bytes: int = 64 * 1024 * 1024,
        retry_initial: float = 0.25,
        retry_max: float = 10.0,
        tls_ca_file: str | None = None,
        client: Any = None,
        read_header: HeaderReader = read_meta_from_stream,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ) -> None:
        aioredis = _driver()
        from redis import exceptions

        #: Records larger than this are refused before they are read (``storage.max_record_bytes``).
        self.max_record_bytes = max_record_bytes
        if not prefix or any(c.isspace() for c in prefix):
            raise ConfigError(f"storage.redis_prefix: expected a prefix without spaces, got {prefix!r}")
        self.url = url
        self.prefix = prefix
        self._read_header = read_header
        if client is None:
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            options: dict[str, Any] = {
                "password": password,
                "socket_timeout": timeout,
                "socket_connect_timeout": timeout,
                "retry": Retry(NoBackoff(), 1),
                "health_check_interval": 30,
            }
            if tls_ca_file:
                options["ssl_ca_certs"] = tls_ca_file
            # A burst of calls waits for a free connection instead of failing (and counting as Redis down).
            try:
                pool = aioredis.BlockingConnectionPool.from_url(
                    url, max_connections=MAX_CONNECTIONS, timeout=timeout, **options
                )
            except (ValueError, TypeError):  # its message may quote a piece of the password: not shown
                raise ConfigError(
                    f"storage.redis_url is not a Redis URL redis-py can use ({redact_url(url)}): expected "
                    "redis://host:port/db, rediss://… or unix:///path; percent-encode special characters, and put "
                    "the password in the variable named by storage.redis_password_env"
                ) from None
            client = aioredis.Redis.from_pool(pool)  # owns the pool: closing the client closes it
        self._client = client
        self._scripts = {name: client.register_script(getattr(lua, name)) for name in lua.__all__}
        self._link = RedisLink(
            client,
            url,
            f"prefix {prefix!r}",
            WriteBuffer(buffer_max_records, buffer_max_bytes),
            self._apply,
            errors=(aioredis.ConnectionError, aioredis.TimeoutError, OSError, asyncio.TimeoutError),
            refused=aioredis.RedisError,
            retry=(retry_initial, retry_max),
            denied=(exceptions.AuthenticationError, exceptions.AuthorizationError, exceptions.NoPermissionError),
            denied_hint="storage.redis_password_env (the password) or storage.redis_url (the user)",
        )
        self._lease_owner = ""
        self._strays: dict[str, str] = {}
        self._reported: set[tuple[int, str]] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisStore:
        """The store ``[storage]`` describes (URL, prefix, timeout, buffer, TLS CA; password from the env)."""
        storage = settings.storage
        password = settings.redis_password.reveal() if settings.redis_password is not None else None
        return cls(
            storage.redis_url,
            prefix=storage.redis_prefix,
            password=password,
            timeout=storage.redis_timeout,
            buffer_max_records=storage.redis_buffer_max_records,
            buffer_max_bytes=storage.redis_buffer_max_bytes,
            tls_ca_file=storage.redis_tls_ca_file or None,
            max_record_bytes=storage.max_record_bytes,
        )

    def __repr__(self) -> str:
        return f"<RedisStore url={redact_url(self.url)!r} prefix={self.prefix!r}>"

    async def __aenter__(self) -> RedisStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- keys ------------------------------------------------------------------------------------------
    def _key(self, *parts: object) -> str:
        return ":".join((self.prefix, *(str(p) for p in parts)))

    def _live_key(self, guild_id: int) -> str:
        return self._key("live", validate_guild_id(guild_id))

    def _snap_key(self, guild_id: int, snapshot_id: str) -> str:
        return self._key("snap", validate_guild_id(guild_id), validate_snapshot_id(snapshot_id))

    # --- connection state (see RedisLink) -------------------------------------------------------------
    @property
    def available(self) -> bool:
        """Whether Redis answered the last command (``False`` during an outage)."""
        return self._link.available

    @property
    def buffered(self) -> int:
        """Writes waiting in memory for Redis."""
        return len(self._link.buffer)

    async def open(self) -> None:
        """Check the connection once. Redis being down is logged and retried, not raised.

        Raises
        ------
        StoreError
            The store is closed.
        """
        await self._link.open()

    async def close(self) -> None:
        """Try a last flush of buffered writes (logging any left), then close the connections."""
        await self._link.close()

    async def wait_available(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait until Redis answers and every buffered write is written; return whether it did in time."""
        return await self._link.wait_available(timeout)

    async def _apply(self, item: PendingWrite, retry: bool = False) -> bool:
        if item.kind is PendingKind.put_aux:
            await self._client.set(self._key("aux", item.name), item.data)
            return True
        script, keys, args = self._command(item, retry)
        return self._result(item, await self._scripts[script](keys, args))

    def _command(self, item: PendingWrite, retry: bool) -> tuple[str, builtins.list[str], builtins.list[Any]]:
        """The script, keys and arguments that apply a live-record or snapshot write."""
        guild = item.guild_id
        live_keys = [self._live_key(guild), self._key("live-guilds"), self._key("lease", guild)]
        if item.kind is PendingKind.put_live:
            return "PUT_LIVE", live_keys, [item.data, guild, self._lease_owner]
        if item.kind is PendingKind.delete_live:
            return "DELETE_LIVE", live_keys, [guild, self._lease_owner]
        meta = item.meta
        assert meta is not None
        keys = [self._snap_key(guild, meta.id), self._key("idx", guild), self._key("meta", guild), self._key("guilds")]
        info = orjson.dumps({**meta.to_json(), "size": len(item.data)})
        return "SAVE_SNAPSHOT", keys, [item.data, repr(meta.created_at), meta.id, info, guild, "1" if retry else "0"]

    def _result(self, item: PendingWrite, answer: Any) -> bool:
        """What a write's script answered, as :meth:`_apply` returns it (a refusal raised)."""
        guild = item.guild_id
        if item.kind is PendingKind.put_live:
            ok, holder = answer
            if not ok:
                raise LeaseConflict(guild, holder.decode(errors="replace"))
        elif item.kind is PendingKind.delete_live:
            deleted, holder = answer
            if deleted == -1:
                raise LeaseConflict(guild, holder.decode(errors="replace"))
            return bool(deleted)
        elif answer == 0:
            assert item.meta is not None
            raise DuplicateSnapshot(f"snapshot {item.meta.id} of guild {guild} already exists; snapshots are immutable")
        return True

    async def _apply_many(self, items: Sequence[PendingWrite]) -> builtins.list[Exception | None]:
        """Apply live-record and snapshot writes pipelined, ``_CHUNK`` per round trip: each is its own
        script (atomic, fenced, compare-before-write) as in :meth:`_apply`; each one's refusal is its own.

        Not ``MULTI``: the scripts are atomic one by one, and a transaction would not undo a refused one anyway.
        """
        from redis.exceptions import RedisError

        outcomes: list[Exception | None] = []
        for start in range(0, len(items), _CHUNK):
            chunk = items[start : start + _CHUNK]
            async with self._client.pipeline(transaction=False) as pipe:
                for item in chunk:
                    script, keys, args = self._command(item, False)
                    await self._scripts[script](keys, args, client=pipe)
                answers = await pipe.execute(raise_on_error=False)
            for item, answer in zip(chunk, answers, strict=True):
                if isinstance(answer, RedisError):
                    outcomes.append(StoreError(f"Redis refused the {item.describe()}: {answer}"))
                    continue
                try:
                    self._result(item, answer)
                except SonoraError as exc:
                    outcomes.append(exc)
                else:
                    outcomes.append(None)
        return outcomes

    def _header(self, data: bytes) -> SnapshotMeta:
        return read_meta_from_bytes(data, self._read_header)

    @staticmethod
    def _as_bytes(data: bytes) -> bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"a record is bytes, got {type(data).__name__}")
        return bytes(data)

    # --- live records ----------------------------------------------------------------------------------
    async def put_live(self, guild_id: int, data: bytes) -> None:
        """Write the guild's live record (buffered while Redis is down); see :meth:`SnapshotStore.put_live`.

        Raises
        ------
        LeaseConflict
            Another process holds the guild's lease (this store's lease owner is set and differs).
        BufferFull
            Redis is unreachable and the write buffer is full.
        """
        await self._link.write(self._live_write(guild_id, data))

    def _live_write(self, guild_id: int, data: bytes) -> PendingWrite:
        """A checked live-record write (a bad id, a record that is not bytes or names another guild: raised)."""
        validate_guild_id(guild_id)
        data = self._as_bytes(data)
        check_header(self._header(data), guild_id, None)
        return PendingWrite(PendingKind.put_live, guild_id, data)

    async def put_live_many(self, items: Sequence[tuple[int, bytes]]) -> BatchResult:
        """Write many live records in one round trip (buffered while Redis is down); see
        :meth:`SnapshotStore.put_live_many`. Each is fenced by its guild's lease as in :meth:`put_live`."""
        return await self._write_many([partial(self._live_write, guild_id, data) for guild_id, data in items])

    async def _write_many(self, checks: Sequence[Callable[[], PendingWrite]]) -> BatchResult:
        """Check each item (its error is its own), then apply the good ones in one round trip."""
        writes: dict[int, PendingWrite] = {}
        errors: dict[int, Exception] = {}
        for index, check in enumerate(checks):
            try:
                writes[index] = check()
            except (SonoraError, TypeError) as exc:
                errors[index] = exc
        if writes:
            indexes = list(writes)
            outcomes = await self._link.write_many([writes[i] for i in indexes], self._apply_many)
            errors.update((i, error) for i, error in zip(indexes, outcomes, strict=True) if error is not None)
        return BatchResult(tuple(errors.get(index) for index in range(len(checks))))

    async def get_live(self, guild_id: int) -> bytes | None:
        """Return the guild's live record (a buffered one first), or ``None``."""
        key = self._live_key(guild_id)
        pending = self._link.buffer.live(guild_id)
        if pending is not None:
            return pending.data if pending.kind is PendingKind.put_live else None
        return await self._capped_get(key, f"the live record of guild {guild_id}")

    async def delete_live(self, guild_id: int) -> bool:
        """Delete the guild's live record; return whether there was one (``True`` when buffered).

        Raises
        ------
        LeaseConflict
            Another process holds the guild's lease.
        """
        validate_guild_id(guild_id)
        return bool(await self._link.write(PendingWrite(PendingKind.delete_live, guild_id)))

    async def live_guilds(self) -> list[int]:
        """Return the guilds with a live record (including buffered writes), ascending."""
        members = await self._link.call("list the live records", self._client.smembers, self._key("live-guilds"))
        guilds = set(self._guild_ids(members, "live-guilds"))
        for item in self._link.buffer.lives():
            (guilds.add if item.kind is PendingKind.put_live else guilds.discard)(item.guild_id)
        return sorted(guilds)

    async def quarantine_live(self, guild_id: int, reason: str) -> str | None:
        """Move the live record to ``{prefix}:quarantine:{guild}:{utc}-{rand}``, noting ``reason``."""
        live = self._live_key(guild_id)
        now = time.time()
        target = self._key(
            "quarantine", guild_id, f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}-{secrets.token_hex(3)}"
        )
        note = json.dumps(
            {"guild_id": str(guild_id), "record": "live", "quarantined_at": now, "reason": str(reason)[:_REASON_MAX]}
        )
        keys = [live, self._key("live-guilds"), target, self._key("quarantine-notes")]
        async with self._link.lock(guild_id):
            moved = await self._link.call(
                f"quarantine the live record of guild {guild_id}",
                self._scripts["QUARANTINE_LIVE"],
                keys,
                [guild_id, note],
            )
        if not moved:
            return None
        _log.warning("quarantined the live record of guild %s to %s: %s", guild_id, target, reason)
        return target

    # --- auxiliary records -------------------------------------------------------------------------------
    async def put_aux(self, key: str, data: bytes) -> None:
        """Write an auxiliary record (buffered while Redis is down); see :meth:`SnapshotStore.put_aux`."""
        data = self._as_bytes(data)
        validate_aux_key(key, data)
        await self._link.write(PendingWrite(PendingKind.put_aux, 0, data, name=key))

    async def get_aux(self, key: str) -> bytes | None:
        """Return an auxiliary record (a buffered one first), or ``None``."""
        redis_key = self._key("aux", validate_aux_key(key))
        pending = self._link.buffer.aux(key)
        if pending is not None:
            return pending.data
        return await self._capped_get(redis_key, f"auxiliary record {key!r}")

    async def delete_aux(self, key: str) -> bool:
        """Delete an auxiliary record; return whether there was one."""
        redis_key = self._key("aux", validate_aux_key(key))
        return bool(await self._link.call(f"delete auxiliary record {key!r}", self._client.delete, redis_key))

    async def aux_keys(self, prefix: str) -> builtins.list[str]:
        """Return the keys of the auxiliary records starting with ``prefix``, sorted (``SCAN``, never ``KEYS``)."""
        start = self._key("aux", "")
        pattern = _glob_escape(start + prefix) + "*"

        async def scan() -> builtins.list[str]:
            return [
                k.decode() if isinstance(k, bytes) else k
                async for k in self._client.scan_iter(match=pattern, count=500)
            ]

        found = await self._link.call("list auxiliary records", scan)
        return sorted(k[len(start) :] for k in found)

    async def append_journal(self, name: str, entries: Sequence[bytes]) -> None:
        """Append lines to a journal (one script: ``RPUSH``es and the set of journals); see the protocol."""
        lines = validate_journal_entries(name, entries)
        if not lines:
            return
        keys = [self._key("journal", name), self._key("journals")]
        size = sum(len(line) + 1 for line in lines)
        result = await self._link.call(
            f"append to journal {name!r}",
            self._scripts["APPEND_JOURNAL"],
            keys,
            [MAX_JOURNAL_BYTES, name, size, *lines],
        )
        if isinstance(result, list):
            raise StoreError(
                f"journal {name!r} would grow to {result[1]} bytes, over {MAX_JOURNAL_BYTES}; not appended"
            )

    async def read_journal(self, name: str) -> builtins.list[bytes]:
        """Return a journal's entries, in order (``[]`` when there is none)."""
        key = self._key("journal", validate_aux_key(name))
        result = await self._link.call(
            f"read journal {name!r}", self._scripts["CAPPED_JOURNAL"], [key], [MAX_JOURNAL_BYTES]
        )
        if result[0] == -1:
            raise SnapshotTooLarge(
                f"journal {name!r} is {result[1]} bytes, over the {MAX_JOURNAL_BYTES}-byte cap; not read",
                size=int(result[1]),
                cap=MAX_JOURNAL_BYTES,
            )
        return [bytes(item) for item in result[1:]]

    async def journal_names(self) -> builtins.list[str]:
        """Return the names of every journal, sorted."""
        members = await self._link.call("list journals", self._client.smembers, self._key("journals"))
        return sorted(m.decode() if isinstance(m, bytes) else m for m in members)

    async def delete_journal(self, name: str) -> bool:
        """Delete a journal; return whether there was one."""
        key = self._key("journal", validate_aux_key(name))

        async def delete() -> int:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                pipe.srem(self._key("journals"), name)
                deleted, _ = await pipe.execute()
                return int(deleted)

        return bool(await self._link.call(f"delete journal {name!r}", delete))

    # --- snapshots ---------------------------------------------------------------------------------------
    async def save(self, meta: SnapshotMeta, data: bytes) -> None:
        """Store a new immutable snapshot (buffered while Redis is down); see :meth:`SnapshotStore.save`."""
        await self._link.write(self._snapshot_write(meta, data))

    def _snapshot_write(self, meta: SnapshotMeta, data: bytes) -> PendingWrite:
        """A checked snapshot write (a bad id, a record that is not bytes or is another snapshot: raised)."""
        self._snap_key(meta.guild_id, meta.id)
        data = self._as_bytes(data)
        header = self._header(data)
        check_header(header, meta.guild_id, meta.id)
        return PendingWrite(PendingKind.save, meta.guild_id, data, header)

    async def save_many(self, items: Sequence[tuple[SnapshotMeta, bytes]]) -> BatchResult:
        """Store many new snapshots in one round trip (buffered while Redis is down); see
        :meth:`SnapshotStore.save_many`. An existing id is refused for that item, as in :meth:`save`."""
        return await self._write_many([partial(self._snapshot_write, meta, data) for meta, data in items])

    async def load(self, guild_id: int, snapshot_id: str) -> bytes:
        """Return a snapshot's bytes (a buffered one first), or raise :class:`SnapshotNotFound`."""
        key = self._snap_key(guild_id, snapshot_id)
        pending = self._link.buffer.snapshot(guild_id, snapshot_id)
        if pending is not None:
            return pending.data
        data = await self._capped_get(key, f"snapshot {snapshot_id} of guild {guild_id}")
        if data is None:
            raise SnapshotNotFound(f"guild {guild_id} has no snapshot {snapshot_id!r}")
        return data

    async def _capped_get(self, key: str, what: str) -> bytes | None:
        """``GET`` a value, checking its size in Redis first: a value over the cap is never transferred."""
        result = await self._link.call(f"read {what}", self._scripts["CAPPED_GET"], [key], [self.max_record_bytes])
        if isinstance(result, list):
            raise SnapshotTooLarge(
                f"{what} is {result[0]} bytes, over the {self.max_record_bytes}-byte cap; not read",
                size=int(result[0]),
                cap=self.max_record_bytes,
            )
        return None if result is None else bytes(result)

    def _parse_meta(self, guild_id: int, snapshot_id: str, raw: bytes) -> SnapshotMeta | None:
        try:
            obj = orjson.loads(raw)
            meta = SnapshotMeta.from_json(obj, size=int(obj.get("size", 0)))
            check_header(meta, guild_id, snapshot_id)
        except (SonoraError, ValueError, TypeError, AttributeError) as exc:
            level = logging.DEBUG if (guild_id, snapshot_id) in self._reported else logging.WARNING
            self._reported.add((guild_id, snapshot_id))
            _log.log(level, "skipping snapshot %s of guild %s: bad metadata in Redis (%s)", snapshot_id, guild_id, exc)
            return None
        return meta

    async def _metas(self, guilds: Sequence[int]) -> builtins.list[SnapshotMeta]:
        metas: list[SnapshotMeta] = []
        for start in range(0, len(guilds), _CHUNK):
            chunk = guilds[start : start + _CHUNK]

            async def fetch(chunk: Sequence[int] = chunk) -> Any:
                async with self._client.pipeline(transaction=False) as pipe:
                    for guild in chunk:
                        pipe.hgetall(self._key("meta", guild))
                    return await pipe.execute()

            for guild, entries in zip(chunk, await self._link.call("list snapshots", fetch), strict=True):
                for snapshot_id, raw in entries.items():
                    meta = self._parse_meta(guild, snapshot_id.decode(errors="replace"), raw)
                    if meta is not None:
                        metas.append(meta)
        return metas

    async def _snapshot_guilds(self) -> builtins.list[int]:
        members = await self._link.call("list snapshots", self._client.smembers, self._key("guilds"))
        return self._guild_ids(members, "guilds")

    async def list(self, guild_id: int | None = None) -> builtins.list[SnapshotMeta]:
        """Return snapshot metadata newest first, from the metadata hashes only (records are not read)."""
        guilds = [validate_guild_id(guild_id)] if guild_id is not None else await self._snapshot_guilds()
        metas = await self._metas(guilds)
        known = {(m.guild_id, m.id) for m in metas}
        for item in self._link.buffer.snapshots(guild_id):
            assert item.meta is not None
            if (item.guild_id, item.meta.id) not in known:
                metas.append(item.meta.with_size(len(item.data)))
        metas.sort(key=lambda m: (m.created_at, m.id), reverse=True)
        return metas

    async def _sizes(self, keys: Sequence[str]) -> builtins.list[int]:
        """Each key's length; ``-1`` for a key that is not a string (something else wrote it: reported)."""

        async def fetch() -> Any:
            async with self._client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.strlen(key)
                return await pipe.execute(raise_on_error=False)

        sizes = []
        for key, answer in zip(keys, await self._link.call("measure records", fetch) if keys else [], strict=True):
            if isinstance(answer, Exception):
                self._stray(key, f"not a string ({answer}); ignored")
                sizes.append(-1)
            else:
                sizes.append(int(answer))
        return sizes

    def _stray(self, where: str, why: str) -> None:
        """Report (once) something in sonora_cog's keys that it did not write."""
        if where not in self._strays:
            self._strays[where] = why
            _log.warning("%s: %s", where, why)

    async def _live_sizes(self) -> builtins.list[tuple[int, str, int]]:
        members = await self._link.call("list the live records", self._client.smembers, self._key("live-guilds"))
        guilds = self._guild_ids(members, "live-guilds")
        keys = [self._live_key(g) for g in guilds]
        return [(g, k, n) for g, k, n in zip(guilds, keys, await self._sizes(keys), strict=True) if n > 0]

    async def scan(self) -> AsyncIterator[RecordRef]:
        """Yield every live record, then every snapshot (by guild, oldest first), via the sets and indexes."""
        for guild, key, size in await self._live_sizes():
            yield RecordRef(guild, None, key, size)
        for guild in await self._snapshot_guilds():
            index = self._key("idx", guild)
            try:
                members = await self._link.call("scan snapshots", self._client.zrange, index, 0, -1)
            except StoreError as exc:
                if not self.available:
                    raise
                self._stray(index, f"cannot be read as an index ({exc}); its snapshots are not checked")
                continue
            ids = []
            for member in members:
                text = member.decode(errors="replace")
                if SNAPSHOT_ID_RE.fullmatch(text):
                    ids.append(text)
                else:
                    self._stray(f"{index} member {text[:80]!r}", "not a snapshot id; ignored (remove it with ZREM)")
            keys = [self._snap_key(guild, i) for i in ids]
            for snapshot_id, key, size in zip(ids, keys, await self._sizes(keys), strict=True):
                if size > 0:
                    yield RecordRef(guild, snapshot_id, key, size)

    async def replace(self, ref: RecordRef, data: bytes, *, expected: bytes | None = None) -> None:
        """Atomically rewrite an existing record (operator tools only); see :meth:`SnapshotStore.replace`.

        With ``expected`` (the bytes the caller read), Redis replaces the value only if it still holds
        exactly those bytes (compared in the script): :class:`~sonora_cog.errors.RecordChanged` otherwise.
        """
        data = self._as_bytes(data)
        header = self._header(data)
        digest = "" if expected is None else hashlib.sha1(expected, usedforsecurity=False).hexdigest()
        if ref.snapshot_id is None:
            what = f"the live record of guild {ref.guild_id}"
            script, keys, args = self._scripts["REPLACE_LIVE"], [self._live_key(ref.guild_id)], [data, digest]
        else:
            what = f"snapshot {ref.snapshot_id} of guild {ref.guild_id}"
            keys = [self._snap_key(ref.guild_id, ref.snapshot_id), self._key("meta", ref.guild_id)]
            info = orjson.dumps({**header.to_json(), "size": len(data)})
            script, args = self._scripts["REPLACE_SNAPSHOT"], [data, ref.snapshot_id, info, digest]
        async with self._link.lock(ref.guild_id):
            try:
                check_header(header, ref.guild_id, ref.snapshot_id)
            except SonoraError:
                if not await self._link.call(f"read {what}", self._client.exists, keys[0]):
                    raise SnapshotNotFound(f"cannot replace {what}: it does not exist") from None
                raise
            replaced = await self._link.call(f"replace {what}", script, keys, args)
            if replaced == -1:
                raise RecordChanged(f"{what} changed after it was read; not replaced")
            if not replaced:
                raise SnapshotNotFound(f"cannot replace {what}: it does not exist")

    async def _delete_many(self, guild_id: int, snapshot_ids: Sequence[str]) -> set[str]:
        keys = [
            self._key("idx", guild_id),
            self._key("meta", guild_id),
            self._key("guilds"),
            *(self._snap_key(guild_id, i) for i in snapshot_ids),
        ]
        async with self._link.lock(guild_id):
            deleted = await self._link.call(
                f"delete snapshots of guild {guild_id}",
                self._scripts["DELETE_SNAPSHOTS"],
                keys,
                [guild_id, *snapshot_ids],
            )
        return {d.decode() for d in deleted}

    async def delete(self, guild_id: int, snapshot_id: str) -> bool:
        """Delete a snapshot (a buffered one is dropped from the buffer); return whether it existed."""
        self._snap_key(guild_id, snapshot_id)
        pending = self._link.buffer.snapshot(guild_id, snapshot_id)
        if pending is not None and self._link.buffer.remove(pending):
            return True
        return bool(await self._delete_many(guild_id, [snapshot_id]))

    async def prune(
        self,
        *,
        max_per_guild: int | None,
        max_age_days: float | None,
        now: float | None = None,
        keep_deploy_tags: int = 0,
    ) -> builtins.list[SnapshotMeta]:  # `list` is a method name here
        """Apply retention in Redis: plan from the metadata hashes, delete per guild in one script each."""
        doomed = plan_prune(
            await self.list(),
            max_per_guild=max_per_guild,
            max_age_days=max_age_days,
            now=time.time() if now is None else now,
            keep_deploy_tags=keep_deploy_tags,
        )
        by_guild: dict[int, list[SnapshotMeta]] = {}
        for meta in doomed:
            by_guild.setdefault(meta.guild_id, []).append(meta)
        deleted: list[SnapshotMeta] = []
        for guild_id, metas in by_guild.items():
            for start in range(0, len(metas), _CHUNK):
                chunk = metas[start : start + _CHUNK]
                gone = await self._delete_many(guild_id, [m.id for m in chunk])
                deleted.extend(m for m in chunk if m.id in gone)
        if deleted:
            _log.info("retention deleted %d snapshot(s)", len(deleted))
        return deleted

    def unsafe_paths(self) -> dict[str, str]:
        """Set members that are not guild ids (something else wrote them), with why; access to Redis itself is
        its password and ACLs."""
        return dict(self._strays)

    def _guild_ids(self, members: Iterable[Any], set_name: str) -> builtins.list[int]:
        """The guild ids among a set's members, ascending; any other member is ignored and reported once."""
        guilds = []
        for member in members:
            text = member.decode(errors="replace") if isinstance(member, bytes) else str(member)
            try:
                if not (text.isascii() and text.isdigit()):
                    raise InvalidIdentifier(text)
                guilds.append(validate_guild_id(int(text)))
            except InvalidIdentifier:
                self._stray(
                    f"{self._key(set_name)} member {text[:80]!r}", "not a guild id; ignored (remove it with SREM)"
                )
        return sorted(guilds)

    async def stats(self) -> StoreStats:
        """Return counts over the store, from the metadata hashes and record lengths."""
        snapshots = await self.list()
        live = await self._live_sizes()
        return StoreStats.from_records(snapshots, [size for _, _, size in live])

    # --- leases (see sonora_cog.lease) ---------------------------------------------------------------------
    def set_lease_owner(self, owner: str | None) -> None:
        """Fence this store's live writes: refuse them while another owner holds the guild's lease."""
        self._lease_owner = owner or ""

    async def lease_acquire(self, guild_ids: Sequence[int], owner: str, ttl: float) -> builtins.list[LeaseStatus]:
        """Take or extend each guild's lease (``SET NX PX`` / compare-and-``PEXPIRE`` in Lua)."""
        ttl_ms = max(1, int(ttl * 1000))
        results = await self._lease_script("take leases", "LEASE_ACQUIRE", guild_ids, [owner, ttl_ms])
        return [
            LeaseStatus(guild, code > 0, holder.decode(errors="replace"), max(0, int(left)) / 1000)
            for guild, (code, holder, left) in results
        ]

    async def lease_release(self, guild_ids: Sequence[int], owner: str) -> int:
        """Release ``owner``'s leases among ``guild_ids`` (compare-and-``DEL`` in Lua)."""
        results = await self._lease_script("release leases", "LEASE_RELEASE", guild_ids, [owner])
        return sum(int(n) for _, n in results)

    async def _lease_script(
        self, what: str, script: str, guild_ids: Sequence[int], args: builtins.list[Any]
    ) -> builtins.list[tuple[int, Any]]:
        """Run a lease script on each guild's lease key, pipelined in chunks; ``(guild, result)`` pairs."""
        ids = [validate_guild_id(g) for g in guild_ids]
        results: list[tuple[int, Any]] = []
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]

            async def run(chunk: Sequence[int] = chunk) -> Any:
                async with self._client.pipeline(transaction=False) as pipe:
                    for guild in chunk:
                        await self._scripts[script]([self._key("lease", guild)], args, client=pipe)
                    return await pipe.execute()

            results.extend(zip(chunk, await self._link.call(what, run), strict=True))
        return results

    async def lease_holder(self, guild_id: int) -> str | None:
        """The owner token holding the guild's lease, or ``None`` (for operators and tests)."""
        key = self._key("lease", validate_guild_id(guild_id))
        holder = await self._link.call("read a lease", self._client.get, key)
        return None if holder is None else bytes(holder).decode(errors="replace")
