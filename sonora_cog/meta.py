"""Snapshot metadata: what a listing shows without decoding a record in full.

The metadata travels in the codec envelope's authenticated (but not encrypted) header, so a store can
list snapshots by reading only the first bytes of each record, without a key.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from .errors import InvalidIdentifier, InvalidSnapshot

__all__ = (
    "LABEL_MAX_LENGTH",
    "SnapshotKind",
    "SnapshotMeta",
    "new_snapshot_id",
    "validate_label",
    "validate_snapshot_id",
)

#: ``20261125T011830123-3fa9c2``: UTC time to the millisecond, then 6 random hex digits.
#: Lexicographic order is creation order, and nothing in it can name a path.
SNAPSHOT_ID_RE = re.compile(r"^\d{8}T\d{9}-[0-9a-f]{6}$")
LABEL_MAX_LENGTH = 100
_LABEL_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f/\\]")


class SnapshotKind(StrEnum):
    """Why a record was written. ``live`` is the per-guild crash-recovery record; the rest are snapshots."""

    live = "live"
    auto = "auto"
    manual = "manual"
    shutdown = "shutdown"
    pre_restore = "pre-restore"
    pre_deploy = "pre-deploy"
    """Taken by ``deploy prepare`` under a deploy tag (the label)."""
    pre_change = "pre-change"
    """Taken before a major change of a SonoraPlayer's queue (a clear, a shuffle, many tracks removed)."""
    imported = "import"


def new_snapshot_id(created_at: float | None = None) -> str:
    """Return a fresh, time-sortable snapshot id for a snapshot created at ``created_at`` (Unix seconds)."""
    when = time.time() if created_at is None else created_at
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(when))
    millis = int((when % 1) * 1000)
    return f"{stamp}{millis:03d}-{secrets.token_hex(3)}"


def validate_snapshot_id(snapshot_id: str) -> str:
    """Return ``snapshot_id`` if it is a well-formed id, else raise :class:`InvalidIdentifier`."""
    if not isinstance(snapshot_id, str) or not SNAPSHOT_ID_RE.fullmatch(snapshot_id):
        raise InvalidIdentifier(f"not a snapshot id: {snapshot_id!r}")
    return snapshot_id


def validate_label(label: str | None) -> str | None:
    """Return a label stripped of surrounding spaces, or raise :class:`InvalidIdentifier`.

    Labels are free text shown to people, never used as a path, but slashes, control characters and
    over-long labels are still refused so they cannot confuse a listing or a log line.
    """
    if label is None:
        return None
    if not isinstance(label, str):
        raise InvalidIdentifier(f"label must be text, got {type(label).__name__}")
    label = label.strip()
    if not label:
        return None
    if len(label) > LABEL_MAX_LENGTH:
        raise InvalidIdentifier(f"label is longer than {LABEL_MAX_LENGTH} characters")
    if _LABEL_FORBIDDEN.search(label) or label in {".", ".."}:
        raise InvalidIdentifier(f"label contains a forbidden character: {label!r}")
    return label


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """What is known about a stored record without decoding its payload.

    Attributes
    ----------
    id:
        The snapshot id (see :func:`new_snapshot_id`); ``"live"`` for a guild's live record.
    guild_id:
        The guild the record belongs to.
    created_at:
        Unix seconds when the state was captured.
    kind:
        Why it was written.
    label:
        Optional free text given by an admin.
    track_count:
        Current track (if any) plus upcoming tracks.
    current_title:
        Title of the track that was playing, if any.
    content_hash:
        XXH3-128 (hex) of the payload JSON (SHA-256 in records of envelope format 1); equal content gives an equal hash.
    size:
        Bytes the record occupies in the store (filled in by the store when listing; 0 otherwise).
    """

    id: str
    guild_id: int
    created_at: float
    kind: SnapshotKind
    label: str | None
    track_count: int
    current_title: str | None
    content_hash: str
    size: int = 0

    def with_size(self, size: int) -> SnapshotMeta:
        """Return a copy with :attr:`size` set."""
        return replace(self, size=size)

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form stored in the envelope header (ids as strings, ``size`` left out)."""
        return {
            "id": self.id,
            "guild_id": str(self.guild_id),
            "created_at": self.created_at,
            "kind": self.kind.value,
            "label": self.label,
            "track_count": self.track_count,
            "current_title": self.current_title,
            "content_hash": self.content_hash,
        }

    @classmethod
    def from_json(cls, obj: Any, *, size: int = 0) -> SnapshotMeta:
        """Parse the header form strictly; raise :class:`InvalidSnapshot` naming the first bad field."""
        if not isinstance(obj, dict):
            raise InvalidSnapshot("meta", "expected an object")

        def field(name: str, kinds: tuple[type, ...], nullable: bool = False) -> Any:
            if name not in obj:
                raise InvalidSnapshot(f"meta.{name}", "missing")
            value = obj[name]
            if value is None and nullable:
                return None
            if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
                raise InvalidSnapshot(f"meta.{name}", f"expected {'/'.join(k.__name__ for k in kinds)}")
            return value

        guild = field("guild_id", (str, int))
        try:
            guild_id = int(guild)
        except ValueError:
            raise InvalidSnapshot("meta.guild_id", "expected a snowflake") from None
        kind_value = field("kind", (str,))
        try:
            kind = SnapshotKind(kind_value)
        except ValueError:
            raise InvalidSnapshot("meta.kind", f"unknown kind {kind_value!r}") from None
        return cls(
            id=field("id", (str,)),
            guild_id=guild_id,
            created_at=_timestamp(field("created_at", (int, float))),
            kind=kind,
            label=field("label", (str,), nullable=True),
            track_count=field("track_count", (int,)),
            current_title=field("current_title", (str,), nullable=True),
            content_hash=field("content_hash", (str,)),
            size=size,
        )


def _timestamp(value: float) -> float:
    """A header's creation time: a Unix time from 1970 to 2100."""
    if not 0.0 <= float(value) <= 4_102_444_800.0:
        raise InvalidSnapshot("meta.created_at", "expected a Unix time from 1970 to 2100")
    return float(value)
