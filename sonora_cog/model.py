"""Schema v1: the typed, versioned form of one guild's playback state (DESIGN.md, "The schema").

Everything here is pure. :meth:`SessionState.to_json` gives the JSON form the codec stores;
:meth:`SessionState.from_json` parses untrusted JSON strictly and names the first bad field
(``queue.upcoming[3].info.length: expected int``). Unknown fields inside known objects are kept
(``extra``) so a newer writer's additions survive a round trip through this version.

Track objects are Lavalink's own track JSON, kept as they arrive (validated, never renamed), so a
stored track goes back to wavelink unchanged and without a network round trip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar, overload

import orjson

from .errors import InvalidSnapshot, SchemaVersionError
from .meta import SnapshotKind

__all__ = (
    "SCHEMA_VERSION",
    "AutoplayMode",
    "AutoplayState",
    "FilterState",
    "Limits",
    "LoopMode",
    "PlayerState",
    "QueueState",
    "SessionState",
    "TrackList",
    "TrackState",
    "register_migration",
)

#: The latest capture time a record may carry (2100-01-01 UTC): later ones are not times at all.
MAX_TIMESTAMP = 4_102_444_800.0

SCHEMA_VERSION = 1
_E = TypeVar("_E", bound=StrEnum)
_SNOWFLAKE_MAX = 2**64 - 1


class LoopMode(StrEnum):
    """Queue loop mode; maps wavelink's ``QueueMode`` normal / loop / loop_all."""

    none = "none"
    track = "track"
    queue = "queue"


class AutoplayMode(StrEnum):
    """Autoplay mode; maps wavelink's ``AutoPlayMode`` of the same names."""

    enabled = "enabled"
    partial = "partial"
    disabled = "disabled"


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps applied when capturing and when decoding untrusted records."""

    max_queue_tracks: int = 10_000
    max_history_tracks: int = 100
    max_string_length: int = 4_096
    max_encoded_length: int = 65_536
    max_extras_bytes: int = 16_384


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class TrackState:
    """One track as Lavalink's track JSON (``encoded``, ``info``, ``pluginInfo``, ``userData``,
    plus ``playlist`` and ``recommended`` as wavelink knows them).

    The JSON object is kept whole in :attr:`data`; the properties read the parts people look at.
    """

    data: Mapping[str, Any]

    @property
    def encoded(self) -> str:
        """Lavalink's base64 track blob."""
        encoded: str = self.data["encoded"]
        return encoded

    @property
    def info(self) -> Mapping[str, Any]:
        """Lavalink's ``info`` object (camelCase keys)."""
        info: Mapping[str, Any] = self.data["info"]
        return info

    @property
    def title(self) -> str:
        """Track title."""
        title: str = self.data["info"]["title"]
        return title

    @property
    def length(self) -> int:
        """Track length in milliseconds."""
        length: int = self.data["info"]["length"]
        return length

    @property
    def user_data(self) -> Mapping[str, Any]:
        """The bot's extras for this track (wavelink ``Playable.extras``, Lavalink ``userData``)."""
        return self.data.get("userData") or {}

    @property
    def playlist(self) -> Mapping[str, Any] | None:
        """The playlist the track came from (``name``, ``selectedTrack``, ...), if any."""
        return self.data.get("playlist")

    @property
    def recommended(self) -> bool:
        """Whether wavelink's AutoPlay recommended this track."""
        return bool(self.data.get("recommended", False))

    def to_json(self) -> Mapping[str, Any]:
        """Return the JSON form (the stored object itself; treat it as read-only)."""
        return self.data

    @classmethod
    def from_json(cls, obj: Any, path: str, limits: Limits = DEFAULT_LIMITS) -> TrackState:
        """Validate a Lavalink track object; raise :class:`InvalidSnapshot` naming the first bad field."""
        _check_track(obj, path, limits)
        return cls(obj)


