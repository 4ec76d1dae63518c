"""`vcf-agent bench`: throughput figures printed as JSON, the numbers the README reports."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import psutil

from vcf_agent.app._scale_bench import (
    PRESETS,
    Workload,
    genotypes_per_s,
    query_round,
    run_baseline,
    store_megabytes,
    targets_met,
    targets_summary,
    time_queries,
    time_queries_during,
    wait_indexed,
    wait_quiet,
    write_workload,
)
from vcf_agent.bus import Bus, OutgoingMessage, StreamSpec, open_bus
from vcf_agent.config import Settings
from vcf_agent.localdev import LocalS3Server
from vcf_agent.schema import (
    TERMINAL_STATES,
    GenotypeCall,
    correlation_id,
    decode,
    encode,
    genotype_columns,
    state_name,
)
from vcf_agent.v1 import jobs_pb2, variant_pb2

if TYPE_CHECKING:
    from vcf_agent.app.pipeline import LocalPipeline
    from vcf_agent.v1.jobs_pb2_grpc import IngestServiceAsyncStub


# The targets that read each option (by its argparse dest), and its name on the command line. An
# option given to a target that ignores it is refused: `bench query --runs 3` measured once and
# said nothing, so its reader took one run for three.
_READ_BY: dict[str, tuple[str, frozenset[str]]] = {
    "file": ("FILE", frozenset({"ingest"})),
    "bus": ("--bus", frozenset({"bus", "e2e"})),
    "variants": ("--variants", frozenset({"bus", "e2e", "providers", "query"})),
    "samples": ("--samples", frozenset({"e2e"})),
    "preset": ("--preset", frozenset({"e2e"})),
    "baseline": ("--baseline", frozenset({"e2e"})),
    "batch_size": ("--batch-size", frozenset({"bus"})),
    "bench_store": ("--store", frozenset({"e2e"})),
    "processes": ("--processes", frozenset({"e2e"})),
    "runs": ("--runs", frozenset({"e2e"})),
    "mid_job_queries": ("--mid-job-queries", frozenset({"e2e"})),
    "store_dir": ("--store-dir", frozenset({"query"})),
}

# What an option left off means; the parser leaves them None so that "given" can be told apart.
_DEFAULTS: dict[str, object] = {
    "variants": 100_000,
    "samples": 1,
    "batch_size": 1000,
    "bench_store": "local",
    "runs": 1,
}


def _options_for_target(args: argparse.Namespace) -> argparse.Namespace:
    """The command line's options, each one the target does not read refused with a one-line error,
    and those left off at their defaults."""
    for dest, (flag, targets) in _READ_BY.items():
        if args.target not in targets and getattr(args, dest, None) not in (None, False):
            readers = ", ".join(sorted(targets))
            raise SystemExit(f"vcf-agent bench {args.target}: {flag} is read by {readers} only")
    left_off = {dest: value for dest, value in _DEFAULTS.items() if getattr(args, dest, None) is None}
    return argparse.Namespace(**{**vars(args), **left_off})


async def run(args: argparse.Namespace) -> dict[str, object]:
    args = _options_for_target(args)
    with tempfile.TemporaryDirectory(prefix="vcf-agent-bench-") as scratch:
        root = Path(scratch)
        if args.target == "bus":
            url = args.bus or f"embedded://{root / 'bus'}"
            result = await bench_bus(url, args.variants, args.batch_size)
        elif args.target == "ingest":
            if not args.file:
                raise SystemExit("vcf-agent bench ingest FILE: a VCF file is required")
            result = await bench_ingest(Path(args.file), root)
        elif args.target == "load":
            from vcf_agent.app.load_bench import bench_load

            result = await bench_load(root)
        elif args.target == "query":
            from vcf_agent.app._query_bench import bench_query

            store = Path(args.store_dir) if args.store_dir else root / "query-store"
            result = await asyncio.to_thread(bench_query, store, args.variants)
        elif args.target == "providers":
            from vcf_agent.app._provider_bench import bench_providers

            result = await bench_providers(args.variants)
        else:
            if args.mid_job_queries and not args.processes:
                raise SystemExit("vcf-agent bench e2e --mid-job-queries: needs --processes")
            if args.runs < 1:
                raise SystemExit("vcf-agent bench e2e --runs: at least 1")
            runs = []
            for index in range(args.runs):
                # Each run on fresh services and a fresh data directory, removed after it: three
                # genome runs would otherwise hold three stores.
                with tempfile.TemporaryDirectory(prefix=f"run-{index}-", dir=root) as run_root:
                    runs.append(await _e2e_run(args, Path(run_root)))
            result = runs[0] if len(runs) == 1 else _summarised(args.preset, runs)
    result["machine"] = machine()
    return result


async def _e2e_run(args: argparse.Namespace, root: Path) -> dict[str, object]:
    """One e2e run of the command line's workload, with the preset's targets it met."""
    workload = PRESETS[args.preset] if args.preset else Workload(args.variants, args.samples)
    path = write_workload(root, workload)
    warm = tuple(write_workload(root, workload, run) for run in range(1, workload.warm_jobs + 1))
    with _store(args.bench_store) as (store_env, server):
        bus_url = args.bus or f"embedded://{root / 'bus'}"
        given = E2eRun(root, path, workload, bus_url, store_env, warm, args.mid_job_queries)
        result = await (bench_e2e_processes if args.processes else bench_e2e)(given)
        if server is not None:
            # Its CPU is part of what storing to S3 costs on this machine.
            result["store"] = "s3 (versitygw on loopback)"
            result["s3_server_cpu_s"] = round(_cpu_seconds(psutil.Process(server.pid)), 2)
    if args.baseline:
        baseline = await asyncio.to_thread(run_baseline, path, root)
        result["baseline"] = baseline
        rate = round(genotypes_per_s(result) or 0)
        result["genotypes_per_s"] = rate
        result["ratio_to_baseline"] = round(rate / max(int(str(baseline["genotypes_per_s"])), 1), 3)
    if args.preset:
        result = {"preset": args.preset, **result}
        result["targets_met"] = targets_met(args.preset, result)
    return result


def _summarised(preset: str | None, runs: list[dict[str, object]]) -> dict[str, object]:
    """Several runs: each as one run reports it, and per target in how many it was met."""
    if preset is None:
        return {"runs": runs}
    # Each run's own verdicts (set by _e2e_run), counted: not judged a second time.
    verdicts = [cast(dict[str, bool], run["targets_met"]) for run in runs]
    return {"preset": preset, "runs": runs, "targets_met_in_runs": targets_summary(verdicts)}


def machine() -> str:
    memory_gib = psutil.virtual_memory().total / 2**30
    cores = psutil.cpu_count()
    return f"{platform.machine()} {cores} cores {memory_gib:.0f} GiB, Python {platform.python_version()}"


def render(result: Mapping[str, object]) -> str:
    """One `key: value` line per figure; with --runs, each run's figures under its number."""
    lines = []
    for key, value in result.items():
        if key == "runs" and isinstance(value, list):
            for number, run in enumerate(value, 1):
                lines += [f"{f'run {number}':>24}:", render(run)]
        else:
            lines.append(f"{key:>24}: {value}")
    return "\n".join(lines)


