"""`vcf-agent bench ingest FILE`: file to a fresh embedded bus, timed, with peak memory."""

from __future__ import annotations

import time
from pathlib import Path

from vcf_agent.app.benchmarks import RssSampler
from vcf_agent.bus import open_bus
from vcf_agent.config import Settings
from vcf_agent.runner import ensure_topology
from vcf_agent.schema import state_name

from ._jobs import JobRegistry
from ._publisher import VariantPublisher


async def bench_ingest(path: Path, scratch_dir: Path) -> dict[str, object]:
    """Ingest only (validation on, lenient), so the number is the parser's and the bus's."""
    settings = Settings.from_env(data_dir=scratch_dir / "data")
    registry = JobRegistry(scratch_dir / "jobs.sqlite")
    sampler = RssSampler()
    try:
        async with open_bus(settings.bus_url) as bus:
            await ensure_topology(bus, settings)
            publisher = VariantPublisher(bus, settings, registry)
            await sampler.start()
            began = time.perf_counter()
            job = await publisher.submit(path)
            await publisher.wait(job.job_id)
            seconds = time.perf_counter() - began
            await sampler.stop()
            await publisher.stop()
            done = registry.get(job.job_id)
    finally:
        registry.close()
    assert done is not None
    return {
        "benchmark": "ingest",
        "file": path.name,
        "status": state_name(done.state),
        "error": done.error,
        "records": publisher.records(job.job_id),
        "variants": done.total,
        "dead_lettered": done.dead_lettered,
        "seconds": round(seconds, 3),
        "variants_per_s": round(done.total / seconds) if seconds else 0,
        "peak_rss_mb": round(sampler.peak / 2**20),
    }