class TrackList(Sequence[TrackState]):
    """An immutable list of tracks held as their JSON objects: what capture builds and a decode parses.

    Reading an item gives a :class:`TrackState` over the stored object; :attr:`json` gives the objects
    themselves, so a state goes to the encoder without a wrapper per track. Equal to any sequence of
    equal tracks (a tuple of :class:`TrackState` included).

    Parameters
    ----------
    objects:
        The tracks' JSON objects. A list is taken as it is (not copied): do not change it afterwards.

    .. versionadded:: 0.5
    """

    __slots__ = ("_objects",)

    def __init__(self, objects: Sequence[Mapping[str, Any]] = ()) -> None:
        self._objects = objects

    @classmethod
    def of(cls, tracks: Sequence[TrackState]) -> TrackList:
        """``tracks`` as a :class:`TrackList` (itself when it is one)."""
        return tracks if isinstance(tracks, TrackList) else cls([t.data for t in tracks])

    @property
    def json(self) -> Sequence[Mapping[str, Any]]:
        """The tracks' JSON objects (the stored objects themselves; treat them as read-only)."""
        return self._objects

    def __len__(self) -> int:
        return len(self._objects)

    @overload
    def __getitem__(self, index: int) -> TrackState: ...
    @overload
    def __getitem__(self, index: slice) -> TrackList: ...
    def __getitem__(self, index: int | slice) -> TrackState | TrackList:
        if isinstance(index, slice):
            return TrackList(self._objects[index])
        return TrackState(self._objects[index])

    def __iter__(self) -> Iterator[TrackState]:
        return map(TrackState, self._objects)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TrackList):
            return self._objects == other._objects
        if isinstance(other, tuple | list):
            return len(other) == len(self._objects) and all(
                isinstance(t, TrackState) and t.data == o for t, o in zip(other, self._objects, strict=True)
            )
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # holds dicts, like TrackState

    def __repr__(self) -> str:
        return f"TrackList({len(self._objects)} tracks)"


def tracks_json(tracks: Sequence[TrackState]) -> Sequence[Mapping[str, Any]]:
    """The JSON objects of a track sequence (no copy for a :class:`TrackList`)."""
    return tracks.json if isinstance(tracks, TrackList) else [t.data for t in tracks]


@dataclass(frozen=True, slots=True)
class PlayerState:
    """Player-level state: volume, pause, position (track time, ms) and connection."""

    volume: int = 100
    paused: bool = False
    position: int = 0
    position_at: float = 0.0
    connected: bool = False
    session_id: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            **self.extra,
            "volume": self.volume,
            "paused": self.paused,
            "position": self.position,
            "position_at": self.position_at,
            "connected": self.connected,
            "session_id": self.session_id,
        }

    @classmethod
    def from_json(cls, obj: Any, path: str, limits: Limits = DEFAULT_LIMITS) -> PlayerState:
        """Parse strictly."""
        r = _Reader(obj, path, limits)
        volume = r.integer("volume", 0, 1000)
        return cls(
            volume=volume,
            paused=r.flag("paused"),
            position=r.integer("position", 0),
            position_at=r.timestamp("position_at"),
            connected=r.flag("connected"),
            session_id=r.text("session_id", nullable=True),
            extra=r.rest(),
        )


@dataclass(frozen=True, slots=True)
class QueueState:
    """The queue: the current track, what comes next, what was played, and the loop mode."""

    current: TrackState | None = None
    upcoming: Sequence[TrackState] = ()
    history: Sequence[TrackState] = ()
    loop_mode: LoopMode = LoopMode.none
    shuffle_enabled: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            **self.extra,
            "current": None if self.current is None else self.current.data,
            "upcoming": tracks_json(self.upcoming),
            "history": tracks_json(self.history),
            "loop_mode": self.loop_mode.value,
            "shuffle_enabled": self.shuffle_enabled,
        }

    @classmethod
    def from_json(cls, obj: Any, path: str, limits: Limits = DEFAULT_LIMITS) -> QueueState:
        """Parse strictly; a list longer than ``limits.max_queue_tracks`` is refused."""
        r = _Reader(obj, path, limits)
        current = r.get("current")
        return cls(
            current=None if current is None else TrackState.from_json(current, f"{path}.current", limits),
            upcoming=r.tracks("upcoming"),
            history=r.tracks("history"),
            loop_mode=r.enum("loop_mode", LoopMode),
            shuffle_enabled=r.flag("shuffle_enabled"),
            extra=r.rest(),
        )


