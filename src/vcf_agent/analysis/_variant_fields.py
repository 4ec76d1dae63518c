"""What the local annotator reads of a VariantMessage, as plain values: the compiled reader's
(_local_wire.read_variants, a struct sequence with these fields) when it is built, or the same
values read through protobuf here, for single requests, for the payloads the compiled reader
leaves to upb, and for every payload when the extension is absent (VCF_AGENT_NO_EXTENSIONS=1).

The compiled reader's genotypes are a GenotypeCalls, a sequence equal to the tuple given here,
whose calls become Python values only when used: the annotator's sample findings read them
from the wire bytes, so a cohort's hom-ref calls never do."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, cast

from vcf_agent.compiled import compiled_module
from vcf_agent.schema import genotype_calls
from vcf_agent.v1 import variant_pb2

__all__ = ["Genotype", "InfoValues", "VariantFields", "read_variants", "variant_fields"]

# An INFO value's list; its items share one type. () for a flag or an empty value.
InfoValues = tuple[str, ...] | tuple[int, ...] | tuple[float, ...]
# (sample, alleles, depth, genotype_quality, allele_depths)
Genotype = tuple[str, tuple[int, ...], int, int, tuple[int, ...]]


class VariantFields(NamedTuple):
    """The VariantMessage fields the annotator reads, with proto3's defaults for unset ones."""

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
    genotypes: Sequence[Genotype]


def variant_fields(variant: variant_pb2.VariantMessage) -> VariantFields:
    """The annotator's view of one variant."""
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
            (c.sample, c.alleles, c.depth, c.genotype_quality, c.allele_depths)
            for c in genotype_calls(variant.genotypes)
        ),
    )


def _leave_to_protobuf(batch: bytes) -> list[VariantFields] | None:
    """The pure-Python twin of the compiled reader: None, every payload is read through protobuf."""
    return None


_COMPILED = compiled_module("vcf_agent.analysis._local_wire")
# VariantFields of each variant of a serialized VariantBatch; None to read it with variant_fields.
read_variants = cast(
    "Callable[[bytes], list[VariantFields] | None]",
    _leave_to_protobuf if _COMPILED is None else _COMPILED.read_variants,
)


def _info_values(value: variant_pb2.InfoValue) -> InfoValues:
    # One of the lists at most is set (a oneof); a flag has none.
    return tuple(value.strings.values) or tuple(value.ints.values) or tuple(value.floats.values)
