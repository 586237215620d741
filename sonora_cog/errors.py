"""The exception hierarchy: one root, :class:`SonoraError`, and one specific class per failure.

Each class is raised by exactly one layer (config, model, codec, store, manager, restore), so
``except`` clauses in bot code can be as broad or as narrow as they need.
"""

from __future__ import annotations

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
    "SnapshotCorrupted",
    "SnapshotNotFound",
    "SnapshotTooLarge",
    "SonoraError",
    "StoreError",
    "TamperedSnapshot",
    "TruncatedSnapshot",
    "UnsupportedFormat",
    "WrongKeyError",
)


class SonoraError(Exception):
    """Root of every error sonora_cog raises on purpose."""


class ConfigError(SonoraError):
    """The configuration is invalid; the message names the offending key (raised by ``config``, by the codec
    for a malformed key, and by the Redis store when Redis refuses the configured credentials)."""


class SnapshotNotFound(SonoraError):
    """No snapshot (or live record) with that id exists for that guild (raised by the store)."""


class InvalidIdentifier(SonoraError):
    """A snapshot id, guild id or label is malformed or would escape the store (raised by the store)."""


class DuplicateSnapshot(SonoraError):
    """The same snapshot (same id, or same content on import) is already stored (raised by the manager)."""


class StoreError(SonoraError):
    """The backing store failed (disk full, permission denied, connection lost) (raised by the store)."""


class SnapshotCorrupted(SonoraError):
    """A stored record cannot be read back. The subclasses say why (raised by the codec and the model)."""


class BadMagic(SnapshotCorrupted):
    """The bytes do not start with the sonora envelope magic: not a sonora record at all."""


class TruncatedSnapshot(SnapshotCorrupted):
    """The record ends before the lengths in its header say it should."""


class ChecksumMismatch(SnapshotCorrupted):
    """The record's integrity checksum does not match its bytes (a flipped bit, a bad sector)."""


class SnapshotTooLarge(SnapshotCorrupted):
    """The record, or what it decompresses to, exceeds the configured size cap.

    When the codec refuses to *write* a record, ``size`` and ``cap`` say by how much (else ``None``).
    """

    def __init__(self, message: str, *, size: int | None = None, cap: int | None = None) -> None:
        super().__init__(message)
        self.size = size
        self.cap = cap


class InvalidSnapshot(SnapshotCorrupted):
    """The decoded JSON does not match the schema; ``path`` names the first bad field."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.reason = message
        super().__init__(f"{path}: {message}" if path else message)


class NotReadableHere(SonoraError):
    """The record is intact, but this process is not configured to read it: a key that is not configured
    (:class:`WrongKeyError`), or a newer release's format (:class:`SchemaVersionError`).

    A configuration problem, not damage: the record is kept where it is (never quarantined), the guild is
    skipped with this reason, and a later start with the right key (or release) restores it.
    """


class SchemaVersionError(NotReadableHere):
    """The record uses a schema version this release cannot read (raised by the model)."""


class UnsupportedFormat(SchemaVersionError):
    """The record's envelope format version, or a feature flag in it, is newer than this release reads.

    Raised by the codec. The record is not damaged (its checksum is good), this release is too old for
    it, so it is a :class:`SchemaVersionError` and not a :class:`SnapshotCorrupted`: a store must not
    quarantine it (an older process in a blue-green deploy may meet a newer process's records).
    """


class DecryptionError(SonoraError):
    """An encrypted record could not be decrypted (raised by the codec)."""


class WrongKeyError(DecryptionError, NotReadableHere):
    """No configured key matches the record's key id (missing key, or a different key).

    ``key_id`` is the record's key id (never the key), when known.
    """

    def __init__(self, message: str, *, key_id: str | None = None) -> None:
        super().__init__(message)
        self.key_id = key_id


class TamperedSnapshot(DecryptionError):
    """The key matches but the authentication tag does not: the record was modified after encryption."""


class LeaseConflict(StoreError):
    """Another process holds the guild's lease, so this process may not write its live record.

    Raised by the store (a fenced write, Redis). ``holder`` is the other process's owner token.
    """

    def __init__(self, guild_id: int, holder: str) -> None:
        self.guild_id = guild_id
        self.holder = holder
        super().__init__(f"guild {guild_id} is owned by another process ({holder}); its live record was not written")


class RecordChanged(StoreError):
    """Another writer changed (or removed) the record after it was read: nothing was replaced.

    Raised by a store's compare-and-replace (operator tools rewriting records while the bot runs: a
    record is never moved backwards). Read it again and retry, or leave it: it is newer already.
    """


class BufferFull(StoreError):
    """Redis is unreachable and the in-memory write buffer is full: this write was refused, not stored.

    Raised by the Redis store; the message says what was refused. Nothing is dropped silently.
    """


class ForeignGuildError(SonoraError):
    """The record belongs to another guild than the one it was asked for (raised by the manager)."""


class RestoreError(SonoraError):
    """A restore could not run or did not succeed (raised by the restore engine and the session owner).

    ``on_sonora_restore_failed(guild, error)`` receives one, its message the report's reason;
    :meth:`SessionManager.restore_snapshot <sonora_cog.manager.SessionManager.restore_snapshot>` raises
    one when Lavalink refuses the state.
    """


class RestoreInProgress(RestoreError):
    """A restore is already running in that guild; a second one is refused, not queued."""


class GuildNotOwned(RestoreError):
    """Another process owns that guild (it holds the guild's lease): it is not restored here."""


class NodeNotFound(SonoraError):
    """No Lavalink node of ``wavelink.Pool`` has this identifier (``drain_node``, ``nodes drain``).

    .. versionadded:: 0.4
    """
