"""Routing: which providers see each variant, and the provider workers that call them.

Requests are keyed by provider plus the source partition, so each provider's
work spreads over partitions while a variant's requests to every provider
share one group key; results carry that key, so every provider's answer for
a variant lands on the same `ai-analysis-results` partition and one
aggregator instance correlates them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import NamedTuple

from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from vcf_agent import telemetry, tracing
from vcf_agent.bus import Bus, OutgoingMessage, Record
from vcf_agent.config import Settings
from vcf_agent.control import FieldError, FlagNotFoundError, FlagStore
from vcf_agent.observability import log_context
from vcf_agent.processing import (
    CommitOffsets,
    DeadLetterSink,
    decode_or_dead_letter,
    decode_serialized_or_dead_letter,
    parse_or_dead_letter,
)
from vcf_agent.schema import (
    ENCODING_IDENTITY,
    HEADER_CONTENT_ENCODING,
    HEADER_JOB,
    HEADER_MESSAGE_TYPE,
    PayloadError,
    encode_serialized,
    length_delimited,
    message_type,
    serialized_message,
    split_field,
)
from vcf_agent.v1 import analysis_pb2, events_pb2, variant_pb2
from vcf_agent.v1 import wire_numbers as wire

from ._providers import AnalysisProvider, WholeBatchProvider
from ._spliced_results import splice_results, variant_batch_parts

log = logging.getLogger(__name__)

# A string flag (or a rollout with string values): comma-separated providers, e.g. "local,claude".
ROUTING_FLAG = "ROUTING_PROVIDERS"
HEADER_PROVIDER = "x-provider"
HEADER_GROUP_KEY = "x-group-key"

_BATCH_TYPE = variant_pb2.VariantBatch.DESCRIPTOR.full_name
_REQUEST_BATCH_TYPE = analysis_pb2.AnalysisRequestBatch.DESCRIPTOR.full_name
_RESULT_BATCH_TYPE = analysis_pb2.AnalysisResultBatch.DESCRIPTOR.full_name
# A single request on the requests stream is a provider failure's dead letter, redriven.
_SINGLE_REQUEST_TYPE = analysis_pb2.AnalysisRequest.DESCRIPTOR.full_name
# Tags of the fields spliced by hand.
_TAG_REQUEST_VARIANT_BATCH = wire.ANALYSIS_REQUEST_BATCH_VARIANT_BATCH_TAG
_TAG_VARIANT_GENOTYPES = wire.VARIANT_MESSAGE_GENOTYPES_TAG
_MARKER_TYPE = variant_pb2.JobMarker.DESCRIPTOR.full_name
# Providers get this share of the aggregator's deadline, so their failures still count as answers.
_PROVIDER_SHARE = 0.8

# A failed request and the provider's answer to it, which says why.
Failure = tuple[analysis_pb2.AnalysisRequest, analysis_pb2.AnalysisResult]


class VariantRouter:
    """Consumes `vcf-variants`; fans each batch out to its providers' request queues."""

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        known_providers: frozenset[str],
        *,
        flags: FlagStore | None = None,
    ) -> None:
        self._bus = bus
        self._settings = settings
        self._known = known_providers
        self._flags = flags
        self._sink = DeadLetterSink(bus, settings.topology.dead_letters, "router")

    def providers_for(self, batch: variant_pb2.VariantBatch) -> list[str]:
        """The flag's choice for this tenant/job if ROUTING_PROVIDERS is set, else the job's, else config."""
        wanted = self._flagged(batch) or list(batch.providers) or list(self._settings.providers)
        chosen = [p for p in wanted if p in self._known]
        return chosen or ["local"]

    def _flagged(self, batch: variant_pb2.VariantBatch) -> list[str]:
        if self._flags is None or not batch.variants or self._flags.get(ROUTING_FLAG) is None:
            return []
        first = batch.variants[0]
        context = {"tenant_id": first.tenant_id, "job_id": first.job_id, "file_id": first.file_id}
        try:
            value = self._flags.evaluate(ROUTING_FLAG, first.tenant_id, context).value
        except (FieldError, FlagNotFoundError):
            return []
        if value.WhichOneof("kind") != "string_value":
            return []
        return [p.strip() for p in value.string_value.split(",") if p.strip()]

    async def handle(self, records: list[Record]) -> CommitOffsets | None:
        topology = self._settings.topology
        requests_out: list[OutgoingMessage] = []
        markers_out: list[OutgoingMessage] = []
        for record in records:
            kind = message_type(record.headers)
            if kind == _MARKER_TYPE:
                # Markers pass straight to the results stream; the aggregator forwards them to the writer.
                markers_out.append(OutgoingMessage(record.value, record.key, dict(record.headers)))
                continue
            decoded = await decode_serialized_or_dead_letter(record, variant_pb2.VariantBatch, self._sink)
            if decoded is None:
                continue
            batch, serialized_batch = decoded
            providers = self.providers_for(batch)
            group_key = f"{record.stream}/{record.partition}/{record.offset}"
            deadline = provider_deadline(self._settings.analysis_deadline_s)
            tenant = batch.variants[0].tenant_id if batch.variants else ""
            job = record.headers.get(HEADER_JOB) or (batch.variants[0].job_id if batch.variants else "")
            trace = tracing.stage_headers(
                "router.route", "router", record.headers, variants=len(batch.variants), stream=record.stream
            )
            # The variant batch goes into every provider's request as it arrived: spliced in
            # serialized, not copied into a request message and serialized again.
            variant_batch = length_delimited(_TAG_REQUEST_VARIANT_BATCH, serialized_batch)
            for provider in providers:
                shared = analysis_pb2.AnalysisRequestBatch(
                    provider=provider, requested_providers=providers, deadline=deadline
                )
                payload, headers = encode_serialized(
                    shared.SerializeToString() + variant_batch,
                    _REQUEST_BATCH_TYPE,
                    tenant_id=tenant,
                    trace_headers=trace,
                    compression_threshold=self._settings.compression_threshold,
                )
                headers[HEADER_PROVIDER] = provider
                headers[HEADER_GROUP_KEY] = group_key
                # Whose variants, readable without the payload: the provider workers' log lines
                # and a dead letter of the request name the job (no variant count: a request
                # lost is an answer missing, not a variant lost).
                if job:
                    headers[HEADER_JOB] = job
                key = f"{provider}/{record.partition}".encode()
                requests_out.append(OutgoingMessage(payload, key, headers))
            telemetry.variants_processed.labels("router", "routed").inc(len(batch.variants))
        if requests_out:
            await self._bus.publish(topology.analysis_requests, requests_out)
        if markers_out:
            await self._bus.publish(topology.analysis_results, markers_out)
        return None


