"""Deploy tags from the store alone: pre-deploy snapshots, the per-guild deploy journal, rollback requests.

A *deploy tag* names one ``pre-deploy`` snapshot per guild (the tag is the snapshots' label), taken from
the live records by :func:`prepare` — with or without a bot running. What happens to each guild of a tag
afterwards is appended to the tag's journal (a store journal, see
:meth:`~sonora_cog.store.base.SnapshotStore.append_journal`): snapshotted, restored by the next start,
rolled back, or failed and why. :func:`status` folds it into one line per guild.

A rollback reaches running bots through the store: :func:`write_request` puts a request record that each
bot process polls (:mod:`sonora_cog.deployer` acts on it); processes announce themselves with a presence
record (:func:`announce`), so the CLI knows whether a bot runs. With none running, :func:`rollback_offline`
rewrites the live records from the tag, and the next start restores them.

Nothing here talks to Discord or Lavalink: the CLI uses it as it is.

.. versionadded:: 0.3
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import orjson

from .errors import InvalidIdentifier, SnapshotNotFound, SonoraError
from .meta import SnapshotKind, SnapshotMeta

if TYPE_CHECKING:
    from .manager import SessionManager

__all__ = (
    "DeployRequest",
    "GuildDeployStatus",
    "Step",
    "TagSummary",
    "announce",
    "default_tag",
    "find_tag_snapshot",
    "journal_name",
    "prepare",
    "prune_journals",
    "read_request",
    "record",
    "rollback_offline",
    "running_processes",
    "status",
    "tags",
    "unfinished",
    "validate_tag",
    "withdraw",
    "write_request",
)

#: A tag: letters, digits and ``._+-``, at most 64 characters, starting with a letter or digit.
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
REQUEST_KEY = "deploy-request"
CURRENT_KEY = "deploy-current"
PROCESS_PREFIX = "process-"
#: How many journal entries go to the store in one append.
_JOURNAL_BATCH = 200

Progress = Callable[[int, int], None]


class Step(StrEnum):
    """What happened to a guild of a deploy tag (the last step is its status)."""

    snapshotted = "snapshotted"
    snapshot_failed = "snapshot failed"
    restored = "restored"
    restore_failed = "restore failed"
    rollback_requested = "rollback requested"
    rolled_back = "rolled back"
    rollback_failed = "rollback failed"
    # a canary handover between two processes (sonora_cog.handover)
    handed_over = "handed over"
    taken_over = "taken over"
    handover_failed = "handover failed"
    taken_back = "taken back"
    kept = "kept"

    @property
    def failed(self) -> bool:
        """Whether this step is a failure."""
        return self in (Step.snapshot_failed, Step.restore_failed, Step.rollback_failed, Step.handover_failed)


@dataclass(frozen=True, slots=True)
class GuildDeployStatus:
    """One guild's place in a deploy tag.

    Attributes
    ----------
    guild_id:
        The guild.
    step:
        The last thing that happened to it.
    why:
        For a failure, why; else a short note (``None`` when there is nothing to say).
    at:
        Unix time of that step.
    snapshot_id:
        The guild's ``pre-deploy`` snapshot of the tag, if it has one.
    by:
        Who took the step: ``cli``, or the bot process (host and pid).
    request:
        The rollback request the step belongs to, if any.
    """

    guild_id: int
    step: Step
    why: str | None = None
    at: float = 0.0
    snapshot_id: str | None = None
    by: str | None = None
    request: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The journal entry (and ``--json`` output) form: ids as strings."""
        return {
            "guild": str(self.guild_id),
            "step": self.step.value,
            "why": self.why,
            "at": self.at,
            "snapshot": self.snapshot_id,
            "by": self.by,
            "request": self.request,
        }

    @classmethod
    def from_json(cls, obj: Any) -> GuildDeployStatus | None:
        """Parse a journal entry; ``None`` for one that is not well-formed (skipped, never fatal)."""
        if not isinstance(obj, dict):
            return None
        try:
            return cls(
                guild_id=int(obj["guild"]),
                step=Step(obj["step"]),
                why=_text_or_none(obj.get("why")),
                at=float(obj.get("at") or 0.0),
                snapshot_id=_text_or_none(obj.get("snapshot")),
                by=_text_or_none(obj.get("by")),
                request=_text_or_none(obj.get("request")),
            )
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True, slots=True)
class TagSummary:
    """A deploy tag as ``deploy list`` shows it (``created_at``: when it was last prepared)."""

    tag: str
    created_at: float
    guilds: int
    bytes: int
    kept: bool