def synthetic_batch(start: int, size: int, samples: int = 1) -> variant_pb2.VariantBatch:
    """Realistic single-allele variants with genotypes, as ingest would publish them."""
    batch = variant_pb2.VariantBatch(providers=["local"])
    calls = genotype_columns(
        GenotypeCall(f"S{sample}", (0, 1), depth=30, genotype_quality=99, allele_depths=(15, 15))
        for sample in range(samples)
    )
    for index in range(start, start + size):
        variant = batch.variants.add(
            correlation_id=correlation_id("bench", "bench", index, 0),
            job_id="bench",
            file_id="bench",
            tenant_id="bench",
            record_index=index,
            line_number=index + 20,
            chromosome="chr1",
            position=10_000 + index * 10,
            reference="A",
            alternate="G",
            all_alternates=["G"],
            has_quality=True,
            quality=50.0,
            filters=["PASS"],
        )
        variant.info["DP"].ints.values.append(30)
        if samples:
            variant.genotypes.CopyFrom(calls)
    return batch


async def bench_bus(url: str, variants: int, batch_size: int) -> dict[str, object]:
    """Publish `variants` as batches, then consume them back through a consumer group."""
    stream = f"bench-{uuid.uuid4().hex[:8]}"
    bus: Bus = open_bus(url)
    await bus.start()
    try:
        await bus.ensure_streams([StreamSpec(stream, 10)])
        messages = []
        for start in range(0, variants, batch_size):
            batch = synthetic_batch(start, min(batch_size, variants - start))
            payload, headers = encode(batch)
            key = f"chr1:{start // batch_size}".encode()
            messages.append(OutgoingMessage(payload, key, headers))
        wire_bytes = sum(len(m.value) for m in messages)
        began = time.perf_counter()
        # Publish in groups, as the ingest publisher does under load.
        for i in range(0, len(messages), 16):
            await bus.publish(stream, messages[i : i + 16])
        published = time.perf_counter() - began
        consumed_variants = 0
        began = time.perf_counter()
        async with bus.consumer([stream], f"bench-{uuid.uuid4().hex[:6]}", start="earliest") as consumer:
            while consumed_variants < variants:
                records = await consumer.poll(max_records=64, timeout_s=5)
                if not records and time.perf_counter() - began > 120:
                    raise TimeoutError(f"consumed {consumed_variants} of {variants} variants")
                for record in records:
                    consumed_variants += len(
                        decode(record.value, record.headers, variant_pb2.VariantBatch).variants
                    )
                await consumer.commit()
        consumed = time.perf_counter() - began
    finally:
        await bus.stop()
    return {
        "benchmark": "bus",
        "backend": bus.backend,
        "variants": variants,
        "batch_size": batch_size,
        "messages": len(messages),
        "seconds": round(published + consumed, 3),
        "publish_variants_per_s": round(variants / published),
        "consume_variants_per_s": round(variants / consumed),
        "bytes_on_wire": wire_bytes,
    }


