"""The DatabaseWrites the writer tests store: every field derived from a record index unless given."""

from __future__ import annotations

from collections.abc import Sequence

from vcf_agent.schema import GenotypeCall, correlation_id, genotype_columns
from vcf_agent.v1 import analysis_pb2, events_pb2

FILE_A = "a" * 64
FILE_B = "b" * 64
SAMPLES = ("NA00001", "NA00002", "NA00003")
CLASSES = ("benign", "likely_benign", "uncertain_significance", "likely_pathogenic", "pathogenic")

Call = tuple[str, Sequence[int], bool]


def make_write(
    record_index: int,
    *,
    file_id: str = FILE_A,
    job_id: str = "job-1",
    tenant_id: str = "tenant-1",
    chromosome: str | None = None,
    position: int | None = None,
    alt_index: int = 0,
    alternates: Sequence[str] = ("G",),
    calls: Sequence[Call] | None = None,
    gene: str | None = None,
    classification: str | None = None,
    providers: Sequence[str] = ("local",),
) -> events_pb2.DatabaseWrite:
    """One stored variant; every unspecified field is derived from record_index."""
    cid = correlation_id(tenant_id, file_id, record_index, alt_index)
    klass = classification if classification is not None else CLASSES[record_index % len(CLASSES)]
    write = events_pb2.DatabaseWrite(
        correlation_id=cid,
        job_id=job_id,
        tenant_id=tenant_id,
        classification=klass,
        priority_tier=f"P{record_index % 4 + 1}",
    )
    variant = write.variant
    variant.correlation_id = cid
    variant.job_id = job_id
    variant.file_id = file_id
    variant.tenant_id = tenant_id
    variant.record_index = record_index
    variant.chromosome = chromosome if chromosome is not None else f"chr{record_index % 3 + 1}"
    variant.position = position if position is not None else 1000 + 10 * record_index
    variant.reference = "A"
    variant.alternate = alternates[alt_index]
    variant.alt_index = alt_index
    variant.all_alternates.extend(alternates)
    variant.has_quality = True
    variant.quality = 30.0 + record_index
    variant.filters.append("PASS")
    variant.source_name = f"{file_id[:4]}.vcf"
    variant.timestamp.seconds = 1_700_000_000
    if calls is None:
        calls = [(sample, (0, (record_index + j) % 2), False) for j, sample in enumerate(SAMPLES)]
    if calls:
        variant.genotypes.CopyFrom(
            genotype_columns(
                GenotypeCall(sample, tuple(alleles), phased, 20 + len(sample), 60, (10, 10))
                for sample, alleles, phased in calls
            )
        )
    for provider in providers:
        result = write.results.add(
            correlation_id=cid,
            job_id=job_id,
            tenant_id=tenant_id,
            provider=provider,
            model=f"{provider}-model",
            status=analysis_pb2.AnalysisResult.STATUS_OK,
            classification=klass,
            confidence=0.5,
            rationale="derived in the test",
        )
        result.annotation.gene = gene if gene is not None else f"GENE{record_index % 5}"
        result.annotation.variant_class = "snv"
        result.completed_at.seconds = 1_700_000_100 + record_index
        result.variant.CopyFrom(variant)
    return write


def make_batch(indices: Sequence[int], **kwargs: object) -> list[events_pb2.DatabaseWrite]:
    return [make_write(i, **kwargs) for i in indices]  # type: ignore[arg-type]
