"""The workloads of `vcf-agent bench e2e --preset`, the plain-script baseline and query timings.

Presets are the whole-genome and cohort workloads the README's targets table
names. The baseline is the shortest honest way to put a file's genotypes into
LanceDB (pysam to Arrow to LanceDB: no bus, no analysis, no graph), run as a
child process of the benchmark so both share the machine at the same moment;
the pipeline's figure over the baseline's is the ratio the targets compare.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vcf_agent.synthetic_vcf import SyntheticVcfSpec, write_synthetic_vcf


@dataclass(frozen=True, slots=True)
class Workload:
    """A synthetic file to push through the pipeline; `bgzip` as labs send whole genomes."""

    records: int
    samples: int
    allele_frequencies: str = "uniform"
    bgzip: bool = False
    # Jobs run after the first on the same services, each a different file of the same shape: the
    # first job after start pays one-time costs (imports, first table writes), these do not.
    warm_jobs: int = 0


PRESETS = {
    # A clinical whole genome: 5M variants of one sample, bgzipped.
    "genome": Workload(5_000_000, 1, bgzip=True),
    # 1000 Genomes phase 3 has 2,504 samples; most calls are hom-ref.
    "cohort": Workload(100_000, 2504, allele_frequencies="population", bgzip=True),
    # The measured cohort file: 5,188 variants of 500 samples.
    "cohort-500": Workload(5188, 500),
    "single": Workload(100_000, 1),
    # One small job, for submit-to-notified latency: on fresh services, then warm.
    "latency": Workload(10_000, 1, warm_jobs=3),
}

# The targets (the README's table) per preset: each reads one figure from a run's result and
# holds it against its bound. A target whose figure a run did not report (one process has no
# per-service memory, a run without --baseline no ratio) is left out of that run's verdicts, not
# counted as missed. The results' "mb" are MiB; the issue's 2 GB is read strictly, as 2e9 bytes.
_TWO_GB_IN_MIB = 2e9 / 2**20


def _worst_service_mb(figures: Mapping[str, Any]) -> float | None:
    each = figures.get("peak_rss_mb_per_service")
    return max(each.values()) if isinstance(each, dict) and each else None


def genotypes_per_s(figures: Mapping[str, Any]) -> float | None:
    """A run's genotypes (variants times samples) per second; None when it did not report them."""
    seconds, variants, samples = figures.get("seconds"), figures.get("variants"), figures.get("samples")
    if not seconds or variants is None or samples is None:
        return None
    return float(variants) * float(samples) / float(seconds)


def _figure(name: str) -> Callable[[Mapping[str, Any]], float | None]:
    def read(figures: Mapping[str, Any]) -> float | None:
        value = figures.get(name)
        return float(value) if isinstance(value, int | float) else None

    return read


@dataclass(frozen=True, slots=True)
class Target:
    """One bound of the targets table: the figure it reads from a run and the side it must be on."""

    name: str
    read: Callable[[Mapping[str, Any]], float | None]
    bound: float
    at_least: bool

    def met(self, figures: Mapping[str, Any]) -> bool | None:
        """Whether the run met it; None when the run did not report the figure."""
        value = self.read(figures)
        if value is None:
            return None
        return value >= self.bound if self.at_least else value < self.bound


TARGETS: dict[str, tuple[Target, ...]] = {
    "genome": (
        Target("variants_per_s >= 25000", _figure("variants_per_s"), 25_000, at_least=True),
        Target("every service < 2 GB", _worst_service_mb, _TWO_GB_IN_MIB, at_least=False),
        Target("region_1mb_query_ms < 50", _figure("region_1mb_query_ms"), 50, at_least=False),
        Target("sample_gene_query_ms < 100", _figure("sample_gene_query_ms"), 100, at_least=False),
    ),
    "cohort": (Target("genotypes_per_s >= 1000000", genotypes_per_s, 1_000_000, at_least=True),),
    "cohort-500": (Target("ratio_to_baseline >= 0.8", _figure("ratio_to_baseline"), 0.8, at_least=True),),
    "single": (Target("variants_per_s >= 30000", _figure("variants_per_s"), 30_000, at_least=True),),
    "latency": (
        Target("cold_job_latency_s < 0.5", _figure("cold_job_latency_s"), 0.5, at_least=False),
        Target("warm_job_latency_s < 0.5", _figure("warm_job_latency_s"), 0.5, at_least=False),
    ),
}


