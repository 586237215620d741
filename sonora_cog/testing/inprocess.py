"""Run a discord.py bot in the test's own process, against a fake it was pointed at.

.. versionadded:: 0.5
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TypeVar

import discord

__all__ = ("running",)

ClientT = TypeVar("ClientT", bound=discord.Client)


#: Seconds :func:`running` waits for ``bot.start`` to return after closing the bot, before cancelling it
#: (discord.py's ``AutoShardedClient`` closed while it still launches shards never returns by itself).
STOP_WAIT = 10.0


@contextlib.asynccontextmanager
async def running(bot: ClientT, token: str, *, ready_timeout: float = 15.0) -> AsyncIterator[ClientT]:
    """Start ``bot`` with ``token``, wait until it is ready, and close it when the block ends.

    Point discord.py at the fake first (the ``point_discord`` fixture, or :func:`point_discord_at`).
    ``bot.close()`` runs whatever the bot does when it closes (sonora_cog saves every player; a bot's own
    ``close`` override closes wavelink after it). Raises :class:`TimeoutError` when the bot is not ready
    within ``ready_timeout`` seconds (FakeDiscord, like Discord, lets shards identify 5 s apart: give an
    ``AutoShardedBot`` of N shards more than 5 * (N - 1) s), the error of ``bot.start`` when it fails (a
    wrong token...), and :class:`RuntimeError` for a bot that was closed before: a discord.py client
    cannot be started twice, so build one per test.
    """
    if bot.is_closed():
        raise RuntimeError("this bot was closed before: a discord.py client cannot be started twice; make a new one")
    task = asyncio.create_task(bot.start(token))
    try:
        async with asyncio.timeout(ready_timeout):
            while not bot.is_ready():
                if task.done():
                    task.result()  # the error that ended bot.start
                    raise RuntimeError("the bot stopped before it was ready")
                await asyncio.sleep(0.05)
        yield bot
    finally:
        await bot.close()
        done, _pending = await asyncio.wait({task}, timeout=STOP_WAIT)
        if not done:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
