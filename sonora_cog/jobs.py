"""APScheduler wiring: the checkpoint, auto-snapshot and retention jobs (APScheduler 3.x).

The auto-snapshot job runs every :func:`~sonora_cog.cadence.auto_tick` seconds (a minute by
default) and snapshots the guilds whose own interval has passed. Each job runs one instance at a
time, coalesces missed runs into one, and tolerates a late start (misfire grace). The jobs themselves
live on the session owner (:class:`~sonora_cog.writer.SessionWriter`); an error in one guild is
logged with its id there and never stops the job for the others.
"""

from __future__ import annotations

import datetime as dt
import logging

from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]  # APScheduler 3 has no types

from .cadence import auto_tick
from .config import Settings
from .writer import SessionWriter

__all__ = ("AUTO_SNAPSHOT_JOB", "CHECKPOINT_JOB", "RETENTION_JOB", "build_scheduler")

CHECKPOINT_JOB = "sonora-checkpoint"
AUTO_SNAPSHOT_JOB = "sonora-auto-snapshot"
RETENTION_JOB = "sonora-retention"


def build_scheduler(writer: SessionWriter, settings: Settings) -> AsyncIOScheduler:
    """An (unstarted) scheduler with the three jobs, on the running event loop when started."""
    snapshots = settings.snapshots
    executor_log = logging.getLogger("apscheduler.executors.default")
    if executor_log.level == logging.NOTSET:
        # APScheduler logs two INFO lines per run; a checkpoint every 10 s would flood the bot's log.
        executor_log.setLevel(logging.WARNING)
    scheduler = AsyncIOScheduler(
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
        timezone=dt.UTC,
    )
    scheduler.add_job(
        writer.checkpoint,
        "interval",
        seconds=snapshots.checkpoint_interval,
        id=CHECKPOINT_JOB,
        name="checkpoint live records",
    )
    if snapshots.auto_enabled:
        scheduler.add_job(
            writer.auto_snapshot,
            "interval",
            seconds=auto_tick(snapshots),
            id=AUTO_SNAPSHOT_JOB,
            name="automatic snapshots",
        )
    scheduler.add_job(
        writer.retention,
        "interval",
        seconds=snapshots.retention_interval,
        id=RETENTION_JOB,
        name="snapshot retention",
        next_run_time=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60),
    )
    return scheduler