@dataclass(frozen=True)
class E2eRun:
    """What the one-process and the five-process e2e benchmarks are both given, from one reading
    of the command line: the generated VCF, its workload, the bus URL (--bus, else an embedded log
    under root) and the variables that choose the store."""

    root: Path
    vcf: Path
    workload: Workload
    bus_url: str
    store_env: Mapping[str, str]
    # Files of the same shape run one after the other once `vcf` finished, on the same services.
    warm_vcfs: tuple[Path, ...] = ()
    # Whether queries are timed while the job runs (five processes only; see time_queries_during).
    mid_job_queries: bool = False


# How often a benchmark samples memory (its own, or the five services') while a job runs.
_RSS_SAMPLE_S = 0.05
# How long the e2e bench waits, once the services are told to stop, for their last high-water marks.
_PEAK_WATCH_TIMEOUT_S = 60.0
# A warm job starts once nothing in the writer's directory changed for this long.
_WARM_QUIET_S = 2.0


def _job_figures(mode: str, given: E2eRun, job: jobs_pb2.Job, seconds: float) -> dict[str, object]:
    """The figures both e2e benchmarks report first: the finished job and its wall-clock time.

    That job is the first on freshly started services: with warm jobs it is reported as the
    cold latency, beside theirs.
    """
    return {
        "benchmark": "e2e",
        "mode": mode,
        "bus": given.bus_url.split(":")[0],
        "variants": job.counts.total,
        "samples": given.workload.samples,
        "stored": job.counts.stored,
        "status": state_name(job.state),
        "seconds": round(seconds, 3),
        "variants_per_s": round(job.counts.total / seconds) if seconds else 0,
        "job_latency_s": round(seconds, 3),
        **({"cold_job_latency_s": round(seconds, 3)} if given.warm_vcfs else {}),
    }


def _warm_figures(latencies: list[float]) -> dict[str, object]:
    """The warm jobs' latencies (each a new job on services that already ran one) and their median."""
    if not latencies:
        return {}
    return {
        "warm_job_latency_s": round(statistics.median(latencies), 3),
        "warm_job_latencies_s": [round(seconds, 3) for seconds in latencies],
    }


@contextlib.contextmanager
def _store(kind: str) -> Iterator[tuple[dict[str, str], LocalS3Server | None]]:
    """local: LanceDB under the data directory; s3: on a versitygw server started for the run.

    Yields the settings variables the writer is given (VCF_AGENT_STORE and the AWS_* ones).
    """
    if kind != "s3":
        yield {}, None
        return
    with LocalS3Server() as server:
        yield {"VCF_AGENT_STORE": f"{server.bucket('bench')}/lance", **server.environment()}, server


