"""The shapes of AnalysisRequestBatch: the router's whole-batch form and the per-request form.

Both must give every provider the same requests and the local annotator the same answers,
so batch-level values (provider, requested providers, deadline, priority) are checked to
reach each request and each result.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf.message import DecodeError

from vcf_agent.analysis import analysis_requests, expanded_requests, provider_deadline
from vcf_agent.analysis._providers import LocalProvider
from vcf_agent.analysis._routing import HEADER_PROVIDER, ProviderWorker, VariantRouter, answer_batch
from vcf_agent.app.benchmarks import synthetic_batch
from vcf_agent.bus import Record, open_bus
from vcf_agent.config import Settings
from vcf_agent.runner import ensure_topology
from vcf_agent.schema import (
    decode,
    decode_serialized,
    encode,
    encode_serialized,
    length_delimited,
    split_field,
)
from vcf_agent.v1 import analysis_pb2, events_pb2, variant_pb2
from vcf_agent.v1 import wire_numbers as wire

from ._local_worker import published_answers


def _request_batch(priority: int = 0) -> analysis_pb2.AnalysisRequestBatch:
    batch = synthetic_batch(0, 5)
    batch.priority = priority
    return analysis_requests(batch, "local", ["local", "claude"], provider_deadline(10))


def test_router_sends_the_variant_batch_whole_with_shared_values_once() -> None:
    request_batch = _request_batch()
    assert len(request_batch.requests) == 0
    assert len(request_batch.variant_batch.variants) == 5
    assert request_batch.provider == "local"
    assert list(request_batch.requested_providers) == ["local", "claude"]
    assert request_batch.HasField("deadline")


def test_expanded_requests_carry_ids_variant_and_batch_values() -> None:
    request_batch = _request_batch(priority=7)
    variants = list(request_batch.variant_batch.variants)
    requests = expanded_requests(request_batch)
    assert len(requests) == 5
    for request, variant in zip(requests, variants, strict=True):
        assert request.correlation_id == variant.correlation_id
        assert (request.job_id, request.tenant_id) == (variant.job_id, variant.tenant_id)
        assert request.variant == variant
        assert request.provider == "local"
        assert list(request.requested_providers) == ["local", "claude"]
        assert request.deadline == request_batch.deadline
        assert request.priority == 7


def test_a_requests_own_values_win_over_the_batch() -> None:
    request_batch = analysis_pb2.AnalysisRequestBatch(provider="local", requested_providers=["local"])
    request_batch.deadline.seconds = 100
    own = request_batch.requests.add(provider="claude", requested_providers=["claude", "local"])
    own.deadline.seconds = 50
    (request,) = expanded_requests(request_batch)
    assert request.provider == "claude"
    assert list(request.requested_providers) == ["claude", "local"]
    assert request.deadline.seconds == 50


async def test_local_answers_are_the_same_for_both_forms() -> None:
    whole = _request_batch()
    per_request = analysis_pb2.AnalysisRequestBatch()
    per_request.requests.extend(expanded_requests(_request_batch()))
    provider = LocalProvider()
    (from_whole, whole_failed), (from_requests, requests_failed) = [
        await answer_batch(provider, batch) for batch in (whole, per_request)
    ]
    assert whole_failed == requests_failed == []
    assert len(from_whole.results) == len(from_requests.results) == 5
    for a, b, variant in zip(
        from_whole.results, from_requests.results, whole.variant_batch.variants, strict=True
    ):
        assert a.correlation_id == variant.correlation_id
        # The variant comes back but its INFO, which only providers read (schema.carried_variant).
        carried = variant_pb2.VariantMessage()
        carried.CopyFrom(variant)
        carried.ClearField("info")
        assert variant.info and not a.variant.info
        assert a.variant == carried
        assert list(a.requested_providers) == ["local", "claude"]
        a.ClearField("latency_ms")
        b.ClearField("latency_ms")
        assert a == b


async def test_the_router_publishes_each_provider_the_variant_batch_as_it_arrived(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, bus_url="memory://request-splice")
    bus = open_bus(settings.bus_url)
    await bus.start()
    try:
        await ensure_topology(bus, settings)
        batch = synthetic_batch(0, 5)
        batch.priority = 3
        batch.providers[:] = ["local", "claude"]
        payload, headers = encode(batch, compression_threshold=1 << 30)
        record = Record(settings.topology.variants, 0, 0, payload, b"k", headers, 0)
        router = VariantRouter(bus, settings, frozenset({"local", "claude"}))
        await router.handle([record])
        async with bus.consumer([settings.topology.analysis_requests], "probe") as consumer:
            records = await consumer.poll(10, 2.0)
    finally:
        await bus.stop()

    request_type = analysis_pb2.AnalysisRequestBatch
    requests = {r.headers[HEADER_PROVIDER]: decode(r.value, r.headers, request_type) for r in records}
    assert sorted(requests) == ["claude", "local"]
    for provider, request_batch in requests.items():
        expected = analysis_requests(batch, provider, ["local", "claude"], request_batch.deadline)
        assert request_batch == expected
        assert request_batch.HasField("deadline")


async def test_the_local_worker_sends_the_same_answers_with_variants_spliced_first(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, bus_url="memory://result-splice")
    request_batch = _request_batch(priority=2)
    published = await published_answers(settings, request_batch)

    serialized = decode_serialized(published.value, published.headers, analysis_pb2.AnalysisResultBatch)[1]
    results, _ = split_field(serialized, wire.ANALYSIS_RESULT_BATCH_RESULTS_TAG)
    assert all(raw.startswith(wire.ANALYSIS_RESULT_VARIANT_TAG) for raw in results)
    sent = analysis_pb2.AnalysisResultBatch.FromString(serialized)
    expected, _ = await answer_batch(LocalProvider(), _request_batch(priority=2))
    for answer in (*sent.results, *expected.results):
        answer.ClearField("latency_ms")
    assert sent == expected


# Variants a worker reading the request from its wire bytes must still refuse: framing broken
# inside the variant batch, and a string upb rejects deep inside one variant (the compiled reader
# leaves that to protobuf, which raises).
_CORRUPT_VARIANT_BATCHES = {
    "a variant cut short": length_delimited(wire.VARIANT_BATCH_VARIANTS_TAG, b"\x0a\x05ab"),
    "invalid UTF-8 in a sample": length_delimited(
        wire.VARIANT_BATCH_VARIANTS_TAG,
        variant_pb2.VariantMessage(job_id="j").SerializeToString()
        + length_delimited(wire.VARIANT_MESSAGE_GENOTYPES_TAG, b"\x0a\x01\x80"),
    ),
}


@pytest.mark.parametrize(
    "variant_batch", _CORRUPT_VARIANT_BATCHES.values(), ids=_CORRUPT_VARIANT_BATCHES.keys()
)
async def test_the_local_worker_dead_letters_a_request_whose_variants_are_corrupt(
    variant_batch: bytes, tmp_path: Path
) -> None:
    """A guard for the worker's wire path (it passes on the parsed path too): nothing answered."""
    settings = Settings(data_dir=tmp_path, bus_url="memory://corrupt-variants")
    shared = analysis_pb2.AnalysisRequestBatch(provider="local", requested_providers=["local"])
    raw = shared.SerializeToString() + length_delimited(
        wire.ANALYSIS_REQUEST_BATCH_VARIANT_BATCH_TAG, variant_batch
    )
    with pytest.raises(DecodeError):
        analysis_pb2.AnalysisRequestBatch.FromString(raw)
    payload, headers = encode_serialized(raw, analysis_pb2.AnalysisRequestBatch.DESCRIPTOR.full_name)
    headers[HEADER_PROVIDER] = "local"
    bus = open_bus(settings.bus_url)
    await bus.start()
    try:
        await ensure_topology(bus, settings)
        record = Record(settings.topology.analysis_requests, 0, 3, payload, b"local/0", headers, 0)
        await ProviderWorker(bus, settings, LocalProvider()).handle([record])
        topology = settings.topology
        async with bus.consumer([topology.analysis_results, topology.dead_letters], "probe") as consumer:
            published = await consumer.poll(10, 1.0)
    finally:
        await bus.stop()
    [letter_record] = published
    assert letter_record.stream == topology.dead_letters
    letter = decode(letter_record.value, letter_record.headers, events_pb2.DeadLetter)
    assert (letter.error_code, letter.source_offset, letter.original_payload) == (
        "corrupt_payload",
        3,
        payload,
    )