@dataclass(frozen=True, slots=True)
class FilterState:
    """Filters: the names of the active ones and Lavalink v4's filters object as sent to the node."""

    active_filters: tuple[str, ...] = ()
    filter_config: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            **self.extra,
            "active_filters": list(self.active_filters),
            "filter_config": self.filter_config,
        }

    @classmethod
    def from_json(cls, obj: Any, path: str, limits: Limits = DEFAULT_LIMITS) -> FilterState:
        """Parse strictly."""
        r = _Reader(obj, path, limits)
        names = r.array("active_filters")
        for i, name in enumerate(names):
            _expect_str(name, f"{path}.active_filters[{i}]", limits)
        config = r.mapping("filter_config")
        _check_json_size(config, f"{path}.filter_config", limits.max_extras_bytes)
        return cls(active_filters=tuple(names), filter_config=config, extra=r.rest())


@dataclass(frozen=True, slots=True)
class AutoplayState:
    """wavelink AutoPlay: its mode and the recommended tracks it had queued."""

    enabled: bool = False
    mode: AutoplayMode = AutoplayMode.disabled
    auto_queue: Sequence[TrackState] = ()
    max_history: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            **self.extra,
            "enabled": self.enabled,
            "mode": self.mode.value,
            "auto_queue": tracks_json(self.auto_queue),
            "max_history": self.max_history,
        }

    @classmethod
    def from_json(cls, obj: Any, path: str, limits: Limits = DEFAULT_LIMITS) -> AutoplayState:
        """Parse strictly."""
        r = _Reader(obj, path, limits)
        return cls(
            enabled=r.flag("enabled"),
            mode=r.enum("mode", AutoplayMode),
            auto_queue=r.tracks("auto_queue"),
            max_history=r.integer("max_history", 0),
            extra=r.rest(),
        )


@dataclass(frozen=True, slots=True)
class SessionState:
    """One guild's whole playback state at one instant (schema v1).

    Attributes
    ----------
    guild_id, channel_id:
        Discord ids (ints here, strings in JSON).
    node:
        Identifier of the Lavalink node the player was on.
    created_at:
        Unix seconds when the state was captured.
    kind, label:
        Why it was written (:class:`SnapshotKind`) and an optional admin label.
    player, queue, filters, autoplay:
        The four parts that can be restored separately.
    extras:
        Bot-supplied JSON (announce channel, requester ids...), size-capped.
    """

    guild_id: int
    channel_id: int | None = None
    node: str | None = None
    created_at: float = 0.0
    kind: SnapshotKind = SnapshotKind.live
    label: str | None = None
    player: PlayerState = field(default_factory=PlayerState)
    queue: QueueState = field(default_factory=QueueState)
    filters: FilterState = field(default_factory=FilterState)
    autoplay: AutoplayState = field(default_factory=AutoplayState)
    extras: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def track_count(self) -> int:
        """The current track (if any) plus the upcoming ones."""
        return len(self.queue.upcoming) + (self.queue.current is not None)

    def to_json(self) -> dict[str, Any]:
        """Return the schema-v1 JSON form (ids as strings)."""
        return {
            **self.extra,
            "schema": SCHEMA_VERSION,
            "guild_id": str(self.guild_id),
            "channel_id": None if self.channel_id is None else str(self.channel_id),
            "node": self.node,
            "created_at": self.created_at,
            "kind": self.kind.value,
            "label": self.label,
            "player": self.player.to_json(),
            "queue": self.queue.to_json(),
            "filters": self.filters.to_json(),
            "autoplay": self.autoplay.to_json(),
            "extras": self.extras,
        }

    @classmethod
    def from_json(cls, obj: Any, limits: Limits = DEFAULT_LIMITS) -> SessionState:
        """Parse untrusted JSON strictly.

        Older schema versions are migrated first (see :func:`register_migration`).

        Raises
        ------
        SchemaVersionError
            The record is newer than this release, or older with no migration path.
        InvalidSnapshot
            A field is missing or has the wrong type or size; ``.path`` names it.
        """
        if not isinstance(obj, dict):
            raise InvalidSnapshot("", "expected a JSON object")
        obj = _migrate(obj)
        r = _Reader(obj, "", limits)
        r.integer("schema")
        extras = r.mapping("extras")
        _check_json_size(extras, "extras", limits.max_extras_bytes)
        return cls(
            guild_id=r.snowflake("guild_id"),
            channel_id=r.snowflake("channel_id", nullable=True),
            node=r.text("node", nullable=True),
            created_at=r.timestamp("created_at"),
            kind=r.enum("kind", SnapshotKind),
            label=r.text("label", nullable=True),
            player=PlayerState.from_json(r.get("player"), "player", limits),
            queue=QueueState.from_json(r.get("queue"), "queue", limits),
            filters=FilterState.from_json(r.get("filters"), "filters", limits),
            autoplay=AutoplayState.from_json(r.get("autoplay"), "autoplay", limits),
            extras=extras,
            extra=r.rest(),
        )


