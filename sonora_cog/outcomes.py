"""Restore outcomes in a few fixed words: the path a restore took and why it did not restore.

A :class:`~sonora_cog.restore.RestoreReport` says in a free-text sentence why a guild was skipped or
failed ("voice channel 123 no longer exists"). Metrics labels and the restore history need a small,
fixed vocabulary instead (a label per channel id would grow without bound): :func:`reason_category`
maps each sentence the code writes to one of :data:`REASONS`, :func:`outcome_of` maps the status, and
:class:`RestorePath` names the ways a restore starts. Pure: no I/O, nothing but the report is read.

.. versionadded:: 0.3
"""

from __future__ import annotations

import functools
import re
from enum import StrEnum
from typing import TYPE_CHECKING

from . import errors

if TYPE_CHECKING:
    from .restore import RestoreReport

__all__ = ("OUTCOMES", "REASONS", "RestorePath", "outcome_of", "path_of", "reason_category")


class RestorePath(StrEnum):
    """How a restore started (the ``path`` label)."""

    adopted = "adopted"
    """Startup: the player a resumed Lavalink session kept playing was taken over as it was."""
    startup = "startup"
    """Startup: the player was rebuilt from the guild's live record."""
    reidentify = "reidentify"
    """The gateway session was re-identified and the voice connections dropped: rejoined from the live record."""
    node_reconnect = "node_reconnect"
    """A Lavalink node came back without its players: rebuilt from the player's own state."""
    voice_lost = "voice_lost"
    """A voice connection was lost by accident: rebuilt from the player's own state."""
    command = "command"
    """``/snapshot restore`` or ``SonoraCog.restore()`` from the bot's own code."""
    deploy_rollback = "deploy_rollback"
    """``deploy rollback``: restored from a deploy tag's ``pre-deploy`` snapshot."""
    handover = "handover"
    """Canary handover: taken over from another process."""
    failover = "failover"
    """A Lavalink node died or was closed: the player moved to another node."""
    drain = "drain"
    """A Lavalink node was drained (``nodes drain``): the player moved to another node."""


#: The ``outcome`` label values (a :class:`~sonora_cog.restore.RestoreStatus` with ``_`` for spaces).
OUTCOMES: tuple[str, ...] = ("restored", "skipped", "failed", "rolled_back")

#: Every ``reason`` label value, with what it means.
REASONS: dict[str, str] = {
    "none": "restored: nothing to explain",
    "owned_elsewhere": "another process owns the guild (its lease)",
    "lease_unavailable": "the guild's lease could not be taken (the store failed)",
    "session_changed": "a new session started in the guild meanwhile",
    "in_progress": "a restore was already running in the guild",
    "shutting_down": "the bot was shutting down",
    "not_readable": "the live record needs another key or a newer release (kept for a start that can read it)",
    "no_record": "the guild had no live record",
    "stale": "the session was older than restore.max_age",
    "guild_unavailable": "the bot could not see the guild",
    "no_channel": "the record has no voice channel",
    "channel_gone": "the voice channel no longer exists",
    "not_voice_channel": "the channel is not a voice channel",
    "missing_permission": "the bot may not connect or speak in the channel",
    "empty_channel": "nobody was listening (restore.skip_empty_channels)",
    "foreign_state": "the state belongs to another guild",
    "verification": "Lavalink did not hold what was restored",
    "no_node": "no other Lavalink node took the player",
    "timeout": "the restore took too long",
    "store": "the store failed",
    "record": "the record could not be read (damaged, wrong guild, too large)",
    "discord": "Discord refused (an HTTP or gateway error)",
    "lavalink": "Lavalink refused (a wavelink error)",
    "error": "an unexpected error (see the bot's log)",
    "other": "a reason not listed here",
}

#: Sentence patterns the code writes, in the order they are tried, and their category.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), category)
    for pattern, category in (
        (r"^another process owns|is owned by another process", "owned_elsewhere"),
        (r"^cannot take its lease", "lease_unavailable"),
        (r"^its session is ", "session_changed"),
        (r"a restore is already running", "in_progress"),
        (r"the bot is shutting down", "shutting_down"),
        (r"^its live record is (encrypted|from a newer)", "not_readable"),
        (r"^no live record", "no_record"),
        (r"^the session is stale", "stale"),
        (r"^the guild is not available|^the bot is not in this guild", "guild_unavailable"),
        (r"^the record has no voice channel", "no_channel"),
        (r"^voice channel \S+ no longer exists", "channel_gone"),
        (r"is not a voice channel$", "not_voice_channel"),
        (r"^missing \S+ permission", "missing_permission"),
        (r"^nobody is listening", "empty_channel"),
        (r"^the state belongs to guild", "foreign_state"),
        (r"^verification failed", "verification"),
        (r"^no other Lavalink node", "no_node"),
    )
)


@functools.cache
def _subclass_names(root: type[BaseException]) -> frozenset[str]:
    names = set()
    todo = [root]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return frozenset(names)


def _exception_category(name: str) -> str:
    if name in ("TimeoutError", "CancelledError"):
        return "timeout"
    if name in _subclass_names(errors.StoreError):
        return "store"
    if name in _subclass_names(errors.SonoraError):
        return "record"
    import discord
    import wavelink

    if isinstance(getattr(wavelink, name, None), type):
        return "lavalink"
    if isinstance(getattr(discord, name, None), type) or name in ("ClientConnectionError", "ClientError"):
        return "discord"
    return "error"


def reason_category(reason: str | None) -> str:
    """The :data:`REASONS` key for a report's free-text reason (``"none"`` for no reason)."""
    if not reason:
        return "none"
    for pattern, category in _PATTERNS:
        if pattern.search(reason):
            return category
    # "SomeError: detail": failures carry the exception's type name first
    head, sep, _rest = reason.partition(":")
    if sep and head.isidentifier():
        return _exception_category(head)
    return "other"


def outcome_of(report: RestoreReport) -> str:
    """The ``outcome`` label of a report: one of :data:`OUTCOMES`."""
    return report.status.value.replace(" ", "_")


def path_of(report: RestoreReport, path: RestorePath) -> RestorePath:
    """The path to count a report under: a startup restore that adopted a resumed player is ``adopted``."""
    if report.adopted and path in (RestorePath.startup, RestorePath.reidentify):
        return RestorePath.adopted
    return path
