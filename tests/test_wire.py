"""split_field: a stage parses the small fields of a message and passes a bulky one on as bytes."""

from __future__ import annotations

import random

import pytest
from google.protobuf.message import DecodeError, Message

from vcf_agent.schema import (
    GenotypeCall,
    genotype_columns,
    split_field,
    split_variant_first,
    variant_first_result,
    variant_first_results,
    varint,
)
from vcf_agent.v1 import analysis_pb2, variant_pb2
from vcf_agent.v1 import wire_numbers as wire


def _variant(rng: random.Random, index: int) -> variant_pb2.VariantMessage:
    variant = variant_pb2.VariantMessage(
        correlation_id=f"c{index}",
        job_id="job",
        tenant_id="lab-ü",
        chromosome=rng.choice(("chr1", "chrX")),
        position=rng.randrange(1, 1 << 40),
        reference="A",
        alternate=rng.choice(("C", "<DEL>", "AT" * 40)),
        alt_index=rng.randrange(3),
        has_quality=rng.random() < 0.5,
        quality=rng.random() * 100,
        filters=rng.sample(("PASS", "q10", "LowQual"), rng.randrange(3)),
    )
    variant.info["AF"].floats.values.extend([rng.random()])
    variant.info["DB"].flag = True
    calls = [
        GenotypeCall(
            f"S{sample}",
            (rng.randrange(-1, 3), rng.randrange(3)),
            depth=rng.randrange(-1, 300),
            genotype_quality=rng.randrange(-1, 99),
            allele_depths=tuple(rng.randrange(50) for _ in range(rng.randrange(4))),
        )
        for sample in range(rng.randrange(4))
    ]
    if calls:
        variant.genotypes.CopyFrom(genotype_columns(calls))
    # A field after the genotypes (Timestamp, 19): what follows the split field stays in place.
    variant.timestamp.FromNanoseconds(rng.randrange(1 << 62))
    variant.source_name = "in.vcf"
    return variant


def _bytes(message: Message) -> bytes:
    # A map's entries (INFO) serialize in the order of its hash table, which can differ between
    # two copies of one message (CI saw it on most seeds in one process): sorted keys compare.
    return message.SerializeToString(deterministic=True)


@pytest.mark.parametrize("seed", range(20))
def test_the_values_and_the_other_fields_are_what_protobuf_serializes(seed: int) -> None:
    rng = random.Random(seed)
    variants = [_variant(rng, i) for i in range(rng.randrange(5))]
    batch = variant_pb2.VariantBatch(variants=variants, providers=["local", "claude"], priority=seed)
    batch.annotation_context.csq_fields.append("Allele")
    request = analysis_pb2.AnalysisRequestBatch(provider="local", requested_providers=["local"])
    request.deadline.FromNanoseconds(12345)
    request.variant_batch.CopyFrom(batch)
    serialized = _bytes(request)

    (variant_batch,), rest = split_field(serialized, wire.ANALYSIS_REQUEST_BATCH_VARIANT_BATCH_TAG)
    assert variant_batch == _bytes(batch)
    without = analysis_pb2.AnalysisRequestBatch()
    without.CopyFrom(request)
    without.ClearField("variant_batch")
    assert rest == _bytes(without)

    raw_variants, batch_rest = split_field(variant_batch, wire.VARIANT_BATCH_VARIANTS_TAG)
    assert raw_variants == [_bytes(v) for v in variants]
    assert variant_pb2.VariantBatch.FromString(batch_rest) == variant_pb2.VariantBatch(
        providers=batch.providers, priority=batch.priority, annotation_context=batch.annotation_context
    )
    # A two-byte tag (field 21), between fields before and after it.
    for variant, raw in zip(variants, raw_variants, strict=True):
        calls, others = split_field(raw, wire.VARIANT_MESSAGE_GENOTYPES_TAG)
        assert calls == ([_bytes(variant.genotypes)] if variant.HasField("genotypes") else [])
        bare = variant_pb2.VariantMessage()
        bare.CopyFrom(variant)
        bare.ClearField("genotypes")
        assert others == _bytes(bare)


