"""Restore engine: a :class:`~sonora_cog.model.SessionState` → a live player in its voice channel.

This is the only module that changes a player. It joins the recorded channel, rebuilds the queue,
history, loop mode and auto queue from the stored tracks (no Lavalink request per track), applies
volume, filters and autoplay, plays the current track from its recorded position paused or not
(a playing track ``rewind_seconds`` earlier, to replay what the listeners may have missed; a paused one
exactly where it paused: they missed nothing), then asks Lavalink once what it holds and compares. If
that check fails and a backup was given, the backup is applied instead (rollback).

Guilds that cannot be restored are *skipped with a reason* (channel gone, no permission, no
listeners) and their records are kept; errors are *failed* with the error. Nothing raises out of
:func:`restore_state`: the report says what happened.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import discord
import wavelink

from .capture import autoplay_mode_to_wavelink, loop_mode_to_queue_mode, to_filters, to_playable
from .config import RestoreSettings
from .meta import SnapshotMeta
from .model import SessionState
from .pacing import ShardPacer
from .player import SonoraPlayer
from .resume import Ghost

__all__ = (
    "ALL_PARTS",
    "RestoreReport",
    "RestoreStatus",
    "adoptable",
    "advance_position",
    "apply_state",
    "leave_voice",
    "restore_state",
    "start_position",
)

_log = logging.getLogger(__name__)

#: Seconds one guild's restore may take (join, apply, verify, rollback) before it is reported failed.
RESTORE_TIMEOUT = 60.0
#: Seconds to wait for Discord to confirm that the bot left a voice channel.
LEAVE_CONFIRM_TIMEOUT = 5.0
#: The parts of a state that can be restored separately.
ALL_PARTS: frozenset[str] = frozenset({"player", "queue", "filters", "autoplay"})


class RestoreStatus(StrEnum):
    """Outcome of one guild's restore."""

    restored = "restored"
    skipped = "skipped"
    failed = "failed"
    rolled_back = "rolled back"


@dataclass(slots=True)
class RestoreReport:
    """What a restore did for one guild (``on_sonora_session_restored`` receives it).

    Attributes
    ----------
    guild_id:
        The guild.
    status:
        restored / skipped / failed / rolled back.
    reason:
        Why it was skipped or failed, in one sentence.
    parts:
        The parts that were applied.
    track, position, queue_length, volume:
        What the live player holds afterwards (as far as it was restored).
    state:
        The state that was applied (its ``extras`` are the bot's own).
    adopted:
        True when the player Lavalink kept playing through a resumed session was taken over as it
        was (no re-buffering) instead of being started again.
    backup:
        The ``pre-restore`` snapshot taken of what played before (``SonoraCog.restore(...,
        pre_restore_label=...)``, ``/snapshot restore``), if any.
    node:
        The identifier of the Lavalink node the player is on afterwards (failover and drain moves).
    """

    guild_id: int
    status: RestoreStatus
    reason: str | None = None
    parts: frozenset[str] = ALL_PARTS
    track: str | None = None
    position: int | None = None
    queue_length: int = 0
    volume: int | None = None
    state: SessionState | None = field(default=None, repr=False)
    player: wavelink.Player | None = field(default=None, repr=False)
    adopted: bool = False
    backup: SnapshotMeta | None = None
    node: str | None = None

    @property
    def ok(self) -> bool:
        """True when the guild was restored as asked."""
        return self.status is RestoreStatus.restored


def advance_position(state: SessionState, until: float) -> SessionState:
    """The state as it had played on until ``until`` (Unix seconds): a playing, unpaused track's
    position moves forward at the timescale filter's speed, capped at the track's length.

    Live records are rewritten only when something changes; between changes the bot's checkpoint
    heartbeat says how long the track kept playing, which this turns into a position.
    """
    current = state.queue.current
    if current is None or state.player.paused or current.info.get("isStream") or until <= state.player.position_at:
        return state
    timescale = state.filters.filter_config.get("timescale") or {}
    speed = float(timescale.get("speed") or 1.0) * float(timescale.get("rate") or 1.0)
    moved = int((until - state.player.position_at) * 1000 * speed)
    position = min(state.player.position + moved, current.length)
    return replace(state, player=replace(state.player, position=position, position_at=until))