class ProviderWorker:
    """One consumer group per provider: call it, publish its results."""

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        provider: AnalysisProvider,
        *,
        known_providers: frozenset[str] | None = None,
    ) -> None:
        """With `known_providers` (given to one worker of a router), requests naming none of them
        are dead-lettered here: no worker would ever read them otherwise."""
        self._bus = bus
        self._settings = settings
        self._provider = provider
        self._known_providers = known_providers
        self._sink = DeadLetterSink(bus, settings.topology.dead_letters, f"router-{provider.name}")

    @property
    def group(self) -> str:
        return f"router-provider-{self._provider.name}"

    async def handle(self, records: list[Record]) -> CommitOffsets | None:
        mine = [r for r in records if r.headers.get(HEADER_PROVIDER) == self._provider.name]
        if self._known_providers is not None:
            for record in records:
                named = record.headers.get(HEADER_PROVIDER, "")
                if named not in self._known_providers:
                    reason = (
                        f"no provider {named!r} is configured" if named else "the request names no provider"
                    )
                    await self._sink.send_record(record, reason, "no_provider")
        # Every record's batch is in flight at once, so a slow provider's concurrency is used fully.
        outcomes = await asyncio.gather(*(self._analyse(record) for record in mine))
        out = [message for message, _ in outcomes if message is not None]
        letters = [letter for _, batch_letters in outcomes for letter in batch_letters]
        if out:
            await self._bus.publish(self._settings.topology.analysis_results, out)
        await self._sink.send(letters)
        return None

    async def _analyse(self, record: Record) -> tuple[OutgoingMessage | None, list[events_pb2.DeadLetter]]:
        provider = self._provider
        batch: analysis_pb2.AnalysisRequestBatch | SplitRequest | None
        if message_type(record.headers) == _SINGLE_REQUEST_TYPE:
            batch = await self._redriven(record)
        elif isinstance(provider, WholeBatchProvider):
            batch = await parse_or_dead_letter(record, _split_request, self._sink)
            if isinstance(batch, SplitRequest):
                return await self._spliced(record, provider, batch)
        else:
            batch = await decode_or_dead_letter(record, analysis_pb2.AnalysisRequestBatch, self._sink)
        if batch is None:
            return None, []
        return await self._answered(record, batch)

    async def _spliced(
        self, record: Record, provider: WholeBatchProvider, split: SplitRequest
    ) -> tuple[OutgoingMessage | None, list[events_pb2.DeadLetter]]:
        """A whole-batch provider's answers to a request batch read from its wire bytes: the
        variants are never parsed into protobuf messages here (the provider reads them from
        bytes), and each result begins with its variant spliced in as it arrived but its INFO."""
        if not split.variants:
            return None, []
        first = split.first_variant
        job = record.headers.get(HEADER_JOB) or first.job_id
        started_ns = time.time_ns()
        with log_context(job_id=job):
            try:
                answers = await provider.serialized_answers(split.request, split.variant_batch)
            except DecodeError as exc:
                # Variants the compiled reader left to protobuf, and protobuf rejected: as corrupt
                # as a payload decode_serialized rejects.
                reason = f"corrupt {_REQUEST_BATCH_TYPE} payload: {exc}"
                log.warning(
                    "dead-lettering %s[%d]@%d: %s", record.stream, record.partition, record.offset, reason
                )
                await self._sink.send_record(record, reason, "corrupt_payload")
                return None, []
        results = splice_results(split.variant_batch, answers)
        return self._result_message(record, results, first.tenant_id, job, started_ns, [])

    async def _answered(
        self, record: Record, batch: analysis_pb2.AnalysisRequestBatch
    ) -> tuple[OutgoingMessage | None, list[events_pb2.DeadLetter]]:
        """A provider's answers to a parsed request batch, each with its request's variant attached."""
        variants = [request.variant for request in batch.requests[:1]] or batch.variant_batch.variants[:1]
        if not variants:
            return None, []
        job = record.headers.get(HEADER_JOB) or variants[0].job_id
        started_ns = time.time_ns()
        with log_context(job_id=job):
            outcome, failures = await answer_batch(self._provider, batch)
        return self._result_message(
            record, outcome.SerializeToString(), variants[0].tenant_id, job, started_ns, failures
        )

    def _result_message(
        self,
        record: Record,
        results: bytes,
        tenant_id: str,
        job: str,
        started_ns: int,
        failures: list[Failure],
    ) -> tuple[OutgoingMessage, list[events_pb2.DeadLetter]]:
        payload, headers = encode_serialized(
            results,
            _RESULT_BATCH_TYPE,
            tenant_id=tenant_id,
            trace_headers=tracing.stage_headers(
                "router.analyse", "router", record.headers, start_ns=started_ns, provider=self._provider.name
            ),
            compression_threshold=self._settings.compression_threshold,
        )
        headers[HEADER_PROVIDER] = self._provider.name
        headers[HEADER_JOB] = job
        key = record.headers.get(HEADER_GROUP_KEY, "").encode() or record.key
        # A failed request is still an answer for the aggregator, and dead-lettered with its reason.
        letters = [
            events_pb2.DeadLetter(
                original_payload=request.SerializeToString(),
                original_headers={
                    **record.headers,
                    HEADER_MESSAGE_TYPE: analysis_pb2.AnalysisRequest.DESCRIPTOR.full_name,
                    HEADER_CONTENT_ENCODING: ENCODING_IDENTITY,
                },
                source_stream=record.stream,
                source_partition=record.partition,
                source_offset=record.offset,
                reason=result.error,
                error_code="provider_failed",
                attempt_count=result.attempt,
                job_id=request.job_id,
                correlation_id=request.correlation_id,
                tenant_id=request.tenant_id,
            )
            for request, result in failures
        ]
        return OutgoingMessage(payload, key, headers), letters

    async def _redriven(self, record: Record) -> analysis_pb2.AnalysisRequestBatch | None:
        """A redriven request as a batch of one: asked afresh (its old deadline has passed) and
        answered for this provider alone, so the aggregator stores it without waiting for
        providers that answered the first time."""
        request = await decode_or_dead_letter(record, analysis_pb2.AnalysisRequest, self._sink)
        if request is None:
            return None
        request.ClearField("deadline")
        del request.requested_providers[:]
        request.requested_providers.append(self._provider.name)
        return analysis_pb2.AnalysisRequestBatch(
            provider=self._provider.name, requested_providers=[self._provider.name], requests=[request]
        )


