"""The final write at shutdown: what changed, then a ``shutdown`` snapshot of every player, in group commits.

A stop grace period (Docker 10 s, Kubernetes 30 s) does not fit rewriting every guild twice, so:

1. **Live records of changed guilds only.** A guild whose live record is current (not dirty, its
   :func:`~sonora_cog.capture.change_signature` the one last written) is not written again; every other
   one is captured (on the loop, one at a time) and written in group commits of
   :data:`~sonora_cog.batching.BATCH_SIZE` (each encoded right after its capture: a batch holds bytes).
   These go first: they are what the next start restores from.
2. **One heartbeat**, so the next start moves each unchanged, playing track forward to now (see
   :func:`~sonora_cog.restore.advance_position`), as it would after a checkpoint.
3. **A ``shutdown`` snapshot of every player**, in group commits. A changed guild's re-wraps the live
   record just written; a current guild's re-wraps its live record read back from the store
   (:meth:`~sonora_cog.manager.SessionManager.snapshot_from_live_bytes`: no capture, no encode). A guild
   whose record cannot be read back or re-wrapped, or whose live write failed, is captured and encoded
   again instead.

A guild counts as done when its snapshot is settled (written, or its failure logged); the caller's
timeout (``snapshots.shutdown_timeout``) reports the others.

.. versionadded:: 0.5
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from .batching import BATCH_SIZE, WriteOutcome
from .codec import EncodedRecord
from .errors import SonoraError
from .meta import SnapshotKind

if TYPE_CHECKING:
    import wavelink

    from .writer import SessionWriter

__all__ = ("FinalProgress", "write_final")

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class FinalProgress:
    """How far the final write got: what a shutdown that ran out of time reports.

    Attributes
    ----------
    players:
        Guilds whose final state is written.
    compared:
        Guilds compared with their last write so far (changed or current).
    current:
        Of those, the guilds whose live record is current (nothing to write).
    changed:
        Of those, the guilds whose live record had to be written.
    live_written:
        Changed guilds whose live record the store has taken.
    snapshots:
        Guilds whose ``shutdown`` snapshot is settled (written, or its failure logged).
    """

    players: int
    compared: int = 0
    current: set[int] = field(default_factory=set)
    changed: set[int] = field(default_factory=set)
    live_written: set[int] = field(default_factory=set)
    snapshots: set[int] = field(default_factory=set)

    @property
    def complete(self) -> bool:
        """Whether every guild's final write is settled."""
        return len(self.snapshots) == self.players

    def report(self) -> str:
        """What is written and what is not, for the log line of a shutdown that ran out of time."""
        stale = len(self.changed - self.live_written) + (self.players - self.compared)
        return (
            f"{len(self.live_written)} of {len(self.changed)} changed live record(s) written, "
            f"{len(self.current)} current, {self.players - self.compared} not compared yet: up to {stale} "
            f"guild(s) keep their last checkpoint (a batch already in the store may still land); "
            f"{len(self.snapshots)} of {self.players} shutdown snapshot(s) written"
        )


@dataclass(slots=True)
class _Final:
    """One guild's way through the final write."""

    guild_id: int
    player: wavelink.Player
    #: Its live record changed: captured and encoded at once (bytes, not objects the GC walks), or the error.
    record: EncodedRecord | Exception | None = None
    live_bytes: bytes | None = None  # its live record as stored (current, or just written)