def start_position(state: SessionState, settings: RestoreSettings) -> int:
    """Where a restore starts the current track: the recorded position, less ``rewind_seconds`` when it
    plays (once per restore: the live record holds where Lavalink really is, never a rewound position
    carried over), exactly the recorded one when it is paused, and 0 for a stream."""
    current = state.queue.current
    if current is None or current.info.get("isStream"):
        return 0
    if state.player.paused:
        return state.player.position
    return max(0, state.player.position - int(settings.rewind_seconds * 1000))


def _skip_reason(guild: discord.Guild, state: SessionState, settings: RestoreSettings) -> str | None:
    if state.channel_id is None:
        return "the record has no voice channel"
    channel = guild.get_channel(state.channel_id)
    if channel is None:
        return f"voice channel {state.channel_id} no longer exists"
    if not isinstance(channel, discord.VoiceChannel | discord.StageChannel):
        return f"channel {channel.name!r} is not a voice channel"
    permissions = channel.permissions_for(guild.me)
    missing = [name for name in ("connect", "speak") if not getattr(permissions, name)]
    if missing:
        return f"missing {'/'.join(m.upper() for m in missing)} permission in {channel.name!r}"
    if settings.skip_empty_channels and not any(not m.bot for m in channel.members):
        return f"nobody is listening in {channel.name!r}"
    return None


async def _connect(
    guild: discord.Guild,
    channel: discord.VoiceChannel | discord.StageChannel,
    player_cls: type[wavelink.Player],
    node: wavelink.Node | None = None,
) -> wavelink.Player:
    current = guild.voice_client
    if isinstance(current, wavelink.Player) and current.connected and node in (None, current.node):
        if current.channel != channel:
            await current.move_to(channel)
        return current
    if current is not None:
        await leave_voice(current)
    if node is None:
        return await channel.connect(cls=player_cls, self_deaf=True)

    def on_node(client: discord.Client, connectable: discord.abc.Connectable) -> wavelink.Player:
        return player_cls(client, connectable, nodes=[node])

    return await channel.connect(cls=on_node, self_deaf=True)


async def leave_voice(voice_client: discord.VoiceProtocol) -> None:
    """Leave voice without ending the session, then wait until Discord confirms the bot has left.

    Joining again before that confirmation races it: the late "left" voice state update reaches the
    *new* player, and wavelink destroys a player whose channel becomes ``None``. Gives up waiting
    after :data:`LEAVE_CONFIRM_TIMEOUT` seconds (and goes on); errors from the disconnect propagate.
    """
    client = voice_client.client
    guild: discord.Guild = voice_client.channel.guild  # type: ignore[attr-defined]
    me = guild.me
    confirmation: asyncio.Future[object] | None = None
    if me.voice is not None and me.voice.channel is not None:
        confirmation = asyncio.ensure_future(
            client.wait_for(
                "voice_state_update",
                check=lambda member, _before, after: (
                    member.guild.id == guild.id and member.id == me.id and after.channel is None
                ),
            )
        )
    try:
        if isinstance(voice_client, wavelink.Player):
            await wavelink.Player.disconnect(voice_client)  # not SonoraPlayer.disconnect: that ends the session
        else:
            await voice_client.disconnect(force=True)
        if confirmation is not None:
            async with asyncio.timeout(LEAVE_CONFIRM_TIMEOUT):
                await asyncio.shield(confirmation)
    except TimeoutError:
        _log.debug(
            "guild %s: Discord did not confirm leaving voice within %g s; going on", guild.id, LEAVE_CONFIRM_TIMEOUT
        )
    finally:
        if confirmation is not None:
            confirmation.cancel()


