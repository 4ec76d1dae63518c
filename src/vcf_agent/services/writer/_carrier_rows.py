"""The genotype table of carriers: one row per sample whose call holds a variant's ALT allele.

A cohort's variants table keeps every call in its `genotypes` list (hom-ref and no-calls
included, so every genotype reads back), but a query by sample over list columns reads
every list. This table holds a row per carrier call (VCFv4.1 section 1.4.2: the GT's allele
indices include this record's ALT, `alt_index + 1`), keyed by variant and sample, with the
variant's query columns copied beside it, so a query by sample with a gene, a region, a
job or a classification is answered from this table's own scalar indexes; the page's
variants are then fetched by key. Built from the row builder's Arrow columns, so both
row builders stay as they are: a call is a carrier exactly when the builder named its
sample among the variant's carriers (the graph's CARRIED_BY edges use the same rule).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

# Copied from the variant row: the filters a query may combine with a sample, and its order.
VARIANT_COLUMNS = (
    "correlation_id",
    "job_id",
    "tenant_id",
    "file_id",
    "record_index",
    "alt_index",
    "chromosome",
    "position",
    "gene",
    "classification",
)

CARRIER_SCHEMA = pa.schema(
    [
        # A row is one carrier call: its variant (correlation_id) and its sample.
        pa.field("correlation_id", pa.string()),
        pa.field("job_id", pa.string()),
        pa.field("tenant_id", pa.string()),
        pa.field("file_id", pa.string()),
        pa.field("record_index", pa.int64()),
        pa.field("alt_index", pa.int32()),
        pa.field("chromosome", pa.string()),
        pa.field("position", pa.int64()),
        pa.field("gene", pa.string()),
        pa.field("classification", pa.string()),
        pa.field("sample", pa.string()),
        # The GT as VCF text (`1|0`, `1/1/1`, `0/.`) and whether it is phased (`|`).
        pa.field("genotype", pa.string()),
        pa.field("phased", pa.bool_()),
        pa.field("depth", pa.int32()),
        pa.field("genotype_quality", pa.int32()),
        pa.field("allele_depths", pa.list_(pa.int32())),
    ]
)


def carrier_rows(variants: pa.Table, carrier: pa.Array | pa.ChunkedArray | None = None) -> pa.Table:
    """The carrier calls of a batch of variant rows (VARIANT_SCHEMA), in the variants' order.

    `carrier` is the row builders' per-call mask (WriteRows.calls); without it (rows read back
    from a store written before this table existed) a call is kept when its sample is in its
    variant's carriers list, matched on (variant, sample) keys, which measured ~240 ns of CPU
    per call on a 2,504-sample batch against a filter by the mask.
    """
    genotypes = variants.column("genotypes").combine_chunks()
    variant_of_call = pc.list_parent_indices(genotypes)
    calls = pc.list_flatten(genotypes)
    samples = pc.struct_field(calls, "sample")
    keep = _listed_carriers(variants, variant_of_call, samples) if carrier is None else carrier
    of_carrier = pc.filter(variant_of_call, keep)
    copied = {name: pc.take(variants.column(name), of_carrier) for name in VARIANT_COLUMNS}
    sample = pc.filter(samples, keep)
    genotype = pc.filter(pc.struct_field(calls, "genotype"), keep)
    columns = {
        **copied,
        "sample": sample,
        "genotype": genotype,
        "phased": pc.match_substring(genotype, "|"),
        "depth": pc.filter(pc.struct_field(calls, "depth"), keep),
        "genotype_quality": pc.filter(pc.struct_field(calls, "genotype_quality"), keep),
        "allele_depths": pc.filter(pc.struct_field(calls, "allele_depths"), keep),
    }
    return pa.Table.from_arrays([columns[name] for name in CARRIER_SCHEMA.names], schema=CARRIER_SCHEMA)


def _listed_carriers(variants: pa.Table, variant_of_call: pa.Array, samples: pa.Array) -> pa.Array:
    """Which calls' samples their variant's carriers list names."""
    carriers = variants.column("carriers").combine_chunks()
    listed = pc.binary_join_element_wise(
        pc.cast(pc.list_parent_indices(carriers), pa.string()), pc.list_flatten(carriers), "\x1f"
    )
    keys = pc.binary_join_element_wise(pc.cast(variant_of_call, pa.string()), samples, "\x1f")
    return pc.is_in(keys, value_set=listed)
