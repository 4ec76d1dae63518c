"""Analysis providers as the router runs them: one async batch call per request batch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from vcf_agent import telemetry
from vcf_agent.schema import carried_variant, variant_first_result
from vcf_agent.v1 import analysis_pb2, variant_pb2
from vcf_agent.v1 import wire_numbers as wire

from ._annotation_fields import context_of, info_strings
from ._answer_encoding import double_field, element
from ._gene_index import GeneIndex
from ._local_annotator import LocalAnnotator
from ._variant_fields import VariantFields, read_variants, variant_fields

_TAG_LATENCY_MS = wire.ANALYSIS_RESULT_LATENCY_MS_TAG
_TAG_REQUESTED_PROVIDERS = wire.ANALYSIS_RESULT_REQUESTED_PROVIDERS_TAG


class AnalysisProvider(Protocol):
    name: str
    # Request batches its worker takes per poll, answered together. A provider waiting on the
    # network answers several side by side; one computing on this interpreter (its threads take
    # turns) would finish them all with the last while the stages downstream idle, so it takes
    # one, whose answers go on to be aggregated and stored while the next is analysed.
    batches_per_poll: int

    async def analyse(
        self, requests: Sequence[analysis_pb2.AnalysisRequest]
    ) -> list[analysis_pb2.AnalysisResult]:
        """One result per request, in order, without the variant (the worker attaches it).

        Failures are results with STATUS_FAILED.
        """
        ...


@runtime_checkable
class WholeBatchProvider(AnalysisProvider, Protocol):
    """A provider that answers a whole request batch at once and never fails a single request
    (the local annotator); the router's workers use these calls instead of `analyse`."""

    async def analyse_batch(
        self, requests: analysis_pb2.AnalysisRequestBatch
    ) -> analysis_pb2.AnalysisResultBatch:
        """The answers as one batch, each with its variant attached."""
        ...

    async def serialized_answers(
        self, requests: analysis_pb2.AnalysisRequestBatch, variant_batch: bytes
    ) -> list[bytes]:
        """Each variant's serialized AnalysisResult without the variant, for the variants of
        `variant_batch`, a serialized VariantBatch; `requests` holds the request batch's other
        fields (its variant batch's variants are not read). Raises DecodeError when
        `variant_batch` is not one."""
        ...