async def apply_state(
    player: wavelink.Player,
    state: SessionState,
    parts: Iterable[str],
    settings: RestoreSettings,
    *,
    keep_playing: bool = False,
) -> None:
    """Apply ``parts`` of ``state`` to a connected player (the tracks need no Lavalink request).

    With ``keep_playing``, Lavalink already plays the current track (an adopted player): it is set
    with ``noReplace``, so Lavalink keeps its playback and position and nothing re-buffers.
    """
    wanted = frozenset(parts)
    if "queue" in wanted:
        player.queue.clear()
        player.queue.put([to_playable(t) for t in state.queue.upcoming])
        history = player.queue.history
        if history is not None:
            history.clear()
            history.put([to_playable(t) for t in state.queue.history])
        player.queue.mode = loop_mode_to_queue_mode(state.queue.loop_mode)
        if isinstance(player, SonoraPlayer):
            player.shuffle_enabled = state.queue.shuffle_enabled
    if "autoplay" in wanted:
        player.autoplay = autoplay_mode_to_wavelink(state.autoplay.mode)
        player.auto_queue.clear()
        player.auto_queue.put([to_playable(t) for t in state.autoplay.auto_queue])
    if isinstance(player, SonoraPlayer):
        player.extras = dict(state.extras)
    filters = to_filters(state.filters) if "filters" in wanted else None
    current = state.queue.current
    if "player" in wanted and current is not None:
        # Lavalink ignores the position of a noReplace play that finds its track playing; it is given
        # anyway so that SonoraPlayer's clock starts where Lavalink's player is.
        start = start_position(state, settings)
        if keep_playing:
            start = advance_position(state, time.time()).player.position
        await player.play(
            to_playable(current),
            replace=not keep_playing,
            start=start,
            volume=state.player.volume or None,
            paused=state.player.paused,
            filters=filters,
            add_history=False,
        )
        if state.player.volume == 0:
            await player.set_volume(0)
        return
    if "player" in wanted:
        await player.set_volume(state.player.volume)
        # Even with nothing playing: a paused player starts its next track paused (wavelink sends it).
        await player.pause(state.player.paused)
    if filters is not None:
        await player.set_filters(filters)


async def _verify(
    player: wavelink.Player, state: SessionState, parts: frozenset[str], settings: RestoreSettings, *, adopted: bool
) -> str | None:
    """Compare what Lavalink holds with the state (one REST request); return the first difference."""
    if "queue" in parts and len(player.queue) != len(state.queue.upcoming):
        return f"queue has {len(player.queue)} tracks, expected {len(state.queue.upcoming)}"
    if "player" not in parts:
        return None
    guild = player.guild
    assert guild is not None
    info = await player.node.fetch_player_info(guild.id)
    current = state.queue.current
    if info is None:
        return "Lavalink holds no player for this guild"
    if current is not None and not _same_track(info.track, current.info):
        return "Lavalink is not playing the recorded track"
    if info.volume != state.player.volume:
        return f"volume is {info.volume}, expected {state.player.volume}"
    if current is not None and info.paused != state.player.paused:  # with no track, Lavalink resets pause
        return f"paused is {info.paused}, expected {state.player.paused}"
    if current is not None and not current.info.get("isStream"):
        # An adopted player played on from where Lavalink said it was; a rebuilt one starts at start_position.
        expected = advance_position(state, time.time()).player.position if adopted else start_position(state, settings)
        drift = abs(info.state.position - expected)
        if drift > settings.verify_tolerance_ms:
            return f"position is {info.state.position} ms, expected about {expected} ms"
    return None