class SplitRequest(NamedTuple):
    """A request batch for a whole-batch provider, read from its wire bytes: only its small
    fields are parsed."""

    # Every field but the variants (its variant batch holds the providers, priority and
    # annotation context).
    request: analysis_pb2.AnalysisRequestBatch
    # The variant batch as it arrived, variants included, for the provider to read.
    variant_batch: bytes
    # How many variants the batch holds: each answer goes out with its variant spliced in.
    variants: int
    # The first variant without its genotypes: the ids the result's headers need.
    first_variant: variant_pb2.VariantMessage


def _split_request(record: Record) -> SplitRequest | analysis_pb2.AnalysisRequestBatch:
    """A request batch of one variant batch, split; any other shape (requests built one per
    variant) parsed whole, as decode_serialized would. Raises PayloadError on a payload that
    is not a request batch; the variants' own fields are left to the provider's reader, which
    checks them as upb does."""
    serialized = serialized_message(record.value, record.headers, analysis_pb2.AnalysisRequestBatch)
    try:
        variant_batches, rest = split_field(serialized, _TAG_REQUEST_VARIANT_BATCH)
        if len(variant_batches) != 1:
            return analysis_pb2.AnalysisRequestBatch.FromString(serialized)
        first_raw, variants, batch_rest = variant_batch_parts(variant_batches[0])
        request = analysis_pb2.AnalysisRequestBatch.FromString(rest)
        if request.requests:
            return analysis_pb2.AnalysisRequestBatch.FromString(serialized)
        request.variant_batch.MergeFromString(batch_rest)
        first = variant_pb2.VariantMessage()
        if first_raw is not None:
            first.MergeFromString(split_field(first_raw, _TAG_VARIANT_GENOTYPES)[1])
    except (ValueError, DecodeError) as exc:
        raise PayloadError(f"corrupt {_REQUEST_BATCH_TYPE} payload: {exc}") from exc
    return SplitRequest(request, variant_batches[0], variants, first)


