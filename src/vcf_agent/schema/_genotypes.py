"""Per-sample calls over the column-wise `GenotypeColumns` (variant.proto), for Python code and tests.

The hot paths (ingest's record encoder, the writer's row builder, the router's wire reader) write
and read the columns' wire bytes themselves; this is the one Python reading of the layout, so no
caller re-implements it (which column is empty when, how the concatenated arrays split).
`genotype_columns` writes exactly what ingest's encoders write for the same calls.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from google.protobuf.internal.containers import RepeatedScalarFieldContainer
from google.protobuf.message import DecodeError

from vcf_agent.v1 import variant_pb2


class GenotypeColumnsError(DecodeError, ValueError):
    """Columns that disagree (not one entry per sample, alleles not per ploidy): as corrupt as a
    payload protobuf rejects, so the stages that dead-letter a DecodeError dead-letter these too."""


class GenotypeCall(NamedTuple):
    """One sample's call at one record (VCFv4.x section 1.6.2)."""

    sample: str
    # GT allele indices (0 = REF); -1 for a missing allele (`.`); empty: no GT.
    alleles: tuple[int, ...] = ()
    # `|` rather than `/`.
    phased: bool = False
    # DP; -1 when absent or missing.
    depth: int = -1
    # GQ; -1 when absent or missing.
    genotype_quality: int = -1
    # AD in REF, ALT1, ALT2... order (-1 for `.`); empty when absent.
    allele_depths: tuple[int, ...] = ()


def genotype_calls(columns: variant_pb2.GenotypeColumns) -> list[GenotypeCall]:
    """Each sample's call, in the header's sample order; raises GenotypeColumnsError (a DecodeError
    and a ValueError) when the columns disagree."""
    samples = columns.samples
    n = len(samples)
    ploidy = columns.ploidy
    depth = columns.depth
    quality = columns.genotype_quality
    counts = columns.allele_depth_counts
    phased = columns.phased
    per_sample = (
        ("ploidy", ploidy),
        ("depth", depth),
        ("genotype_quality", quality),
        ("allele_depth_counts", counts),
    )
    for name, column in per_sample:
        if len(column) not in (0, n):
            raise GenotypeColumnsError(f"GenotypeColumns.{name} has {len(column)} entries for {n} samples")
    if phased and len(phased) != (n + 7) // 8:
        raise GenotypeColumnsError(f"GenotypeColumns.phased has {len(phased)} bytes for {n} samples")
    alleles = columns.alleles
    allele_depths = columns.allele_depths
    if sum(ploidy) != len(alleles):
        raise GenotypeColumnsError("GenotypeColumns.alleles does not hold the sum of ploidy")
    if sum(counts) != len(allele_depths):
        raise GenotypeColumnsError(
            "GenotypeColumns.allele_depths does not hold the sum of allele_depth_counts"
        )
    calls = []
    at = ad_at = 0
    for i, sample in enumerate(samples):
        size = ploidy[i] if ploidy else 0
        ad_size = counts[i] if counts else 0
        calls.append(
            GenotypeCall(
                sample,
                tuple(alleles[at : at + size]),
                bool(phased and phased[i >> 3] >> (i & 7) & 1),
                depth[i] if depth else -1,
                quality[i] if quality else -1,
                tuple(allele_depths[ad_at : ad_at + ad_size]),
            )
        )
        at += size
        ad_at += ad_size
    return calls


def genotype_columns(calls: Iterable[GenotypeCall]) -> variant_pb2.GenotypeColumns:
    """The columns of these calls, as ingest writes them: an all-missing or all-absent column is empty."""
    calls = list(calls)
    columns = variant_pb2.GenotypeColumns()
    columns.samples.extend(call.sample for call in calls)
    columns.ploidy.extend(len(call.alleles) for call in calls)
    for call in calls:
        columns.alleles.extend(call.alleles)
    bits = sum(1 << i for i, call in enumerate(calls) if call.phased)
    if bits:
        columns.phased = bits.to_bytes((len(calls) + 7) // 8, "little")
    _extend_unless_all(columns.depth, [call.depth for call in calls], -1)
    _extend_unless_all(columns.genotype_quality, [call.genotype_quality for call in calls], -1)
    _extend_unless_all(columns.allele_depth_counts, [len(call.allele_depths) for call in calls], 0)
    for call in calls:
        columns.allele_depths.extend(call.allele_depths)
    return columns


def _extend_unless_all(column: RepeatedScalarFieldContainer[int], values: list[int], default: int) -> None:
    if any(value != default for value in values):
        column.extend(values)
