"""Lavalink session resuming across a bot restart, and the *ghost* players a resumed session holds.

wavelink keeps a node's Lavalink session only for the life of one process. Lavalink can keep it
longer: with resuming enabled (``PATCH /v4/sessions/{id}``) it holds a session whose client went
away for ``timeout`` seconds, and its players go on playing. The cog records each node's session id
whenever the node is ready; on the next start :meth:`SonoraCog.connect_nodes
<sonora_cog.cog.SonoraCog.connect_nodes>` connects the nodes with those ids, so Lavalink answers
``resumed=True`` and nothing re-buffers.

The players of a resumed session have no ``wavelink.Player`` in the new process: they are ghosts.
The startup restore adopts each ghost that plays the guild's recorded track; every other ghost is
destroyed, so no player is left that nobody controls. When two processes start at once after a crash,
one may resume the previous session while the other wins a guild's lease: the winner destroys that
guild's player on the previous session (Lavalink's REST API takes any session id) before it plays the
guild, and the resumer destroys its ghost as soon as the lease shows another holder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import aiohttp
import wavelink

__all__ = ("Ghost", "destroy_ghost", "enable_resuming", "find_ghosts", "resume_sessions")

_log = logging.getLogger(__name__)

_LAVALINK_ERRORS = (wavelink.WavelinkException, aiohttp.ClientError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class Ghost:
    """A player Lavalink holds for a guild that no ``wavelink.Player`` of this process controls."""

    node: wavelink.Node
    player: wavelink.PlayerResponsePayload
    #: When Lavalink reported ``player`` (Unix seconds).
    seen_at: float
    #: The Lavalink session it belongs to (the node's own, resumed one, or another process's).
    session_id: str

    @property
    def guild_id(self) -> int:
        """The guild the player plays in."""
        return self.player.guild_id

    @property
    def claimed(self) -> bool:
        """Whether a ``wavelink.Player`` of this process took the guild over on the ghost's own session."""
        return self.session_id == self.node.session_id and self.node.get_player(self.guild_id) is not None

    async def refresh(self) -> Ghost | None:
        """The same player as Lavalink holds it now, or ``None`` when it is gone or cannot be read."""
        try:
            player = await self.node.fetch_player_info(self.guild_id)
        except _LAVALINK_ERRORS as exc:
            _log.warning("cannot read the Lavalink player of guild %s: %r", self.guild_id, exc)
            return None
        return None if player is None else Ghost(self.node, player, time.time(), self.session_id)


def resume_sessions(nodes: Iterable[wavelink.Node], sessions: dict[str, str]) -> list[wavelink.Node]:
    """Make each node that has no session yet ask Lavalink for the one recorded for its URI.

    Call before ``wavelink.Pool.connect``. Returns the nodes that will try to resume. wavelink sends
    the ``Session-Id`` header from the node's session id and has no public way to set it; setting it
    before the first connection is what wavelink itself does when it reconnects.
    """
    resuming = []
    for node in nodes:
        session_id = sessions.get(node.uri)
        if session_id and node.session_id is None:
            node._session_id = session_id  # see the docstring
            resuming.append(node)
    return resuming


async def enable_resuming(node: wavelink.Node, keep_seconds: int) -> None:
    """Ask Lavalink to keep ``node``'s session (and play on) for ``keep_seconds`` after a disconnect."""
    if node.session_id is None:
        return
    try:
        body = {"resuming": True, "timeout": keep_seconds}
        await node.send("PATCH", path=f"v4/sessions/{node.session_id}", data=body)
    except _LAVALINK_ERRORS as exc:
        _log.warning("cannot enable session resuming on Lavalink node %s: %r", node.identifier, exc)


async def find_ghosts(nodes: Iterable[wavelink.Node], *, sessions: Mapping[str, str] | None = None) -> dict[int, Ghost]:
    """Players Lavalink holds that no ``wavelink.Player`` of this process controls.

    By default on each connected node's own session (a resumed one): its players with no
    ``wavelink.Player`` here. With ``sessions`` (node URI → session id), on those other sessions of the
    nodes: all their players. One ``GET .../players`` per node; a node or session that cannot answer
    (a session that no longer exists) is logged at debug level and skipped.
    """
    ghosts: dict[int, Ghost] = {}
    for node in nodes:
        session_id = node.session_id if sessions is None else sessions.get(node.uri)
        if node.status is not wavelink.NodeStatus.CONNECTED or not session_id:
            continue
        try:
            if sessions is None:
                players = await node.fetch_players()
            else:
                raw = await node.send("GET", path=f"v4/sessions/{session_id}/players")
                players = [wavelink.PlayerResponsePayload(p) for p in raw or ()]
        except _LAVALINK_ERRORS as exc:
            _log.debug(
                "cannot list the players of session %s on Lavalink node %s: %r", session_id, node.identifier, exc
            )
            continue
        seen_at = time.time()
        for player in players:
            if sessions is not None or node.get_player(player.guild_id) is None:
                ghosts[player.guild_id] = Ghost(node, player, seen_at, session_id)
    return ghosts


async def destroy_ghost(ghost: Ghost) -> bool:
    """Destroy a ghost player on Lavalink; return whether Lavalink confirmed it (failures are logged).

    A ghost of the node's own session that a ``wavelink.Player`` of this process has taken over since it
    was found is left alone.
    """
    if ghost.claimed:
        return False
    try:
        await ghost.node.send("DELETE", path=f"v4/sessions/{ghost.session_id}/players/{ghost.guild_id}")
    except wavelink.LavalinkException as exc:
        if exc.status == 404:  # gone already (another process destroyed it, or its session ended)
            return True
        _log.warning("cannot destroy the unowned Lavalink player of guild %s: %r", ghost.guild_id, exc)
        return False
    except _LAVALINK_ERRORS as exc:
        _log.warning("cannot destroy the unowned Lavalink player of guild %s: %r", ghost.guild_id, exc)
        return False
    _log.info("guild %s: destroyed a Lavalink player nobody controls (left from the previous process)", ghost.guild_id)
    return True
