"""`vcf-agent bench query`: the store's query speed on a whole genome, without the pipeline.

A 5M-variant genome takes the pipeline tens of minutes on a shared machine; the query
figures need only its rows. This writes rows shaped like the `genome` preset's (the
synthetic generator's two chromosomes, ~100 bp apart, half the records in one of eight
genes, one sample carrying 3 ALTs in 4) through the writer's own store in the writer's
batch sizes, out of file order as the pipeline's services deliver them (shuffled within
windows of `_SHUFFLE_WINDOW` batches), compacts as the writer does when idle, and times
the README's queries as `bench e2e` does.
With `--store DIR` the store is built once and reused by later runs.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from vcf_agent.app._scale_bench import SAMPLE, Workload, time_queries
from vcf_agent.services.writer import (
    ANALYSIS_SCHEMA,
    CALL_SCHEMA,
    GENOTYPE_TYPE,
    VARIANT_SCHEMA,
    CompactionPolicy,
    LanceStore,
    VariantQuery,
    WriteRows,
)

_TENANT, _JOB, _FILE = "default", "bench-genome", "bench-genome-file"
_GENES = np.array(["BRCA1", "BRCA2", "TP53", "EGFR", "KRAS", "CFTR", "APOE", "MTHFR"])
_BASES = np.array(["A", "C", "G", "T"])
# Writer-sized batches: what the sink hands LanceDB per store batch.
_BATCH = 10_000
_MARKER = "bench-query-variants"
# The five services hand the writer a job's batches out of file order, a few batches apart:
# a store built in file order would let every page be proven from the first rows stored.
_SHUFFLE_WINDOW = 8
# Changed when the rows' layout does, so a kept store is rebuilt rather than timed as it was.
_LAYOUT = "batches shuffled within 8, answers with their variants' places, Lance format 2.1"


def build_store(directory: Path, variants: int, seed: int = 7) -> LanceStore:
    """The store under `directory`, holding `variants` genome rows (built now unless already there)."""
    store = LanceStore(directory, compaction=CompactionPolicy())
    store.open()
    marker = directory / _MARKER
    if marker.exists() and marker.read_text() == f"{variants} {_LAYOUT}":
        return store
    if store.count():
        raise SystemExit(f"{directory} holds another store; pass an empty or new directory")
    rng = np.random.default_rng(seed)
    per_chromosome = -(-variants // 2)
    positions = np.concatenate(
        [np.cumsum(rng.integers(1, 201, size=n)) for n in (per_chromosome, variants - per_chromosome)]
    )
    starts = list(range(0, variants, _BATCH))
    for window in range(0, len(starts), _SHUFFLE_WINDOW):
        for start in rng.permutation(starts[window : window + _SHUFFLE_WINDOW]).tolist():
            stop = min(start + _BATCH, variants)
            store.write(_rows(rng, start, stop, per_chromosome, positions[start:stop]), maybe_stored=_NONE)
    store.compact()
    marker.write_text(f"{variants} {_LAYOUT}")
    return store


_NONE = pa.chunked_array([], pa.string())


def _rows(
    rng: np.random.Generator, start: int, stop: int, per_chrom: int, positions: np.ndarray
) -> WriteRows:
    n = stop - start
    index = np.arange(start, stop)
    ids = [f"{i * 0x9E3779B97F4A7C15 % (1 << 128):032x}" for i in range(start, stop)]
    ref = rng.integers(0, 4, size=n)
    alt = (ref + rng.integers(1, 4, size=n)) % 4
    gene = np.where(rng.random(n) < 0.5, _GENES[rng.integers(0, 8, size=n)], "")
    # As the generator: 2% no-calls, else both alleles uniform over REF and ALT, 30% phased.
    first, second = rng.integers(0, 2, size=n), rng.integers(0, 2, size=n)
    separator = np.where(rng.random(n) < 0.3, "|", "/")
    missing = rng.random(n) < 0.02
    calls = np.where(
        missing, "./.", np.char.add(np.char.add(first.astype(str), separator), second.astype(str))
    )
    carrier = ~missing & ((first == 1) | (second == 1))
    offsets = pa.array(np.arange(n + 1, dtype=np.int32))
    depth = rng.integers(0, 200, size=n).astype(np.int32)
    call_columns = {
        "sample": pa.array([SAMPLE] * n),
        "genotype": pa.array(calls),
        "depth": pa.array(depth),
        "genotype_quality": pa.array(rng.integers(0, 99, size=n).astype(np.int32)),
        "carrier": pa.array(carrier),
    }
    genotypes = pa.StructArray.from_arrays(
        [
            *(call_columns[name] for name in ("sample", "genotype", "depth", "genotype_quality")),
            pa.ListArray.from_arrays(
                pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)),
                pa.array(np.repeat(depth // 2, 2).astype(np.int32)),
            ),
        ],
        fields=list(GENOTYPE_TYPE),
    )
    carrier_offsets = np.concatenate([[0], np.cumsum(carrier)]).astype(np.int32)
    columns = {
        "correlation_id": pa.array(ids),
        "job_id": pa.array([_JOB] * n),
        "tenant_id": pa.array([_TENANT] * n),
        "file_id": pa.array([_FILE] * n),
        "source_name": pa.array(["genome.vcf.gz"] * n),
        "record_index": pa.array(index),
        "chromosome": pa.array(np.where(index < per_chrom, "chr1", "chr2")),
        "position": pa.array(positions.astype(np.int64)),
        "reference": pa.array(_BASES[ref]),
        "alternate": pa.array(_BASES[alt]),
        "alt_index": pa.array(np.zeros(n, dtype=np.int32)),
        "variant_id": pa.array(np.where(rng.random(n) < 0.4, "rs" + index.astype(str), ".")),
        "quality": pa.array(rng.uniform(1, 999, size=n)),
        "filters": pa.ListArray.from_arrays(offsets, pa.array(["PASS"] * n)),
        "classification": pa.array(np.where(rng.random(n) < 0.9, "benign", "uncertain_significance")),
        "priority_tier": pa.array(["low"] * n),
        "gene": pa.array(gene),
        "variant_class": pa.array(["snv"] * n),
        "partial": pa.array(np.zeros(n, dtype=bool)),
        "missing_providers": pa.ListArray.from_arrays(
            pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], pa.string())
        ),
        "genotypes": pa.ListArray.from_arrays(offsets, genotypes),
        "carriers": pa.ListArray.from_arrays(
            pa.array(carrier_offsets), pa.array([SAMPLE] * int(carrier.sum()), pa.string())
        ),
        "updated_at": pa.array(
            np.full(n, 1_790_000_000_000_000, dtype=np.int64), pa.timestamp("us", tz="UTC")
        ),
    }
    analyses = {
        "analysis_id": pa.array([f"{i}:local" for i in ids]),
        "correlation_id": columns["correlation_id"],
        "job_id": columns["job_id"],
        "tenant_id": columns["tenant_id"],
        "provider": pa.array(["local"] * n),
        "model": pa.array(["rules"] * n),
        "status": pa.array(["ok"] * n),
        "classification": columns["classification"],
        "confidence": pa.array(np.full(n, 0.9)),
        "error": pa.array([""] * n),
        "detail": pa.array([b""] * n, pa.binary()),
        "file_id": columns["file_id"],
        "record_index": columns["record_index"],
    }
    return WriteRows(
        variants=pa.Table.from_pydict(columns, schema=VARIANT_SCHEMA),
        analyses=pa.Table.from_pydict(analyses, schema=ANALYSIS_SCHEMA),
        calls=pa.Table.from_pydict(call_columns, schema=CALL_SCHEMA),
    )


def time_store_queries(store: LanceStore, variants: int) -> dict[str, object]:
    """The e2e benchmark's query figures (_scale_bench.time_queries) on this store: regions spread
    over the genome and the sample in each of four genes, first and second pages, each asked
    once, scoped to the tenant as the query API scopes every request; with the median CPU
    milliseconds of each kind.

    Until 2026-12-06 this asked one region and one gene five times: the repeats read what the
    first left in the caches, which a user's next page does not (see time_queries).
    CPU time counts every thread of this process (LanceDB's included) and is what a loaded,
    shared machine distorts least; wall time is what a client waits.
    """
    cpu: dict[str, list[float]] = {"region": [], "sample": []}

    async def query(filters: dict[str, str], offset: int) -> int:
        began_cpu = time.process_time()
        asked = VariantQuery(
            tenant_id=_TENANT,
            region=filters.get("region", ""),
            gene=filters.get("gene", ""),
            sample=filters.get("sample", ""),
            offset=offset,
        )
        _, total = store.query(asked)
        cpu["region" if "region" in filters else "sample"].append(time.process_time() - began_cpu)
        return total

    figures = asyncio.run(time_queries(query, Workload(variants, 1)))
    for label, kind in (("region_1mb", "region"), ("sample_gene", "sample")):
        figures[f"{label}_query_cpu_ms"] = round(statistics.median(cpu[kind]) * 1000, 1)
    return figures


def bench_query(directory: Path, variants: int) -> dict[str, object]:
    began = time.perf_counter()
    store = build_store(directory, variants)
    built = time.perf_counter() - began
    try:
        queries = time_store_queries(store, variants)
        fragments = store.fragments()
    finally:
        store.close()
    return {
        "benchmark": "query",
        "variants": variants,
        "store": str(directory),
        "build_or_open_s": round(built, 1),
        "fragments": fragments,
        **queries,
    }
