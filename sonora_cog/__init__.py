"""sonora_cog: a drop-in discord.py cog that makes wavelink (Lavalink v4) music bots survive restarts.

Load it with ``await bot.load_extension("sonora_cog")``. Importing this package does no I/O.
"""

from __future__ import annotations

from ._version import __version__
from .config import Settings, load_settings
from .errors import (
    BadMagic,
    ChecksumMismatch,
    ConfigError,
    DecryptionError,
    DuplicateSnapshot,
    ForeignGuildError,
    InvalidIdentifier,
    InvalidSnapshot,
    RestoreError,
    SchemaVersionError,
    SnapshotCorrupted,
    SnapshotNotFound,
    SnapshotTooLarge,
    SonoraError,
    StoreError,
    TamperedSnapshot,
    TruncatedSnapshot,
    WrongKeyError,
)
from .manager import SessionManager
from .meta import SnapshotKind, SnapshotMeta
from .model import SessionState

__all__ = (
    "BadMagic",
    "ChecksumMismatch",
    "ConfigError",
    "DecryptionError",
    "DuplicateSnapshot",
    "ForeignGuildError",
    "InvalidIdentifier",
    "InvalidSnapshot",
    "RestoreError",
    "SchemaVersionError",
    "SessionManager",
    "SessionState",
    "Settings",
    "SnapshotCorrupted",
    "SnapshotKind",
    "SnapshotMeta",
    "SnapshotNotFound",
    "SnapshotTooLarge",
    "SonoraError",
    "StoreError",
    "TamperedSnapshot",
    "TruncatedSnapshot",
    "WrongKeyError",
    "__version__",
    "load_settings",
)
