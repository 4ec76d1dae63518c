"""DatabaseWrite protos turned into the column batches both stores load.

Both stores are columnar bulk loaders, so the protos are walked exactly once
per batch into plain Python column lists and handed to pyarrow; nothing
downstream touches a proto again. Every value is derived from the message
content (never the wall clock), so a replayed batch yields identical rows.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow as pa

from vcf_agent.v1 import analysis_pb2, events_pb2, variant_pb2

GENOTYPE_TYPE = pa.struct(
    [
        pa.field("sample", pa.string()),
        pa.field("genotype", pa.string()),
        pa.field("depth", pa.int32()),
        pa.field("genotype_quality", pa.int32()),
        pa.field("allele_depths", pa.list_(pa.int32())),
    ]
)

VARIANT_SCHEMA = pa.schema(
    [
        pa.field("correlation_id", pa.string(), nullable=False),
        pa.field("job_id", pa.string()),
        pa.field("tenant_id", pa.string()),
        pa.field("file_id", pa.string()),
        pa.field("source_name", pa.string()),
        pa.field("record_index", pa.int64()),
        pa.field("chromosome", pa.string()),
        pa.field("position", pa.int64()),
        pa.field("reference", pa.string()),
        pa.field("alternate", pa.string()),
        pa.field("alt_index", pa.int32()),
        pa.field("variant_id", pa.string()),
        # Null for a `.` QUAL, so it is never confused with a real 0.
        pa.field("quality", pa.float64()),
        pa.field("filters", pa.list_(pa.string())),
        pa.field("classification", pa.string()),
        pa.field("priority_tier", pa.string()),
        pa.field("gene", pa.string()),
        pa.field("variant_class", pa.string()),
        pa.field("partial", pa.bool_()),
        pa.field("missing_providers", pa.list_(pa.string())),
        pa.field("genotypes", pa.list_(GENOTYPE_TYPE)),
        # Samples whose genotype holds this ALT allele: what a "sample" filter means.
        pa.field("carriers", pa.list_(pa.string())),
        # Latest provider completion (else the variant's timestamp), not write time,
        # so a replay rewrites the same value.
        pa.field("updated_at", pa.timestamp("us", tz="UTC")),
    ]
)

ANALYSIS_SCHEMA = pa.schema(
    [
        # correlation_id + ':' + provider: one row per provider answer.
        pa.field("analysis_id", pa.string(), nullable=False),
        pa.field("correlation_id", pa.string()),
        pa.field("job_id", pa.string()),
        pa.field("tenant_id", pa.string()),
        pa.field("provider", pa.string()),
        pa.field("model", pa.string()),
        pa.field("status", pa.string()),
        pa.field("classification", pa.string()),
        pa.field("confidence", pa.float64()),
        pa.field("error", pa.string()),
        # The whole AnalysisResult (minus the echoed variant) as protobuf bytes:
        # serialising is ~20x cheaper than JSON on the write path, and JSON is
        # rendered only for the few rows a query returns.
        pa.field("detail", pa.binary()),
    ]
)

# Flat per-call rows for the graph's CARRIES relationships.
CALL_SCHEMA = pa.schema(
    [
        pa.field("correlation_id", pa.string()),
        pa.field("sample_id", pa.string()),
        pa.field("sample", pa.string()),
        pa.field("tenant_id", pa.string()),
        pa.field("genotype", pa.string()),
        pa.field("depth", pa.int32()),
        pa.field("genotype_quality", pa.int32()),
    ]
)

_STATUS_NAMES = {
    value.number: value.name.removeprefix("STATUS_").lower()
    for value in analysis_pb2.AnalysisResult.Status.DESCRIPTOR.values
}


def analysis_id(correlation_id: str, provider: str) -> str:
    """Key of one provider's answer for one variant, shared by both stores."""
    return f"{correlation_id}:{provider}"


def sample_id(tenant_id: str, sample: str) -> str:
    """Samples are scoped by tenant: the same name in two files of one tenant is one sample."""
    return f"{tenant_id}/{sample}"


def genotype_string(alleles: Sequence[int], phased: bool) -> str:
    """The call as VCF writes it (`0/1`, `1|0`, `./.`), `.` when no alleles were given."""
    if not alleles:
        return "."
    separator = "|" if phased else "/"
    return separator.join("." if allele < 0 else str(allele) for allele in alleles)


# A file has few distinct genotypes, and formatting one costs more than a lookup.
_GENOTYPE_STRINGS: dict[tuple[tuple[int, ...], bool], str] = {}


def _cached_genotype(alleles: tuple[int, ...], phased: bool) -> str:
    key = (alleles, phased)
    text = _GENOTYPE_STRINGS.get(key)
    if text is None:
        text = genotype_string(alleles, phased)
        if len(_GENOTYPE_STRINGS) < 4096:
            _GENOTYPE_STRINGS[key] = text
    return text


def _allele_depths(calls: Sequence[variant_pb2.GenotypeCall]) -> pa.ListArray:
    # One flat child array plus offsets, instead of a Python list per call.
    per_call = [call.allele_depths for call in calls]
    offsets = [0]
    for depths in per_call:
        offsets.append(offsets[-1] + len(depths))
    flat = pa.array([depth for depths in per_call for depth in depths], pa.int32())
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), flat)


