"""The connection of :class:`~sonora_cog.store.redis.RedisStore`: outages, backoff, and the write buffer.

:class:`RedisLink` runs every command of the store. When Redis cannot be reached (at startup or
later) it logs that once, retries with exponential backoff (with jitter), keeps writes in the bounded
:class:`~sonora_cog.store.redis_buffer.WriteBuffer` and writes them, in order, when Redis answers
again; meanwhile reads fail at once with a :class:`~sonora_cog.errors.StoreError` that says so.
Any other Redis error (out of memory, a read-only replica...) is a refusal: a ``StoreError`` now,
never buffered. Nothing is dropped silently: a write the buffer cannot hold raises, a buffered write
Redis refuses is logged as an error, and closing with writes still buffered logs each of them.

.. versionadded:: 0.2
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..errors import ConfigError, SonoraError, StoreError
from .redis_buffer import BufferFull, PendingWrite, WriteBuffer

__all__ = ("RedisLink", "redact_url")

_log = logging.getLogger(__name__)

#: Seconds each step of closing (the retry loop, the last flush, the disconnect) may take.
CLOSE_GRACE = 2.0

#: Applies one write to Redis: (write, is a retry of a buffered write) -> what the write returned.
Apply = Callable[[PendingWrite, bool], Awaitable[bool]]
#: Applies many writes in one round trip: per write, ``None`` or the error Redis refused it with.
ApplyMany = Callable[[Sequence[PendingWrite]], Awaitable[list[Exception | None]]]


#: Query parameters of a Redis URL that hold a secret (redis-py reads ``password`` from the query too).
_SECRET_PARAMETERS = {"password", "pass", "pwd", "passwd", "secret", "token", "auth"}


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs and errors): in the user part (whatever it
    holds, even an unencoded ``@`` or ``/``), in the query, and any fragment."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "***" if "@" in url else url
    at = rest.rfind("@")  # the last one: a password may hold an unencoded "@", "/", "?" or "#"
    prefix = ""
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, colon, _password = userinfo.partition(":")
        prefix = f"{user}:***@" if colon or any(c in userinfo for c in "/?#") else f"{userinfo}@"
    rest, hash_sign, _fragment = rest.partition("#")
    rest, question, query = rest.partition("?")
    rest = prefix + rest
    query = "&".join(
        f"{key}=***" if key.lower() in _SECRET_PARAMETERS else item
        for item in query.split("&")
        if item
        for key in [item.split("=", 1)[0]]
    )
    return f"{scheme}://{rest}" + (f"?{query}" if question else "") + ("#***" if hash_sign else "")


class RedisLink:
    """Runs a store's Redis commands through outages.

    Parameters
    ----------
    client:
        The ``redis.asyncio.Redis`` client.
    url:
        Its URL (shown redacted in logs and errors).
    label:
        What the store is, for the log (``prefix 'sonora'``).
    buffer:
        Where writes wait while Redis is unreachable.
    apply:
        Writes one buffered write to Redis.
    errors:
        Exceptions that mean "Redis is unreachable" (connection refused, timeouts...).
    denied:
        Exceptions that mean "Redis refused these credentials or this user's permissions": a
        configuration error (:class:`~sonora_cog.errors.ConfigError`), raised at once and never buffered.
    denied_hint:
        What to fix when that happens (the settings that hold the credentials).
    refused:
        The driver's base exception; any other one is a refusal by Redis.
    retry:
        Backoff between reconnection attempts: (first delay, longest delay) in seconds.
    """

    def __init__(
        self,
        client: Any,
        url: str,
        label: str,
        buffer: WriteBuffer,
        apply: Apply,
        *,
        errors: tuple[type[BaseException], ...],
        refused: type[BaseException],
        denied: tuple[type[BaseException], ...] = (),
        denied_hint: str = "",
        retry: tuple[float, float] = (0.25, 10.0),
    ) -> None:
        self._client = client
        self.url = url
        self.label = label
        self.buffer = buffer
        self._apply = apply
        self._errors = errors
        self._refused = refused
        self._denied = denied
        self._denied_hint = denied_hint
        self._retry = retry
        self._locks: dict[int, asyncio.Lock] = {}
        self._down_since: float | None = None
        self._down_reason = ""
        self._recovery: asyncio.Task[None] | None = None
        self._opened = False
        self._closed = False

    def __repr__(self) -> str:
        return f"<RedisStore url={redact_url(self.url)!r} {self.label}>"

    @property
    def available(self) -> bool:
        """Whether Redis answered the last command (``False`` during an outage)."""
        return self._down_since is None

    async def open(self) -> None:
        """Check the connection once. Redis being down is logged and retried, not raised.

        Raises
        ------
        StoreError
            The store is closed.
        ConfigError
            Redis refused the credentials or the user's permissions (a wrong password is not an outage).
        """
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        if self._opened:
            return
        self._opened = True
        try:
            await self._client.ping()
        except self._denied as exc:
            self._opened = False
            raise self._denial(exc) from None
        except self._errors as exc:
            self._fault(exc)
        except self._refused as exc:  # answered, but not as a store can be used: the URL asks for the impossible
            self._opened = False
            raise ConfigError(
                f"Redis at {redact_url(self.url)} refused the connection: {exc} (check "
                "storage.redis_url: the database number, TLS)"
            ) from None
        else:
            _log.info("snapshot store: Redis at %s (%s)", redact_url(self.url), self.label)

    async def close(self, *, grace: float = CLOSE_GRACE) -> None:
        """Try a last flush of buffered writes (logging any left), then close the connections.

        Bounded whatever Redis does: the retry loop stops on the closed flag it checks (and is waited
        for at most ``grace`` seconds, then abandoned); the last flush and the disconnect get ``grace``
        seconds each.
        """
        if self._closed:
            return
        self._closed = True
        recovery, self._recovery = self._recovery, None
        if recovery is not None and not recovery.done():
            recovery.cancel()  # it also stops at its next look at the flag, if a command swallows the cancel
            await asyncio.wait({recovery}, timeout=grace)
        if self.buffer:
            flush_errors: tuple[type[BaseException], ...] = (TimeoutError, *self._errors)
            try:
                async with asyncio.timeout(grace):
                    await self._flush()
            except flush_errors as exc:
                _log.error(
                    "closing with %d write(s) Redis never received (%s): %s",
                    len(self.buffer),
                    type(exc).__name__ if isinstance(exc, TimeoutError) else exc,
                    "; ".join(item.describe() for item in list(self.buffer)[:20]),
                )
        try:
            async with asyncio.timeout(grace):
                await self._client.aclose()
        except TimeoutError:
            _log.warning("the Redis connections did not close within %gs", grace)

    async def wait_available(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait until Redis answers and the buffer is written; return whether it happened in time."""
        await self.open()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self.available or self.buffer:
            if self._recovery is None or self._recovery.done():
                self._start_recovery()
            if deadline is not None and loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def _fault(self, exc: BaseException) -> None:
        """Redis could not be reached: log once, start retrying with backoff."""
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._down_reason = f"{type(exc).__name__}: {exc}"
            _log.error(
                "Redis at %s is unreachable (%s); buffering writes (up to %d records) and retrying",
                redact_url(self.url),
                self._down_reason,
                self.buffer.max_records,
            )
        self._start_recovery()

    def _start_recovery(self) -> None:
        if self._closed or (self._recovery is not None and not self._recovery.done()):
            return
        self._recovery = asyncio.get_running_loop().create_task(self._recover(), name="sonora-redis-recovery")

    async def _recover(self) -> None:
        delay, cap = self._retry
        while not self._closed:
            if self._down_since is not None:
                await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
            try:
                await self._client.ping()
                written = await self._flush()
            except self._denied as exc:
                _log.error("%s; the %d buffered write(s) stay in memory", self._denial(exc), len(self.buffer))
                return
            except self._errors as exc:
                _log.debug("Redis still unreachable: %s", exc)
                if self._down_since is None:
                    self._down_since = time.monotonic()
                delay = min(delay * 2, cap)
                continue
            if self._down_since is not None:
                _log.warning(
                    "Redis at %s is reachable again after %.1fs; wrote %d buffered record(s)",
                    redact_url(self.url),
                    time.monotonic() - self._down_since,
                    written,
                )
            self._down_since = None
            if not self.buffer:
                return

    async def _flush(self) -> int:
        """Write buffered writes in order; a connection fault propagates (the rest stay buffered)."""
        written = 0
        while (item := self.buffer.first()) is not None:
            async with self.lock(item.guild_id):
                if self.buffer.first() is not item:
                    continue  # replaced by a newer write meanwhile
                try:
                    await self._apply(item, True)
                except self._errors:
                    raise
                except (SonoraError, self._refused) as exc:  # refused for good (fenced, duplicate, ...): loudly
                    _log.error("buffered %s was NOT written: %s", item.describe(), exc)
                self.buffer.remove(item)
                written += 1
        return written

    def lock(self, guild_id: int) -> asyncio.Lock:
        """The lock that orders one guild's writes within this process."""
        return self._locks.setdefault(guild_id, asyncio.Lock())

    def _denial(self, exc: BaseException) -> ConfigError:
        return ConfigError(
            f"{self._denied_hint}: Redis at {redact_url(self.url)} refused the credentials or the "
            f"permissions ({type(exc).__name__}: {exc}); nothing is buffered for a wrong password"
        )

    def _unreachable(self, what: str) -> StoreError:
        pending = f"; {len(self.buffer)} write(s) are buffered until it is back" if self.buffer else ""
        return StoreError(
            f"cannot {what}: Redis at {redact_url(self.url)} is unreachable ({self._down_reason}){pending}"
        )

    async def call(self, what: str, coro_fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one read or tool command; raise :class:`StoreError` (fast) while Redis is down."""
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        await self.open()
        if self._down_since is not None:
            raise self._unreachable(what)
        try:
            return await coro_fn(*args, **kwargs)
        except self._denied as exc:
            raise self._denial(exc) from None
        except self._errors as exc:
            self._fault(exc)
            raise self._unreachable(what) from exc
        except self._refused as exc:
            raise StoreError(f"cannot {what}: Redis refused it: {exc}") from exc

    async def write(self, item: PendingWrite) -> bool:
        """Apply a write now, or buffer it while Redis is down (or a backlog is being written).

        Returns what the write returned (for a delete: whether there was a record), ``True`` when buffered.
        """
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        await self.open()
        async with self.lock(item.guild_id):
            if self._down_since is None and not self.buffer:
                try:
                    return await self._apply(item, False)
                except self._denied as exc:
                    raise self._denial(exc) from None
                except self._errors as exc:
                    self._fault(exc)
                except self._refused as exc:
                    raise StoreError(f"Redis refused the {item.describe()}: {exc}") from exc
            try:
                self.buffer.add(item)
            except BufferFull as exc:
                _log.error("%s", exc)
                raise
            self._start_recovery()
            return True

    async def write_many(self, items: Sequence[PendingWrite], apply_many: ApplyMany) -> list[Exception | None]:
        """Apply many writes in one round trip, or buffer them while Redis is down, like :meth:`write`.

        The locks of every guild written are held throughout (taken in ascending order). When the
        connection breaks during the round trip, it is not known which writes Redis received: every one is
        buffered and written again when Redis is back (as a retry: a snapshot already there with the same
        bytes is then a success). Returns, per write, ``None`` (written or buffered) or its error: Redis
        refused it (fenced by another owner's lease, an existing snapshot id), the buffer is full, or
        Redis refused the credentials (:class:`~sonora_cog.errors.ConfigError`, nothing buffered).
        """
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        await self.open()
        async with contextlib.AsyncExitStack() as stack:
            for guild_id in sorted({item.guild_id for item in items}):
                await stack.enter_async_context(self.lock(guild_id))
            if self._down_since is None and not self.buffer:
                try:
                    return await apply_many(items)
                except self._denied as exc:
                    return [self._denial(exc) for _ in items]
                except self._errors as exc:
                    self._fault(exc)
                except self._refused as exc:
                    return [StoreError(f"Redis refused the {item.describe()}: {exc}") for item in items]
            outcomes: list[Exception | None] = []
            for item in items:
                try:
                    self.buffer.add(item)
                except (BufferFull, SonoraError) as exc:
                    _log.error("%s", exc)
                    outcomes.append(exc)
                else:
                    outcomes.append(None)
            self._start_recovery()
            return outcomes
