"""The aggregator's split of result batches the router's local worker wrote variant first.

The compiled split (`_local_wire.split_results`, with the worker's other wire code) when built,
else its pure-Python twin here; both give the same for the same bytes
(tests/aggregator/test_spliced_results.py). The twin cost ~1.5 us per result, more than protobuf
parsing the answers it splits out; the compiled split about a tenth of that.
"""

from __future__ import annotations

from collections.abc import Callable

from vcf_agent.compiled import compiled_module
from vcf_agent.schema import SplicedResult, length_delimited, split_variant_first, variant_first_results
from vcf_agent.v1 import wire_numbers as wire

_TAG_RESULTS = wire.ANALYSIS_RESULT_BATCH_RESULTS_TAG


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
split_results: Callable[[bytes], tuple[list[SplicedResult], bytes] | None] = (
    split_results_py if _COMPILED is None else _COMPILED.split_results
)