def analysis_requests(
    batch: variant_pb2.VariantBatch, provider: str, providers: Sequence[str], deadline: Timestamp
) -> analysis_pb2.AnalysisRequestBatch:
    """One provider's requests for a batch: the variant batch whole, plus what every request
    shares. Building a request per variant cost more than the local annotator's answer."""
    request_batch = analysis_pb2.AnalysisRequestBatch(provider=provider, requested_providers=providers)
    request_batch.deadline.CopyFrom(deadline)
    request_batch.variant_batch.CopyFrom(batch)
    return request_batch


def expanded_requests(
    batch: analysis_pb2.AnalysisRequestBatch,
) -> Sequence[analysis_pb2.AnalysisRequest]:
    """The batch's requests, built in place from its variants if it has none, each given the
    batch-level values, for providers that read them per request (deadlines, priorities,
    requested providers, dead-lettered payloads); shared with ingest's in-process batch path."""
    requests = batch.requests
    if not requests:
        priority = batch.variant_batch.priority
        context = batch.variant_batch.annotation_context
        has_context = batch.variant_batch.HasField("annotation_context")
        add = requests.add
        for variant in batch.variant_batch.variants:
            request = add()
            request.correlation_id = variant.correlation_id
            request.job_id = variant.job_id
            request.tenant_id = variant.tenant_id
            request.variant.CopyFrom(variant)
            if priority:
                request.priority = priority
            if has_context:
                request.annotation_context.CopyFrom(context)
    has_deadline = batch.HasField("deadline")
    for request in requests:
        if not request.provider:
            request.provider = batch.provider
        if not request.requested_providers:
            request.requested_providers.extend(batch.requested_providers)
        if has_deadline and not request.HasField("deadline"):
            request.deadline.CopyFrom(batch.deadline)
    return requests


async def answer_batch(
    provider: AnalysisProvider, batch: analysis_pb2.AnalysisRequestBatch
) -> tuple[analysis_pb2.AnalysisResultBatch, list[Failure]]:
    """A provider's answers with each request's variant attached, so the aggregator can build
    the stored record from the results stream alone, and the failed requests with their results.

    Providers that answer a whole batch at once (the local annotator) attach the variants
    themselves and never fail a single request.
    """
    if isinstance(provider, WholeBatchProvider):
        return await provider.analyse_batch(batch), []
    requests = expanded_requests(batch)
    results = await provider.analyse(requests)
    outcome = analysis_pb2.AnalysisResultBatch()
    add = outcome.results.add
    failures: list[Failure] = []
    for request, result in zip(requests, results, strict=True):
        item = add()
        item.CopyFrom(result)
        item.variant.CopyFrom(request.variant)
        # Results carry the variant without its INFO, as the local worker's (schema.carried_variant).
        item.variant.ClearField("info")
        if result.status == analysis_pb2.AnalysisResult.STATUS_FAILED:
            failures.append((request, result))
    return outcome, failures


def provider_deadline(aggregator_deadline_s: float) -> Timestamp:
    """When providers must give up: early enough that a failure still reaches the aggregator in time."""
    deadline = Timestamp()
    deadline.FromNanoseconds(time.time_ns() + int(aggregator_deadline_s * _PROVIDER_SHARE * 1e9))
    return deadline
