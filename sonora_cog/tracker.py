"""SessionTracker: which guilds changed, and writing their live records and auto snapshots.

A change marks the guild dirty; a debounce timer writes every dirty guild ``snapshots.debounce``
seconds later, and the checkpoint job writes dirty and playing guilds on its interval. Guilds are
captured on the loop (cheap, pure), then encoded and written one by one through the manager, which
moves large encodes and all file I/O off the loop, so the loop keeps breathing between guilds.

Two rules from bots that got this wrong:

* a guild whose restore has not finished is *held*: nothing overwrites its live record with the
  empty state of a fresh process (restarting twice in a row must not wipe the queue);
* a session that ended on purpose (``/stop``, a moderator's disconnect) has its live record deleted
  and is never written again until a new session starts.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import orjson
import wavelink
from discord.ext import commands

from .capture import PositionSample
from .errors import SonoraError
from .lease import LeaseManager
from .manager import SessionManager
from .meta import SnapshotKind
from .model import SessionState
from .player import SonoraPlayer

__all__ = ("SessionTracker", "state_fingerprint")

_log = logging.getLogger(__name__)


def state_fingerprint(state: SessionState) -> str:
    """A hash of everything in a state except the clock: equal for a guild that did not change."""
    data = state.to_json()
    for key in ("created_at", "kind", "label"):
        data.pop(key, None)
    data["player"] = {k: v for k, v in data["player"].items() if k not in ("position", "position_at")}
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


class SessionTracker:
    """Tracks dirty guilds for one bot and persists them through a :class:`SessionManager`."""

    def __init__(self, bot: commands.Bot, manager: SessionManager, *, leases: LeaseManager | None = None) -> None:
        self.bot = bot
        self.manager = manager
        #: When set, a guild's live record is written only while this process holds the guild's lease.
        self.leases = leases
        self.settings = manager.settings
        self._dirty: set[int] = set()
        self._held: set[int] = set()
        self._ended: set[int] = set()
        self._samples: dict[int, PositionSample] = {}
        self._auto_fingerprints: dict[int, str] = {}
        self._live_fingerprints: dict[int, str] = {}
        self._last_saved: dict[int, float] = {}
        self._flush_handle: asyncio.TimerHandle | None = None
        self._flush_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = False

    # -- signals ------------------------------------------------------------------------------------

    def mark_dirty(self, guild_id: int) -> None:
        """The guild's state changed: write its live record within the debounce window."""
        if self.closed:
            return
        self._dirty.add(guild_id)
        if self._flush_handle is None:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(self.settings.snapshots.debounce, self._debounced_flush)

    def record_position(self, guild_id: int, position: int) -> None:
        """Remember Lavalink's last reported position (``on_wavelink_player_update``)."""
        self._samples[guild_id] = PositionSample(position=position, monotonic=time.monotonic())

    def hold(self, guild_id: int) -> None:
        """Do not write this guild's live record until :meth:`release` (a restore is pending)."""
        self._held.add(guild_id)

    def release(self, guild_id: int, *, dirty: bool = True) -> None:
        """The guild's restore finished or was skipped: it may be written again."""
        self._held.discard(guild_id)
        if dirty and self._player(guild_id) is not None:
            self.mark_dirty(guild_id)

    def is_held(self, guild_id: int) -> bool:
        """Whether a restore of this guild is pending."""
        return guild_id in self._held

    def session_ended(self, guild_id: int, reason: str) -> None:
        """The session ended on purpose: delete the live record; never rejoin."""
        if self.closed:
            return
        self._ended.add(guild_id)
        self._dirty.discard(guild_id)
        self._samples.pop(guild_id, None)
        _log.info("session of guild %s ended (%s); its live record is removed", guild_id, reason)
        self._spawn(self._end_live(guild_id))

    def session_started(self, guild_id: int) -> None:
        """A new session began in this guild (a fresh voice connection by the bot's own code)."""
        self._ended.discard(guild_id)

    def last_saved_at(self, guild_id: int) -> float | None:
        """Unix time of this guild's last live-record write by this process."""
        return self._last_saved.get(guild_id)

    def is_dirty(self, guild_id: int) -> bool:
        """Whether the guild has changes not yet written."""
        return guild_id in self._dirty

    # -- capture and write --------------------------------------------------------------------------

    def _player(self, guild_id: int) -> wavelink.Player | None:
        guild = self.bot.get_guild(guild_id)
        player = guild.voice_client if guild is not None else None
        if isinstance(player, wavelink.Player) and player.guild is not None and player.connected:
            return player
        return None

    def players(self) -> list[wavelink.Player]:
        """Every connected wavelink player of this bot."""
        return [
            vc for vc in self.bot.voice_clients if isinstance(vc, wavelink.Player) and vc.connected and vc.guild
        ]

    def capture(self, player: wavelink.Player, kind: SnapshotKind = SnapshotKind.live) -> SessionState:
        """Capture a player now, with the bot's extras and the last position sample."""
        guild = player.guild
        assert guild is not None
        return self.manager.create_snapshot(
            player,
            kind=kind,
            extras=getattr(player, "extras", None),
            position_sample=self._samples.get(guild.id),
        )

    def _writable(self, guild_id: int) -> bool:
        return guild_id not in self._held and guild_id not in self._ended

    async def flush(self, guild_ids: Iterable[int] | None = None, *, unless_unchanged: Iterable[int] = ()) -> int:
        """Write the live record of ``guild_ids`` (default: every dirty guild); return how many.

        Guilds in ``unless_unchanged`` are written only if their content changed since their last write.
        """
        compare = set(unless_unchanged)
        async with self._flush_lock:
            targets = set(self._dirty if guild_ids is None else guild_ids)
            self._dirty -= targets
            written = 0
            for guild_id in sorted(targets):
                if not self._writable(guild_id):
                    continue
                player = self._player(guild_id)
                if player is None:
                    continue
                if self.leases is not None and not await self.leases.ensure(guild_id):
                    continue  # another process owns this guild now
                try:
                    state = self.capture(player)
                    if guild_id in compare:
                        fingerprint = state_fingerprint(state)
                        if self._live_fingerprints.get(guild_id) == fingerprint:
                            continue
                        self._live_fingerprints[guild_id] = fingerprint
                    meta = await self.manager.write_live(state)
                except Exception as exc:  # one guild's failure must never stop the others
                    _log.error("could not save the live record of guild %s: %s: %s", guild_id, type(exc).__name__, exc)
                    self._dirty.add(guild_id)
                    continue
                if guild_id in self._ended:  # ended while we were writing: take it back
                    await self._end_live(guild_id)
                    continue
                written += 1
                self._last_saved[guild_id] = time.time()
                self.bot.dispatch("sonora_state_saved", guild_id, meta)
            return written

    @property
    def owner(self) -> str:
        """This process's identity in heartbeat records: the bot's user id and its shards."""
        user = self.bot.user.id if self.bot.user is not None else 0
        shards: Any = getattr(self.bot, "shard_ids", None) or (
            [self.bot.shard_id] if self.bot.shard_id is not None else None
        )
        return f"{user}-{'-'.join(map(str, sorted(shards))) if shards else 'all'}"

    async def checkpoint(self) -> int:
        """The checkpoint job: write the guilds that changed, then one heartbeat.

        :class:`~sonora_cog.player.SonoraPlayer` guilds report their changes, so an unchanged guild
        costs nothing. A plain ``wavelink.Player`` cannot report them: it is captured and written only
        if its content differs from its last write. The heartbeat lets a restore work out how far each
        unchanged track has played since its record was written (see ``restore.advance_position``).
        """
        players = self.players()
        plain = {p.guild.id for p in players if p.guild is not None and not isinstance(p, SonoraPlayer)}
        written = await self.flush(self._dirty | plain, unless_unchanged=plain - self._dirty)
        if players and not self.closed:
            try:
                await self.manager.write_heartbeat(self.owner)
            except SonoraError as exc:
                _log.error("could not write the checkpoint heartbeat: %s", exc)
        return written

    async def auto_snapshot(self) -> int:
        """The auto-snapshot job: an ``auto`` snapshot of each guild that changed since its last one."""
        taken = 0
        for player in self.players():
            guild_id = player.guild.id if player.guild else 0
            if not self._writable(guild_id) or player.current is None:
                continue
            try:
                state = self.capture(player, SnapshotKind.auto)
                fingerprint = state_fingerprint(state)
                if self._auto_fingerprints.get(guild_id) == fingerprint:
                    continue
                await self.manager.save_snapshot(state)
            except Exception as exc:  # one guild's failure must never stop the others
                _log.error("auto snapshot of guild %s failed: %s: %s", guild_id, type(exc).__name__, exc)
                continue
            self._auto_fingerprints[guild_id] = fingerprint
            taken += 1
        if taken:
            _log.info("auto snapshot: %d guild(s) changed and were saved", taken)
        return taken

    async def retention(self) -> int:
        """The retention job: apply ``max_snapshots_per_guild`` and ``max_age_days``."""
        removed = await self.manager.apply_retention()
        if removed:
            _log.info("retention removed %d snapshot(s)", len(removed))
        return len(removed)

    async def shutdown(self) -> None:
        """Write every player's live record and a ``shutdown`` snapshot, then stop taking changes."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        for player in self.players():
            guild_id = player.guild.id if player.guild else 0
            if not self._writable(guild_id):
                continue
            try:
                state = self.capture(player)
                await self.manager.write_live(state)
                await self.manager.save_snapshot(replace(state, kind=SnapshotKind.shutdown))
            except Exception as exc:  # one guild's failure must never stop the others
                _log.error("shutdown save of guild %s failed: %s: %s", guild_id, type(exc).__name__, exc)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.closed = True

    # -- internals ----------------------------------------------------------------------------------

    def _debounced_flush(self) -> None:
        self._flush_handle = None
        self._spawn(self.flush())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _end_live(self, guild_id: int) -> None:
        try:
            await self.manager.end_live(guild_id)
        except SonoraError as exc:
            _log.error("could not delete the live record of guild %s: %s", guild_id, exc)
            return
        if self.leases is not None:
            await self.leases.release(guild_id)