async def bench_e2e(given: E2eRun) -> dict[str, object]:
    """Run all five services in-process on a generated VCF, time it to completion, then query."""
    from vcf_agent.app._settings_tree import load_settings
    from vcf_agent.app.pipeline import LocalPipeline
    from vcf_agent.services.writer import VariantQuery

    settings = Settings(
        data_dir=given.root / "data",
        bus_url=given.bus_url,
        store=load_settings(given.store_env).service.store,
    )
    peak = _PeakRss()
    async with LocalPipeline(settings) as pipeline:
        cpu_before = _cpu_seconds(psutil.Process())
        async with peak.sampling():
            job, seconds = await _pipeline_job(pipeline, given.vcf)
        cpu = _cpu_seconds(psutil.Process()) - cpu_before
        warm = []
        for path in given.warm_vcfs:
            # Each warm job finds the services idle: the last job's idle compaction is over.
            await wait_quiet(settings.data_dir / "writer", quiet_s=_WARM_QUIET_S)
            warm.append((await _pipeline_job(pipeline, path))[1])
        lance = pipeline.writer.lance
        # What the writer does once its input is idle, done now so the timings see indexes.
        await asyncio.to_thread(lance.compact)

        async def query(filters: dict[str, str], offset: int) -> int:
            found = VariantQuery(limit=100, offset=offset, **filters)  # type: ignore[arg-type]
            return (await asyncio.to_thread(lance.query, found))[1]

        queries = await time_queries(query, given.workload)
    return {
        **_job_figures("one process", given, job, seconds),
        "cpu_s": round(cpu, 2),
        "cpu_us_per_variant": round(cpu * 1e6 / max(job.counts.total, 1), 1),
        "peak_rss_mb": round(peak.total / 2**20),
        **_warm_figures(warm),
        **queries,
    }


async def _pipeline_job(pipeline: LocalPipeline, path: Path) -> tuple[jobs_pb2.Job, float]:
    """Submit `path` and wait for its job to end: the job and its seconds from submit to the end."""
    began = time.perf_counter()
    job = await pipeline.wait(await pipeline.submit(path))
    return job, time.perf_counter() - began


async def bench_ingest(path: Path, scratch_dir: Path) -> dict[str, object]:
    """`vcf-agent bench ingest FILE`: ingest only (validation on, lenient) to a fresh embedded bus,
    timed, with peak memory, so the number is the parser's and the bus's."""
    from vcf_agent.runner import ensure_topology
    from vcf_agent.services.ingest import JobRegistry, VariantPublisher

    settings = Settings(data_dir=scratch_dir / "data")
    registry = JobRegistry(scratch_dir / "jobs.sqlite")
    peak = _PeakRss()
    try:
        async with open_bus(settings.bus_url) as bus:
            await ensure_topology(bus, settings)
            publisher = VariantPublisher(bus, settings, registry)
            async with peak.sampling():
                began = time.perf_counter()
                job = await publisher.submit(path)
                await publisher.wait(job.job_id)
                seconds = time.perf_counter() - began
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
        "peak_rss_mb": round(peak.total / 2**20),
    }


