"""Running one request batch through a real local-provider worker on a bus, for the router tests."""

from __future__ import annotations

from vcf_agent.analysis._providers import LocalProvider
from vcf_agent.analysis._routing import HEADER_PROVIDER, ProviderWorker
from vcf_agent.bus import Record, open_bus
from vcf_agent.config import Settings
from vcf_agent.runner import ensure_topology
from vcf_agent.schema import encode
from vcf_agent.v1 import analysis_pb2


async def published_answers(settings: Settings, request: analysis_pb2.AnalysisRequestBatch) -> Record:
    """The one record the worker publishes to ai-analysis-results for `request`."""
    bus = open_bus(settings.bus_url)
    await bus.start()
    try:
        await ensure_topology(bus, settings)
        payload, headers = encode(request)
        headers[HEADER_PROVIDER] = "local"
        record = Record(settings.topology.analysis_requests, 0, 0, payload, b"local/0", headers, 0)
        await ProviderWorker(bus, settings, LocalProvider()).handle([record])
        async with bus.consumer([settings.topology.analysis_results], "probe") as consumer:
            (published,) = await consumer.poll(10, 2.0)
    finally:
        await bus.stop()
    return published
