"""The registry wakes a job's watchers on every write to its row, from the loop or a thread."""

from __future__ import annotations

import asyncio
from pathlib import Path

from vcf_agent.services.ingest import JobRegistry
from vcf_agent.v1 import events_pb2


async def test_a_write_from_a_worker_thread_wakes_the_watcher_and_only_its_own(tmp_path: Path) -> None:
    registry = JobRegistry(tmp_path / "jobs.sqlite")
    try:
        job = registry.begin("lab", "f" * 64, "a.vcf", ["local"])
        other = registry.begin("lab", "e" * 64, "b.vcf", ["local"])
        with registry.changes.watch(job.job_id) as changed, registry.changes.watch(other.job_id) as quiet:
            job.state = events_pb2.JOB_STATE_INGESTING
            # The registry may be written from any thread: the wake-up crosses into this loop.
            await asyncio.to_thread(registry.save, job)
            assert await changed.wait(at_most_s=10.0)
            assert not await quiet.wait(at_most_s=0.05)
            # Cleared once waited for: the next wait needs a new write.
            assert not await changed.wait(at_most_s=0.05)
            registry.mark(job, "finished_at")
            assert await changed.wait(at_most_s=10.0)
    finally:
        registry.close()
