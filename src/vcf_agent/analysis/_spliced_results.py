"""Result batches written variant first: the router's local worker splices each variant in
before its answer (the variant's bytes as they arrived but its INFO, schema.carried_variant,
never parsed and serialized again), and the aggregator splits them back (parsing only the
answers).

Each step is compiled (`_local_wire`, with the worker's other wire code) when built, else its
pure-Python twin here; both give the same for the same bytes
(tests/aggregator/test_spliced_results.py). The twins cost 0.5 to 1.5 us per variant each, more
than protobuf parsing the answers; the compiled steps a few tenths of a microsecond.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from vcf_agent.compiled import compiled_module
from vcf_agent.schema import (
    SplicedResult,
    carried_variant,
    length_delimited,
    split_field,
    split_variant_first,
    variant_first_result,
    variant_first_results,
)
from vcf_agent.v1 import wire_numbers as wire

_TAG_RESULTS = wire.ANALYSIS_RESULT_BATCH_RESULTS_TAG
_TAG_BATCH_VARIANTS = wire.VARIANT_BATCH_VARIANTS_TAG


def variant_batch_parts_py(variant_batch: bytes) -> tuple[bytes | None, int, bytes]:
    """(the first variant's bytes or None, how many variants, every other field as it came) of a
    serialized VariantBatch. Raises ValueError on framing upb would reject."""
    variants, rest = split_field(variant_batch, _TAG_BATCH_VARIANTS)
    return (variants[0] if variants else None), len(variants), rest


def splice_results_py(variant_batch: bytes, answers: Sequence[bytes]) -> bytes:
    """The serialized AnalysisResultBatch of `answers` (serialized AnalysisResults without their
    variant, one per variant of the serialized VariantBatch, in order), each with its variant's
    bytes but INFO (schema.carried_variant) spliced in first (schema.variant_first_result). Raises
    ValueError on framing upb would reject or another count of answers."""
    variants, _ = split_field(variant_batch, _TAG_BATCH_VARIANTS)
    pairs = zip(variants, answers, strict=True)
    return b"".join(variant_first_result(carried_variant(variant), answer) for variant, answer in pairs)


def split_results_py(batch: bytes) -> tuple[list[SplicedResult], bytes] | None:
    """Every result of a batch written by schema.variant_first_result, split by
    schema.split_variant_first into its variant field and answer, and the answers alone as a
    serialized AnalysisResultBatch (for protobuf to parse without the variants); None for any
    other batch. Raises ValueError on framing upb would reject."""
    try:
        entries = variant_first_results(batch)
        if not entries:
            return None
        spliced = [split_variant_first(entry) for entry in entries]
    except IndexError:
        raise ValueError("truncated field") from None
    return spliced, b"".join(length_delimited(_TAG_RESULTS, answer) for _, answer in spliced)


_COMPILED = compiled_module("vcf_agent.analysis._local_wire")
variant_batch_parts: Callable[[bytes], tuple[bytes | None, int, bytes]] = (
    variant_batch_parts_py if _COMPILED is None else _COMPILED.variant_batch_parts
)
splice_results: Callable[[bytes, Sequence[bytes]], bytes] = (
    splice_results_py if _COMPILED is None else _COMPILED.splice_results
)
split_results: Callable[[bytes], tuple[list[SplicedResult], bytes] | None] = (
    split_results_py if _COMPILED is None else _COMPILED.split_results
)
