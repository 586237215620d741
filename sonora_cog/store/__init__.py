"""Where records are kept: the :class:`SnapshotStore` contract and its backends.

``FilesystemStore`` (the default, stdlib only) lives in :mod:`sonora_cog.store.filesystem`; the shared
``RedisStore`` (:mod:`sonora_cog.store.redis`) needs the ``redis`` extra and imports its driver lazily.

.. versionadded:: 0.1
"""

from __future__ import annotations

from .base import (
    HeaderReader,
    RecordRef,
    SnapshotStore,
    StoreStats,
    plan_prune,
    read_meta_from_bytes,
    read_meta_from_stream,
    validate_guild_id,
)
from .filesystem import FilesystemStore

__all__ = (
    "FilesystemStore",
    "HeaderReader",
    "RecordRef",
    "SnapshotStore",
    "StoreStats",
    "plan_prune",
    "read_meta_from_bytes",
    "read_meta_from_stream",
    "validate_guild_id",
)
