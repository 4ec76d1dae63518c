"""`vcf-agent bench providers`: router throughput with the local annotator, then with a slow LLM.

Both runs go through the real router components on an in-memory bus: the
variant router fans batches out, provider workers answer, results are
published. The LLM run points an `openai` provider at a simulated OpenAI
endpoint (vcf_agent.localdev, the one the router tests use) that answers every
chat completion after 200 ms, so the ideal rate is concurrency / latency and
the figure shows how close the router gets.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from vcf_agent.analysis import ProviderSettings, RouterSettings, Secret
from vcf_agent.bus import Bus, OutgoingMessage, open_bus
from vcf_agent.config import Settings
from vcf_agent.lifecycle import ComponentStack
from vcf_agent.localdev import SIMULATED_API_KEY, SimulatedVendor, answering
from vcf_agent.runner import ensure_topology
from vcf_agent.schema import encode

LLM_LATENCY_S = 0.2
LLM_CONCURRENCY = 64
# At the ideal 320/s this is a run of about ten seconds.
LLM_VARIANTS_MAX = 3200
_BATCH = 1000


async def bench_providers(variants: int) -> dict[str, object]:
    """Variants per second through the router: local annotator alone, then with a 200 ms LLM."""
    local_rate = await _through_router(variants, ("local",), RouterSettings(providers={}))
    llm_variants = max(LLM_CONCURRENCY, min(variants, LLM_VARIANTS_MAX))
    server = SimulatedVendor("openai", answering(delay_s=LLM_LATENCY_S))
    await server.start()
    try:
        simulated = ProviderSettings(
            "simulated",
            "openai",
            server.base_url,
            "simulated",
            api_key=Secret(SIMULATED_API_KEY),
            timeout_s=30,
            max_concurrency=LLM_CONCURRENCY,
            rate_per_s=0,
        )
        llm_rate = await _through_router(
            llm_variants, ("local", "simulated"), RouterSettings(providers={"simulated": simulated})
        )
    finally:
        await server.stop()
    ideal = LLM_CONCURRENCY / LLM_LATENCY_S
    return {
        "benchmark": "providers",
        "local_variants": variants,
        "local_variants_per_s": round(local_rate),
        "llm_variants": llm_variants,
        "llm_latency_s": LLM_LATENCY_S,
        "llm_concurrency": LLM_CONCURRENCY,
        "llm_requests_per_s": round(llm_rate, 1),
        "llm_ideal_requests_per_s": ideal,
        "llm_efficiency": round(llm_rate / ideal, 3),
        "llm_server_requests": len(server.requests),
    }


async def _through_router(variants: int, providers: tuple[str, ...], config: RouterSettings) -> float:
    """Start the router, publish `variants`, and time until every provider's results are out."""
    # Imported here: benchmarks imports this module.
    from vcf_agent.app.benchmarks import synthetic_batch
    from vcf_agent.services.router import build

    settings = Settings(
        bus_url=f"memory://bench-providers-{uuid.uuid4().hex[:8]}",
        providers=providers,
        analysis_deadline_s=3600,
    )
    bus: Bus = open_bus(settings.bus_url)
    await bus.start()
    try:
        await ensure_topology(bus, settings)
        messages = []
        for start in range(0, variants, _BATCH):
            batch = synthetic_batch(start, min(_BATCH, variants - start))
            del batch.providers[:]
            batch.providers.extend(providers)
            payload, headers = encode(batch)
            messages.append(OutgoingMessage(payload, f"chr1:{start}".encode(), headers))
        expected = len(messages) * len(providers)
        async with ComponentStack("router", build(settings, bus, config).components):
            # Timed from publishing: the figure is throughput, not the components' start-up.
            started = time.perf_counter()
            await bus.publish(settings.topology.variants, messages)
            results = settings.topology.analysis_results
            # The bus offers no completion signal, so the end offsets are polled.
            while sum((await bus.end_offsets(results)).values()) < expected:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            elapsed = time.perf_counter() - started
    finally:
        await bus.stop()
    return variants / elapsed