def targets_met(preset: str, figures: Mapping[str, Any]) -> dict[str, bool]:
    """The preset's targets this run reported a figure for, each with whether it was met."""
    verdicts = {target.name: target.met(figures) for target in TARGETS.get(preset, ())}
    return {name: met for name, met in verdicts.items() if met is not None}


def targets_summary(runs: Sequence[Mapping[str, bool]]) -> dict[str, str]:
    """Per target, in how many of the runs that reported it it was met: "k of n"."""
    names = dict.fromkeys(name for run in runs for name in run)
    return {
        name: f"{sum(run[name] for run in runs if name in run)} of {sum(name in run for run in runs)}"
        for name in names
    }


# Queries timed on the finished store: 1 Mb regions, and one sample within one gene. The synthetic
# file spreads its records evenly over two chromosomes, ~100 bases apart (SyntheticVcfSpec).
CHROMOSOMES = ("chr1", "chr2")
MEAN_SPACING = 100
REGION_BASES = 1_000_000
SAMPLE = "S0000"
GENES = ("BRCA1", "BRCA2", "TP53", "EGFR")
# One fixed query, which `bench query` times and `bench e2e` timed before 2026-12-05 (five times,
# median): its later runs read what the first left in the caches, a user's next page does not.
REGION = "chr1:1000000-2000000"
GENE = "BRCA1"


def query_regions(workload: Workload, count: int = 8) -> list[str]:
    """`count` 1 Mb regions spread over the span each chromosome of the workload's file covers."""
    per_chromosome = -(-workload.records // len(CHROMOSOMES))
    span = max(per_chromosome * MEAN_SPACING, REGION_BASES)
    regions = []
    for at in range(count):
        chrom = CHROMOSOMES[at % len(CHROMOSOMES)]
        # Evenly spaced fractions (1/(n+1) .. n/(n+1)) of the span, alternating chromosomes.
        start = (at + 1) * (span - REGION_BASES) // (count + 1) + 1
        regions.append(f"{chrom}:{start}-{start + REGION_BASES - 1}")
    # A file spanning less than a region each time gives each chromosome's whole span once.
    return list(dict.fromkeys(regions))


def write_workload(root: Path, workload: Workload, run: int = 0) -> Path:
    """The workload's file; `run` > 0 gives another file of the same shape (a new job, not a
    resubmission: job ids derive from the content)."""
    spec = SyntheticVcfSpec(
        records=workload.records,
        samples=workload.samples,
        seed=7 + run,
        allele_frequencies=workload.allele_frequencies,
        gene_annotations=True,
    )
    name = (f"bench-{run}" if run else "bench") + (".vcf.gz" if workload.bgzip else ".vcf")
    return write_synthetic_vcf(root / name, spec, bgzip=workload.bgzip)


def run_baseline(path: Path, root: Path) -> dict[str, object]:
    """The plain script in a child process; its figures, with its CPU seconds."""
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "vcf_agent.app._scale_bench", str(path), str(root / "baseline-lance")],
        check=True,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - began
    figures: dict[str, object] = json.loads(done.stdout)
    genotypes = int(str(figures["genotypes"]))
    figures["seconds"] = round(seconds, 3)
    figures["genotypes_per_s"] = round(genotypes / seconds) if seconds else 0
    return figures


