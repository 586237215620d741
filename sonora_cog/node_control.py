"""Drained Lavalink nodes and each bot process's view of its nodes, from the store alone.

Operators drain a node for every bot process at once through the store: :func:`drain` lists it in the
shared ``nodes-drained`` auxiliary record (with when and by whom), :func:`undrain` takes it out again.
Each running process polls that record (:mod:`sonora_cog.node_controller`) and drains or undrains the node
in its own ``wavelink.Pool``.

Each process also publishes what it sees, in a ``nodes-view-<token>`` record that runs out unless it is
renewed (:class:`ViewPublisher`): every node of its pool with its connection status, how many of the
process's players are on it and whether it is drained there. :func:`read_views` reads the views that have
not run out; :func:`summarize` folds them and the drained record into one :class:`NodeSummary` per node,
which ``python -m sonora_cog nodes status`` and ``sonora-nodes status`` show.

Nothing here talks to Discord or Lavalink: the CLI uses it as it is.

.. versionadded:: 0.4
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import orjson

from .deploy import process_name
from .errors import InvalidIdentifier

if TYPE_CHECKING:
    from .manager import SessionManager

__all__ = (
    "DRAINED_KEY",
    "MAX_IDENTIFIER_LENGTH",
    "VIEW_PREFIX",
    "DrainedNode",
    "NodeState",
    "NodeSummary",
    "NodeView",
    "ProcessNode",
    "ProcessView",
    "ViewPublisher",
    "drain",
    "read_drained",
    "read_views",
    "remove_view",
    "summarize",
    "undrain",
    "validate_identifier",
    "write_view",
)

_log = logging.getLogger(__name__)

DRAINED_KEY = "nodes-drained"
VIEW_PREFIX = "nodes-view-"
#: The longest node identifier accepted (wavelink puts no limit; a record holds many of them).
MAX_IDENTIFIER_LENGTH = 100
#: Expired views older than this (seconds) are removed when the views are read.
_VIEW_CLEANUP_AGE = 86_400.0


class NodeState(StrEnum):
    """A node's connection as one process sees it (wavelink's ``NodeStatus``, as it is written)."""

    connected = "connected"
    connecting = "connecting"
    disconnected = "disconnected"


@dataclass(frozen=True, slots=True)
class DrainedNode:
    """A node listed in the ``nodes-drained`` record: drained since ``at`` (unix time), by ``by``."""

    identifier: str
    at: float
    by: str


@dataclass(frozen=True, slots=True)
class NodeView:
    """One node as one process sees it."""

    state: NodeState
    players: int
    drained: bool

    def to_json(self) -> dict[str, Any]:
        """The record's form."""
        return {"status": self.state.value, "players": self.players, "drained": self.drained}

    @classmethod
    def from_json(cls, obj: Any) -> NodeView | None:
        """Parse one node of a view; ``None`` for one that is not well-formed."""
        if not isinstance(obj, dict):
            return None
        try:
            players = obj["players"]
            if isinstance(players, bool) or not isinstance(players, int) or players < 0:
                return None
            return cls(NodeState(obj["status"]), players, obj.get("drained") is True)
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True, slots=True)
class ProcessView:
    """What one bot process published of its nodes (a ``nodes-view-<token>`` record).

    Attributes
    ----------
    token:
        The process's deploy token (the record's key is ``nodes-view-<token>``).
    name:
        ``host:pid`` of the process.
    until:
        Unix time the view runs out unless it is renewed.
    nodes:
        Each node of its ``wavelink.Pool`` by identifier.
    """

    token: str
    name: str
    until: float
    nodes: Mapping[str, NodeView] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProcessNode:
    """One process's row of a :class:`NodeSummary`."""

    process: str
    state: NodeState
    players: int
    drained: bool


