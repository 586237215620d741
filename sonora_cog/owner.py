"""SessionOwner: the one object in a bot process that owns every guild's session.

It keeps a :class:`~sonora_cog.session.GuildSession` per guild and is the only code that changes
their phases (see :mod:`sonora_cog.session` for the state diagram). Everything that happens to a
guild goes through it:

* the bot's own events, which it listens to itself (``attach()``): Lavalink's position updates, track
  start and end, the bot's voice state (joining starts a session; a disconnect by a moderator ends it);
* :class:`~sonora_cog.player.SonoraPlayer`, which finds its owner with :func:`owner_of` (the owner
  registers itself on the bot it serves) and reports every change and every position it sets;
* restores (:meth:`SessionOwner.restoring`), which hold the guild's live record until they finish;
* the jobs and shutdown, through :class:`~sonora_cog.writer.SessionWriter`, which writes only ``live``
  sessions.

The cog and :meth:`SessionManager.start_auto_snapshot <sonora_cog.manager.SessionManager.start_auto_snapshot>`
(a bot without the cog) both run one of these; nothing else keeps per-guild state.

Ownership: a process owns the guilds of the shards it runs (an ``AutoShardedBot``'s launched shards,
with or without explicit ids; a plain ``Bot``'s single shard; everything when unsharded) and, within
them, the guilds whose lease it holds. A guild outside its shards is never restored, written or ended.

.. versionadded:: 0.3
"""

from __future__ import annotations

import logging
import math
import time
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager
from typing import Any

import discord
import wavelink

from ._typing import AnyBot
from .capture import PositionSample
from .lease import LeaseManager
from .manager import SessionManager
from .nodes import NodeBoard
from .session import Event, GuildSession, Phase
from .writer import SessionWriter

__all__ = ("SessionOwner", "owner_of")

_log = logging.getLogger(__name__)

#: Which owner serves which bot; :class:`~sonora_cog.player.SonoraPlayer` finds its owner here.
_OWNERS: weakref.WeakKeyDictionary[Any, SessionOwner] = weakref.WeakKeyDictionary()
#: A paused position Lavalink reports that differs from the recorded one by more than this is written.
PAUSED_POSITION_SLACK_MS = 50


def owner_of(client: object) -> SessionOwner | None:
    """The :class:`SessionOwner` attached to ``client`` (a bot), or ``None``."""
    try:
        return _OWNERS.get(client)
    except TypeError:  # not weak-referenceable (discord.utils.MISSING before a player is connected)
        return None