def baseline_store(path: Path, directory: Path) -> dict[str, int]:
    """pysam -> Arrow -> LanceDB: one row per ALT allele with every sample's genotype."""
    import lancedb
    import pyarrow as pa
    import pysam

    table = None
    rows = genotypes = 0
    columns: dict[str, list[object]] = {name: [] for name in ("chrom", "pos", "ref", "alt", "gt")}

    def flush() -> None:
        nonlocal table
        batch = pa.table(columns)
        if table is None:
            table = lancedb.connect(str(directory)).create_table("variants", batch)
        else:
            table.add(batch)
        for values in columns.values():
            values.clear()

    with pysam.VariantFile(os.fspath(path)) as records:
        for record in records:
            calls = [
                "/".join("." if a is None else str(a) for a in sample["GT"])
                for sample in record.samples.values()
            ]
            for alt in record.alts or ():
                for name, value in zip(
                    columns, (record.chrom, record.pos, record.ref, alt, calls), strict=True
                ):
                    columns[name].append(value)
                rows += 1
                genotypes += len(calls)
            if len(columns["chrom"]) >= 10_000:
                flush()
    if columns["chrom"]:
        flush()
    return {"variants": rows, "genotypes": genotypes}


# A query's filters and the offset of the page asked for.
Query = Callable[[dict[str, str], int], Awaitable[int]]


async def time_queries(query: Query, workload: Workload) -> dict[str, object]:
    """Milliseconds per query: each asked once, of different regions, genes and pages.

    A user's next page or region finds little of the last one's index blocks in the caches:
    on a 5M-variant store the fixed region repeated took 35 ms where a new page of it took 62
    and a region deep in the file 240-330 (2026-12-05). So every timed query is a new one:
    the first and second page of `query_regions`, and of the sample in each of `GENES`;
    the median, the slowest and how many matched. The fixed query repeated five times, as
    timed before, is kept for comparison with earlier figures.
    """
    figures: dict[str, object] = {}
    for label, asked in (
        ("region_1mb", [{"region": region} for region in query_regions(workload)]),
        ("sample_gene", [{"sample": SAMPLE, "gene": gene} for gene in GENES]),
    ):
        times = []
        matched = []
        for offset in (0, 100):
            for filters in asked:
                seconds, total = await _timed(query, filters, offset)
                times.append(seconds)
                if not offset:
                    matched.append(total)
        figures[f"{label}_query_ms"] = round(statistics.median(times) * 1000, 1)
        figures[f"{label}_query_max_ms"] = round(max(times) * 1000, 1)
        figures[f"{label}_queries"] = len(times)
        figures[f"{label}_matched"] = matched
    fixed = {"region_1mb": {"region": REGION}, "sample_gene": {"sample": SAMPLE, "gene": GENE}}
    for label, filters in fixed.items():
        times = [(await _timed(query, filters, 0))[0] for _ in range(5)]
        figures[f"{label}_repeated_query_ms"] = round(statistics.median(times) * 1000, 1)
    return figures


async def time_queries_during(
    query: Query, workload: Workload, job: asyncio.Future[Any], interval_s: float = 20.0
) -> dict[str, object]:
    """Milliseconds per query while a job is being written: a `query_round` every `interval_s`
    until `job` is done, each round's figures and the median and slowest of each query.

    Rows not yet indexed are scanned by every query, so these grow with the job (a region may
    match nothing yet, before the job reached it). The queries take the writer's CPU from the
    job, so the job's own figures come from runs without them.
    """
    began = time.perf_counter()
    rounds: list[dict[str, object]] = []
    while not job.done():
        await asyncio.wait([job], timeout=interval_s)
        if not job.done():
            asked = await query_round(query, workload, len(rounds))
            rounds.append({"s": round(time.perf_counter() - began), **asked})
    figures: dict[str, object] = {"mid_job_queries": rounds}
    for label in ("region", "sample_gene"):
        times = [float(str(r[f"{label}_ms"])) for r in rounds]
        if times:
            figures[f"mid_job_{label}_query_ms"] = round(statistics.median(times), 1)
            figures[f"mid_job_{label}_query_max_ms"] = max(times)
    return figures


