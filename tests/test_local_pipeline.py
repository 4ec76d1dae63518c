"""`LocalPipeline.wait`, what `vcf-agent run` and the one-process benchmark wait on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from vcf_agent.app.pipeline import LocalPipeline
from vcf_agent.config import Settings
from vcf_agent.services.ingest import _job_changes as job_changes
from vcf_agent.synthetic_vcf import SyntheticVcfSpec, write_synthetic_vcf
from vcf_agent.v1 import events_pb2, jobs_pb2


def _settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", bus_url=f"memory://pipeline-{tmp_path.name}")


async def test_wait_returns_when_the_end_is_recorded_not_at_a_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the registry's fallback re-read moved past the test's bound, only the wake-up from the
    write that ends the job can return in time; each change read reaches on_progress once."""
    monkeypatch.setattr(job_changes, "FALLBACK_S", 60.0)
    path = write_synthetic_vcf(tmp_path / "a.vcf", SyntheticVcfSpec(records=20, seed=3))
    seen: list[jobs_pb2.Job] = []
    async with LocalPipeline(_settings(tmp_path)) as pipeline:
        job_id = await pipeline.submit(path)
        job = await asyncio.wait_for(pipeline.wait(job_id, on_progress=seen.append), 30)
        assert events_pb2.JobState.Name(job.state) == "JOB_STATE_COMPLETE", job.error
        assert (job.counts.stored, job.counts.total) == (20, 20)
        assert seen[-1] == job
        shown = [(u.state, u.counts.ingested, u.counts.analysed, u.counts.stored) for u in seen]
        assert len(shown) == len(set(shown)), shown


async def test_wait_names_the_job_it_gave_up_on(tmp_path: Path) -> None:
    async with LocalPipeline(_settings(tmp_path)) as pipeline:
        with pytest.raises(TimeoutError, match=r"job no-such-job did not finish within 0\.2s"):
            await pipeline.wait("no-such-job", timeout_s=0.2)
