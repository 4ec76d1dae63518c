"""The batch path: a job's stages run inside the ingest process, without the broker between them.

Streaming sends a job through four streams and three services: ingest
publishes `vcf-variants`, the router fans out to `ai-analysis-requests`,
provider workers answer on `ai-analysis-results`, the aggregator correlates
and publishes `database-writes`, the writer stores. The batch path calls the
same stage code in-process instead: the router's provider choice and request
building, the same providers (local annotator and LLM pools), the
aggregator's write building, and hands each completed DatabaseWriteBatch
straight to `database-writes`, with the job's STARTED and FINISHED markers
around them.

It stops at `database-writes` because the writer is the only process that
may open the graph store; going through the writer also keeps completion
accounting, progress notifications and idempotent upserts exactly as in
streaming, which is why both paths store identical results. In `vcf-agent
run` the writer consumes that stream in the same process, so one code path
serves every deployment.

Every provider answers every request (a failure is an answer), so a
variant is never partial here; partial results in streaming come from
answers that miss the aggregator's deadline, which the in-process call
cannot do.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from vcf_agent import telemetry
from vcf_agent.analysis import (
    ProviderSet,
    VariantRouter,
    analysis_requests,
    build_write,
    expanded_requests,
    provider_deadline,
)
from vcf_agent.bus import Bus, OutgoingMessage
from vcf_agent.config import Settings
from vcf_agent.lifecycle import AsyncComponent
from vcf_agent.schema import HEADER_JOB, HEADER_VARIANT_COUNT, encode
from vcf_agent.v1 import events_pb2, variant_pb2

_PROGRESS_INTERVAL_S = 0.25

ProgressCallback = Callable[[int, Counter[str]], Awaitable[None]]


@dataclass(slots=True)
class BatchOutcome:
    """What the batch path analysed and handed to the writer for one job."""

    analysed: int = 0
    classifications: Counter[str] = field(default_factory=Counter)


class BatchPath(AsyncComponent):
    """Route, analyse and aggregate in-process; publish only `database-writes`."""

    def __init__(self, bus: Bus, settings: Settings, providers: ProviderSet) -> None:
        self._bus = bus
        self._settings = settings
        self._found = providers
        self._providers = {p.name: p for p in providers.providers}
        self._router = VariantRouter(bus, settings, frozenset(self._providers))

    async def start(self) -> None:
        if self._found.pool is not None:
            await self._found.pool.start()

    async def stop(self) -> None:
        if self._found.pool is not None:
            await self._found.pool.stop()

    async def send_markers(self, markers: Sequence[variant_pb2.JobMarker]) -> None:
        """Markers travel with the writes, keyed by job, so the writer sees them in order."""
        if markers:
            await self._publish(events_pb2.DatabaseWriteBatch(markers=markers), markers[0].job_id)

    async def run(
        self,
        batches: AsyncIterator[variant_pb2.VariantBatch],
        on_progress: ProgressCallback,
    ) -> BatchOutcome:
        """Analyse every batch (up to max_pending_batches at once) and publish its writes.

        Returns once every write is on `database-writes`; the first failure cancels the rest.
        """
        outcome = BatchOutcome()
        slots = asyncio.Semaphore(self._settings.max_pending_batches)
        last_note = 0.0

        async def one(batch: variant_pb2.VariantBatch) -> None:
            nonlocal last_note
            try:
                writes = await self._analyse(batch)
                if writes.writes:
                    await self._publish(writes, writes.writes[0].job_id)
            finally:
                slots.release()
            outcome.analysed += len(writes.writes)
            outcome.classifications.update(w.classification for w in writes.writes)
            telemetry.variants_processed.labels("ingest", "aggregated").inc(len(writes.writes))
            if time.monotonic() - last_note >= _PROGRESS_INTERVAL_S:
                last_note = time.monotonic()
                await on_progress(outcome.analysed, outcome.classifications)

        try:
            async with asyncio.TaskGroup() as group:
                async for batch in batches:
                    await slots.acquire()
                    group.create_task(one(batch))
        except BaseExceptionGroup as errors:
            # One stage failed; report it, not the group that carried it.
            raise errors.exceptions[0] from None
        await on_progress(outcome.analysed, outcome.classifications)
        return outcome

    async def _analyse(self, batch: variant_pb2.VariantBatch) -> events_pb2.DatabaseWriteBatch:
        """The router's choice and requests, every provider at once, the aggregator's writes."""
        names = self._router.providers_for(batch)
        deadline = provider_deadline(self._settings.analysis_deadline_s)
        answers = await asyncio.gather(
            *(
                self._providers[name].analyse(
                    expanded_requests(analysis_requests(batch, name, names, deadline))
                )
                for name in names
            )
        )
        telemetry.variants_processed.labels("ingest", "routed").inc(len(batch.variants))
        requested = frozenset(names)
        out = events_pb2.DatabaseWriteBatch()
        for index, variant in enumerate(batch.variants):
            # Ordered by provider, as the aggregator orders a variant's answers.
            results = sorted((answer[index] for answer in answers), key=lambda r: r.provider)
            write = build_write(variant.correlation_id, results, requested, partial=False)
            # Providers answer without the variant; streaming's worker attaches it, here it is at hand.
            write.variant.CopyFrom(variant)
            # As streaming's writes carry it (schema.carried_variant): INFO was the provider's.
            write.variant.ClearField("info")
            out.writes.append(write)
        return out

    async def _publish(self, batch: events_pb2.DatabaseWriteBatch, job_id: str) -> None:
        tenant = batch.writes[0].tenant_id if batch.writes else batch.markers[0].tenant_id
        payload, headers = encode(
            batch, tenant_id=tenant, compression_threshold=self._settings.compression_threshold
        )
        # As the aggregator's writes: whose and how many, for the writer's dead letters and logs.
        headers[HEADER_JOB] = job_id
        if batch.writes:
            headers[HEADER_VARIANT_COUNT] = str(len(batch.writes))
        await self._bus.publish(
            self._settings.topology.database_writes, [OutgoingMessage(payload, job_id.encode(), headers)]
        )