# -- migrations --------------------------------------------------------------------------------------

Migration = Callable[[dict[str, Any]], dict[str, Any]]
_MIGRATIONS: dict[int, Migration] = {}


def register_migration(from_version: int) -> Callable[[Migration], Migration]:
    """Register a function turning a schema ``from_version`` object into ``from_version + 1``.

    Decoding applies the chain of registered migrations until the object is at
    :data:`SCHEMA_VERSION`.
    """

    def decorator(func: Migration) -> Migration:
        _MIGRATIONS[from_version] = func
        return func

    return decorator


def _migrate(obj: dict[str, Any]) -> dict[str, Any]:
    version = obj.get("schema")
    if not isinstance(version, int) or isinstance(version, bool):
        raise InvalidSnapshot("schema", "expected int")
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"schema version {version} is newer than this sonora_cog understands (up to {SCHEMA_VERSION}); "
            "upgrade sonora-cog to read it"
        )
    while version < SCHEMA_VERSION:
        migration = _MIGRATIONS.get(version)
        if migration is None:
            raise SchemaVersionError(f"schema version {version} cannot be migrated to {SCHEMA_VERSION}")
        obj = migration(dict(obj))
        version = obj.get("schema")
        if not isinstance(version, int):
            raise SchemaVersionError("a migration produced a record without a schema version")
    return obj


# -- strict reading ----------------------------------------------------------------------------------

_TRACK_INFO_FIELDS: tuple[tuple[str, type, bool], ...] = (
    ("identifier", str, False),
    ("isSeekable", bool, False),
    ("author", str, False),
    ("length", int, False),
    ("isStream", bool, False),
    ("position", int, False),
    ("title", str, False),
    ("uri", str, True),
    ("artworkUrl", str, True),
    ("isrc", str, True),
    ("sourceName", str, False),
)


def _type_name(kind: type) -> str:
    return {str: "string", bool: "bool", int: "int", float: "number", dict: "object", list: "array"}.get(
        kind, kind.__name__
    )


