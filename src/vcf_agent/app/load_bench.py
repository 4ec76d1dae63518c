"""`vcf-agent bench load`: ten jobs submitted at once to the five services as processes.

Jobs of 1 to 500,000 variants with 1 to 10 samples, each from its own tenant, go to
ingest in the same instant over the embedded log. The run reports how long all took,
each service's peak resident memory (the kernel's high-water mark, VmHWM, sampled until
the process has exited, so its stop counts too) against the 1 GB bound, and whether
every job ended complete with exactly its own variants: after the services stopped, the
writer's LanceDB table is read directly and grouped by job, so a row stored under the
wrong job or tenant, a duplicate or a loss shows.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from vcf_agent.localdev import running_pipeline
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
# The bound: under 1 GB (decimal), which a peak of 984 MiB (1.03e9 bytes) is not.
RSS_BOUND_BYTES = 1_000_000_000
# How often PeakWatch reads each process's high-water mark.
PEAK_SAMPLE_INTERVAL_S = 0.05


class PeakWatch:
    """Each process's peak resident memory (VmHWM, in bytes), sampled until the process has exited.

    A process's peak can come while it stops (the writer's last compaction, the graph's
    checkpoint at close), after a reading taken before the stop. The high-water mark only
    rises, so the last sample before exit holds the whole life but for that one interval.
    Each process is read through a handle opened on it at the start: once it has exited
    the handle reads nothing, and a new process given the same pid is never read.
    """

    def __init__(self, pids: Mapping[str, int], interval_s: float = PEAK_SAMPLE_INTERVAL_S) -> None:
        self._interval_s = interval_s
        self._handles = {name: os.open(f"/proc/{pid}/status", os.O_RDONLY) for name, pid in pids.items()}
        self._peaks = dict.fromkeys(pids, 0)
        self._thread = threading.Thread(target=self._sample_until_exited, name="peak-rss-watch", daemon=True)
        self._thread.start()

    def peaks(self, timeout_s: float) -> dict[str, int]:
        """The peaks, once every process has exited (or timeout_s has passed: the peaks so far)."""
        self._thread.join(timeout_s)
        return dict(self._peaks)

    def _sample_until_exited(self) -> None:
        while self._handles:
            for name, handle in list(self._handles.items()):
                peak = _high_water_mark(handle)
                if peak is None:
                    os.close(self._handles.pop(name))
                else:
                    self._peaks[name] = max(self._peaks[name], peak)
            time.sleep(self._interval_s)


def _high_water_mark(status: int) -> int | None:
    """VmHWM from an open /proc/PID/status, in bytes; None once the process has exited.

    An exited process that is not reaped yet (a zombie) has no memory lines; a reaped one
    fails the read.
    """
    try:
        text = os.pread(status, 16384, 0).decode()
    except ProcessLookupError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


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
    watch: PeakWatch | None = None
    states: dict[str, tuple[int, int]] = {}
    job_ids: list[str] = []
    began = time.monotonic()
    elapsed = 0.0
    try:
        with running_pipeline(f"embedded://{root / 'bus'}", root / "services", env=env) as services:
            watch = PeakWatch({name: service.process.pid for name, service in services.items()})
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
    except AssertionError as exc:
        # A service that ignored SIGTERM when stopped after the jobs: a finding, not the end.
        problems.append(str(exc).splitlines()[0] + " when stopped after the jobs")
    # Every service has exited by now (one that ignored SIGTERM was killed): its peak is whole.
    peaks = await asyncio.to_thread(watch.peaks, 10.0) if watch is not None else {}
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
            problems.append(f"{name} peaked at {peak / 2**20:.0f} MiB ({peak:,} bytes), not under 1 GB")
    total = sum(expected for _, _, expected in files)
    return {
        "jobs": len(files),
        "variants": total,
        "seconds": round(elapsed, 1),
        "variants_per_s": round(total / elapsed),
        "peak_rss_mib": {name: round(peak / 2**20) for name, peak in peaks.items()},
        "peak_rss_bytes": peaks,
        "per_job": jobs,
        "problems": problems or "none",
    }