async def write_final(writer: SessionWriter, players: list[wavelink.Player], progress: FinalProgress) -> None:
    """Write the final state of ``players`` (see the module docstring), noting how far it got in ``progress``."""
    finals: list[_Final] = []
    for player in players:
        assert player.guild is not None
        guild_id = player.guild.id
        session = writer.session(guild_id)
        final = _Final(guild_id, player)
        try:
            if session.dirty or session.signature is None or writer.signature(player) != session.signature:
                final.record = await writer.manager.encode_live(writer.capture(player))
        except Exception as exc:  # one guild's failure must never stop the others
            _log.error("shutdown save of guild %s failed: %s: %s", guild_id, type(exc).__name__, exc)
            final.record = exc  # its snapshot is still tried
        finals.append(final)
        (progress.current if final.record is None else progress.changed).add(guild_id)
        progress.compared += 1
        await asyncio.sleep(0)
    changed = [f for f in finals if f.record is not None]
    for start in range(0, len(changed), BATCH_SIZE):
        await _write_live(writer, changed[start : start + BATCH_SIZE], progress.live_written)
    if len(changed) < len(finals):
        try:  # the unchanged guilds played on until now
            await writer.manager.write_heartbeat(writer.key)
        except SonoraError as exc:
            _log.error("shutdown: could not write the heartbeat: %s", exc)
    changed_ids = {f.guild_id for f in changed}
    in_store: asyncio.Task[None] | None = None
    try:  # while one batch of snapshots is in the store, the next one is read back and re-wrapped
        for start in range(0, len(finals), BATCH_SIZE):
            batch = finals[start : start + BATCH_SIZE]
            records = await _prepare_snapshots(writer, batch, changed_ids)
            if in_store is not None:
                await in_store
            in_store = asyncio.ensure_future(_store_snapshots(writer, batch, records, progress.snapshots))
        if in_store is not None:
            await in_store
    finally:
        if in_store is not None and not in_store.done():  # the shutdown timed out: the batch goes too
            in_store.cancel()
    writes = len(changed)
    _log.info(
        "shutdown: wrote %d changed live record(s) (%d current, kept) and %d shutdown snapshot(s)",
        writes,
        len(finals) - writes,
        len(finals),
    )


async def _write_live(writer: SessionWriter, batch: list[_Final], written: set[int]) -> None:
    records = [f.record for f in batch if f.record is not None]
    try:
        outcomes = await writer.manager.write_live_records([f.guild_id for f in batch], records)
    except Exception as exc:  # a bug, not one guild's failure
        outcomes = [WriteOutcome(f.guild_id, error=exc) for f in batch]
    for final, outcome in zip(batch, outcomes, strict=True):
        if outcome.ok:
            final.live_bytes = outcome.data
            written.add(final.guild_id)
        elif outcome.error is not final.record:  # (a capture error was logged already)
            error = outcome.error  # its snapshot is still written, captured again
            _log.error("shutdown save of guild %s failed: %s: %s", final.guild_id, type(error).__name__, error)
        final.record = None


async def _prepare_snapshots(
    writer: SessionWriter, batch: list[_Final], changed: set[int]
) -> list[EncodedRecord | Exception]:
    """Each guild's ``shutdown`` snapshot record: its live record re-wrapped, or captured again."""
    manager = writer.manager
    unread = [f for f in batch if f.guild_id not in changed and f.live_bytes is None]
    read = await asyncio.gather(*(manager.store.get_live(f.guild_id) for f in unread), return_exceptions=True)
    for final, data in zip(unread, read, strict=True):
        if isinstance(data, bytes):
            final.live_bytes = data
    reuse = [f for f in batch if f.live_bytes is not None]
    wrapped = dict(
        zip(
            (f.guild_id for f in reuse),
            await manager.snapshots_from_live_bytes([f.live_bytes or b"" for f in reuse]),
            strict=True,
        )
    )
    records: list[EncodedRecord | Exception] = []
    for final in batch:
        record = wrapped.get(final.guild_id)
        if not isinstance(record, EncodedRecord):  # not stored, unreadable, or not re-wrappable: capture it
            if record is not None:
                _log.warning(
                    "shutdown: guild %s: its live record cannot be re-wrapped (%s); capturing it again",
                    final.guild_id,
                    record,
                )
            record = await _encode_fresh(writer, final)
        records.append(record)
    return records


async def _store_snapshots(
    writer: SessionWriter, batch: list[_Final], records: list[EncodedRecord | Exception], done: set[int]
) -> None:
    outcomes = await writer.manager.save_records_many([f.guild_id for f in batch], records)
    for final, outcome in zip(batch, outcomes, strict=True):
        if not outcome.ok:
            error = outcome.error
            _log.error("shutdown snapshot of guild %s failed: %s: %s", final.guild_id, type(error).__name__, error)
        done.add(final.guild_id)


async def _encode_fresh(writer: SessionWriter, final: _Final) -> EncodedRecord | Exception:
    try:
        state = writer.capture(final.player)
        encoded = await writer.manager.encode_snapshot(replace(state, kind=SnapshotKind.shutdown))
    except Exception as exc:  # reported as this guild's outcome
        return exc
    return encoded