class LocalProvider:
    """The built-in, offline annotator; CPU-bound, so batches run in a worker thread."""

    name = "local"
    batches_per_poll = 1

    def __init__(self, genes_file: Path | None = None, *, bs1_af: float = 0.01, pm2_af: float = 0.0) -> None:
        self.gene_index = GeneIndex.from_file(genes_file) if genes_file is not None else None
        self._annotator = LocalAnnotator(gene_index=self.gene_index, bs1_af=bs1_af, pm2_af=pm2_af)

    @property
    def annotator(self) -> LocalAnnotator:
        return self._annotator

    async def analyse(
        self, requests: Sequence[analysis_pb2.AnalysisRequest]
    ) -> list[analysis_pb2.AnalysisResult]:
        started = time.perf_counter()
        results = await asyncio.to_thread(self._analyse, requests)
        telemetry.provider_requests.labels(self.name, "ok").inc(len(results))
        telemetry.provider_latency.labels(self.name).observe(time.perf_counter() - started)
        return results

    async def analyse_batch(
        self, requests: analysis_pb2.AnalysisRequestBatch
    ) -> analysis_pb2.AnalysisResultBatch:
        """The answers as one batch with each variant attached. The annotator never fails a request."""
        started = time.perf_counter()
        batch = await asyncio.to_thread(self._analyse_batch, requests)
        telemetry.provider_requests.labels(self.name, "ok").inc(len(batch.results))
        telemetry.provider_latency.labels(self.name).observe(time.perf_counter() - started)
        return batch

    async def serialized_answers(
        self, requests: analysis_pb2.AnalysisRequestBatch, variant_batch: bytes
    ) -> list[bytes]:
        """Each variant's serialized AnalysisResult, without the variant (the router splices it in
        as it arrived, but its INFO), for the variants of the serialized `variant_batch`: the compiled reader
        reads them when it is built, protobuf otherwise (raising DecodeError on a corrupt one).
        The rest of the request batch comes in `requests`, whose variant batch may hold no variants."""
        started = time.perf_counter()
        answers = await asyncio.to_thread(self._answers, requests, variant_batch)
        telemetry.provider_requests.labels(self.name, "ok").inc(len(answers))
        telemetry.provider_latency.labels(self.name).observe(time.perf_counter() - started)
        return answers

    def _analyse_batch(self, requests: analysis_pb2.AnalysisRequestBatch) -> analysis_pb2.AnalysisResultBatch:
        messages = _variant_messages(requests)
        answers = self._answers(requests, None)
        return analysis_pb2.AnalysisResultBatch.FromString(
            b"".join(
                variant_first_result(carried_variant(message.SerializeToString()), answer)
                for message, answer in zip(messages, answers, strict=True)
            )
        )

    def _answers(
        self, requests: analysis_pb2.AnalysisRequestBatch, variant_batch: bytes | None
    ) -> list[bytes]:
        # Encoded once: every result of a batch built from a variant batch lists the same providers.
        uniform = b"".join(element(_TAG_REQUESTED_PROVIDERS, p) for p in requests.requested_providers)
        # Requests built one per variant may list their own requested providers.
        own = [
            b"".join(element(_TAG_REQUESTED_PROVIDERS, p) for p in request.requested_providers)
            for request in requests.requests
        ]
        if requests.requests:
            variants = [variant_fields(request.variant) for request in requests.requests]
            contexts = [context_of(request.annotation_context) for request in requests.requests]
        else:
            if variant_batch is None:
                variants = [variant_fields(m) for m in requests.variant_batch.variants]
            else:
                # None when the reader leaves the payload to protobuf (see _local_wire.c), or is not built.
                read = read_variants(variant_batch)
                if read is None:
                    read = [
                        variant_fields(m) for m in variant_pb2.VariantBatch.FromString(variant_batch).variants
                    ]
                variants = read
            contexts = [context_of(requests.variant_batch.annotation_context)] * len(variants)
        # The batch's list wins; a batch that has none and no requests of its own lists none.
        listed = [uniform] * len(variants) if uniform or not own else own
        linked = compound_targets(variants)
        answer = self._annotator.answer
        clock = time.perf_counter
        answers = []
        for variant, context, providers in zip(variants, contexts, listed, strict=True):
            started = clock()
            encoded = answer(variant, context, linked.get(variant.chromosome))
            latency = double_field(_TAG_LATENCY_MS, (clock() - started) * 1000)
            # Fields 14 and 15 follow the answer's 1..11, so the bytes stay in field-number order.
            answers.append(b"".join((encoded, latency, providers)))
        return answers

    def _analyse(self, requests: Sequence[analysis_pb2.AnalysisRequest]) -> list[analysis_pb2.AnalysisResult]:
        results = []
        annotate = self._annotator.annotate
        for request in requests:
            started = time.perf_counter()
            result = annotate(request.variant, context_of(request.annotation_context))
            result.job_id = request.job_id
            result.tenant_id = request.tenant_id
            result.attempt = request.attempt
            result.requested_providers.extend(request.requested_providers)
            result.latency_ms = (time.perf_counter() - started) * 1000
            results.append(result)
        return results


def compound_targets(variants: Sequence[VariantFields]) -> dict[str, dict[int, VariantFields]]:
    """The records of a batch that a bcftools csq compound link ('@POS') can point at, by
    chromosome and position; empty when no record of the batch has such a link.

    bcftools csq annotates a compound change (several variants of one haplotype changing one
    codon or reading frame) once, at one of its records, and marks the others '@POS'. The
    linked record is another record of the same file, near this one; ingest keeps records in
    file order and batches hold consecutive records, so the link is followed within the batch.
    A link to a record in another batch is reported as a link (the rationale names the
    position) rather than guessed.
    """
    annotated = [v for v in variants if "BCSQ" in v.info]
    if not any(entry.startswith("@") for v in annotated for entry in info_strings(v.info["BCSQ"])):
        return {}
    targets: dict[str, dict[int, VariantFields]] = {}
    for variant in annotated:
        targets.setdefault(variant.chromosome, {}).setdefault(variant.position, variant)
    return targets


def _variant_messages(
    requests: analysis_pb2.AnalysisRequestBatch,
) -> Sequence[variant_pb2.VariantMessage]:
    """The variants a batch asks about: one per request, or its variant batch's when it has none."""
    return [request.variant for request in requests.requests] or requests.variant_batch.variants
