"""The pure-Python row builder the writer used before its C extension: the tests' oracle.

Copied from services/writer/_rows.py as it was before RowCollector, kept deliberately
simple (no caches, no gc pausing) so a difference from the compiled path is a bug there.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from vcf_agent.schema import GenotypeCall, genotype_calls
from vcf_agent.services.writer._rows import (
    ANALYSIS_SCHEMA,
    CALL_SCHEMA,
    VARIANT_SCHEMA,
    WriteRows,
)
from vcf_agent.v1 import analysis_pb2, events_pb2

GENOTYPE_TYPE = VARIANT_SCHEMA.field("genotypes").type.value_type


def analysis_id(correlation_id: str, provider: str) -> str:
    """Key of one provider's answer for one variant, shared by both stores (built in C as cid:provider)."""
    return f"{correlation_id}:{provider}"


STATUS_NAMES = {
    value.number: value.name.removeprefix("STATUS_").lower()
    for value in analysis_pb2.AnalysisResult.Status.DESCRIPTOR.values
}


def genotype_string(alleles: Sequence[int], phased: bool) -> str:
    """The call as VCF writes it (`0/1`, `1|0`, `./.`), `.` when no alleles were given."""
    if not alleles:
        return "."
    separator = "|" if phased else "/"
    return separator.join("." if allele < 0 else str(allele) for allele in alleles)


def _allele_depths(calls: Sequence[GenotypeCall]) -> pa.ListArray:
    per_call = [call.allele_depths for call in calls]
    offsets = [0]
    for depths in per_call:
        offsets.append(offsets[-1] + len(depths))
    flat = pa.array([depth for depths in per_call for depth in depths], pa.int32())
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), flat)


def reference_rows(writes: Sequence[events_pb2.DatabaseWrite]) -> WriteRows:
    """Rows as the pure-Python writer built them; duplicate correlation ids keep the last write."""
    unique = list({write.correlation_id: write for write in writes}.values())
    variants = [write.variant for write in unique]
    cids = [write.correlation_id for write in unique]
    tenants = [write.tenant_id for write in unique]

    calls_per_variant = [genotype_calls(variant.genotypes) for variant in variants]
    calls = [call for variant_calls in calls_per_variant for call in variant_calls]
    call_owner = [i for i, variant_calls in enumerate(calls_per_variant) for _ in variant_calls]
    alleles = [call.alleles for call in calls]
    genotype_text = [
        genotype_string(call_alleles, call.phased) for call_alleles, call in zip(alleles, calls, strict=True)
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
            analysis["status"].append(STATUS_NAMES.get(result.status, "unspecified"))
            analysis["classification"].append(result.classification)
            analysis["confidence"].append(result.confidence)
            analysis["error"].append(result.error)
            analysis["detail"].append(detail.SerializeToString(deterministic=True))
            # The answer's variant's place in its file.
            analysis["file_id"].append(variants[i].file_id)
            analysis["record_index"].append(variants[i].record_index)

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
        "sample": call_samples,
        "genotype": genotype_text,
        "depth": call_depth,
        "genotype_quality": call_gq,
        # VCFv4.1 section 1.4.2: the call's allele indices include this record's ALT (alt_index + 1).
        "carrier": [alt in a for alt, a in zip(alt_alleles, alleles, strict=True)],
    }
    return WriteRows(
        variants=pa.Table.from_pydict(columns, schema=VARIANT_SCHEMA),
        analyses=pa.Table.from_pydict(analysis, schema=ANALYSIS_SCHEMA),
        calls=pa.Table.from_pydict(call_columns, schema=CALL_SCHEMA),
    )