async def query_round(query: Query, workload: Workload, at: int) -> dict[str, object]:
    """Milliseconds and matches of the second page of the `at`-th of 64 1 Mb regions and of the
    sample in the `at`-th of `GENES` (cycling), as a user watching a job would ask."""
    regions = query_regions(workload, count=64)
    figures: dict[str, object] = {}
    for label, filters in (
        ("region", {"region": regions[at % len(regions)]}),
        ("sample_gene", {"sample": SAMPLE, "gene": GENES[at % len(GENES)]}),
    ):
        seconds, total = await _timed(query, filters, 100)
        figures[f"{label}_ms"], figures[f"{label}_matched"] = round(seconds * 1000), total
    return figures


async def _timed(query: Query, filters: dict[str, str], offset: int) -> tuple[float, int]:
    """Seconds the query took, and the total it answered."""
    began = time.perf_counter()
    total = await query(filters, offset)
    return time.perf_counter() - began, total


async def wait_quiet(directory: Path, quiet_s: float = 5.0, timeout_s: float = 600.0) -> float:
    """Wait until nothing under `directory` changed for `quiet_s` (the writer's idle compaction ran)."""

    def newest() -> float:
        return max((p.stat().st_mtime for p in directory.rglob("*") if p.is_file()), default=0.0)

    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        if time.time() - await asyncio.to_thread(newest) >= quiet_s:
            break
        await asyncio.sleep(1.0)
    return round(time.monotonic() - began, 1)


async def wait_indexed(uri: str, options: dict[str, str], timeout_s: float = 600.0) -> float:
    """Wait until every scalar index of the LanceDB store at `uri` covers every row.

    The writer's idle compaction folds new rows into the indexes table by table, and a
    5M-variant store's can pause its file writes for longer than `wait_quiet` waits: queries
    timed after files alone went quiet found a third of the carriers and analyses unindexed
    (a page's answers then scan them: 550 ms instead of 35).
    """
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        if await asyncio.to_thread(_unindexed_rows, uri, options) == 0:
            break
        await asyncio.sleep(1.0)
    return round(time.monotonic() - began, 1)


def _unindexed_rows(uri: str, options: dict[str, str]) -> int:
    unindexed = 0
    for table in _store_tables(uri, options).values():
        for index in table.list_indices():
            stats = table.index_stats(index.name)
            unindexed += stats.num_unindexed_rows if stats is not None else 0
    return unindexed


def store_megabytes(uri: str, options: dict[str, str]) -> dict[str, float]:
    """Megabytes per table of the LanceDB store at `uri`: its latest version's data and indexes.

    From the tables' own statistics: what the store takes once the versions a compaction left for
    readers still on them (the writer keeps them a minute) are gone, which a walk of the files counts.
    """
    sizes = {}
    for name, table in sorted(_store_tables(uri, options).items()):
        # stats() is annotated as a dataclass but this lancedb returns a plain dict.
        stats: Any = table.stats()
        sizes[name] = round(int(stats["total_bytes"]) / 1e6, 1)
    return sizes


def _store_tables(uri: str, options: dict[str, str]) -> dict[str, Any]:
    """The tables of the LanceDB store at `uri`, opened; raises if it has none.

    A store looked for in the wrong place has no tables: waiting for its indexes would time the
    queries at once (bench e2e --processes did so for local stores until 2026-12-05).
    """
    import lancedb

    db = lancedb.connect(uri, storage_options=options or None)
    names = db.list_tables().tables
    if not names:
        raise FileNotFoundError(f"no LanceDB tables at {uri}")
    return {name: db.open_table(name) for name in names}


if __name__ == "__main__":
    print(json.dumps(baseline_store(Path(sys.argv[1]), Path(sys.argv[2]))))
