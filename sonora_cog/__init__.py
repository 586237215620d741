"""sonora_cog: a drop-in discord.py cog that makes wavelink (Lavalink v4) music bots survive restarts.

Load it with ``await bot.load_extension("sonora_cog")``. Importing this package does no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._version import __version__
from .config import Settings, load_settings
from .errors import (
    BadMagic,
    BufferFull,
    ChecksumMismatch,
    ConfigError,
    DecryptionError,
    DuplicateSnapshot,
    ForeignGuildError,
    GuildNotOwned,
    InvalidIdentifier,
    InvalidSnapshot,
    LeaseConflict,
    NodeNotFound,
    NotReadableHere,
    RecordChanged,
    RestoreError,
    RestoreInProgress,
    SchemaVersionError,
    SnapshotCorrupted,
    SnapshotNotFound,
    SnapshotTooLarge,
    SonoraError,
    StoreError,
    TamperedSnapshot,
    TruncatedSnapshot,
    UnsupportedFormat,
    WrongKeyError,
)
from .manager import SessionManager
from .meta import SnapshotKind, SnapshotMeta
from .model import SessionState
from .player import SonoraPlayer

if TYPE_CHECKING:
    from ._typing import AnyBot
    from .cog import SonoraCog


async def setup(bot: AnyBot) -> None:
    """Extension entry point: ``await bot.load_extension("sonora_cog")`` adds :class:`SonoraCog`."""
    from .cog import SonoraCog

    await bot.add_cog(SonoraCog(bot))


__all__ = (
    "BadMagic",
    "BufferFull",
    "ChecksumMismatch",
    "ConfigError",
    "DecryptionError",
    "DuplicateSnapshot",
    "ForeignGuildError",
    "GuildNotOwned",
    "InvalidIdentifier",
    "InvalidSnapshot",
    "LeaseConflict",
    "NodeNotFound",
    "NotReadableHere",
    "RecordChanged",
    "RestoreError",
    "RestoreInProgress",
    "SchemaVersionError",
    "SessionManager",
    "SessionState",
    "Settings",
    "SnapshotCorrupted",
    "SnapshotKind",
    "SnapshotMeta",
    "SnapshotNotFound",
    "SnapshotTooLarge",
    "SonoraCog",
    "SonoraError",
    "SonoraPlayer",
    "StoreError",
    "TamperedSnapshot",
    "TruncatedSnapshot",
    "UnsupportedFormat",
    "WrongKeyError",
    "__version__",
    "load_settings",
    "setup",
)


def __getattr__(name: str) -> object:
    """``SonoraCog`` is imported on first use (importing ``sonora_cog`` does not load the cog's modules)."""
    if name == "SonoraCog":
        from .cog import SonoraCog

        return SonoraCog
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
