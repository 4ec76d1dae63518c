"""Wire codec and deterministic ids."""

from __future__ import annotations

import hashlib
import threading

import pytest

from vcf_agent.schema import (
    ENCODING_IDENTITY,
    ENCODING_ZSTD,
    HEADER_CONTENT_ENCODING,
    PayloadError,
    correlation_id,
    decode,
    encode,
    genotype_calls,
    length_delimited,
    serialized_message,
    varint,
)
from vcf_agent.v1 import variant_pb2


def _batch(n: int) -> variant_pb2.VariantBatch:
    batch = variant_pb2.VariantBatch()
    for i in range(n):
        batch.variants.add(
            correlation_id=correlation_id("lab-a", "f", i, 0), chromosome="chr1", position=i + 1
        )
    return batch


def test_small_messages_stay_plain_and_large_ones_are_zstd() -> None:
    small, small_headers = encode(_batch(1))
    large, large_headers = encode(_batch(2000))
    assert small_headers[HEADER_CONTENT_ENCODING] == ENCODING_IDENTITY
    assert large_headers[HEADER_CONTENT_ENCODING] == ENCODING_ZSTD
    assert len(large) < len(_batch(2000).SerializeToString())
    assert decode(large, large_headers, variant_pb2.VariantBatch) == _batch(2000)
    assert decode(small, small_headers, variant_pb2.VariantBatch) == _batch(1)


def test_corrupt_and_mistyped_payloads_raise_payload_error() -> None:
    payload, headers = encode(_batch(2000))
    with pytest.raises(PayloadError, match="zstd"):
        decode(payload[:50], headers, variant_pb2.VariantBatch)
    with pytest.raises(PayloadError, match="JobMarker"):
        decode(payload, headers, variant_pb2.JobMarker)
    with pytest.raises(PayloadError, match="schema version"):
        decode(payload, {**headers, "schema-version": "9"}, variant_pb2.VariantBatch)


def test_a_version_1_payload_is_refused_not_read_as_a_variant_without_genotypes() -> None:
    # Schema version 1 carried each call as a GenotypeCall submessage, VariantMessage field 18:
    # sample (1), alleles (2, packed int32), depth (4). This build would parse field 18 as an
    # unknown field, a variant with no calls, so the version header must stop it.
    call = (
        length_delimited(b"\x0a", b"S1")
        + length_delimited(b"\x12", varint(0) + varint(1))
        + b"\x20"
        + varint(30)
    )
    variant = length_delimited(b"\x3a", b"chr1") + length_delimited(b"\x92\x01", call)
    payload = length_delimited(b"\x0a", variant)
    old = {"schema-version": "1", "message-type": "vcf_agent.v1.VariantBatch", "content-encoding": "identity"}
    parsed = variant_pb2.VariantBatch.FromString(payload)
    assert parsed.variants[0].chromosome == "chr1" and genotype_calls(parsed.variants[0].genotypes) == []
    for read in (
        lambda: decode(payload, old, variant_pb2.VariantBatch),
        lambda: serialized_message(payload, old, variant_pb2.VariantBatch),
    ):
        with pytest.raises(PayloadError, match=r"schema version '1' \(this build reads 2 only.*column-wise"):
            read()


def test_correlation_ids_are_deterministic_and_distinct() -> None:
    assert correlation_id("lab-a", "abc", 1, 0) == correlation_id("lab-a", "abc", 1, 0)
    ids = {correlation_id("lab-a", "abc", record, alt) for record in range(100) for alt in range(3)}
    assert len(ids) == 300
    assert correlation_id("lab-a", "abc", 1, 0) != correlation_id("lab-a", "abd", 1, 0)


def test_correlation_ids_are_scoped_by_tenant() -> None:
    """The same file content of two tenants: no id in common, so neither store row overwrites the other."""
    first = {correlation_id("lab-a", "abc", record, 0) for record in range(100)}
    second = {correlation_id("lab-b", "abc", record, 0) for record in range(100)}
    assert not first & second
    # The tenant and file are kept apart: moving characters between them changes the id.
    assert correlation_id("lab-a", "bc", 1, 0) != correlation_id("lab-ab", "c", 1, 0)
    # The documented derivation, so the compiled encoder and other readers can recompute it.
    assert (
        correlation_id("lab-a", "abc", 7, 2) == hashlib.blake2b(b"lab-a\0abc:7:2", digest_size=16).hexdigest()
    )


def test_encoding_from_many_threads_at_once() -> None:
    """zstd contexts are per thread: concurrent use once crashed the process."""
    batch = _batch(3000)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(30):
                payload, headers = encode(batch)
                assert decode(payload, headers, variant_pb2.VariantBatch) == batch
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors


def test_every_message_carries_the_headers_the_schema_names() -> None:
    _, headers = encode(_batch(1), tenant_id="lab-a")
    assert headers["schema-version"] == "2"
    assert headers["message-type"] == "vcf_agent.v1.VariantBatch"
    assert headers["tenant-id"] == "lab-a"
    # With tracing off (no OTLP endpoint) nothing is spent on trace context.
    assert "traceparent" not in headers
    given = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    _, child = encode(_batch(1), trace_headers=given)
    assert child["traceparent"] == given["traceparent"], "a given trace context is kept as it is"
