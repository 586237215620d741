"""APScheduler wiring."""

from __future__ import annotations

from types import SimpleNamespace

from apscheduler.triggers.interval import IntervalTrigger

from sonora_cog.config import Settings, SnapshotSettings
from sonora_cog.jobs import AUTO_SNAPSHOT_JOB, CHECKPOINT_JOB, RETENTION_JOB, build_scheduler


def writer_stub() -> SimpleNamespace:
    async def job() -> int:
        return 0

    return SimpleNamespace(checkpoint=job, auto_snapshot=job, retention=job)


async def test_scheduler_has_three_coalesced_single_instance_jobs() -> None:
    settings = Settings(snapshots=SnapshotSettings(checkpoint_interval=7, auto_interval=120, retention_interval=3600))
    scheduler = build_scheduler(writer_stub(), settings)  # type: ignore[arg-type]
    scheduler.start(paused=True)  # job defaults are applied when the scheduler starts
    jobs = {job.id: job for job in scheduler.get_jobs()}
    scheduler.shutdown(wait=False)
    assert set(jobs) == {CHECKPOINT_JOB, AUTO_SNAPSHOT_JOB, RETENTION_JOB}
    intervals = {job_id: job.trigger.interval.total_seconds() for job_id, job in jobs.items()}
    # the auto-snapshot job checks each guild's own interval: a fifth of the fixed 120 s here
    assert intervals == {CHECKPOINT_JOB: 7, AUTO_SNAPSHOT_JOB: 24, RETENTION_JOB: 3600}
    for job in jobs.values():
        assert isinstance(job.trigger, IntervalTrigger)
        assert job.coalesce is True and job.max_instances == 1 and job.misfire_grace_time == 30


def test_adaptive_auto_snapshots_are_checked_every_minute() -> None:
    scheduler = build_scheduler(writer_stub(), Settings())  # type: ignore[arg-type]
    job = scheduler.get_job(AUTO_SNAPSHOT_JOB)
    assert job is not None and job.trigger.interval.total_seconds() == 60


def test_auto_snapshots_can_be_switched_off() -> None:
    settings = Settings(snapshots=SnapshotSettings(auto_enabled=False))
    scheduler = build_scheduler(writer_stub(), settings)  # type: ignore[arg-type]
    assert AUTO_SNAPSHOT_JOB not in {job.id for job in scheduler.get_jobs()}
