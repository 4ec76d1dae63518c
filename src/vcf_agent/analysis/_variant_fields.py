"""What the local annotator reads of a VariantMessage, as plain values: the compiled reader's
VariantFields (_local_wire.read_variants), or the same values read through protobuf here, for
single requests and for the payloads the compiled reader leaves to upb."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vcf_agent.v1 import variant_pb2

from ._local_wire import VariantFields

if TYPE_CHECKING:
    # A type alias of the stub only.
    from ._local_wire import InfoValues

__all__ = ["InfoValues", "VariantFields", "variant_fields"]


def variant_fields(variant: variant_pb2.VariantMessage) -> VariantFields:
    """What the compiled reader returns for a variant, read through protobuf."""
    return VariantFields(
        (
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
    )


def _info_values(value: variant_pb2.InfoValue) -> InfoValues:
    # One of the lists at most is set (a oneof); a flag has none.
    return tuple(value.strings.values) or tuple(value.ints.values) or tuple(value.floats.values)
