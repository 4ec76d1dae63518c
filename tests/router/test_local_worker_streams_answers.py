"""The local provider's worker passes each request batch's answers on before analysing the next.

Batches polled together were answered together, so the first batch's answers waited for the
last one's and the aggregator and writer idled meanwhile; on a 10,000-variant job that kept
the writer from storing anything until the router had analysed everything. How many a poll
takes is the provider's to say (`batches_per_poll`), not its class's.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from vcf_agent.analysis import LocalProvider, ProviderWorker, VariantRouter
from vcf_agent.app.benchmarks import synthetic_batch
from vcf_agent.bus import Bus, Record, open_bus
from vcf_agent.config import Settings
from vcf_agent.runner import ensure_topology
from vcf_agent.schema import encode
from vcf_agent.services.router import worker_processor


class AnswersSeenLocal(LocalProvider):
    """The real local annotator, noting how many answer batches were published before each analysis."""

    def __init__(self, bus: Bus, results_stream: str) -> None:
        super().__init__()
        self._bus = bus
        self._results = results_stream
        self.published_before: list[int] = []

    async def _note(self) -> None:
        self.published_before.append(sum((await self._bus.end_offsets(self._results)).values()))

    # Every way the worker may ask the annotator, whatever the request's shape.
    async def analyse(self, *args: Any, **kwargs: Any) -> Any:
        await self._note()
        return await super().analyse(*args, **kwargs)

    async def analyse_batch(self, *args: Any, **kwargs: Any) -> Any:
        await self._note()
        return await super().analyse_batch(*args, **kwargs)

    async def serialized_answers(self, *args: Any, **kwargs: Any) -> Any:
        await self._note()
        return await super().serialized_answers(*args, **kwargs)


class AnswersSeenDelegate:
    """Not a LocalProvider: a provider answering on this interpreter through the local annotator
    (as a plug-in annotator would), asking for one batch per poll as it should."""

    name = "local"
    batches_per_poll = 1

    def __init__(self, bus: Bus, results_stream: str) -> None:
        self._seen = AnswersSeenLocal(bus, results_stream)

    @property
    def published_before(self) -> list[int]:
        return self._seen.published_before

    async def analyse(self, *args: Any, **kwargs: Any) -> Any:
        return await self._seen.analyse(*args, **kwargs)

    async def analyse_batch(self, *args: Any, **kwargs: Any) -> Any:
        return await self._seen.analyse_batch(*args, **kwargs)

    async def serialized_answers(self, *args: Any, **kwargs: Any) -> Any:
        return await self._seen.serialized_answers(*args, **kwargs)


@pytest.mark.parametrize("provider_type", [AnswersSeenLocal, AnswersSeenDelegate])
async def test_each_request_batch_is_answered_and_published_before_the_next_is_analysed(
    tmp_path: Path, provider_type: type[AnswersSeenLocal | AnswersSeenDelegate]
) -> None:
    settings = Settings(data_dir=tmp_path, bus_url=f"embedded://{tmp_path / 'bus'}")
    topology = settings.topology
    async with open_bus(settings.bus_url) as bus:
        await ensure_topology(bus, settings)
        # Two variant batches routed to the local provider: two request records, both waiting
        # before the worker starts, so one poll could take them together.
        router = VariantRouter(bus, settings, frozenset({"local"}))
        variants = []
        for index in range(2):
            payload, headers = encode(synthetic_batch(index * 100, 100))
            variants.append(Record(topology.variants, 0, index, payload, b"chr1", headers, 0))
        await router.handle(variants)
        assert sum((await bus.end_offsets(topology.analysis_requests)).values()) == 2

        provider = provider_type(bus, topology.analysis_results)
        processor = worker_processor(bus, settings, provider, ProviderWorker(bus, settings, provider))
        await processor.start()
        try:
            deadline = time.monotonic() + 60  # a hang guard, not a measurement
            while sum((await bus.end_offsets(topology.analysis_results)).values()) < 2:
                assert time.monotonic() < deadline, "the worker did not answer both batches"
                await asyncio.sleep(0.01)
        finally:
            await processor.stop()
        # The second batch was analysed only once the first one's answers were on the stream.
        assert provider.published_before == [0, 1]