async def bench_e2e_processes(given: E2eRun) -> dict[str, object]:
    """The same job through five `vcf-agent serve` processes, as deployed: uses every core."""
    import grpc

    from vcf_agent.app._settings_tree import load_settings
    from vcf_agent.app.load_bench import PeakWatch
    from vcf_agent.localdev import running_pipeline
    from vcf_agent.services.writer import StoreLocation
    from vcf_agent.v1 import jobs_pb2_grpc, query_pb2, query_pb2_grpc

    root = given.root
    # Read by path (no upload in the measurement): allowed from root, the services' data dir excluded.
    allowed = {"VCF_AGENT_INGEST_ALLOWED_DIRS": str(root), **given.store_env}
    with running_pipeline(given.bus_url, root / "services", env=allowed) as services:
        peaks = _PeakRss({name: psutil.Process(s.process.pid) for name, s in services.items()})
        # Each service's own peak is the kernel's high-water mark over its whole life: the
        # writer's idle compaction, the queries and the stop come after the job's last sample.
        lifetime = PeakWatch({name: s.process.pid for name, s in services.items()})
        async with (
            grpc.aio.insecure_channel(services["ingest"].grpc) as channel,
            grpc.aio.insecure_channel(services["writer"].grpc) as writer_channel,
        ):
            ingest = jobs_pb2_grpc.IngestServiceStub(channel)
            store = query_pb2_grpc.QueryServiceStub(writer_channel)

            async def query(filters: dict[str, str], offset: int) -> int:
                token = str(offset) if offset else ""
                request = query_pb2.QueryVariantsRequest(page_size=100, page_token=token, **filters)
                return int((await store.QueryVariants(request, timeout=60)).total)

            cpu_before = {name: _cpu_seconds(process) for name, process in peaks.processes.items()}
            served = asyncio.ensure_future(_served_job(ingest, given.vcf, peaks))
            during = await time_queries_during(query, given.workload, served) if given.mid_job_queries else {}
            job, seconds = await served
            cpu = {
                name: round(_cpu_seconds(process) - cpu_before[name], 2)
                for name, process in peaks.processes.items()
            }
            if given.mid_job_queries:
                # What a user told the job ended finds, before the idle compaction indexed its rows.
                during["after_job_queries"] = await query_round(query, given.workload, 0)
            warm = []
            warm_cpu: list[dict[str, float]] = []
            for path in given.warm_vcfs:
                # Each warm job finds the services idle: the last job's idle compaction is over.
                await wait_quiet(root / "services" / "writer", quiet_s=_WARM_QUIET_S)
                before = {name: _cpu_seconds(process) for name, process in peaks.processes.items()}
                warm_job, warm_seconds = await _served_job(ingest, path, peaks)
                warm.append(warm_seconds)
                warm_cpu.append(
                    {
                        name: (_cpu_seconds(process) - before[name]) * 1e6 / max(warm_job.counts.total, 1)
                        for name, process in peaks.processes.items()
                    }
                )
            # Timed once the writer's idle compaction has indexed the job's rows.
            waited = await wait_quiet(root / "services" / "writer")
            # The writer's data directory, as running_pipeline gave it (its store lies in `writer/`).
            location = StoreLocation.of_settings(
                load_settings(given.store_env).service.store, root / "services" / "writer"
            )
            waited += await wait_indexed(location.uri, dict(location.options))
            queries = {"compaction_wait_s": waited, **(await time_queries(query, given.workload))}
            stored_mb = store_megabytes(location.uri, dict(location.options))
    each = lifetime.peaks(timeout_s=_PEAK_WATCH_TIMEOUT_S)
    return {
        **_job_figures("five processes", given, job, seconds),
        # The services' resident memory summed, at its highest while a job ran.
        "peak_rss_mb": round(peaks.total / 2**20),
        "peak_rss_mb_per_service": {name: round(rss / 2**20) for name, rss in each.items()},
        # Where the two cores went: CPU seconds each service used during the job, and per variant.
        "cpu_s": cpu,
        "cpu_us_per_variant": {
            name: round(seconds * 1e6 / max(job.counts.total, 1), 1) for name, seconds in cpu.items()
        },
        **_warm_figures(warm),
        # The same for the warm jobs (median per service): what a job costs once nothing is
        # loaded or created for the first time.
        **(
            {
                "warm_cpu_us_per_variant": {
                    name: round(statistics.median(job_cpu[name] for job_cpu in warm_cpu), 1) for name in cpu
                }
            }
            if warm_cpu
            else {}
        ),
        **queries,
        **during,
        # What the job's rows take in the store, table by table (data and indexes, old versions aside).
        "lancedb_mb": stored_mb,
    }


class _PeakRss:
    """Peak resident memory of processes together (this one by default), sampled every
    _RSS_SAMPLE_S while `sampling` and once more as it ends."""

    def __init__(self, processes: Mapping[str, psutil.Process] | None = None) -> None:
        self.processes = processes if processes is not None else {"self": psutil.Process()}
        self.total = 0

    def _sample(self) -> None:
        self.total = max(self.total, sum(process.memory_info().rss for process in self.processes.values()))

    @contextlib.asynccontextmanager
    async def sampling(self) -> AsyncIterator[None]:
        async def every_interval() -> None:
            while True:
                self._sample()
                await asyncio.sleep(_RSS_SAMPLE_S)

        task = asyncio.create_task(every_interval())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._sample()


async def _served_job(
    ingest: IngestServiceAsyncStub, path: Path, peaks: _PeakRss
) -> tuple[jobs_pb2.Job, float]:
    """Submit `path` by path to the ingest service and watch it until the job ends, sampling memory.

    Returns the job and its seconds from submit to the state that ends it, as a LIMS watching
    the job (WatchJob) is told of it: a poll would add its own interval and take CPU from the
    services it measures.
    """
    began = time.perf_counter()
    metadata = jobs_pb2.SubmitVcfMetadata(file_name=path.name, path=str(path))
    job = (await ingest.SubmitVcf(iter([jobs_pb2.SubmitVcfRequest(metadata=metadata)]), timeout=60)).job
    async with peaks.sampling():
        if job.state not in TERMINAL_STATES:
            async for update in ingest.WatchJob(jobs_pb2.WatchJobRequest(job_id=job.job_id)):
                job = update
                if job.state in TERMINAL_STATES:
                    break
        seconds = time.perf_counter() - began
    if job.state not in TERMINAL_STATES:
        raise RuntimeError(f"job {job.job_id}: the watch ended in state {state_name(job.state)}")
    return job, seconds


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)
