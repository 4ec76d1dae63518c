"""`vcf-agent bench load`: ten jobs submitted at once to the five services as processes.

Jobs of 1 to 500,000 variants with 1 to 10 samples, each from its own tenant, go to
ingest in the same instant over the embedded log. The run reports how long all took,
each service's peak resident memory (the kernel's high-water mark, VmHWM, read before
it stops) against the 1 GiB bound, and whether every job ended complete with exactly
its own variants: after the services stopped, the writer's LanceDB table is read
directly and grouped by job, so a row stored under the wrong job or tenant, a
duplicate or a loss shows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

from vcf_agent.localdev import ServiceProcess, running_pipeline
from vcf_agent.schema import TERMINAL_STATES, state_name

# (variants, samples) per job.
LOAD_JOBS = (
    (1, 1),
    (10, 3),
    (100, 1),
    (1_000, 10),
    (5_000, 2),
    (10_000, 1),
    (50_000, 5),
    (100_000, 1),
    (200_000, 2),
    (500_000, 1),
)
RSS_BOUND_BYTES = 1 << 30


def _peak_rss(pid: int) -> int:
    """The process's peak resident set so far (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


async def _submit(ingest: str, path: Path, tenant: str) -> str:
    import grpc

    from vcf_agent.v1 import jobs_pb2, jobs_pb2_grpc

    async def request() -> AsyncIterator[jobs_pb2.SubmitVcfRequest]:
        meta = jobs_pb2.SubmitVcfMetadata(tenant_id=tenant, file_name=path.name, path=str(path))
        yield jobs_pb2.SubmitVcfRequest(metadata=meta)

    async with grpc.aio.insecure_channel(ingest) as channel:
        reply = await jobs_pb2_grpc.IngestServiceStub(channel).SubmitVcf(request(), timeout=120)
    return str(reply.job.job_id)


async def _states(ingest: str, job_ids: list[str]) -> dict[str, tuple[int, int]]:
    import grpc

    from vcf_agent.v1 import jobs_pb2, jobs_pb2_grpc

    async with grpc.aio.insecure_channel(ingest) as channel:
        stub = jobs_pb2_grpc.IngestServiceStub(channel)
        found = {}
        for job_id in job_ids:
            job = await stub.GetJob(jobs_pb2.GetJobRequest(job_id=job_id), timeout=10)
            found[job_id] = (int(job.state), int(job.counts.stored))
        return found


def _stored_by_job(lance_dir: Path) -> dict[tuple[str, str], tuple[int, int]]:
    """(job, tenant) -> (distinct variants, rows) in the writer's table."""
    from vcf_agent.services.writer import LanceStore

    lance = LanceStore(lance_dir)
    lance.open()
    try:
        variants, _ = lance._tables()
        table = variants.to_arrow().select(["job_id", "tenant_id", "correlation_id"])
    finally:
        lance.close()
    counted = table.group_by(["job_id", "tenant_id"]).aggregate(
        [("correlation_id", "count"), ("correlation_id", "count_distinct")]
    )
    columns = ("job_id", "tenant_id", "correlation_id_count_distinct", "correlation_id_count")
    return {
        (job, tenant): (distinct, rows)
        for job, tenant, distinct, rows in zip(*(counted.column(c).to_pylist() for c in columns), strict=True)
    }


async def bench_load(root: Path, *, timeout_s: float = 3600.0) -> dict[str, object]:
    from vcf_agent.app.chaos import expected_variants
    from vcf_agent.synthetic_vcf import SyntheticVcfSpec, write_synthetic_vcf

    files = []
    for index, (records, samples) in enumerate(LOAD_JOBS):
        path = await asyncio.to_thread(
            write_synthetic_vcf,
            root / f"load-{index}.vcf.gz",
            SyntheticVcfSpec(records=records, samples=samples, seed=100 + index),
            bgzip=True,
        )
        files.append((path, f"load-lab-{index}", await asyncio.to_thread(expected_variants, path)))
    env = {"VCF_AGENT_INGEST_ALLOWED_DIRS": str(root)}
    problems: list[str] = []
    peaks: dict[str, int] = {}
    states: dict[str, tuple[int, int]] = {}
    job_ids: list[str] = []
    began = time.monotonic()
    elapsed = 0.0
    try:
        with running_pipeline(f"embedded://{root / 'bus'}", root / "services", env=env) as services:
            began = time.monotonic()
            job_ids = list(
                await asyncio.gather(
                    *(_submit(services["ingest"].grpc, path, tenant) for path, tenant, _ in files)
                )
            )
            while True:
                states = await _states(services["ingest"].grpc, job_ids)
                if all(state in TERMINAL_STATES for state, _ in states.values()):
                    break
                if time.monotonic() - began > timeout_s:
                    problems.append(f"not every job ended within {timeout_s:.0f}s")
                    break
                await asyncio.sleep(0.5)
            elapsed = time.monotonic() - began
            peaks = _service_peaks(services)
    except AssertionError as exc:
        # A service that ignored SIGTERM when stopped after the jobs: a finding, not the end.
        problems.append(str(exc).splitlines()[0] + " when stopped after the jobs")
    stored = await asyncio.to_thread(_stored_by_job, root / "services" / "writer" / "writer" / "lance")
    jobs = []
    for job_id, (path, tenant, expected) in zip(job_ids, files, strict=True):
        state, reported = states.get(job_id, (0, 0))
        distinct, rows = stored.get((job_id, tenant), (0, 0))
        jobs.append(
            f"{path.name} {expected} variants: {state_name(state)}, {distinct} stored,"
            f" {rows - distinct} duplicates"
        )
        if (state_name(state), reported, distinct, rows) != ("complete", expected, expected, expected):
            problems.append(
                f"{job_id} ({tenant}): {state_name(state)}, reported {reported},"
                f" stored {distinct} in {rows} rows of {expected}"
            )
    ours = {(job_id, tenant) for job_id, (_, tenant, _) in zip(job_ids, files, strict=True)}
    strangers = set(stored) - ours
    if strangers:
        problems.append(f"rows under other jobs or tenants: {sorted(strangers)}")
    for name, peak in peaks.items():
        if peak >= RSS_BOUND_BYTES:
            problems.append(f"{name} peaked at {peak / 2**20:.0f} MiB")
    total = sum(expected for _, _, expected in files)
    return {
        "jobs": len(files),
        "variants": total,
        "seconds": round(elapsed, 1),
        "variants_per_s": round(total / elapsed),
        "peak_rss_mib": {name: round(peak / 2**20) for name, peak in peaks.items()},
        "per_job": jobs,
        "problems": problems or "none",
    }


def _service_peaks(services: dict[str, ServiceProcess]) -> dict[str, int]:
    peaks = {}
    for name, service in services.items():
        try:
            peaks[name] = _peak_rss(service.process.pid)
        except OSError:
            peaks[name] = 0
    return peaks
