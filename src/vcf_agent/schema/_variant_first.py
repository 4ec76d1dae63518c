"""AnalysisResultBatch bytes whose results each begin with their variant, spliced in as it arrived
(but its INFO).

The router's local worker writes results this way, so the variant is never copied into a
result message and serialized again; the aggregator slices variant and answer back out of
the wire bytes without parsing either. Any other result batch is read the ordinary way.

Results and the writes made of them carry a variant without its INFO map (carried_variant):
only the providers read INFO, and the writer stores none of it, so on the two streams after the
router it would be bytes carried for nothing (most of a VEP-annotated variant's).
"""

from __future__ import annotations

from vcf_agent.schema._wire import read_varint, split_field, varint
from vcf_agent.v1 import wire_numbers as wire

_TAG_RESULTS = wire.ANALYSIS_RESULT_BATCH_RESULTS_TAG
_TAG_RESULT_VARIANT = wire.ANALYSIS_RESULT_VARIANT_TAG
_TAG_VARIANT_INFO = wire.VARIANT_MESSAGE_INFO_TAG

# A result as it arrived, split by split_variant_first: (its variant field with the length prefix,
# the answer). The result is the variant's tag followed by both.
SplicedResult = tuple[bytes, bytes]


def carried_variant(variant: bytes) -> bytes:
    """A serialized VariantMessage as results and writes carry it: every field but INFO, in the
    order it came. Raises ValueError on framing upb would reject."""
    return split_field(variant, _TAG_VARIANT_INFO)[1]


def variant_first_result(variant: bytes, answer: bytes) -> bytes:
    """One `results` entry of a batch: the serialized variant field first, then the answer."""
    size = varint(len(variant))
    length = len(_TAG_RESULT_VARIANT) + len(size) + len(variant) + len(answer)
    return b"".join((_TAG_RESULTS, varint(length), _TAG_RESULT_VARIANT, size, variant, answer))


def variant_first_results(batch: bytes) -> list[bytes]:
    """Every serialized result of a batch written by variant_first_result, else [] (a batch
    written otherwise, or holding fields other than its results). Raises ValueError on framing
    upb would reject."""
    if not batch.startswith(_TAG_RESULTS):
        return []
    try:
        _, start = read_varint(batch, len(_TAG_RESULTS))
    except IndexError:
        raise ValueError("truncated field") from None
    if not batch.startswith(_TAG_RESULT_VARIANT, start):
        return []
    found, rest = split_field(batch, _TAG_RESULTS)
    if rest or not all(result.startswith(_TAG_RESULT_VARIANT) for result in found):
        return []
    return found


def split_variant_first(result: bytes) -> tuple[bytes, bytes]:
    """(serialized variant with its length prefix, the rest of the result) of one entry of
    variant_first_results: a message embedding the variant under another tag needs only its tag."""
    size, start = read_varint(result, len(_TAG_RESULT_VARIANT))
    end = start + size
    if end > len(result):
        raise ValueError("the variant runs past the end of its result")
    return result[len(_TAG_RESULT_VARIANT) : end], result[end:]