@dataclass(frozen=True, slots=True)
class NodeSummary:
    """One node across every running process, and whether the store lists it as drained.

    Attributes
    ----------
    identifier:
        The node.
    drained:
        The ``nodes-drained`` entry, if the node is listed there.
    processes:
        How each process that knows the node sees it, by process name. Empty: no running process knows
        a node by this name (``known`` is false).
    """

    identifier: str
    drained: DrainedNode | None
    processes: tuple[ProcessNode, ...] = ()

    @property
    def known(self) -> bool:
        """Whether any running process has a node with this identifier."""
        return bool(self.processes)

    @property
    def players(self) -> int:
        """Players on the node, over every process."""
        return sum(p.players for p in self.processes)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` form."""
        return {
            "identifier": self.identifier,
            "drained": self.drained is not None,
            "drained_at": self.drained.at if self.drained else None,
            "drained_by": self.drained.by if self.drained else None,
            "known": self.known,
            "players": self.players,
            "processes": [
                {"name": p.process, "status": p.state.value, "players": p.players, "drained": p.drained}
                for p in self.processes
            ],
        }


def validate_identifier(identifier: Any) -> str:
    """Return ``identifier`` if it can name a node, else raise :class:`~sonora_cog.errors.InvalidIdentifier`.

    A node identifier is printable text (no control characters or line breaks), not blank, at most
    :data:`MAX_IDENTIFIER_LENGTH` characters.
    """
    if not isinstance(identifier, str) or not identifier.strip():
        raise InvalidIdentifier(f"not a Lavalink node identifier: {identifier!r} (it is empty)")
    if len(identifier) > MAX_IDENTIFIER_LENGTH:
        raise InvalidIdentifier(
            f"not a Lavalink node identifier: {identifier[:20]!r}… is {len(identifier)} "
            f"characters long (at most {MAX_IDENTIFIER_LENGTH})"
        )
    if not identifier.isprintable():
        raise InvalidIdentifier(f"not a Lavalink node identifier: {identifier!r} (it holds control characters)")
    return identifier


# -- the drained record ------------------------------------------------------------------------------------


async def read_drained(manager: SessionManager) -> dict[str, DrainedNode]:
    """The nodes the store lists as drained, by identifier.

    A damaged record counts as empty and an entry that is not well-formed is skipped, each with a warning:
    the bot keeps running on what it knew (a damaged record is replaced by the next :func:`drain`).
    """
    data = await manager.store.get_aux(DRAINED_KEY)
    if not data:
        return {}
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        _log.warning("the drained-nodes record %r is not JSON (%s); treating it as empty", DRAINED_KEY, exc)
        return {}
    if not isinstance(obj, dict):
        _log.warning("the drained-nodes record %r is not a JSON object; treating it as empty", DRAINED_KEY)
        return {}
    found: dict[str, DrainedNode] = {}
    for identifier, entry in obj.items():
        try:
            validate_identifier(identifier)
            if not isinstance(entry, dict) or not isinstance(entry.get("by"), str):
                raise ValueError('expected {"at": <unix time>, "by": <text>}')
            at = entry["at"]
            if isinstance(at, bool) or not isinstance(at, int | float):
                raise ValueError('"at" is not a number')
            found[identifier] = DrainedNode(identifier, float(at), entry["by"])
        except (InvalidIdentifier, KeyError, ValueError) as exc:
            _log.warning("the drained-nodes record %r: skipping the entry %r (%s)", DRAINED_KEY, identifier[:120], exc)
    return found


async def _write_drained(manager: SessionManager, nodes: Mapping[str, DrainedNode]) -> None:
    if not nodes:
        await manager.store.delete_aux(DRAINED_KEY)
        return
    body = {n.identifier: {"at": n.at, "by": n.by} for n in nodes.values()}
    await manager.store.put_aux(DRAINED_KEY, orjson.dumps(body))


async def drain(manager: SessionManager, identifier: str, *, by: str = "cli", now: float | None = None) -> bool:
    """List the node as drained for every bot process on this store; return whether it is newly listed
    (a node already listed keeps its first entry).

    Read, changed and written back as one record: two drains or undrains run at the very same moment may
    lose one of them (run them one after another).

    Raises
    ------
    InvalidIdentifier
        ``identifier`` cannot name a node (:func:`validate_identifier`).
    StoreError
        The store cannot be read or written.
    """
    validate_identifier(identifier)
    nodes = await read_drained(manager)
    if identifier in nodes:
        return False
    nodes[identifier] = DrainedNode(identifier, time.time() if now is None else now, by)
    await _write_drained(manager, nodes)
    return True


async def undrain(manager: SessionManager, identifier: str) -> bool:
    """Take the node out of the drained record; return whether it was listed. Running processes let it take
    new players again at their next poll (players do not move back)."""
    validate_identifier(identifier)
    nodes = await read_drained(manager)
    if nodes.pop(identifier, None) is None:
        return False
    await _write_drained(manager, nodes)
    return True


# -- each process's view of its nodes ----------------------------------------------------------------------


async def write_view(
    manager: SessionManager, token: str, nodes: Mapping[str, NodeView], ttl: float, *, now: float | None = None
) -> None:
    """Publish this process's view of its nodes for the next ``ttl`` seconds."""
    body = {
        "name": process_name(),
        "until": (time.time() if now is None else now) + ttl,
        "nodes": {identifier: view.to_json() for identifier, view in nodes.items()},
    }
    await manager.store.put_aux(VIEW_PREFIX + token, orjson.dumps(body))


async def remove_view(manager: SessionManager, token: str) -> bool:
    """Withdraw a process's view (it stops); return whether there was one."""
    return await manager.store.delete_aux(VIEW_PREFIX + token)


async def read_views(manager: SessionManager, *, now: float | None = None) -> list[ProcessView]:
    """The views that have not run out, by process name. Damaged records and nodes are skipped; views that
    ran out over a day ago are removed."""
    now = time.time() if now is None else now
    found = []
    for key in await manager.store.aux_keys(VIEW_PREFIX):
        data = await manager.store.get_aux(key)
        try:
            body = orjson.loads(data) if data else None
            if not isinstance(body, dict) or not isinstance(body.get("nodes"), dict):
                raise TypeError("not a node view")
            until, name = float(body["until"]), body["name"]
            if not isinstance(name, str):
                raise TypeError("no process name")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            _log.warning("node view %r is damaged (%s); skipped", key, exc)
            continue
        if until < now:
            if until < now - _VIEW_CLEANUP_AGE:
                await manager.store.delete_aux(key)
            continue
        nodes = {}
        for identifier, raw in body["nodes"].items():
            view = NodeView.from_json(raw)
            if view is not None and _is_identifier(identifier):
                nodes[identifier] = view
        found.append(ProcessView(key.removeprefix(VIEW_PREFIX), name, until, nodes))
    return sorted(found, key=lambda v: (v.name, v.token))


def _is_identifier(identifier: str) -> bool:
    try:
        validate_identifier(identifier)
    except InvalidIdentifier:
        return False
    return True


class ViewPublisher:
    """Keeps one process's ``nodes-view-<token>`` record current without writing the store on every poll.

    :meth:`publish` writes when the view differs from the last one written, or when half of ``ttl`` has
    passed since (so the record never runs out while the process runs).

    Parameters
    ----------
    manager:
        The store's manager.
    token:
        The process's token (``cog.deploy.token``).
    ttl:
        Seconds a written view holds.
    clock:
        Unix time (injected by tests).
    """

    def __init__(self, manager: SessionManager, token: str, ttl: float, clock: Callable[[], float] = time.time) -> None:
        self.manager = manager
        self.token = token
        self.ttl = ttl
        self._clock = clock
        self._written: dict[str, NodeView] | None = None
        self._written_at = 0.0

    async def publish(self, nodes: Mapping[str, NodeView]) -> bool:
        """Write ``nodes`` if they changed or the last write is half ``ttl`` old; return whether it wrote.

        Raises
        ------
        StoreError
            The write failed (the next call tries again).
        """
        now = self._clock()
        current = dict(nodes)
        if current == self._written and now - self._written_at < self.ttl / 2:
            return False
        await write_view(self.manager, self.token, current, self.ttl, now=now)
        self._written, self._written_at = current, now
        return True

    async def retire(self) -> None:
        """Remove the record (the process stops)."""
        self._written = None
        await remove_view(self.manager, self.token)


def summarize(drained: Mapping[str, DrainedNode], views: Iterable[ProcessView]) -> list[NodeSummary]:
    """One :class:`NodeSummary` per node that a view or the drained record names, by identifier."""
    rows: dict[str, list[ProcessNode]] = {identifier: [] for identifier in drained}
    for view in views:
        for identifier, node in view.nodes.items():
            rows.setdefault(identifier, []).append(ProcessNode(view.name, node.state, node.players, node.drained))
    return [NodeSummary(identifier, drained.get(identifier), tuple(rows[identifier])) for identifier in sorted(rows)]