@dataclass(frozen=True, slots=True)
class DeployRequest:
    """A rollback asked of the running bot processes (the ``deploy-request`` record)."""

    id: str
    tag: str
    guilds: tuple[int, ...] | None
    batch_size: int
    pause: float
    at: float

    def to_bytes(self) -> bytes:
        """The record's bytes."""
        guilds = None if self.guilds is None else [str(g) for g in self.guilds]
        return orjson.dumps(
            {
                "id": self.id,
                "tag": self.tag,
                "guilds": guilds,
                "batch_size": self.batch_size,
                "pause": self.pause,
                "at": self.at,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> DeployRequest | None:
        """Parse the record; ``None`` for one that is damaged or withdrawn."""
        try:
            obj = orjson.loads(data)
            guilds = obj["guilds"]
            return cls(
                id=str(obj["id"]),
                tag=validate_tag(obj["tag"]),
                guilds=None if guilds is None else tuple(int(g) for g in guilds),
                batch_size=max(1, int(obj["batch_size"])),
                pause=max(0.0, float(obj["pause"])),
                at=float(obj["at"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, InvalidIdentifier):
            return None


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# -- tags -------------------------------------------------------------------------------------------------


def validate_tag(tag: Any) -> str:
    """Return ``tag`` if it is a valid deploy tag, else raise :class:`InvalidIdentifier`."""
    if not isinstance(tag, str) or not TAG_RE.fullmatch(tag):
        raise InvalidIdentifier(
            f"not a deploy tag: {tag!r} (letters, digits and . _ + -, at most 64, starting with a letter or digit)"
        )
    return tag


def default_tag(env: Mapping[str, str] | None = None, now: float | None = None) -> str:
    """``<UTC time>`` plus ``-$SONORA_DEPLOY_TAG``, or ``-<git describe>`` when run in a git checkout."""
    env = os.environ if env is None else env
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    suffix = env.get("SONORA_DEPLOY_TAG") or _git_describe()
    suffix = re.sub(r"[^A-Za-z0-9._+-]+", "-", suffix or "").strip("-.")
    return (f"{stamp}-{suffix}" if suffix else stamp)[:64]


def _git_describe() -> str | None:
    try:
        done = subprocess.run(
            ["git", "describe", "--tags", "--always", "--dirty"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def journal_name(tag: str) -> str:
    """The store journal of ``tag`` (a hash: tags may hold characters journal names cannot)."""
    return "deploy-" + hashlib.blake2b(validate_tag(tag).encode(), digest_size=10).hexdigest()


async def tags(manager: SessionManager) -> list[TagSummary]:
    """Every deploy tag with pre-deploy snapshots, newest first."""
    by_tag: dict[str, list[SnapshotMeta]] = {}
    for meta in await manager.list_snapshots():
        if meta.kind is SnapshotKind.pre_deploy and meta.label is not None:
            by_tag.setdefault(meta.label, []).append(meta)
    newest = sorted(by_tag, key=lambda t: (max(m.created_at for m in by_tag[t]), t), reverse=True)
    keep = manager.settings.deploy.keep_tags
    return [
        TagSummary(
            tag,
            max(m.created_at for m in by_tag[tag]),
            len({m.guild_id for m in by_tag[tag]}),
            sum(m.size for m in by_tag[tag]),
            kept=i < keep,
        )
        for i, tag in enumerate(newest)
    ]


async def tag_snapshots(manager: SessionManager, tag: str) -> dict[int, SnapshotMeta]:
    """Each guild's newest ``pre-deploy`` snapshot of ``tag``."""
    validate_tag(tag)
    found: dict[int, SnapshotMeta] = {}
    for meta in await manager.list_snapshots():  # newest first
        if meta.kind is SnapshotKind.pre_deploy and meta.label == tag:
            found.setdefault(meta.guild_id, meta)
    return found


async def find_tag_snapshot(manager: SessionManager, tag: str, guild_id: int) -> SnapshotMeta:
    """The guild's newest ``pre-deploy`` snapshot of ``tag``; :class:`SnapshotNotFound` when it has none."""
    validate_tag(tag)
    for meta in await manager.list_snapshots(guild_id):
        if meta.kind is SnapshotKind.pre_deploy and meta.label == tag:
            return meta
    raise SnapshotNotFound(f"guild {guild_id} has no pre-deploy snapshot tagged {tag!r}")


# -- the journal -----------------------------------------------------------------------------------------


async def record(manager: SessionManager, tag: str, entries: Iterable[GuildDeployStatus]) -> None:
    """Append ``entries`` to the tag's journal."""
    lines = [orjson.dumps(e.to_json()) for e in entries]
    for start in range(0, len(lines), _JOURNAL_BATCH):
        await manager.store.append_journal(journal_name(tag), lines[start : start + _JOURNAL_BATCH])


async def status(manager: SessionManager, tag: str) -> list[GuildDeployStatus]:
    """Each guild of ``tag`` with its last step, by guild id; guilds with a snapshot but no entry are
    ``snapshotted`` (the snapshot is the proof)."""
    snapshots = await tag_snapshots(manager, tag)
    last: dict[int, GuildDeployStatus] = {}
    for line in await manager.store.read_journal(journal_name(tag)):
        try:
            entry = GuildDeployStatus.from_json(orjson.loads(line))
        except orjson.JSONDecodeError:
            entry = None
        if entry is not None:
            last[entry.guild_id] = entry
    for guild_id, meta in snapshots.items():
        entry = last.get(guild_id)
        if entry is None:
            last[guild_id] = GuildDeployStatus(guild_id, Step.snapshotted, at=meta.created_at, snapshot_id=meta.id)
        elif entry.snapshot_id is None:
            last[guild_id] = replace(entry, snapshot_id=meta.id)
    return [last[g] for g in sorted(last)]


async def prune_journals(manager: SessionManager, max_age_days: float, now: float | None = None) -> int:
    """Delete the journals of deploy tags that have no snapshot left, and of handovers, when they have no
    entry newer than ``max_age_days``."""
    live_tags = {journal_name(t.tag) for t in await tags(manager)}
    cutoff = (time.time() if now is None else now) - max_age_days * 86_400
    removed = 0
    for name in await manager.store.journal_names():
        if not name.startswith(("deploy-", "handover-")) or name in live_tags:
            continue
        newest = 0.0
        for line in await manager.store.read_journal(name):
            with contextlib.suppress(orjson.JSONDecodeError):
                entry = GuildDeployStatus.from_json(orjson.loads(line))
                newest = max(newest, entry.at if entry else 0.0)
        if newest < cutoff and await manager.store.delete_journal(name):
            removed += 1
    return removed


# -- prepare and the offline rollback ---------------------------------------------------------------------


async def prepare(
    manager: SessionManager, tag: str, *, by: str = "cli", progress: Progress | None = None
) -> list[GuildDeployStatus]:
    """Write a ``pre-deploy`` snapshot tagged ``tag`` of every guild with a live record; return each guild's
    outcome (``snapshotted``, or ``snapshot failed`` and why). A playing, unchanged track's position is
    moved forward to the newest checkpoint heartbeat. Nothing is quarantined: a damaged record fails its
    guild and stays where it is."""
    from .restore import advance_position

    validate_tag(tag)
    guilds = await manager.live_guilds()
    # A live record is rewritten when something changes; between changes the bot's checkpoint heartbeat
    # says how long an unchanged track kept playing (as a restore after a crash reads it).
    heartbeat = await manager.newest_heartbeat()
    until = min(time.time(), heartbeat) if heartbeat is not None else None
    results: list[GuildDeployStatus] = []
    for done, guild_id in enumerate(guilds, 1):
        try:
            state = await manager.read_live(guild_id, quarantine=False)
            if state is None:
                continue  # the session ended meanwhile
            if until is not None:
                state = advance_position(state, until)
            # taken now: a tag is as new as its snapshots
            meta = await manager.save_snapshot(
                replace(state, kind=SnapshotKind.pre_deploy, created_at=time.time()), tag
            )
            results.append(GuildDeployStatus(guild_id, Step.snapshotted, at=time.time(), snapshot_id=meta.id, by=by))
        except SonoraError as exc:
            results.append(
                GuildDeployStatus(guild_id, Step.snapshot_failed, f"{type(exc).__name__}: {exc}", at=time.time(), by=by)
            )
        if progress is not None:
            progress(done, len(guilds))
    await record(manager, tag, results)
    await manager.store.put_aux(CURRENT_KEY, orjson.dumps({"tag": tag, "at": time.time()}))
    return results


async def current_tag(manager: SessionManager, within: float) -> str | None:
    """The tag of the last ``prepare`` if it was run less than ``within`` seconds ago."""
    data = await manager.store.get_aux(CURRENT_KEY)
    try:
        obj = orjson.loads(data) if data else None
        if isinstance(obj, dict) and time.time() - float(obj["at"]) <= within:
            return validate_tag(obj["tag"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, InvalidIdentifier):
        pass
    return None


async def rollback_offline(
    manager: SessionManager, tag: str, guilds: Sequence[int] | None = None, *, progress: Progress | None = None
) -> list[GuildDeployStatus]:
    """With no bot running: rewrite each guild's live record from its tag snapshot (as of now, so the next
    start restores it at the tagged position, neither too old nor moved forward), and forget the Lavalink
    sessions to resume (their players still hold the state the rollback replaces)."""
    snapshots = await tag_snapshots(manager, tag)
    targets = sorted(snapshots) if guilds is None else list(guilds)
    # The next start must play the rewritten records, not adopt what the stopped process's Lavalink session
    # still plays (the old state): it starts new sessions instead of resuming those.
    for key in await manager.store.aux_keys("lavalink-"):
        await manager.store.delete_aux(key)
    results: list[GuildDeployStatus] = []
    for done, guild_id in enumerate(targets, 1):
        meta = snapshots.get(guild_id)
        try:
            if meta is None:
                raise SnapshotNotFound(f"no pre-deploy snapshot tagged {tag!r}")
            state = await manager.load_snapshot(meta.id, guild_id)
            now = time.time()
            await manager.write_live(
                replace(state, kind=SnapshotKind.live, created_at=now, player=replace(state.player, position_at=now))
            )
            results.append(
                GuildDeployStatus(
                    guild_id,
                    Step.rolled_back,
                    "live record rewritten; the next start restores it",
                    at=now,
                    snapshot_id=meta.id,
                    by="cli",
                )
            )
        except SonoraError as exc:
            results.append(
                GuildDeployStatus(
                    guild_id,
                    Step.rollback_failed,
                    f"{type(exc).__name__}: {exc}",
                    at=time.time(),
                    snapshot_id=meta.id if meta else None,
                    by="cli",
                )
            )
        if progress is not None:
            progress(done, len(targets))
    await record(manager, tag, results)
    return results


# -- requests to running processes, and their presence ----------------------------------------------------


def new_request(tag: str, guilds: Sequence[int] | None, batch_size: int, pause: float) -> DeployRequest:
    """A fresh rollback request."""
    return DeployRequest(
        secrets.token_hex(6),
        validate_tag(tag),
        None if guilds is None else tuple(guilds),
        batch_size,
        pause,
        time.time(),
    )


async def write_request(manager: SessionManager, request: DeployRequest) -> None:
    """Put the request where every running process looks for one."""
    await manager.store.put_aux(REQUEST_KEY, request.to_bytes())


async def read_request(manager: SessionManager) -> DeployRequest | None:
    """The current rollback request, if any."""
    data = await manager.store.get_aux(REQUEST_KEY)
    return DeployRequest.from_bytes(data) if data else None


async def unfinished(manager: SessionManager, request: DeployRequest) -> list[int]:
    """The guilds of ``request`` that have no final step (rolled back, or failed) for it yet."""
    final = {
        s.guild_id
        for s in await status(manager, request.tag)
        if s.request == request.id and s.step in (Step.rolled_back, Step.rollback_failed)
    }
    wanted = request.guilds if request.guilds is not None else tuple(await tag_snapshots(manager, request.tag))
    return [g for g in wanted if g not in final]


async def withdraw(manager: SessionManager) -> bool:
    """Remove the rollback request (processes that started on it finish their batch)."""
    return await manager.store.delete_aux(REQUEST_KEY)


def process_name() -> str:
    """How a bot process signs the journal: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


async def announce(
    manager: SessionManager, token: str, ttl: float, *, lease_owner: str | None = None, started: float | None = None
) -> None:
    """Say that a bot process runs on this store for the next ``ttl`` seconds (renew before it runs out),
    with its lease token and when it started (a handover asks only processes that started before)."""
    body = {"name": process_name(), "until": time.time() + ttl, "lease_owner": lease_owner, "started": started}
    await manager.store.put_aux(PROCESS_PREFIX + token, orjson.dumps(body))


async def process_starts(manager: SessionManager) -> dict[str, float]:
    """When each running process started, by its lease token."""
    starts = {}
    for body in await _presences(manager):
        owner, started = body.get("lease_owner"), body.get("started")
        if isinstance(owner, str) and isinstance(started, int | float):
            starts[owner] = float(started)
    return starts


async def retire(manager: SessionManager, token: str) -> None:
    """Say that the process stopped."""
    await manager.store.delete_aux(PROCESS_PREFIX + token)


async def running_processes(manager: SessionManager) -> list[str]:
    """The names of the bot processes that announced themselves and have not run out."""
    return sorted(str(body["name"]) for body in await _presences(manager))


async def _presences(manager: SessionManager) -> list[dict[str, Any]]:
    """The presence records that have not run out; expired ones older than a day are removed."""
    found = []
    now = time.time()
    for key in await manager.store.aux_keys(PROCESS_PREFIX):
        data = await manager.store.get_aux(key)
        try:
            body = orjson.loads(data) if data else {}
            until = float(body["until"])
            str(body["name"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
        if until >= now:
            found.append(body)
        elif until < now - 86_400:
            await manager.store.delete_aux(key)
    return found
