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