def test_a_message_without_the_field_comes_back_unchanged() -> None:
    variant = _variant(random.Random(1), 0)
    variant.ClearField("genotypes")
    data = variant.SerializeToString()
    assert split_field(data, wire.VARIANT_MESSAGE_GENOTYPES_TAG) == ([], data)
    assert split_field(b"", wire.VARIANT_MESSAGE_GENOTYPES_TAG) == ([], b"")


def test_every_occurrence_is_a_value_in_order() -> None:
    first = variant_pb2.VariantBatch(providers=["a"]).SerializeToString()
    second = variant_pb2.VariantBatch(priority=3).SerializeToString()
    tag = wire.ANALYSIS_REQUEST_BATCH_VARIANT_BATCH_TAG
    data = (
        tag
        + bytes([len(first)])
        + first
        + analysis_pb2.AnalysisRequestBatch(provider="p").SerializeToString()
        + tag
        + bytes([len(second)])
        + second
    )
    values, rest = split_field(data, tag)
    assert values == [first, second]
    assert analysis_pb2.AnalysisRequestBatch.FromString(rest) == analysis_pb2.AnalysisRequestBatch(
        provider="p"
    )


_GOOD = variant_pb2.VariantMessage(correlation_id="c", position=7).SerializeToString()
MALFORMED = {
    "truncated length": b"\x0a\x7f" + _GOOD,
    "value cut short": _GOOD[:-1],
    "truncated varint": _GOOD + b"\x40\xff",
    "truncated fixed64": _GOOD + b"\x79\x00\x00",
    "truncated fixed32": _GOOD + b"\x7d\x00",
    "wire type 7": _GOOD + b"\x0f",
    "group wire type": _GOOD + b"\xa3\x06",
    "field number 0": b"\x00\x00" + _GOOD,
    # A byte flip in a variant's position tag (0x40 -> 0xc8) made a 5-byte tag of its value.
    "tag over 32 bits": _GOOD + b"\xc8\x98\xae\xa3\x14\x01",
    "tag over 5 bytes": _GOOD + b"\xc0\x80\x80\x80\x80\x00\x01",
    "varint over 10 bytes": _GOOD + b"\x40" + b"\x81" * 10 + b"\x00",
    "length over 5 bytes": _GOOD + b"\x92\x01\x81\x80\x80\x80\x80\x00" + b"x",
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_framing_upb_rejects_raises_value_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        variant_pb2.VariantMessage.FromString(data)
    with pytest.raises(ValueError):
        split_field(data, wire.VARIANT_MESSAGE_GENOTYPES_TAG)


@pytest.mark.parametrize("tag", [wire.VARIANT_MESSAGE_POSITION_TAG, b"\x92\x01\x00", b"\x92"])
def test_only_a_length_delimited_fields_tag_is_taken(tag: bytes) -> None:
    with pytest.raises(ValueError):
        split_field(_GOOD, tag)


def test_variant_first_results_are_every_result_of_a_spliced_batch_only() -> None:
    rng = random.Random(3)
    variants = [_variant(rng, i) for i in range(3)]
    answers = [
        analysis_pb2.AnalysisResult(correlation_id=v.correlation_id, rationale="r" * i)
        for i, v in enumerate(variants)
    ]
    spliced = b"".join(
        variant_first_result(_bytes(v), _bytes(a)) for v, a in zip(variants, answers, strict=True)
    )
    entries = variant_first_results(spliced)
    assert len(entries) == 3
    for entry, variant, answer in zip(entries, variants, answers, strict=True):
        whole = analysis_pb2.AnalysisResult()
        whole.CopyFrom(answer)
        whole.variant.CopyFrom(variant)
        assert analysis_pb2.AnalysisResult.FromString(entry) == whole
        variant_field, rest = split_variant_first(entry)
        raw = _bytes(variant)
        assert variant_field == varint(len(raw)) + raw
        assert rest == _bytes(answer)
    # A batch parsed and serialized again (answer first), or holding another field: not spliced.
    plain = analysis_pb2.AnalysisResultBatch.FromString(spliced).SerializeToString()
    assert variant_first_results(plain) == []
    assert variant_first_results(spliced + b"\x10\x01") == []
    with pytest.raises(ValueError):
        variant_first_results(spliced[:-1])
    with pytest.raises(ValueError):
        split_variant_first(entries[0][: -len(answers[0].SerializeToString()) - 1])