def _is(value: Any, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _expect_str(value: Any, path: str, limits: Limits, max_length: int | None = None) -> str:
    if not isinstance(value, str):
        raise InvalidSnapshot(path, "expected string")
    cap = limits.max_string_length if max_length is None else max_length
    if len(value) > cap:
        raise InvalidSnapshot(path, f"string of {len(value)} characters exceeds the cap of {cap}")
    return value


def _check_json_size(value: Any, path: str, cap: int | None) -> None:
    """Refuse free-form JSON the writer could not write back (nested over ~254 levels) or over ``cap``."""
    try:
        size = len(orjson.dumps(value))
    except TypeError:  # orjson's recursion limit: what was read could never be written again
        raise InvalidSnapshot(path, "nested too deep to be written back") from None
    if cap is not None and size > cap:
        raise InvalidSnapshot(path, f"{size} bytes of JSON exceeds the cap of {cap}")


def _check_track(obj: Any, path: str, limits: Limits) -> None:
    if not isinstance(obj, dict):
        raise InvalidSnapshot(path, "expected a track object")
    if "encoded" not in obj:
        raise InvalidSnapshot(f"{path}.encoded", "missing")
    _expect_str(obj["encoded"], f"{path}.encoded", limits, limits.max_encoded_length)
    info = obj.get("info")
    if not isinstance(info, dict):
        raise InvalidSnapshot(f"{path}.info", "expected object")
    for name, kind, nullable in _TRACK_INFO_FIELDS:
        if name not in info:
            if nullable:
                continue
            raise InvalidSnapshot(f"{path}.info.{name}", "missing")
        value = info[name]
        if value is None and nullable:
            continue
        if not _is(value, kind):
            raise InvalidSnapshot(f"{path}.info.{name}", f"expected {_type_name(kind)}")
        if kind is str:
            _expect_str(value, f"{path}.info.{name}", limits)
    for name in ("pluginInfo", "userData"):
        value = obj.get(name, {})
        if not isinstance(value, dict):
            raise InvalidSnapshot(f"{path}.{name}", "expected object")
    if obj.get("pluginInfo"):
        _check_json_size(obj["pluginInfo"], f"{path}.pluginInfo", None)
    if obj.get("userData"):
        _check_json_size(obj["userData"], f"{path}.userData", limits.max_extras_bytes)
    playlist = obj.get("playlist")
    if playlist is not None:
        if not isinstance(playlist, dict):
            raise InvalidSnapshot(f"{path}.playlist", "expected object or null")
        _expect_str(playlist.get("name"), f"{path}.playlist.name", limits)
        if not _is(playlist.get("selectedTrack"), int):
            raise InvalidSnapshot(f"{path}.playlist.selectedTrack", "expected int")
    if not isinstance(obj.get("recommended", False), bool):
        raise InvalidSnapshot(f"{path}.recommended", "expected bool")


class _Reader:
    """Reads the fields of one JSON object, consuming them, so the rest can be kept as ``extra``."""

    __slots__ = ("limits", "obj", "path", "seen")

    def __init__(self, obj: Any, path: str, limits: Limits) -> None:
        if not isinstance(obj, dict):
            raise InvalidSnapshot(path, "expected object")
        self.obj: dict[str, Any] = obj
        self.path = path
        self.limits = limits
        self.seen: set[str] = set()

    def _where(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def get(self, name: str) -> Any:
        if name not in self.obj:
            raise InvalidSnapshot(self._where(name), "missing")
        self.seen.add(name)
        return self.obj[name]

    def _typed(self, name: str, kind: type, nullable: bool) -> Any:
        value = self.get(name)
        if value is None and nullable:
            return None
        if not _is(value, kind):
            raise InvalidSnapshot(self._where(name), f"expected {_type_name(kind)}")
        return value

    def flag(self, name: str) -> bool:
        value: bool = self._typed(name, bool, False)
        return value

    def integer(self, name: str, low: int | None = None, high: int | None = None) -> int:
        value: int = self._typed(name, int, False)
        if (low is not None and value < low) or (high is not None and value > high):
            raise InvalidSnapshot(self._where(name), f"expected int in {low}..{high}, got {value}")
        return value

    def number(self, name: str) -> float:
        value = self.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidSnapshot(self._where(name), "expected number")
        return float(value)

    def timestamp(self, name: str) -> float:
        """A Unix time in seconds, from 1970 to 2100 (anything else cannot be a capture time)."""
        value = self.number(name)
        if not 0.0 <= value <= MAX_TIMESTAMP:
            raise InvalidSnapshot(self._where(name), f"expected a Unix time from 0 to {MAX_TIMESTAMP:.0f}")
        return value

    def text(self, name: str, nullable: bool = False) -> Any:
        value = self._typed(name, str, nullable)
        return None if value is None else _expect_str(value, self._where(name), self.limits)

    def mapping(self, name: str) -> dict[str, Any]:
        value: dict[str, Any] = self._typed(name, dict, False)
        return value

    def array(self, name: str) -> list[Any]:
        value: list[Any] = self._typed(name, list, False)
        if len(value) > self.limits.max_queue_tracks:
            raise InvalidSnapshot(
                self._where(name), f"{len(value)} items exceed the cap of {self.limits.max_queue_tracks}"
            )
        return value

    def tracks(self, name: str) -> TrackList:
        where = self._where(name)
        items = self.array(name)
        for i, item in enumerate(items):
            _check_track(item, f"{where}[{i}]", self.limits)
        return TrackList(items)

    def enum(self, name: str, kind: type[_E]) -> _E:
        value = self._typed(name, str, False)
        try:
            return kind(value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in kind)
            raise InvalidSnapshot(self._where(name), f"expected one of {allowed}, got {value!r}") from None

    def snowflake(self, name: str, nullable: bool = False) -> Any:
        value = self.get(name)
        if value is None and nullable:
            return None
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if not _is(value, int) or not 0 < value <= _SNOWFLAKE_MAX:
            raise InvalidSnapshot(self._where(name), "expected a snowflake id (string of digits)")
        return value

    def rest(self) -> dict[str, Any]:
        return {k: v for k, v in self.obj.items() if k not in self.seen}