class SessionOwner(SessionWriter):
    """Owns the sessions of every guild one bot process runs.

    Parameters
    ----------
    bot:
        The bot.
    manager:
        The session manager (its store, codec and settings).
    leases:
        Guild leases between processes (by default over the manager's store: shared with Redis, within
        this process with the filesystem store).
    clock:
        Monotonic seconds for the auto-snapshot intervals, the activity count and the ``pre-change``
        rate limit (see :attr:`~sonora_cog.writer.SessionWriter.clock`).

    .. versionadded:: 0.3
    """

    def __init__(
        self,
        bot: AnyBot,
        manager: SessionManager,
        *,
        leases: LeaseManager | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        storage = manager.settings.storage
        super().__init__(
            bot,
            manager,
            leases
            or LeaseManager.for_store(
                manager.store, ttl=storage.lease_ttl, renew_interval=storage.lease_renew_interval
            ),
            clock=clock,
        )
        self.leases.on_lost = lambda guild_id: self.lose(guild_id, "another process took its lease")
        #: Which Lavalink nodes take players (:class:`~sonora_cog.nodes.NodeBoard`): drained ones do not.
        self.nodes = NodeBoard()
        self._listeners: list[tuple[str, Callable[..., Coroutine[Any, Any, None]]]] = [
            ("on_wavelink_player_update", self._on_player_update),
            ("on_wavelink_track_start", self._on_track_start),
            ("on_wavelink_track_end", self._on_track_end),
            ("on_voice_state_update", self._on_voice_state_update),
        ]

    def __repr__(self) -> str:
        phases: dict[str, int] = {}
        for session in self._sessions.values():
            phases[session.phase.value] = phases.get(session.phase.value, 0) + 1
        return f"<SessionOwner key={self.key!r} sessions={phases}>"

    # -- the bot ------------------------------------------------------------------------------------

    def attach(self) -> None:
        """Serve ``bot``: register as its owner, listen to its events, take over the players it already has.

        Raises
        ------
        RuntimeError
            Another owner already serves this bot (the cog is loaded and ``start_auto_snapshot`` was
            called too, or the cog was added twice).
        """
        current = owner_of(self.bot)
        if current is self:
            return
        if current is not None:
            raise RuntimeError("this bot already has a sonora_cog session owner (the cog, or start_auto_snapshot)")
        _OWNERS[self.bot] = self
        for name, listener in self._listeners:
            self.bot.add_listener(listener, name)
        for player in self.players():  # loaded while the bot already plays: those sessions are live now
            assert player.guild is not None
            self.start(player.guild.id, "already playing when sonora_cog was loaded")

    def detach(self) -> None:
        """Stop serving the bot (idempotent)."""
        if owner_of(self.bot) is self:
            del _OWNERS[self.bot]
            for name, listener in self._listeners:
                self.bot.remove_listener(listener, name)

    # -- ownership ----------------------------------------------------------------------------------

    def shard_ids(self) -> frozenset[int] | None:
        """The shards this process runs, or ``None`` when it runs them all (it owns every guild).

        An ``AutoShardedBot`` runs its ``shard_ids`` when given, else every shard (discord.py launches all
        of ``range(shard_count)``, one after another, with a count it may learn only when it launches
        them): ``None``, the same at any moment of the launch, so :attr:`key` never changes; a plain
        ``Bot`` runs ``shard_id`` (0 when not given).
        """
        bot = self.bot
        if (bot.shard_count or 1) <= 1:
            return None
        ids: Iterable[int] | None = getattr(bot, "shard_ids", None)
        if ids is None:
            if isinstance(bot, discord.AutoShardedClient):
                return None
            ids = [bot.shard_id or 0]
        return frozenset(ids)

    def owns(self, guild_id: int) -> bool:
        """Whether ``guild_id`` is on a shard this process runs (leases aside)."""
        shards = self.shard_ids()
        return shards is None or (guild_id >> 22) % (self.bot.shard_count or 1) in shards

    @property
    def key(self) -> str:
        """This process's identity in heartbeat and Lavalink-session records: bot user id and shards."""
        user = self.bot.user.id if self.bot.user is not None else 0
        shards = self.shard_ids()
        return f"{user}-{'-'.join(map(str, sorted(shards))) if shards else 'all'}"

    # -- sessions -----------------------------------------------------------------------------------

    def session(self, guild_id: int) -> GuildSession:
        """The guild's session (``idle`` when nothing happened yet; ``foreign`` off this process's shards)."""
        session = self._sessions.get(guild_id)
        if session is not None:
            return session
        if not self.owns(guild_id):
            return GuildSession(guild_id, Phase.foreign, reason="its shard is run by another process")
        return self._sessions.setdefault(guild_id, GuildSession(guild_id))

    def phase(self, guild_id: int) -> Phase:
        """The guild's :class:`~sonora_cog.session.Phase`."""
        return self.session(guild_id).phase

    def sessions(self, phase: Phase | None = None) -> list[GuildSession]:
        """Every known session (of ``phase``), by guild id."""
        return sorted((s for s in self._sessions.values() if phase in (None, s.phase)), key=lambda s: s.guild_id)

    def _owned(self, guild_id: int) -> GuildSession | None:
        return self.session(guild_id) if self.owns(guild_id) else None

    # -- transitions --------------------------------------------------------------------------------

    def expect_restore(self, guild_ids: Iterable[int]) -> list[int]:
        """Hold the owned guilds among ``guild_ids`` for the startup restore; return them.

        Guilds on other shards are left alone, and said so once in the log.
        """
        held, others = [], []
        for guild_id in guild_ids:
            session = self._owned(guild_id)
            if session is None:
                others.append(guild_id)
            elif session.apply(Event.expect_restore, "its live record waits for the startup restore"):
                held.append(guild_id)
        if others:
            shown = ", ".join(map(str, others[:10])) + (", ..." if len(others) > 10 else "")
            _log.info(
                "%d live record(s) belong to shards this process does not run (%s); left for their process",
                len(others),
                shown,
            )
        return held

    def start(self, guild_id: int, reason: str) -> bool:
        """A session begins here (the bot joined voice, or a track started): its changes are written."""
        session = self._owned(guild_id)
        if session is None or self.closing or not session.apply(Event.start, reason):
            return False
        _log.info("guild %s: session started (%s)", guild_id, reason)
        self.mark_dirty(guild_id)
        return True

    def end(self, guild_id: int, reason: str, *, event: Event = Event.end) -> bool:
        """The session ended on purpose: its live record is deleted and it is never rejoined.

        ``event`` is :attr:`Event.end` (the bot's own code: ``disconnect()``, ``/stop``) or
        :attr:`Event.disconnected` (Discord says the bot left voice: only a ``live`` session ends).
        """
        session = self._owned(guild_id)
        if session is None or not session.apply(event, reason):
            return False
        _log.info("session of guild %s ended (%s); its live record is removed", guild_id, reason)
        self._spawn(self._end_live(guild_id))
        return True

    def lose(self, guild_id: int, reason: str) -> bool:
        """Another process owns the guild now: stop restoring and writing it here."""
        session = self._owned(guild_id)
        return session is not None and session.apply(Event.lose, reason)

    @asynccontextmanager
    async def restoring(self, guild_id: int, reason: str) -> AsyncIterator[GuildSession]:
        """Hold the guild in ``restoring`` while the block runs, then ``live`` (a player plays) or ``idle``.

        The check and the transition happen before the first ``await``, so two restores can never
        both enter.

        Raises
        ------
        RestoreInProgress
            A restore already runs in this guild.
        GuildNotOwned
            Another process owns the guild.
        RestoreError
            The bot is shutting down.
        """
        session = self.session(guild_id)
        session.apply(Event.begin_restore, reason)
        try:
            yield session
        finally:
            playing = self.player(guild_id) is not None
            finished = session.apply(Event.finish_restore, "restored" if playing else "nothing plays", playing=playing)
            if finished and playing:
                self.mark_dirty(guild_id)

    def anchor(self, guild_id: int, position: int, *, paused: bool) -> None:
        """Set the guild's playback clock: the current track is at ``position`` ms now."""
        session = self._owned(guild_id)
        if session is not None:
            session.sample = PositionSample(position, time.monotonic(), paused)

    def stall(self, guild_id: int, position: int, *, paused: bool, force: bool = False) -> None:
        """The guild's Lavalink node was lost: its track stands still at ``position`` ms until it plays again.

        The stalled position is written, so a restore starts where listeners stopped hearing it. A clock
        that stands still already is left as it is, unless ``force``.
        """
        session = self._owned(guild_id)
        if session is None or (not force and session.sample is not None and session.sample.stalled):
            return
        session.sample = PositionSample(position, time.monotonic(), paused, stalled=True)
        self.mark_dirty(guild_id)

    def sample(self, guild_id: int) -> PositionSample | None:
        """The guild's playback clock (the last position Lavalink reported or the bot set)."""
        session = self._sessions.get(guild_id)
        return session.sample if session is not None else None

    # -- listeners (registered on the bot by attach()) ----------------------------------------------

    async def _on_player_update(self, payload: wavelink.PlayerUpdateEventPayload) -> None:
        player = payload.player
        if player is None or player.guild is None:
            return
        session = self._owned(player.guild.id)
        if session is None:
            return
        before = session.sample
        session.sample = PositionSample(payload.position, time.monotonic(), player.paused)
        if player.paused and (
            before is None or not before.paused or abs(before.position - payload.position) > PAUSED_POSITION_SLACK_MS
        ):
            self.mark_dirty(player.guild.id)  # Lavalink's own paused position, which the clock could only estimate

    async def _on_track_start(self, payload: wavelink.TrackStartEventPayload) -> None:
        player = payload.player
        if player is None or player.guild is None:
            return
        from .player import SonoraPlayer

        if not isinstance(player, SonoraPlayer):
            self.anchor(player.guild.id, 0, paused=player.paused)  # a plain player reports no start position
        if self.phase(player.guild.id) is not Phase.live and self.player(player.guild.id) is player:
            self.start(player.guild.id, "a track started")
        self.mark_dirty(player.guild.id)

    async def _on_track_end(self, payload: wavelink.TrackEndEventPayload) -> None:
        player = payload.player
        if player is not None and player.guild is not None:
            self.mark_dirty(player.guild.id)

    async def _on_voice_state_update(
        self, member: discord.Member, before: discord.VoiceState, after: discord.VoiceState
    ) -> None:
        if self.bot.user is None or member.id != self.bot.user.id or not self.owns(member.guild.id):
            return
        guild_id = member.guild.id
        if before.channel is not None and after.channel is None:
            # Only a session that plays here ends: a "left" update for a guild that is pending or being
            # restored (the previous process's voice state timing out), or that this process does not
            # play in (another process's gateway session), ends nothing.
            self.end(guild_id, "disconnected from voice", event=Event.disconnected)
        elif before.channel is None and after.channel is not None:
            if isinstance(member.guild.voice_client, wavelink.Player):  # our own join, not another process's
                self.start(guild_id, "the bot joined voice")
        elif after.channel is not None:
            self.mark_dirty(guild_id)  # moved to another channel

    # -- helpers ------------------------------------------------------------------------------------

    def player(self, guild_id: int) -> wavelink.Player | None:
        """This process's connected wavelink player in the guild, or ``None``."""
        guild = self.bot.get_guild(guild_id)
        player = guild.voice_client if guild is not None else None
        if isinstance(player, wavelink.Player) and player.guild is not None and player.connected:
            return player
        return None

    def players(self) -> list[wavelink.Player]:
        """Every connected wavelink player of this process, in the guilds it owns."""
        return [
            vc
            for vc in self.bot.voice_clients
            if isinstance(vc, wavelink.Player) and vc.connected and vc.guild is not None and self.owns(vc.guild.id)
        ]

    def sweep_size(self, count: int) -> int:
        """How many unchanged guilds one checkpoint compares, so each is compared within a minute."""
        interval = self.settings.snapshots.checkpoint_interval
        return math.ceil(count * min(1.0, interval / 60.0))

    def listener_count(self, guild_id: int) -> int:
        """Members who are not bots in the voice channel of this process's player in the guild (0 without one).

        Read from discord.py's cache (its voice states) when asked.
        """
        player = self.player(guild_id)
        if player is None or player.channel is None:
            return 0
        return sum(1 for member in player.channel.members if not member.bot)
