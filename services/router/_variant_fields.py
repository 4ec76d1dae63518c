"""What the local annotator reads of a VariantMessage, as plain values read once through protobuf.

Plain tuples and dicts, not the message: the annotator looks at INFO values many times per
variant, and each protobuf attribute read builds a new Python object.
"""

from __future__ import annotations

from typing import NamedTuple

from vcf_agent.v1 import variant_pb2

# An INFO value's list; its items share one type. () for a flag or an empty value.
InfoValues = tuple[str, ...] | tuple[int, ...] | tuple[float, ...]
# (sample, alleles, depth, genotype_quality, allele_depths)
Genotype = tuple[str, tuple[int, ...], int, int, tuple[int, ...]]


class VariantFields(NamedTuple):
    correlation_id: str
    job_id: str
    tenant_id: str
    chromosome: str
    position: int
    reference: str
    alternate: str
    alt_index: int
    all_alternates: tuple[str, ...]
    has_quality: bool
    quality: float
    filters: tuple[str, ...]
    info: dict[str, InfoValues]
    genotypes: tuple[Genotype, ...]


def variant_fields(variant: variant_pb2.VariantMessage) -> VariantFields:
    """The plain values of one variant message."""
    return VariantFields(
        variant.correlation_id,
        variant.job_id,
        variant.tenant_id,
        variant.chromosome,
        variant.position,
        variant.reference,
        variant.alternate,
        variant.alt_index,
        tuple(variant.all_alternates),
        variant.has_quality,
        variant.quality,
        tuple(variant.filters),
        {key: _info_values(value) for key, value in variant.info.items()},
        tuple(
            (c.sample, tuple(c.alleles), c.depth, c.genotype_quality, tuple(c.allele_depths))
            for c in variant.genotypes
        ),
    )


def _info_values(value: variant_pb2.InfoValue) -> InfoValues:
    # One of the lists at most is set (a oneof); a flag has none.
    return tuple(value.strings.values) or tuple(value.ints.values) or tuple(value.floats.values)
