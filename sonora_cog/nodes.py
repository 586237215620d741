"""Which Lavalink node a player goes to: health, load and drained nodes.

:class:`NodeBoard` is the one place that knows which nodes of ``wavelink.Pool`` take players. A node
takes players when it is connected, has a Lavalink session and is not drained (``cog.drain_node``);
among those, the one with the lowest :func:`penalty` is the best. The load comes from Lavalink's own
``GET /v4/stats`` (read at most every :data:`STATS_MAX_AGE` seconds per node, with a short timeout),
plus the players this process put on the node since that read, so a burst of moves spreads over the
nodes instead of piling onto the one that looked idle a second ago.

:class:`~sonora_cog.player.SonoraPlayer` asks the board when the bot joins without naming nodes, so
a drained node gets no new players of the bot's own either; the restore engine and the failover ask it
for every player they place.

.. versionadded:: 0.4
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import aiohttp
import wavelink

__all__ = ("STATS_MAX_AGE", "NodeBoard", "NodeLoad", "penalty")

_log = logging.getLogger(__name__)

#: Seconds a node's stats are used before they are read again.
STATS_MAX_AGE = 5.0
#: Seconds a ``GET /v4/stats`` may take; a node slower than that is ranked after every node that answered.
STATS_TIMEOUT = 2.0
#: Probes in a row a connected node may fail before it counts as unreachable (a busy machine can make
#: one stats request late; three in a row, seconds apart, are a node that does not answer).
PROBE_FAILURES = 3
#: Seconds a probe's ``GET /v4/stats`` may take (more than a pick's: a probe is not in a hurry).
PROBE_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class NodeLoad:
    """What Lavalink's stats say of a node's load.

    Attributes
    ----------
    playing:
        Players that play a track (Lavalink's ``playingPlayers``).
    system_load:
        The machine's CPU load, 0 to 1 (``cpu.systemLoad``).
    nulled, deficit:
        Frames per minute that were nulled or missing (``frameStats``; 0 when Lavalink sends none).
    """

    playing: int
    system_load: float
    nulled: int = 0
    deficit: int = 0

    @classmethod
    def from_stats(cls, stats: wavelink.StatsResponsePayload) -> NodeLoad:
        frames = stats.frames
        return cls(
            playing=stats.playing,
            system_load=stats.cpu.system_load,
            nulled=max(0, frames.nulled) if frames is not None else 0,
            deficit=max(0, frames.deficit) if frames is not None else 0,
        )


def penalty(load: NodeLoad, added: int = 0) -> float:
    """A node's load as one number (lower is better), with ``added`` players placed since the stats.

    The weighting Lavalink clients share (Lavalink.py, lavalink-client): one point per playing player;
    CPU load grows exponentially (``1.05^(100·load)·10 - 10``: 0 when idle, about 1,300 at 100 %);
    nulled and missing frames (out of the 3,000 in a minute of audio) weigh most, since they are what
    listeners hear as stutter.
    """
    cpu = math.pow(1.05, 100 * min(max(load.system_load, 0.0), 1.0)) * 10 - 10
    nulled = (math.pow(1.03, 500 * (load.nulled / 3000)) * 300 - 300) * 2
    deficit = math.pow(1.03, 500 * (load.deficit / 3000)) * 600 - 600
    return load.playing + added + cpu + nulled + deficit


@dataclass(slots=True)
class _Seen:
    load: NodeLoad | None
    at: float
    added: int = 0


class NodeBoard:
    """Which nodes of ``wavelink.Pool`` take players, and which of them is the best.

    Parameters
    ----------
    nodes:
        The nodes to choose from (default: every node of ``wavelink.Pool``).
    clock:
        Monotonic seconds (for the age of the stats).
    """

    def __init__(
        self,
        nodes: Callable[[], Iterable[wavelink.Node]] = lambda: wavelink.Pool.nodes.values(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._nodes = nodes
        self._drained: set[str] = set()
        self._seen: dict[str, _Seen] = {}
        self._failures: dict[str, int] = {}
        self._unreachable: set[str] = set()
        self._clock = clock

    # -- drained nodes --------------------------------------------------------------------------------

    @property
    def drained(self) -> frozenset[str]:
        """Identifiers of the nodes that take no new players."""
        return frozenset(self._drained)

    def drain(self, identifier: str) -> bool:
        """The node takes no new players from now on; return whether that is new."""
        new = identifier not in self._drained
        self._drained.add(identifier)
        return new

    def undrain(self, identifier: str) -> bool:
        """The node takes players again; return whether it was drained."""
        was = identifier in self._drained
        self._drained.discard(identifier)
        return was

    # -- choosing -------------------------------------------------------------------------------------

    # -- health ---------------------------------------------------------------------------------------

    def alive(self, node: wavelink.Node | None) -> bool:
        """Whether ``node`` works: connected, with a session, and answering (see :meth:`probe`)."""
        return (
            node is not None
            and node.status is wavelink.NodeStatus.CONNECTED
            and bool(node.session_id)
            and node.identifier not in self._unreachable
        )

    async def probe(self, node: wavelink.Node) -> bool:
        """Read the node's stats now; return whether it answers.

        A node that fails :data:`PROBE_FAILURES` probes in a row is unreachable (not :meth:`alive`, not
        :meth:`available`) until it answers again or reconnects. This catches what wavelink's own status
        misses: wavelink 3.5 stops listening, without a reconnect or an event, when Lavalink closes the
        WebSocket cleanly (a Lavalink that shuts down), and keeps calling that node connected.
        """
        identifier = node.identifier
        if await self._refresh(node, probing=True):
            self._failures.pop(identifier, None)
            self._unreachable.discard(identifier)
            return True
        self._failures[identifier] = failures = self._failures.get(identifier, 0) + 1
        if failures >= PROBE_FAILURES:
            self._unreachable.add(identifier)
        return identifier not in self._unreachable

    def unreachable(self, identifier: str) -> None:
        """The node did not answer a request in time: it counts as unreachable until it answers a probe."""
        self._unreachable.add(identifier)

    def reachable(self, identifier: str) -> None:
        """The node (re)connected: it counts as answering again."""
        self._failures.pop(identifier, None)
        self._unreachable.discard(identifier)

    def available(self, exclude: Iterable[str] = ()) -> list[wavelink.Node]:
        """The nodes that take players now: :meth:`alive`, not drained, not in ``exclude``."""
        skip = set(exclude) | self._drained
        return [node for node in self._nodes() if self.alive(node) and node.identifier not in skip]

    def pick_now(self, exclude: Iterable[str] = ()) -> wavelink.Node | None:
        """The best available node by the stats already read (no request); ``None`` when none takes players.

        For code that cannot wait (a player's constructor). Nodes with no stats yet count by the players
        this bot has on them. Counts the pick as one more player on that node until its next stats.
        """
        nodes = self.available(exclude)
        return self._choose(nodes) if nodes else None

    async def pick(self, exclude: Iterable[str] = ()) -> wavelink.Node | None:
        """The best available node, by stats at most :data:`STATS_MAX_AGE` seconds old; ``None`` when none.

        Counts the pick as one more player on that node until its next stats.
        """
        nodes = self.available(exclude)
        if not nodes:
            return None
        await asyncio.gather(*(self._refresh(node) for node in nodes))
        return self._choose(nodes)

    def _choose(self, nodes: list[wavelink.Node]) -> wavelink.Node:
        best = min(nodes, key=self._score)
        self._seen.setdefault(best.identifier, _Seen(None, self._clock())).added += 1
        return best

    def forget(self, identifier: str) -> None:
        """Drop what is known of a node's load (it went away: its next stats start afresh)."""
        self._seen.pop(identifier, None)

    def _score(self, node: wavelink.Node) -> tuple[int, float]:
        seen = self._seen.get(node.identifier)
        hosted = len(node.players)
        if seen is None or seen.load is None:
            # Unknown load ranks after every node that answered, then by this bot's players on it.
            return (1, float(hosted + (seen.added if seen else 0)))
        return (0, penalty(seen.load, seen.added))

    async def _refresh(self, node: wavelink.Node, *, probing: bool = False) -> bool:
        """Read the node's stats unless they are recent (always when ``probing``, with the probe's longer
        timeout); return whether it answered."""
        seen = self._seen.get(node.identifier)
        now = self._clock()
        if not probing and seen is not None and seen.load is not None and now - seen.at < STATS_MAX_AGE:
            return True
        try:
            async with asyncio.timeout(PROBE_TIMEOUT if probing else STATS_TIMEOUT):
                stats = await node.fetch_stats()
        except (TimeoutError, wavelink.WavelinkException, aiohttp.ClientError, OSError, KeyError, TypeError) as exc:
            _log.debug("Lavalink node %s: cannot read its stats (%r)", node.identifier, exc)
            self._seen[node.identifier] = _Seen(None, now, seen.added if seen else 0)
            return False
        self._seen[node.identifier] = _Seen(NodeLoad.from_stats(stats), now)
        return True
