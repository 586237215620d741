"""SonoraPlayer: a ``wavelink.Player`` that reports every state change, so its guild is saved at once.

Use it where a bot already uses ``wavelink.Player``::

    player = await channel.connect(cls=sonora_cog.SonoraPlayer)

Every change (play, pause, seek, volume, filters, queue mutations, queue mode, autoplay) marks the
guild dirty with the loaded :class:`~sonora_cog.cog.SonoraCog`, which writes the live record within
``snapshots.debounce`` seconds. Bots that keep a plain ``wavelink.Player`` are still covered through
wavelink's events and the checkpoint job, only less promptly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import discord
import wavelink
from discord.ext import commands

__all__ = ("COG_NAME", "ObservedQueue", "SonoraPlayer")

#: The name the cog registers under; the player finds it with ``client.get_cog(COG_NAME)``.
COG_NAME = "Sonora"


class _Tracker(Protocol):
    def mark_dirty(self, guild_id: int) -> None: ...

    def session_ended(self, guild_id: int, reason: str) -> None: ...


class ObservedQueue(wavelink.Queue):
    """A ``wavelink.Queue`` that calls ``on_change()`` after every mutation."""

    def __init__(self, on_change: Callable[[], None], *, history: bool = True) -> None:
        self._on_change = on_change
        super().__init__(history=history)

    def _set_mode(self, value: wavelink.QueueMode) -> None:
        wavelink.Queue.mode.fset(self, value)  # type: ignore[attr-defined]
        self._on_change()

    mode = property(wavelink.Queue.mode.fget, _set_mode)  # type: ignore[assignment]

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
        super().delete(index)
        self._on_change()

    def remove(self, item: wavelink.Playable, /, count: int | None = 1) -> int:
        removed = super().remove(item, count)
        self._on_change()
        return removed

    def swap(self, first: int, second: int, /) -> None:
        super().swap(first, second)
        self._on_change()

    def shuffle(self) -> None:
        super().shuffle()
        self._on_change()

    def clear(self) -> None:
        super().clear()
        self._on_change()

    def reset(self) -> None:
        super().reset()
        self._on_change()

    def __setitem__(self, index: Any, value: wavelink.Playable, /) -> None:
        super().__setitem__(index, value)
        self._on_change()

    def __delitem__(self, index: int | slice, /) -> None:
        super().__delitem__(index)
        self._on_change()


class SonoraPlayer(wavelink.Player):
    """``wavelink.Player`` that marks its guild dirty on every state change.

    Attributes
    ----------
    extras:
        Bot-specific JSON saved with the state and given back on restore (the announce channel,
        who asked for the session...). Keep it small: it is capped by ``limits.max_extras_bytes``.
    shuffle_enabled:
        A flag for bots with a "shuffle mode"; persisted as ``queue.shuffle_enabled``.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        client: discord.Client = discord.utils.MISSING,
        channel: discord.abc.Connectable = discord.utils.MISSING,
        *,
        nodes: list[wavelink.Node] | None = None,
    ) -> None:
        super().__init__(client, channel, nodes=nodes)
        self.queue = ObservedQueue(self.mark_dirty)
        self.auto_queue = ObservedQueue(self.mark_dirty)
        self.extras: dict[str, Any] = {}
        self.shuffle_enabled: bool = False

    def _tracker(self) -> _Tracker | None:
        client = self.client if self.client is not discord.utils.MISSING else None
        cog = client.get_cog(COG_NAME) if isinstance(client, commands.Bot) else None
        return getattr(cog, "tracker", None)

    def mark_dirty(self) -> None:
        """Tell the cog this guild's state changed (called by every mutator; call it after your own)."""
        guild = self.guild
        tracker = self._tracker()
        if guild is not None and tracker is not None:
            tracker.mark_dirty(guild.id)

    @wavelink.Player.autoplay.setter  # type: ignore[attr-defined,untyped-decorator]
    def autoplay(self, value: Any) -> None:
        wavelink.Player.autoplay.fset(self, value)  # type: ignore[attr-defined]
        self.mark_dirty()

    async def play(self, track: wavelink.Playable, **kwargs: Any) -> wavelink.Playable:
        """See ``wavelink.Player.play``."""
        result = await super().play(track, **kwargs)
        self.mark_dirty()
        return result

    async def pause(self, value: bool, /) -> None:
        """See ``wavelink.Player.pause``."""
        await super().pause(value)
        self.mark_dirty()

    async def seek(self, position: int = 0, /) -> None:
        """See ``wavelink.Player.seek``."""
        await super().seek(position)
        self.mark_dirty()

    async def set_volume(self, value: int = 100, /) -> None:
        """See ``wavelink.Player.set_volume``."""
        await super().set_volume(value)
        self.mark_dirty()

    async def set_filters(self, filters: wavelink.Filters | None = None, /, *, seek: bool = False) -> None:
        """See ``wavelink.Player.set_filters``."""
        await super().set_filters(filters, seek=seek)
        self.mark_dirty()

    async def skip(self, *, force: bool = True) -> wavelink.Playable | None:
        """See ``wavelink.Player.skip``."""
        result = await super().skip(force=force)
        self.mark_dirty()
        return result

    async def disconnect(self, **kwargs: Any) -> None:
        """Leave voice on purpose: the session ends and its live record is deleted (no rejoin)."""
        guild = self.guild
        tracker = self._tracker()
        if guild is not None and tracker is not None:
            tracker.session_ended(guild.id, "the bot left the voice channel")
        await super().disconnect(**kwargs)
