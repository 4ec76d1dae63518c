"""The router with LLM providers, end to end on the in-memory bus against loopback vendor servers.

Variants go in on `vcf-variants`; the real router components fan them out,
call the providers over HTTP and publish results and dead letters, which the
tests read back from the bus.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from vcf_agent.analysis import AnswerCache, CacheSync, ProviderPool, ProviderSettings, RouterSettings, Secret
from vcf_agent.app.benchmarks import synthetic_batch
from vcf_agent.bus import Bus, OutgoingMessage, open_bus
from vcf_agent.config import Settings, Strategy
from vcf_agent.localdev import SIMULATED_ANSWER, SIMULATED_API_KEY, Reply, Seen, SimulatedVendor
from vcf_agent.runner import ensure_topology
from vcf_agent.schema import decode, encode
from vcf_agent.services.router import RouterParts, build
from vcf_agent.v1 import analysis_pb2, events_pb2

OK = analysis_pb2.AnalysisResult.STATUS_OK
FAILED = analysis_pb2.AnalysisResult.STATUS_FAILED


def provider(server: SimulatedVendor, **overrides: Any) -> ProviderSettings:
    settings = ProviderSettings(
        server.vendor,
        server.vendor,
        server.base_url,
        f"{server.vendor}-model",
        api_key=Secret(SIMULATED_API_KEY),
        timeout_s=5.0,
        max_concurrency=8,
        rate_per_s=0,
        backoff_base_s=0.02,
        backoff_max_s=0.1,
    )
    return replace(settings, **overrides)


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@dataclass
class Harness:
    bus: Bus
    settings: Settings
    parts: RouterParts
    results: list[analysis_pb2.AnalysisResult] = field(default_factory=list)
    letters: list[events_pb2.DeadLetter] = field(default_factory=list)

    @property
    def pool(self) -> ProviderPool:
        pool = self.parts.provider_pool
        assert isinstance(pool, ProviderPool)
        return pool

    @property
    def cache(self) -> CacheSync:
        cache = self.parts.answer_cache
        assert isinstance(cache, CacheSync)
        return cache

    async def publish(self, job: str, variants: int, providers: Sequence[str]) -> None:
        batch = synthetic_batch(0, variants)
        del batch.providers[:]
        batch.providers.extend(providers)
        for v in batch.variants:
            v.job_id = job
            v.correlation_id = f"{job}-{v.record_index}"
        payload, headers = encode(batch)
        await self.bus.publish(
            self.settings.topology.variants, [OutgoingMessage(payload, job.encode(), headers)]
        )

    async def collect(
        self, provider: str, count: int, timeout_s: float = 20
    ) -> list[analysis_pb2.AnalysisResult]:
        """Read results until `count` from `provider` have arrived (fails on timeout)."""
        topology = self.settings.topology
        consumer = self.bus.consumer(
            [topology.analysis_results, topology.dead_letters], f"test-{uuid.uuid4().hex}", start="earliest"
        )
        results: list[analysis_pb2.AnalysisResult] = []
        letters: list[events_pb2.DeadLetter] = []
        async with consumer, asyncio.timeout(timeout_s):
            while len(results) < count:
                for record in await consumer.poll(500, 0.1):
                    if record.stream == topology.dead_letters:
                        letters.append(decode(record.value, record.headers, events_pb2.DeadLetter))
                    elif (
                        record.headers.get("message-type")
                        == analysis_pb2.AnalysisResultBatch.DESCRIPTOR.full_name
                    ):
                        batch = decode(record.value, record.headers, analysis_pb2.AnalysisResultBatch)
                        results.extend(r for r in batch.results if r.provider == provider)
            # Dead letters are published just after their results.
            for record in await consumer.poll(500, 0.3):
                if record.stream == topology.dead_letters:
                    letters.append(decode(record.value, record.headers, events_pb2.DeadLetter))
        self.results, self.letters = results, letters
        return results


@asynccontextmanager
async def router(
    config: RouterSettings, providers: tuple[str, ...], *, deadline_s: float = 30.0
) -> AsyncIterator[Harness]:
    settings = Settings(
        bus_url=f"memory://router-{uuid.uuid4().hex[:8]}", providers=providers, analysis_deadline_s=deadline_s
    )
    bus = open_bus(settings.bus_url)
    await bus.start()
    await ensure_topology(bus, settings)
    parts = build(settings, bus, config)
    started = []
    try:
        for component in parts.components:
            await component.start()
            started.append(component)
        yield Harness(bus, settings, parts)
    finally:
        for component in reversed(started):
            await component.stop()
        await bus.stop()


async def test_failover_when_a_provider_returns_500s() -> None:
    async with (
        SimulatedVendor("openai", lambda v, s: v.error(500, "upstream exploded")) as broken,
        SimulatedVendor("claude") as healthy,
    ):
        config = RouterSettings(
            providers={
                "openai": provider(
                    broken, max_concurrency=4, breaker_failures=3, max_attempts=2, breaker_reset_s=60
                ),
                # Weight 0: claude only ever takes over, so all work starts on the broken provider.
                "claude": provider(healthy, weight=0.0),
            },
            pools={"llm": ("openai", "claude")},
            strategy="weighted",
        )
        async with router(config, ("local", "llm")) as harness:
            lane = harness.pool.lanes["openai"]
            await harness.publish("job-failover", 200, ("local", "llm"))
            results = await harness.collect("llm", 200)
            # Nothing is left queued or retrying on the broken lane (20 s only guards a hang).
            await eventually(lambda: lane.outstanding == 0, 20)
    assert len({r.correlation_id for r in results}) == 200
    assert all(r.status == OK for r in results)
    assert all(r.model == "claude/claude-model" for r in results)
    assert all(list(r.requested_providers) == ["local", "llm"] for r in results)
    assert lane.breaker.state == "open"
    # Only the calls before the breaker opened reached the broken provider.
    assert len(broken.requests) <= 3 + 4 * 2
    assert len(healthy.requests) == 200
    assert harness.letters == []


async def test_hanging_provider_hits_the_deadline_and_is_dead_lettered() -> None:
    async with SimulatedVendor("ollama", lambda v, s: Reply(hang=True)) as hanging:
        config = RouterSettings(providers={"ollama": provider(hanging, breaker_failures=100)})
        async with router(config, ("local", "ollama"), deadline_s=2.0) as harness:
            published = time.time()
            await harness.publish("job-hang", 5, ("local", "ollama"))
            results = await harness.collect("ollama", 5, timeout_s=10)
    given_up = [r.completed_at.ToNanoseconds() / 1e9 - published for r in results]
    assert all(r.status == FAILED for r in results)
    assert all("deadline exceeded" in r.error for r in results)
    assert all(list(r.requested_providers) == ["local", "ollama"] for r in results)
    # Providers get 80% of the aggregator's 2 s (1.6 s), so the failure still counts as an answer:
    # no call is given up before its share. (How soon after it the answer comes is load, not logic.)
    assert all(seconds >= 1.6 - 0.05 for seconds in given_up)
    assert len(harness.letters) == 5
    letter = harness.letters[0]
    assert letter.error_code == "provider_failed"
    assert "deadline exceeded" in letter.reason
    request = analysis_pb2.AnalysisRequest.FromString(letter.original_payload)
    assert request.provider == "ollama"
    assert request.variant.correlation_id.startswith("job-hang")
    # Each letter names its variant (for operators and the JSON log line of the dead letter).
    assert sorted(letter.correlation_id for letter in harness.letters) == sorted(
        r.correlation_id for r in results
    )


async def test_429_storm_slows_down_without_failing() -> None:
    def storm(vendor: SimulatedVendor, seen: Seen) -> Reply:
        if len(vendor.requests) <= 20:
            return vendor.error(429, "Rate limit reached", {"retry-after": "0.3"})
        return vendor.success(SIMULATED_ANSWER)

    async with SimulatedVendor("claude", storm) as limited:
        config = RouterSettings(providers={"claude": provider(limited, breaker_failures=2, max_attempts=1)})
        async with router(config, ("local", "claude")) as harness:
            started = time.monotonic()
            await harness.publish("job-429", 30, ("local", "claude"))
            results = await harness.collect("claude", 30)
            elapsed = time.monotonic() - started
            lane = harness.pool.lanes["claude"]
    assert all(r.status == OK for r in results)
    assert lane.breaker.state == "closed"
    assert elapsed >= 0.3
    assert len(limited.requests) >= 50
    assert harness.letters == []


async def test_second_analysis_hits_the_cache_and_replicas_agree() -> None:
    async with SimulatedVendor("openai") as server:
        config = RouterSettings(providers={"openai": provider(server)})
        async with router(config, ("local", "openai")) as harness:
            replica = CacheSync(harness.bus, harness.settings.topology.cache_events, AnswerCache(2**20))
            await replica.start()
            try:
                await harness.publish("job-first", 20, ("local", "openai"))
                first = await harness.collect("openai", 20)
                await harness.publish("job-second", 20, ("local", "openai"))
                both = await harness.collect("openai", 40)
                cache = harness.cache.cache
                await eventually(lambda: len(replica.cache) == 20)
                await replica.clear("openai")
                await eventually(lambda: len(cache) == 0)
            finally:
                await replica.stop()
    second = [r for r in both if r.job_id == "job-second"]
    assert len(server.requests) == 20
    assert all(r.status == OK for r in first)
    assert len(second) == 20
    assert all(r.status == OK and r.classification == "likely_pathogenic" for r in second)
    assert all(r.latency_ms == 0 and r.attempt == 0 for r in second)
    assert (cache.hits, cache.misses) == (20, 20)
    assert cache.hit_ratio == 0.5


def pool_for(strategy: Strategy, weights: dict[str, float]) -> ProviderPool:
    providers = {
        name: ProviderSettings(name, "openai", "http://127.0.0.1:9/v1", "m", weight=weight)
        for name, weight in weights.items()
    }
    config = RouterSettings(providers=providers, pools={"llm": tuple(weights)}, strategy=strategy)
    return ProviderPool(config, ["llm"])


def test_round_robin_rotates_primary_and_keeps_policy_order_for_failover() -> None:
    pool = pool_for("round_robin", {"a": 1, "b": 1, "c": 1})
    assert [pool.order("llm") for _ in range(4)] == [
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
        ["a", "b", "c"],
    ]


def test_weighted_shares_follow_weights() -> None:
    pool = pool_for("weighted", {"a": 3, "b": 1})
    primaries = [pool.order("llm")[0] for _ in range(400)]
    assert primaries.count("a") == 300
    assert primaries[:4].count("b") == 1


def test_least_outstanding_and_open_breakers_are_skipped() -> None:
    pool = pool_for("least_outstanding", {"a": 1, "b": 1, "c": 1})
    pool.lanes["a"].outstanding = 5
    pool.lanes["b"].outstanding = 2
    pool.lanes["c"].outstanding = 3
    assert pool.order("llm") == ["b", "c", "a"]
    for _ in range(5):
        pool.lanes["b"].breaker.record_failure()
    assert pool.lanes["b"].breaker.state == "open"
    assert pool.order("llm")[0] == "c"


async def test_high_priority_requests_are_sent_first() -> None:
    async with SimulatedVendor("openai") as server:
        config = RouterSettings(providers={"openai": provider(server, max_concurrency=1)})
        pool = ProviderPool(config, ["openai"])
        await pool.start()
        try:
            batch = synthetic_batch(0, 8)
            requests = []
            for index, v in enumerate(batch.variants):
                request = analysis_pb2.AnalysisRequest(correlation_id=v.correlation_id, provider="openai")
                request.variant.CopyFrom(v)
                request.priority = 9 if index >= 5 else 1
                requests.append(request)
            results = await pool.analyse("openai", requests)
        finally:
            await pool.stop()
    assert [r.correlation_id for r in results] == [r.correlation_id for r in requests]
    first_three = [seen.body["messages"][-1]["content"] for seen in server.requests[:3]]
    urgent = [f"chr1:{v.position} " for v in batch.variants[5:]]
    assert all(any(u in text for u in urgent) for text in first_three)
