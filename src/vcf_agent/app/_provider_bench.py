"""`vcf-agent bench providers`: router throughput with the local annotator, then with a slow LLM.

Both runs go through the real router components on an in-memory bus: the
variant router fans batches out, provider workers answer, results are
published. The LLM run points an `openai` provider at a local HTTP server that
answers every chat completion after 200 ms, so the ideal rate is
concurrency / latency and the figure shows how close the router gets.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from vcf_agent.analysis import ProviderSettings, RouterSettings
from vcf_agent.bus import Bus, OutgoingMessage, open_bus
from vcf_agent.config import Settings
from vcf_agent.runner import ensure_topology
from vcf_agent.schema import encode

LLM_LATENCY_S = 0.2
LLM_CONCURRENCY = 64
# At the ideal 320/s this is a run of about ten seconds.
LLM_VARIANTS_MAX = 3200
_BATCH = 1000

_ANSWER = json.dumps(
    {
        "classification": "uncertain_significance",
        "criteria": ["PM2: absent from population databases"],
        "rationale": "Simulated answer.",
        "confidence": 0.5,
    }
)


class SimulatedLLM:
    """An OpenAI-compatible chat-completions endpoint on loopback that answers after a fixed delay."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.requests = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in self._connections:
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                self.requests += 1
                await asyncio.sleep(self.delay_s)
                body = json.dumps(
                    {
                        "id": f"chatcmpl-{self.requests}",
                        "object": "chat.completion",
                        "model": "simulated",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": _ANSWER},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 300, "completion_tokens": 40, "total_tokens": 340},
                    }
                ).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()


async def bench_providers(variants: int) -> dict[str, object]:
    """Variants per second through the router: local annotator alone, then with a 200 ms LLM."""
    local_rate = await _through_router(variants, ("local",), RouterSettings(providers={}))
    llm_variants = max(LLM_CONCURRENCY, min(variants, LLM_VARIANTS_MAX))
    server = SimulatedLLM(LLM_LATENCY_S)
    await server.start()
    try:
        simulated = ProviderSettings(
            "simulated",
            "openai",
            f"http://127.0.0.1:{server.port}/v1",
            "simulated",
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
        "llm_server_requests": server.requests,
    }


async def _through_router(variants: int, providers: tuple[str, ...], config: RouterSettings) -> float:
    """Start the router, publish `variants`, and time until every provider's results are out."""
    # Imported here: the ingest benchmark helpers live in the core's benchmarks module.
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
        parts = build(settings, bus, config)
        for component in parts.components:
            await component.start()
        try:
            # Timed from publishing: the figure is throughput, not the components' start-up.
            started = time.perf_counter()
            await bus.publish(settings.topology.variants, messages)
            results = settings.topology.analysis_results
            # The bus offers no completion signal, so the end offsets are polled.
            while sum((await bus.end_offsets(results)).values()) < expected:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            elapsed = time.perf_counter() - started
        finally:
            for component in reversed(parts.components):
                await component.stop()
    finally:
        await bus.stop()
    return variants / elapsed
