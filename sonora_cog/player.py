"""SonoraPlayer: a ``wavelink.Player`` that reports every state change, so its guild is saved at once.

Use it where a bot already uses ``wavelink.Player``::

    player = await channel.connect(cls=sonora_cog.SonoraPlayer)
    player.extras = {"announce_channel_id": "..."}   # saved; changes to it are saved too

Every change (play, pause, seek, volume, filters, queue and history mutations, queue mode, autoplay,
``extras``, ``shuffle_enabled``) marks the guild dirty with the bot's
:class:`~sonora_cog.owner.SessionOwner` (the cog's, or the one :meth:`SessionManager.start_auto_snapshot
<sonora_cog.manager.SessionManager.start_auto_snapshot>` runs), which writes the live record within
``snapshots.debounce`` seconds. The player also sets the owner's playback clock whenever it sets a
position or pauses, so a paused player's position is the one Lavalink froze, not the last
``playerUpdate``'s. Bots that keep a plain ``wavelink.Player`` are still covered through wavelink's
events and the checkpoint job, only less promptly.

Before its queue is cleared, shuffled or cut by several tracks at once, the player asks the owner
for a ``pre-change`` snapshot of the state as it was (see :mod:`sonora_cog.cadence`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import aiohttp
import discord
import wavelink

from .capture import playback_position
from .owner import owner_of

__all__ = ("ObservedDict", "ObservedQueue", "SonoraPlayer", "delete_lavalink_player", "forget_lavalink_player")

_log = logging.getLogger(__name__)

#: Seconds the bot's own calls wait for a move to another node to finish (then they go on anyway).
MOVE_WAIT = 20.0
#: Seconds a node is given to delete a player (a closing node, a failed move target).
DELETE_TIMEOUT = 2.0


async def delete_lavalink_player(node: wavelink.Node, guild_id: int) -> None:
    """Delete the guild's player on ``node``, best effort, taking it off wavelink's list of the node first.

    Off the list first: Lavalink answers the delete with a ``TrackEndEvent`` (``cleanup``), and wavelink
    would clear the player's current track (and start autoplay) on it. A node that does not answer
    within :data:`DELETE_TIMEOUT` seconds is left as it is (logged at debug level).
    """
    forget_lavalink_player(node, guild_id)
    if node.session_id is None:
        return
    try:
        async with asyncio.timeout(DELETE_TIMEOUT):
            await node.send("DELETE", path=f"v4/sessions/{node.session_id}/players/{guild_id}")
    except (TimeoutError, wavelink.WavelinkException, aiohttp.ClientError, OSError) as exc:
        _log.debug("guild %s: cannot delete its player on Lavalink node %s (%r)", guild_id, node.identifier, exc)


def forget_lavalink_player(node: wavelink.Node, guild_id: int) -> None:
    """Take the guild's player off wavelink's list of ``node``, asking the node nothing.

    wavelink has no public way to let go of a player; without this, its next ``switch_node`` or
    ``disconnect`` would send a delete to that node and wait for it.
    """
    node._players.pop(guild_id, None)


def _called_by_node_close() -> bool:
    """Whether this runs inside ``wavelink.Node.close()`` (which disconnects each player of the node).

    wavelink gives a player no other way to tell "the node is going away" from "leave voice".
    """
    close = wavelink.Node.close.__code__
    frame = inspect.currentframe()
    while frame is not None:
        if frame.f_code is close:
            return True
        frame = frame.f_back
    return False


def _is_another_session(client: discord.Client, guild: discord.Guild | None, session_id: object) -> bool:
    """Whether a voice state's ``session_id`` belongs to a gateway session other than this process's.

    Unknown (no guild, no gateway connection yet, no id in the update) counts as this process's own.
    """
    if guild is None or not isinstance(session_id, str):
        return False
    try:
        own = client._get_websocket(guild.id).session_id  # the shard connection of the guild (discord.py 2.x)
    except (AttributeError, KeyError, TypeError):
        return False
    return isinstance(own, str) and own != session_id


class ObservedDict(dict[str, Any]):
    """A ``dict`` that calls ``on_change()`` after every top-level mutation (``player.extras``).

    A change *inside* a nested value (``extras["a"]["b"] = 1``) is not seen; the checkpoint finds it
    within a minute, or call ``player.mark_dirty()``.
    """

    def __init__(self, on_change: Callable[[], None], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_change = on_change

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self._on_change()

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._on_change()

    def __ior__(self, other: Any) -> ObservedDict:  # type: ignore[override,misc]
        super().__ior__(other)
        self._on_change()
        return self

    def update(self, *args: Any, **kwargs: Any) -> None:
        super().update(*args, **kwargs)
        self._on_change()

    def setdefault(self, key: str, default: Any = None) -> Any:
        had = key in self
        value = super().setdefault(key, default)
        if not had:
            self._on_change()
        return value

    def pop(self, key: str, *default: Any) -> Any:
        had = key in self
        value = super().pop(key, *default)
        if had:
            self._on_change()
        return value

    def popitem(self) -> tuple[str, Any]:
        item = super().popitem()
        self._on_change()
        return item

    def clear(self) -> None:
        super().clear()
        self._on_change()

    def __reduce__(self) -> Any:  # copies and pickles are plain dicts
        return (dict, (dict(self),))


#: ``before_major(operation, queued, removed)``: called before a queue operation that may be major.
BeforeMajor = Callable[[str, int, int], None]


class ObservedQueue(wavelink.Queue):
    """A ``wavelink.Queue`` that calls ``on_change()`` after every mutation, its history's included.

    With ``before_major``, it is also called *before* each operation that empties, reorders or cuts
    the queue (``clear``, ``reset``, ``shuffle``, ``remove``, ``delete``, ``del queue[...]``) with the
    operation (``"clear"``, ``"reset"``, ``"shuffle"`` or ``"remove"``), the tracks queued and the tracks
    it removes; :func:`~sonora_cog.cadence.pre_change_label` decides whether that is major.
    """

    def __init__(
        self, on_change: Callable[[], None], *, history: bool = True, before_major: BeforeMajor | None = None
    ) -> None:
        self._on_change = on_change
        self._before_major = before_major
        self._in_reset = False
        super().__init__(history=False)
        self._observed_history = ObservedQueue(on_change, history=False) if history else None

    def _before(self, operation: str, removed: int) -> None:
        if self._before_major is not None and not self._in_reset:
            self._before_major(operation, len(self), removed)

    @property
    def history(self) -> wavelink.Queue | None:
        """The history queue (observed too)."""
        return self._observed_history

    @property
    def mode(self) -> wavelink.QueueMode:
        """The queue mode (setting it is observed)."""
        return super().mode

    @mode.setter
    def mode(self, value: wavelink.QueueMode) -> None:
        wavelink.Queue.mode.fset(self, value)  # type: ignore[attr-defined]
        self._on_change()

    def put(self, item: Any, /, *, atomic: bool = True) -> int:
        added = super().put(item, atomic=atomic)
        self._on_change()
        return added

    async def put_wait(self, item: Any, /, *, atomic: bool = True) -> int:
        added = await super().put_wait(item, atomic=atomic)
        self._on_change()
        return added

    def put_at(self, index: int, value: wavelink.Playable, /) -> None:
        super().put_at(index, value)
        self._on_change()

    def get(self) -> wavelink.Playable:
        track = super().get()
        self._on_change()
        return track

    def get_at(self, index: int, /) -> wavelink.Playable:
        track = super().get_at(index)
        self._on_change()
        return track

    def delete(self, index: int, /) -> None:
        self._before("remove", 1)
        super().delete(index)
        self._on_change()

    def remove(self, item: wavelink.Playable, /, count: int | None = 1) -> int:
        if self._before_major is not None:
            matches = sum(1 for track in self if track == item)
            self._before("remove", matches if count is None else min(matches, max(count, 1)))
        removed = super().remove(item, count)
        self._on_change()
        return removed

    def swap(self, first: int, second: int, /) -> None:
        super().swap(first, second)
        self._on_change()

    def shuffle(self) -> None:
        self._before("shuffle", 0)
        super().shuffle()
        self._on_change()

    def clear(self) -> None:
        self._before("clear", len(self))
        super().clear()
        self._on_change()

    def reset(self) -> None:
        self._before("reset", len(self))
        self._in_reset = True  # wavelink's reset() calls clear(): one snapshot decision per call
        try:
            super().reset()
        finally:
            self._in_reset = False
        self._on_change()

    def __setitem__(self, index: Any, value: wavelink.Playable, /) -> None:
        super().__setitem__(index, value)
        self._on_change()

    def __delitem__(self, index: int | slice, /) -> None:
        self._before("remove", len(range(*index.indices(len(self)))) if isinstance(index, slice) else 1)
        super().__delitem__(index)
        self._on_change()


class SonoraPlayer(wavelink.Player):
    """``wavelink.Player`` that reports every state change to the bot's session owner.

    Attributes
    ----------
    extras:
        Bot-specific JSON saved with the state and given back on restore (the announce channel,
        who asked for the session...). Assigning it, or changing one of its keys, is saved. Keep it
        small: it is capped by ``limits.max_extras_bytes``.
    shuffle_enabled:
        A flag for bots with a "shuffle mode"; persisted as ``queue.shuffle_enabled``.

    Created without ``nodes=``, it goes to the best Lavalink node that takes players (not drained, not
    lost: see :mod:`sonora_cog.nodes`). When ``wavelink.Node.close()`` disconnects it, it stays in voice
    and is moved to another node (see :meth:`disconnect`); while it moves, the bot's own calls wait for
    the move (see :meth:`moving`).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        client: discord.Client = discord.utils.MISSING,
        channel: discord.abc.Connectable = discord.utils.MISSING,
        *,
        nodes: list[wavelink.Node] | None = None,
    ) -> None:
        if not nodes and client is not discord.utils.MISSING:
            owner = owner_of(client)
            best = owner.nodes.pick_now() if owner is not None else None
            nodes = [best] if best is not None else None  # a drained or dead node takes no new players
        super().__init__(client, channel, nodes=nodes)
        self.queue = ObservedQueue(self.mark_dirty, before_major=self._before_major_change)
        self.auto_queue = ObservedQueue(self.mark_dirty)
        self._extras = ObservedDict(self.mark_dirty)
        self._shuffle_enabled = False
        self._lavalink_refused_voice = False
        self._mover: asyncio.Task[Any] | None = None
        self._moved = asyncio.Event()
        self._moved.set()
        self._calling: set[asyncio.Task[Any]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def extras(self) -> dict[str, Any]:
        """The bot's own JSON for this session (see the class docstring)."""
        return self._extras

    @extras.setter
    def extras(self, value: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> None:
        self._extras = ObservedDict(self.mark_dirty, value)
        self.mark_dirty()

    @property
    def shuffle_enabled(self) -> bool:
        """Whether the bot's "shuffle mode" is on (persisted as ``queue.shuffle_enabled``)."""
        return self._shuffle_enabled

    @shuffle_enabled.setter
    def shuffle_enabled(self, value: bool) -> None:
        self._shuffle_enabled = bool(value)
        self.mark_dirty()

    @property
    def position(self) -> int:
        """The current track's position in ms, from the session owner's playback clock.

        Unlike ``wavelink.Player.position`` it is right just after a pause or a seek (wavelink reports
        the last ``playerUpdate`` until the next one) and under a timescale filter. Without an owner
        (no cog, no ``start_auto_snapshot``) it is wavelink's.
        """
        owner = owner_of(self.client)
        guild = self.guild
        sample = owner.sample(guild.id) if owner is not None and guild is not None else None
        return playback_position(self, sample)

    def mark_dirty(self) -> None:
        """Tell the session owner this guild's state changed.

        Every mutator of the player, its queues and its extras calls this; call it yourself only after
        changing something in place that the player cannot see (a queued track's ``extras``, a value
        nested inside ``player.extras``). Forgetting it loses nothing: the checkpoint finds such a
        change within a minute and logs a warning once.
        """
        guild = self.guild
        owner = owner_of(self.client)
        if guild is not None and owner is not None:
            owner.mark_dirty(guild.id)

    def _before_major_change(self, operation: str, queued: int, removed: int) -> None:
        """The queue is about to be cleared, shuffled or cut: the owner may keep a ``pre-change`` snapshot."""
        guild = self.guild
        owner = owner_of(self.client)
        if guild is not None and owner is not None:
            owner.pre_change(guild.id, operation, queued=queued, removed=removed)

    def _position_now(self) -> int | None:
        """The playback clock now, or ``None`` without an owner (there is no clock to set then)."""
        return self.position if owner_of(self.client) is not None and self.guild is not None else None

    def _anchor(self, position: int | None) -> None:
        """Set the owner's playback clock: the current track is at ``position`` now."""
        owner = owner_of(self.client)
        guild = self.guild
        if owner is not None and guild is not None and position is not None:
            owner.anchor(guild.id, position, paused=self.paused)

    @wavelink.Player.autoplay.setter  # type: ignore[attr-defined,untyped-decorator]
    def autoplay(self, value: Any) -> None:
        wavelink.Player.autoplay.fset(self, value)  # type: ignore[attr-defined]
        self.mark_dirty()

    @contextlib.asynccontextmanager
    async def moving(self) -> AsyncIterator[None]:
        """Hold the bot's own calls (play, pause, seek, volume, filters, skip, disconnect) while the block
        moves the player to another Lavalink node; they run on the new node once it is done.

        The block starts once the calls already running have finished. Without this, a call sent in the
        middle of ``switch_node`` would reach the node being left after its player was deleted, and
        Lavalink would create a second, silent player there. Inside the block, a voice update the new
        node refuses does not make the player leave voice (wavelink's reaction): the mover tries another
        node. Used by :mod:`sonora_cog.failover`.
        """
        self._mover = asyncio.current_task()
        self._moved.clear()
        try:
            if self._calling:
                try:
                    async with asyncio.timeout(MOVE_WAIT):
                        await self._idle.wait()
                except TimeoutError:
                    _log.warning(
                        "guild %s: a call to the player still runs after %gs; moving anyway",
                        self.guild.id if self.guild else "?",
                        MOVE_WAIT,
                    )
            yield
        finally:
            self._mover = None
            self._moved.set()

    @contextlib.asynccontextmanager
    async def _call(self) -> AsyncIterator[None]:
        """One of the bot's own calls: it waits for a move in progress (see :meth:`moving`)."""
        task = asyncio.current_task()
        if task is None or task is self._mover or task in self._calling:  # the move itself, or a nested call
            yield
            return
        if not self._moved.is_set():
            try:
                async with asyncio.timeout(MOVE_WAIT):
                    await self._moved.wait()
            except TimeoutError:
                _log.warning(
                    "guild %s: the move to another node took over %gs; going on",
                    self.guild.id if self.guild else "?",
                    MOVE_WAIT,
                )
        self._calling.add(task)
        self._idle.clear()
        try:
            yield
        finally:
            self._calling.discard(task)
            if not self._calling:
                self._idle.set()

    async def play(self, track: wavelink.Playable, **kwargs: Any) -> wavelink.Playable:
        """See ``wavelink.Player.play``."""
        async with self._call():
            replaces = kwargs.get("replace", True) or self.current is None
            result = await super().play(track, **kwargs)
            if replaces:
                self._anchor(int(kwargs.get("start") or 0))
            self.mark_dirty()
            return result

    async def pause(self, value: bool, /) -> None:
        """See ``wavelink.Player.pause``.

        On a pause the owner's clock is set to the position Lavalink froze (one ``GET`` of the player:
        wavelink drops the ``PATCH`` reply), so the saved position is exactly where it paused, not the
        last ``playerUpdate``'s; on a resume it runs on from there.
        """
        async with self._call():
            position = self._position_now()
            await super().pause(value)
            if value and self.guild is not None and position is not None:
                try:
                    info = await self.node.fetch_player_info(self.guild.id)
                except (wavelink.WavelinkException, aiohttp.ClientError, OSError) as exc:
                    _log.debug("guild %s: cannot read the paused position (%r); using the clock's", self.guild.id, exc)
                else:
                    if info is not None and info.paused:
                        position = info.state.position
            self._anchor(position)
            self.mark_dirty()

    async def seek(self, position: int = 0, /) -> None:
        """See ``wavelink.Player.seek``."""
        async with self._call():
            await super().seek(position)
            if self.current is not None:
                self._anchor(position)
            self.mark_dirty()

    async def set_volume(self, value: int = 100, /) -> None:
        """See ``wavelink.Player.set_volume``."""
        async with self._call():
            await super().set_volume(value)
            self.mark_dirty()

    async def set_filters(self, filters: wavelink.Filters | None = None, /, *, seek: bool = False) -> None:
        """See ``wavelink.Player.set_filters``. The clock moves on at the new speed from here."""
        async with self._call():
            position = self._position_now()
            await super().set_filters(filters, seek=seek)
            if not seek:  # with seek, wavelink's seek() has set the clock already
                self._anchor(position)
            self.mark_dirty()

    async def skip(self, *, force: bool = True) -> wavelink.Playable | None:
        """See ``wavelink.Player.skip``."""
        async with self._call():
            result = await super().skip(force=force)
            self.mark_dirty()
            return result

    async def disconnect(self, **kwargs: Any) -> None:
        """Leave voice on purpose: the session ends and its live record is deleted (no rejoin).

        When wavelink itself disconnects because Lavalink refused the voice update, nothing was left on
        purpose: the session and its live record stay (a restore that fails so reports it and keeps them).

        When ``wavelink.Node.close()`` (or ``wavelink.Pool.close()``) disconnects the node's players, the
        node is going away, not the session: the player stays in voice with its queue, its Lavalink player
        is deleted, and sonora_cog moves it to another node (see :mod:`sonora_cog.failover`).
        """
        if self._mover is not None and self._mover is asyncio.current_task() and self._lavalink_refused_voice:
            return  # the node this player moves to refused it: it stays in voice and the mover tries another
        async with self._call():
            guild = self.guild
            owner = owner_of(self.client)
            if guild is not None and owner is not None and _called_by_node_close():
                await self._leave_closing_node(guild.id)
                return
            if guild is not None and owner is not None and not self._lavalink_refused_voice:
                owner.end(guild.id, "the bot left the voice channel")
            await super().disconnect(**kwargs)

    async def _leave_closing_node(self, guild_id: int) -> None:
        node = self.node
        owner = owner_of(self.client)
        if owner is not None:
            owner.stall(guild_id, self.position, paused=self.paused)
        _log.info(
            "guild %s: Lavalink node %s is closing; the player stays in voice and moves to another node",
            guild_id,
            node.identifier,
        )
        await delete_lavalink_player(node, guild_id)

    async def on_voice_state_update(self, data: Any, /) -> None:
        """See ``wavelink.Player.on_voice_state_update``; a "left voice" of another gateway session is ignored.

        When a process restarts, Discord ends the dead process's voice states some time later, each with
        that process's gateway session id. wavelink destroys a player whose channel becomes ``None``, so
        such an update reaching a player that is connecting (a restore) would leave it waiting for a
        voice connection that never comes.
        """
        if data.get("channel_id") is None and _is_another_session(self.client, self.guild, data.get("session_id")):
            _log.debug(
                "guild %s: ignored the end of another gateway session's voice state",
                self.guild.id if self.guild is not None else "?",
            )
            return
        await super().on_voice_state_update(data)

    async def _dispatch_voice_update(self) -> None:
        # wavelink calls disconnect() when Lavalink refuses the voice update: that is not a session's end
        self._lavalink_refused_voice = True
        try:
            await super()._dispatch_voice_update()
        finally:
            self._lavalink_refused_voice = False
