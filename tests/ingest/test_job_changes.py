"""The registry wakes a job's watchers on every write to its row, from the loop or a thread, and a
watcher re-reads a running job at most once per interval, but at once when the job ends."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from vcf_agent.services.ingest import JobRegistry
from vcf_agent.services.ingest import _job_changes as job_changes
from vcf_agent.v1 import events_pb2


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> JobRegistry:
    # Short, so that a wait with no wake-up ends within the test.
    monkeypatch.setattr(job_changes, "FALLBACK_S", 0.2)
    return JobRegistry(tmp_path / "jobs.sqlite")


async def test_a_write_from_a_worker_thread_wakes_the_watcher_and_only_its_own(registry: JobRegistry) -> None:
    job = registry.begin("lab", "f" * 64, "a.vcf", ["local"])
    other = registry.begin("lab", "e" * 64, "b.vcf", ["local"])
    with registry.changes.watch(job.job_id) as changes, registry.changes.watch(other.job_id) as quiet:
        job.state = events_pb2.JOB_STATE_INGESTING
        # The registry may be written from any thread: the wake-up crosses into this loop.
        await asyncio.to_thread(registry.save, job)
        assert await changes.next()
        assert not await quiet.next()
        # Cleared once waited for: the next wait needs a new write.
        assert not await changes.next()
        registry.mark(job, "finished_at")
        assert await changes.next()
    registry.close()


async def test_progress_is_read_at_most_once_per_interval_but_the_end_at_once(
    registry: JobRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(job_changes, "FALLBACK_S", 60.0)
    job = registry.begin("lab", "f" * 64, "a.vcf", ["local"])
    loop = asyncio.get_running_loop()
    with registry.changes.watch(job.job_id) as changes:
        job.state = events_pb2.JOB_STATE_ANALYSING
        registry.save(job)
        began = loop.time()
        # A change that does not end the job is let through once the interval has passed.
        assert await asyncio.wait_for(changes.next(at_least_s=0.3), 30)
        assert loop.time() - began >= 0.3
        # The interval is 60 s now: only the end, arriving while it runs, can cut it short.
        waiting = asyncio.ensure_future(changes.next(at_least_s=60.0))
        job.analysed = 1
        registry.save(job)
        await asyncio.sleep(0.05)
        assert not waiting.done()
        job.state = events_pb2.JOB_STATE_COMPLETE
        registry.save(job)
        assert await asyncio.wait_for(waiting, 10)
    registry.close()


def test_every_write_a_watcher_is_told_of_leaves_the_row_whole(
    registry: JobRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stalling a job, its leaving the stall, its resubmission, and a notification or a save that
    marks a stage are each one write: the row a watcher (or any reader) finds at each wake-up is never half of
    one. Before, each was two writes, and between them the row was `stalled` with no reason, the
    new run carried the old run's stage marks, or a run was marked finished before it ended."""
    seen: list[tuple[int, str, tuple[float, ...]]] = []
    tell = registry.changes.changed

    def read_at_each_wake(job_id: str, *, ended: bool = False) -> None:
        row = registry.get(job_id)
        assert row is not None
        marks = (row.started_at, row.ingested_at, row.analysed_at, row.finished_at)
        seen.append((row.state, row.stall_detail, marks))
        tell(job_id, ended=ended)

    job = registry.begin("lab", "f" * 64, "a.vcf", ["local"])
    registry.mark(job, "started_at", 100.0)
    registry.mark(job, "ingested_at", 101.0)
    monkeypatch.setattr(registry.changes, "changed", read_at_each_wake)

    assert registry.stall(job.job_id, "no progress for 30 s") is not None
    assert seen == [(events_pb2.JOB_STATE_STALLED, "no progress for 30 s", (100.0, 101.0, 0.0, 0.0))]

    seen.clear()
    moved = events_pb2.Notification(
        job_id=job.job_id, stage=events_pb2.STAGE_INGEST, state=events_pb2.JOB_STATE_INGESTING, done=5
    )
    registry.apply(moved)
    assert seen == [(events_pb2.JOB_STATE_INGESTING, "", (100.0, 101.0, 0.0, 0.0))]

    seen.clear()
    analysed = events_pb2.Notification(
        job_id=job.job_id, stage=events_pb2.STAGE_ANALYSIS, state=events_pb2.JOB_STATE_ANALYSING, done=5
    )
    analysed.timestamp.FromSeconds(102)
    registry.apply(analysed)
    assert seen == [(events_pb2.JOB_STATE_ANALYSING, "", (100.0, 101.0, 102.0, 0.0))]

    seen.clear()
    stored = events_pb2.Notification(
        job_id=job.job_id,
        stage=events_pb2.STAGE_STORAGE,
        state=events_pb2.JOB_STATE_COMPLETE,
        done=5,
        total=5,
    )
    stored.timestamp.FromSeconds(103)
    registry.apply(stored)
    assert seen == [(events_pb2.JOB_STATE_COMPLETE, "", (100.0, 101.0, 102.0, 103.0))]

    seen.clear()
    registry.begin("lab", "f" * 64, "a.vcf", ["local"])
    assert seen == [(events_pb2.JOB_STATE_QUEUED, "", (0.0, 0.0, 0.0, 0.0))]

    # A change that reaches a stage (a cancel, a failure, a start) stamps its mark in the same write.
    seen.clear()
    job.state = events_pb2.JOB_STATE_CANCELLED
    registry.save(job, stamp="finished_at")
    ((state, _, (_, _, _, finished)),) = seen
    assert state == events_pb2.JOB_STATE_CANCELLED and finished == job.finished_at > 0
    registry.close()
