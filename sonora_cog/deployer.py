"""Deploys inside a running bot: ``cog.deploy`` prepares tags and rolls guilds back in paced batches.

The bot process announces itself in the store (so ``deploy rollback`` knows a bot runs) and looks for a
rollback request every ``deploy.poll_interval`` seconds (an APScheduler job); a request it has not seen,
younger than ``deploy.request_max_age``, is carried out for the guilds this process owns. Each guild is
restored from its tag's ``pre-deploy`` snapshot as ``/snapshot restore`` does it (what plays is saved
first as a ``pre-restore`` snapshot; the result is verified and rolled back if it differs) and its
outcome is appended to the tag's journal, which ``deploy status`` and ``deploy rollback --wait`` read.

.. versionadded:: 0.3
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from . import deploy
from .deploy import DeployRequest, GuildDeployStatus, Step
from .errors import GuildNotOwned, RestoreError, SonoraError
from .meta import SnapshotKind
from .outcomes import RestorePath
from .restore import RestoreReport, RestoreStatus

if TYPE_CHECKING:
    from .cog import SonoraCog

__all__ = ("DeployController",)

_log = logging.getLogger(__name__)


class DeployController:
    """Deploy tags and rollbacks of one bot process (``cog.deploy``).

    .. versionadded:: 0.3
    """

    def __init__(self, cog: SonoraCog) -> None:
        self.cog = cog
        self.manager = cog.manager
        self.settings = cog.settings.deploy
        self.token = secrets.token_hex(8)
        self.name = deploy.process_name()
        self._announced_until = 0.0
        #: When this process started serving (a handover asks only processes that started earlier).
        self.started = time.time()
        self._seen: set[str] = set()
        self._running: set[asyncio.Task[Any]] = set()

    @property
    def presence_ttl(self) -> float:
        """How long an announcement holds: several polls, so one slow poll does not make the bot look gone."""
        return max(15.0, 5 * self.settings.poll_interval)

    # -- presence and requests ----------------------------------------------------------------------

    async def poll(self) -> None:
        """The poll job: renew this process's presence; start a new rollback request."""
        try:
            if self._announced_until - time.time() < self.presence_ttl / 2:
                await deploy.announce(
                    self.manager,
                    self.token,
                    self.presence_ttl,
                    lease_owner=self.cog.owner.leases.owner,
                    started=self.started,
                )
                self._announced_until = time.time() + self.presence_ttl
            request = await deploy.read_request(self.manager)
        except SonoraError as exc:
            _log.warning("deploy: cannot read the rollback request or announce this process: %s", exc)
            return
        await self.cog.handover.poll()
        if request is None or request.id in self._seen:
            return
        rehydration = self.cog._rehydration
        if not self.cog.bot.is_ready() or (rehydration is not None and not rehydration.done()):
            return  # after the startup restore, which holds the guilds it restores (asked again at the next poll)
        self._seen.add(request.id)
        age = time.time() - request.at
        if age > self.settings.request_max_age:
            _log.info(
                "deploy: ignoring rollback request %s to %s: %.0fs old (deploy.request_max_age)",
                request.id,
                request.tag,
                age,
            )
            return
        task = asyncio.get_running_loop().create_task(self._serve(request))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _serve(self, request: DeployRequest) -> None:
        earlier = [t for t in self._running if t is not asyncio.current_task()]
        if earlier:  # a replaced request stops before its next batch: never two rollbacks at once
            await asyncio.wait(earlier)
        _log.info(
            "deploy: rollback request %s: back to %s, %s at a time, %gs apart",
            request.id,
            request.tag,
            request.batch_size,
            request.pause,
        )
        try:
            await self.rollback(
                request.tag,
                guilds=request.guilds,
                batch_size=request.batch_size,
                pause=request.pause,
                request=request.id,
            )
        except Exception:
            _log.exception("deploy: rollback request %s failed", request.id)

    async def stop(self) -> None:
        """Cancel a rollback in progress and withdraw this process's presence."""
        for task in list(self._running):
            task.cancel()
        if self._running:
            await asyncio.wait(self._running, timeout=2)
        try:
            await deploy.retire(self.manager, self.token)
        except SonoraError as exc:
            _log.debug("deploy: could not withdraw the presence record: %s", exc)

    # -- the Python API -----------------------------------------------------------------------------

    async def prepare(self, tag: str | None = None) -> list[GuildDeployStatus]:
        """Write every live guild's state now, then a ``pre-deploy`` snapshot of each, tagged ``tag`` (default:
        :func:`~sonora_cog.deploy.default_tag`). Returns one status per guild."""
        tag = deploy.validate_tag(tag) if tag is not None else deploy.default_tag()
        await self.cog.owner.flush(s.guild_id for s in self.cog.owner.sessions() if s.writable)
        if self.cog.owner.players():
            await self.manager.write_heartbeat(self.cog.owner.key)  # unchanged tracks are where they play now
        return await deploy.prepare(self.manager, tag, by=self.name)

    async def rollback(
        self,
        tag: str,
        *,
        guilds: Iterable[int] | None = None,
        batch_size: int | None = None,
        pause: float | None = None,
        request: str | None = None,
    ) -> list[GuildDeployStatus]:
        """Restore each guild of ``tag`` (or of ``guilds``) that this process owns from its tag snapshot,
        ``batch_size`` guilds at a time with ``pause`` seconds between batches (defaults: ``[deploy]``).

        Returns one status per guild this process handled (``rolled back`` or ``rollback failed`` and why);
        guilds owned by other processes are left to them.
        """
        batch_size = self.settings.batch_size if batch_size is None else max(1, batch_size)
        pause = self.settings.pause if pause is None else max(0.0, pause)
        snapshots = await deploy.tag_snapshots(self.manager, tag)
        wanted = sorted(snapshots) if guilds is None else list(dict.fromkeys(guilds))
        mine = [g for g in wanted if self.cog.owner.owns(g)]
        results: list[GuildDeployStatus] = []
        batches = [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]
        for number, batch in enumerate(batches, 1):
            if number > 1 and pause:
                await asyncio.sleep(pause)
            if request is not None and not await self._still_asked(request):
                _log.warning(
                    "deploy: rollback request %s was withdrawn or replaced; stopping after %d of %d batch(es)",
                    request,
                    number - 1,
                    len(batches),
                )
                break
            outcomes = await asyncio.gather(*(self._rollback_one(tag, g, snapshots.get(g), request) for g in batch))
            done = [o for o in outcomes if o is not None]
            results.extend(done)
            self.cog.metrics.deploy_rollback(
                sum(o.step is Step.rolled_back for o in done), sum(o.step.failed for o in done)
            )
            try:
                await deploy.record(self.manager, tag, done)
            except SonoraError as exc:
                _log.error("deploy: cannot record batch %d of the rollback to %s: %s", number, tag, exc)
            _log.info(
                "deploy: rollback to %s: batch %d/%d done (%s)",
                tag,
                number,
                len(batches),
                ", ".join(f"{o.guild_id} {o.step.value}" for o in done) or "nothing here",
            )
        return results

    async def _still_asked(self, request: str) -> bool:
        """Whether ``request`` is still the rollback request in the store (not withdrawn, not replaced)."""
        try:
            current = await deploy.read_request(self.manager)
        except SonoraError:
            return True  # the store cannot say: go on with what was asked
        return current is not None and current.id == request

    async def _rollback_one(self, tag: str, guild_id: int, meta: Any, request: str | None) -> GuildDeployStatus | None:
        def result(step: Step, why: str | None) -> GuildDeployStatus:
            return GuildDeployStatus(
                guild_id,
                step,
                why,
                at=time.time(),
                snapshot_id=meta.id if meta is not None else None,
                by=self.name,
                request=request,
            )

        if meta is None:
            return result(Step.rollback_failed, f"no pre-deploy snapshot tagged {tag!r}")
        guild = self.cog.bot.get_guild(guild_id)
        if guild is None:
            return result(Step.rollback_failed, "the bot is not in this guild")
        label = f"before rollback to {tag}"[:100]
        try:
            state = await self.manager.load_snapshot(meta.id, guild_id)
            if self.cog.owner.player(guild_id) is None:  # nothing plays here: keep what the live record holds
                await self._keep_live_record(guild_id, label)
            report = await self.cog.restore(guild, state, pre_restore_label=label, path=RestorePath.deploy_rollback)
        except GuildNotOwned:
            return None  # another process holds it and serves the request there
        except (RestoreError, SonoraError) as exc:  # refused before it began (a restore already runs there...)
            why = f"{type(exc).__name__}: {exc}"
            self.cog._observe_restore(
                RestoreReport(guild_id, RestoreStatus.failed, reason=why), RestorePath.deploy_rollback
            )
            return result(Step.rollback_failed, why)
        if report.ok:
            return result(Step.rolled_back, None)
        return result(Step.rollback_failed, f"{report.status.value}: {report.reason}")

    async def _keep_live_record(self, guild_id: int, label: str) -> None:
        """Save the guild's live record as a ``pre-restore`` snapshot: what a rollback replaces when no player
        of this process holds the guild (its session waits for a restart, or was left by a crash)."""
        try:
            live = await self.manager.read_live(guild_id, quarantine=False)
        except SonoraError as exc:
            _log.warning("deploy: guild %s: its live record cannot be kept before the rollback: %s", guild_id, exc)
            return
        if live is not None and (live.queue.current is not None or live.queue.upcoming):
            await self.manager.save_snapshot(replace(live, kind=SnapshotKind.pre_restore), label)

    async def record_startup(self, reports: Sequence[RestoreReport]) -> None:
        """After the startup restore: record each guild's outcome in the tag of a deploy prepared lately
        (``deploy.track_restores_for``), so ``deploy status`` shows how the new version took over."""
        if not reports or not self.settings.track_restores_for:
            return
        try:
            tag = await deploy.current_tag(self.manager, self.settings.track_restores_for)
            if tag is None:
                return
            tagged = await deploy.tag_snapshots(self.manager, tag)
            entries = [
                GuildDeployStatus(
                    r.guild_id,
                    Step.restored if r.ok else Step.restore_failed,
                    None if r.ok else f"{r.status.value}: {r.reason}",
                    at=time.time(),
                    snapshot_id=tagged[r.guild_id].id,
                    by=self.name,
                )
                for r in reports
                if r.guild_id in tagged and not _elsewhere(r)
            ]
            await deploy.record(self.manager, tag, entries)
        except SonoraError as exc:
            _log.warning("deploy: cannot record the startup restore in the deploy journal: %s", exc)


def _elsewhere(report: RestoreReport) -> bool:
    """A guild skipped because another process has it: that process records it."""
    return report.reason is not None and report.reason.startswith("another process owns")