async def restore_state(
    guild: discord.Guild,
    state: SessionState,
    settings: RestoreSettings,
    *,
    parts: Iterable[str] = ALL_PARTS,
    backup: SessionState | None = None,
    player_cls: type[wavelink.Player] = SonoraPlayer,
    pacer: ShardPacer | None = None,
    adopt: Ghost | None = None,
) -> RestoreReport:
    """Bring ``state`` back in ``guild``. Never raises: the report says what happened.

    Parameters
    ----------
    guild:
        The guild (its ``id`` must equal ``state.guild_id``).
    state:
        What to restore.
    settings:
        ``[restore]`` settings (rewind, verification, empty-channel rule).
    parts:
        Any of ``player``, ``queue``, ``filters``, ``autoplay``.
    backup:
        The state to roll back to if verification fails (a ``pre-restore`` snapshot).
    player_cls:
        The player class for a fresh voice connection.
    pacer:
        Paces the voice join on the connection of the guild's shard, under Discord's gateway limit
        (shared by every restore of the process).
    adopt:
        A player Lavalink kept playing for this guild through a resumed session that is
        :func:`adoptable`: the bot joins on its node and takes it over, keeping its track, position,
        volume and pause state, instead of playing the track again.
    """
    wanted = frozenset(parts) & ALL_PARTS
    report = RestoreReport(guild_id=guild.id, status=RestoreStatus.failed, parts=wanted, state=state)
    if state.guild_id != guild.id:
        report.reason = f"the state belongs to guild {state.guild_id}"
        return report
    reason = _skip_reason(guild, state, settings)
    if reason is not None:
        report.status, report.reason = RestoreStatus.skipped, reason
        return report
    channel = guild.get_channel(state.channel_id)  # type: ignore[arg-type]
    assert isinstance(channel, discord.VoiceChannel | discord.StageChannel)
    if pacer is not None:
        await pacer.acquire(guild.shard_id)
    if adopt is not None:  # it may have played on (or ended) while this guild waited for its turn
        adopt = await adopt.refresh()
        if adopt is not None and adoptable(adopt, state):
            state = _as_adopted(state, adopt)
        else:
            _log.info("guild %s: Lavalink no longer plays the recorded track; restoring it instead", guild.id)
            adopt = None
    try:
        async with asyncio.timeout(RESTORE_TIMEOUT):  # nothing may hang a restore forever
            player = await _restore_connected(
                guild, channel, state, wanted, settings, backup, player_cls, report, adopt
            )
    except (TimeoutError, discord.DiscordException, wavelink.WavelinkException, OSError) as exc:
        report.status = RestoreStatus.failed
        detail = str(exc) or f"gave up after {RESTORE_TIMEOUT:g} s"
        report.reason = f"{type(exc).__name__}: {detail}"
        _log.warning("restore of guild %s failed: %s", guild.id, report.reason)
        return report
    current = player.current
    report.track = current.title if current else None
    if current is not None:
        report.position = state.player.position if report.adopted else start_position(state, settings)
    report.queue_length = len(player.queue)
    report.volume = player.volume
    return report


async def _restore_connected(
    guild: discord.Guild,
    channel: discord.VoiceChannel | discord.StageChannel,
    state: SessionState,
    wanted: frozenset[str],
    settings: RestoreSettings,
    backup: SessionState | None,
    player_cls: type[wavelink.Player],
    report: RestoreReport,
    adopt: Ghost | None,
) -> wavelink.Player:
    """Join, apply, verify (and roll back); fill ``report``'s status and return the player."""
    player = await _connect(guild, channel, player_cls, adopt.node if adopt is not None else None)
    report.player = player
    report.adopted = adopt is not None
    await apply_state(player, state, wanted, settings, keep_playing=report.adopted)
    problem = await _verify(player, state, wanted, settings, adopted=report.adopted) if settings.verify else None
    if problem is not None and backup is not None:
        _log.warning("restore of guild %s failed verification (%s); rolling back", guild.id, problem)
        await apply_state(player, backup, ALL_PARTS, settings)
        report.status, report.reason = RestoreStatus.rolled_back, f"verification failed: {problem}"
    elif problem is not None:
        report.reason = f"verification failed: {problem}"
    else:
        report.status = RestoreStatus.restored
    return player


def adoptable(ghost: Ghost, state: SessionState) -> bool:
    """Whether a player Lavalink kept (``ghost``) plays ``state``'s current track, so it can be adopted."""
    current = state.queue.current
    return current is not None and _same_track(ghost.player.track, current.info)


def _same_track(track: wavelink.Playable | None, info: Mapping[str, Any]) -> bool:
    # Lavalink re-encodes the playing track with its current position: compare identities, not blobs.
    return track is not None and (track.identifier, track.source) == (info["identifier"], info["sourceName"])


def _as_adopted(state: SessionState, ghost: Ghost) -> SessionState:
    """``state`` with what Lavalink says of the player it kept: volume, pause state and position."""
    lavalink = ghost.player
    player = replace(
        state.player,
        volume=lavalink.volume,
        paused=lavalink.paused,
        position=lavalink.state.position,
        position_at=ghost.seen_at,
    )
    return replace(state, player=player)