@dataclass(frozen=True, slots=True)
class WriteRows:
    """One batch of writes as Arrow tables, one row per key (last write wins)."""

    variants: pa.Table
    analyses: pa.Table
    calls: pa.Table

    def __len__(self) -> int:
        return int(self.variants.num_rows)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Building rows allocates ~100 objects per variant, none in a reference cycle.

    Left on, the cyclic collector runs hundreds of times per batch and rescans
    every object the process holds: measured ~25% of build_rows. Nothing built
    here can leak a cycle, so it is paused and then restored as it was.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def build_rows(writes: Sequence[events_pb2.DatabaseWrite]) -> WriteRows:
    """Columns for both stores; duplicate correlation ids in one batch keep the last write.

    Duplicates happen on at-least-once redelivery, and merge_insert rejects a
    source with two rows for one key, so they are collapsed here. Columns are
    built one comprehension each: proto attribute access dominates, and this
    is markedly faster than appending row by row.
    """
    with _collector_paused():
        return _build_rows(writes)


def _build_rows(writes: Sequence[events_pb2.DatabaseWrite]) -> WriteRows:
    unique = list({write.correlation_id: write for write in writes}.values())
    variants = [write.variant for write in unique]
    cids = [write.correlation_id for write in unique]
    tenants = [write.tenant_id for write in unique]

    calls_per_variant = [variant.genotypes for variant in variants]
    calls = [call for variant_calls in calls_per_variant for call in variant_calls]
    call_owner = [i for i, variant_calls in enumerate(calls_per_variant) for _ in variant_calls]
    # Slicing copies a repeated field out in C, cheaper than iterating it from Python.
    alleles = [tuple(call.alleles[:]) for call in calls]
    genotype_text = [
        _cached_genotype(call_alleles, call.phased) for call_alleles, call in zip(alleles, calls, strict=True)
    ]
    call_samples = [call.sample for call in calls]
    call_depth = pa.array([call.depth for call in calls], pa.int32())
    call_gq = pa.array([call.genotype_quality for call in calls], pa.int32())
    offsets = [0]
    for variant_calls in calls_per_variant:
        offsets.append(offsets[-1] + len(variant_calls))
    alt_alleles = [variants[i].alt_index + 1 for i in call_owner]
    carriers: list[list[str]] = [[] for _ in unique]
    for owner, alt, call_alleles, sample in zip(call_owner, alt_alleles, alleles, call_samples, strict=True):
        if alt in call_alleles:
            carriers[owner].append(sample)

    genes = [""] * len(unique)
    classes = [""] * len(unique)
    updated = [v.timestamp.seconds * 1_000_000 + v.timestamp.nanos // 1000 for v in variants]
    analysis: dict[str, list[object]] = {name: [] for name in ANALYSIS_SCHEMA.names}
    for i, write in enumerate(unique):
        # Last answer per provider wins, for the same reason as per variant.
        by_provider = {result.provider: result for result in write.results}
        for provider, result in by_provider.items():
            annotation = result.annotation
            genes[i] = genes[i] or annotation.gene
            classes[i] = classes[i] or annotation.variant_class
            done = result.completed_at
            updated[i] = max(updated[i], done.seconds * 1_000_000 + done.nanos // 1000)
            detail = result
            if result.HasField("variant"):
                detail = analysis_pb2.AnalysisResult()
                detail.CopyFrom(result)
                detail.ClearField("variant")
            analysis["analysis_id"].append(analysis_id(cids[i], provider))
            analysis["correlation_id"].append(cids[i])
            analysis["job_id"].append(write.job_id)
            analysis["tenant_id"].append(tenants[i])
            analysis["provider"].append(provider)
            analysis["model"].append(result.model)
            analysis["status"].append(_STATUS_NAMES.get(result.status, "unspecified"))
            analysis["classification"].append(result.classification)
            analysis["confidence"].append(result.confidence)
            analysis["error"].append(result.error)
            analysis["detail"].append(detail.SerializeToString(deterministic=True))

    genotype_structs = pa.StructArray.from_arrays(
        [
            pa.array(call_samples, pa.string()),
            pa.array(genotype_text, pa.string()),
            call_depth,
            call_gq,
            _allele_depths(calls),
        ],
        fields=list(GENOTYPE_TYPE),
    )
    columns: dict[str, object] = {
        "correlation_id": cids,
        "job_id": [write.job_id for write in unique],
        "tenant_id": tenants,
        "file_id": [v.file_id for v in variants],
        "source_name": [v.source_name for v in variants],
        "record_index": [v.record_index for v in variants],
        "chromosome": [v.chromosome for v in variants],
        "position": [v.position for v in variants],
        "reference": [v.reference for v in variants],
        "alternate": [v.alternate for v in variants],
        "alt_index": [v.alt_index for v in variants],
        "variant_id": [v.id for v in variants],
        "quality": [v.quality if v.has_quality else None for v in variants],
        "filters": [v.filters[:] for v in variants],
        "classification": [write.classification for write in unique],
        "priority_tier": [write.priority_tier for write in unique],
        "gene": genes,
        "variant_class": classes,
        "partial": [write.partial for write in unique],
        "missing_providers": [write.missing_providers[:] for write in unique],
        "genotypes": pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), genotype_structs),
        "carriers": carriers,
        "updated_at": updated,
    }
    call_columns: dict[str, object] = {
        "correlation_id": [cids[i] for i in call_owner],
        "sample_id": [
            sample_id(tenants[i], sample) for i, sample in zip(call_owner, call_samples, strict=True)
        ],
        "sample": call_samples,
        "tenant_id": [tenants[i] for i in call_owner],
        "genotype": genotype_text,
        "depth": call_depth,
        "genotype_quality": call_gq,
    }
    return WriteRows(
        variants=pa.Table.from_pydict(columns, schema=VARIANT_SCHEMA),
        analyses=pa.Table.from_pydict(analysis, schema=ANALYSIS_SCHEMA),
        calls=pa.Table.from_pydict(call_columns, schema=CALL_SCHEMA),
    )
