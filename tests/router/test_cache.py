"""The answer cache: its keys (tenant and exact prompt), bound, eviction and entry encoding, and
what a provider pool serves from it, over a real bus and a loopback vendor server."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import msgpack

from vcf_agent.analysis import AnswerCache, CacheSync, ProviderPool, ProviderSettings, RouterSettings, Secret
from vcf_agent.analysis._cache import CachedAnswer, cache_key, prompt_digest
from vcf_agent.analysis._prompt import PROMPT_VERSION, Prompt
from vcf_agent.app.benchmarks import synthetic_batch
from vcf_agent.bus import Bus, open_bus
from vcf_agent.config import Settings
from vcf_agent.localdev import SIMULATED_API_KEY, SimulatedVendor
from vcf_agent.runner import ensure_topology
from vcf_agent.schema import genotype_calls, genotype_columns
from vcf_agent.v1 import analysis_pb2, variant_pb2

ANSWER = CachedAnswer("benign", 0.9, ("BA1: AF 0.12",), "Common in gnomAD.", "gpt-test")
OK = analysis_pb2.AnalysisResult.STATUS_OK


def prompt(user: str, version: str = "v1") -> Prompt:
    return Prompt("system", user, version)


def test_entries_are_msgpack_and_round_trip() -> None:
    packed = ANSWER.pack()
    assert msgpack.unpackb(packed)[0] == "benign"
    assert CachedAnswer.unpack(packed) == ANSWER


def test_key_separates_tenant_prompt_text_prompt_version_provider_and_model() -> None:
    keys = {
        cache_key("lab-a", prompt("1:10 A>G het"), "openai", "m"),
        cache_key("lab-b", prompt("1:10 A>G het"), "openai", "m"),
        cache_key("lab-a", prompt("1:10 A>G hom"), "openai", "m"),
        cache_key("lab-a", prompt("1:10 A>G het", "v2"), "openai", "m"),
        cache_key("lab-a", prompt("1:10 A>G het"), "claude", "m"),
        cache_key("lab-a", prompt("1:10 A>G het"), "openai", "m2"),
        cache_key("lab-a", Prompt("system ", "1:10 A>G het"[1:], "v1"), "openai", "m"),
    }
    assert len(keys) == 7
    # The same question from the same tenant is the same entry.
    assert cache_key("lab-a", prompt("x"), "openai", "m") == cache_key("lab-a", prompt("x"), "openai", "m")


def test_prompt_digest_does_not_run_system_and_user_together() -> None:
    assert prompt_digest(Prompt("ab", "c")) != prompt_digest(Prompt("a", "bc"))


def test_size_bound_evicts_least_recently_used() -> None:
    packed = ANSWER.pack()
    keys = [cache_key("lab-a", prompt(f"1:{i} A>G"), "openai", "m") for i in range(3)]
    cache = AnswerCache(max_bytes=2 * (len(keys[0]) + len(packed)))
    cache.put(keys[0], packed)
    cache.put(keys[1], packed)
    assert cache.get(keys[0]) == ANSWER  # keys[0] is now the most recently used
    cache.put(keys[2], packed)
    assert len(cache) == 2
    assert cache.get(keys[1]) is None
    assert cache.get(keys[0]) == ANSWER
    assert (cache.hits, cache.misses) == (2, 1)


def test_lookup_counts_once_and_clear_by_provider() -> None:
    cache = AnswerCache(max_bytes=2**20)
    openai = cache_key("lab-a", prompt("1:10 A>G"), "openai", "m")
    claude = cache_key("lab-a", prompt("1:10 A>G"), "claude", "m")
    cache.put(claude, ANSWER.pack())
    assert cache.lookup([openai, claude]) == (1, ANSWER)
    assert (cache.hits, cache.misses) == (1, 0)
    cache.put(openai, ANSWER.pack())
    cache.clear("claude")
    assert cache.get(claude) is None
    assert cache.get(openai) == ANSWER
    cache.put(claude, b"\xc1not msgpack")
    assert cache.get(claude) is None
    assert len(cache) == 1


# --- What a provider pool serves from the cache: real pool, real bus, loopback OpenAI server ---


@dataclass
class Router:
    """One router replica: its pool and the cache it keeps in step through `cache-events`."""

    pool: ProviderPool
    cache: CacheSync


@asynccontextmanager
async def cache_bus() -> AsyncIterator[tuple[Bus, str]]:
    settings = Settings(bus_url=f"memory://cache-{uuid.uuid4().hex[:8]}")
    bus = open_bus(settings.bus_url)
    await bus.start()
    try:
        await ensure_topology(bus, settings)
        yield bus, settings.topology.cache_events
    finally:
        await bus.stop()


@asynccontextmanager
async def replica(bus: Bus, stream: str, server: SimulatedVendor) -> AsyncIterator[Router]:
    settings = ProviderSettings(
        "openai",
        "openai",
        server.base_url,
        "gpt-test",
        api_key=Secret(SIMULATED_API_KEY),
        timeout_s=5.0,
        rate_per_s=0,
    )
    cache = CacheSync(bus, stream, AnswerCache(2**20))
    pool = ProviderPool(RouterSettings(providers={"openai": settings}), ["openai"], cache=cache)
    await pool.start()
    try:
        yield Router(pool, cache)
    finally:
        await pool.stop()


@asynccontextmanager
async def lone_router(server: SimulatedVendor) -> AsyncIterator[Router]:
    async with cache_bus() as (bus, stream), replica(bus, stream, server) as router:
        yield router


def request(tenant: str, variant: variant_pb2.VariantMessage, job: str) -> analysis_pb2.AnalysisRequest:
    """An AnalysisRequest as the router's worker builds it from an ingest batch of `tenant`."""
    sent = analysis_pb2.AnalysisRequest(
        correlation_id=f"{tenant}-{job}", job_id=job, tenant_id=tenant, provider="openai"
    )
    sent.variant.CopyFrom(variant)
    sent.variant.tenant_id = tenant
    sent.variant.job_id = job
    return sent


def het_variant() -> variant_pb2.VariantMessage:
    """chr1:10000 A>G with one sample 0/1 (DP 30, AD 15,15), as ingest publishes it."""
    return synthetic_batch(0, 1).variants[0]


def hom_variant() -> variant_pb2.VariantMessage:
    """The same locus and allele, its sample called 1/1 (AD 0,30) in another submission."""
    variant = het_variant()
    (het,) = genotype_calls(variant.genotypes)
    variant.genotypes.CopyFrom(genotype_columns([het._replace(alleles=(1, 1), allele_depths=(0, 30))]))
    return variant


async def analyse(
    router: Router, requests: Sequence[analysis_pb2.AnalysisRequest]
) -> list[analysis_pb2.AnalysisResult]:
    return await router.pool.analyse("openai", requests)


def sent_prompts(server: SimulatedVendor) -> list[str]:
    return [seen.body["messages"][-1]["content"] for seen in server.requests]


async def test_two_tenants_sending_the_same_variant_each_reach_the_vendor() -> None:
    """Issue 12 (nothing shared across tenants): lab-b's identical prompt is not served lab-a's answer."""
    async with SimulatedVendor("openai") as server, lone_router(server) as router:
        first = await analyse(router, [request("lab-a", het_variant(), "job-a")])
        second = await analyse(router, [request("lab-b", het_variant(), "job-b")])
        cache = router.cache.cache
    assert [r.status for r in first + second] == [OK, OK]
    # The two prompts are byte for byte the same question: only the tenant tells them apart.
    assert len(server.requests) == 2
    assert sent_prompts(server)[0] == sent_prompts(server)[1]
    assert [r.tenant_id for r in first + second] == ["lab-a", "lab-b"]
    assert [r.attempt for r in first + second] == [1, 1]
    assert (cache.hits, cache.misses, len(cache)) == (0, 2, 2)


async def test_a_tenant_resubmitting_is_answered_from_the_cache() -> None:
    async with SimulatedVendor("openai") as server, lone_router(server) as router:
        first = await analyse(router, [request("lab-a", het_variant(), "job-1")])
        again = await analyse(router, [request("lab-a", het_variant(), "job-2")])
        cache = router.cache.cache
    assert len(server.requests) == 1
    assert (cache.hits, cache.misses) == (1, 1)
    assert again[0].status == OK
    assert (again[0].latency_ms, again[0].attempt) == (0.0, 0)
    assert again[0].job_id == "job-2"
    assert (again[0].classification, list(again[0].criteria)) == (
        first[0].classification,
        list(first[0].criteria),
    )


async def test_same_locus_with_other_genotypes_is_a_new_question() -> None:
    """A cached answer is for the prompt it answered: a hom-alt call at the same locus asks anew."""
    async with SimulatedVendor("openai") as server, lone_router(server) as router:
        await analyse(router, [request("lab-a", het_variant(), "job-1")])
        other = await analyse(router, [request("lab-a", hom_variant(), "job-2")])
        cache = router.cache.cache
    assert other[0].status == OK and other[0].attempt == 1
    assert len(server.requests) == 2
    het, hom = sent_prompts(server)
    assert '"variant": "chr1:10000 A>G"' in het and '"variant": "chr1:10000 A>G"' in hom
    assert '"zygosity": ["het"]' in het
    assert '"zygosity": ["hom_alt"]' in hom
    assert (cache.hits, cache.misses, len(cache)) == (0, 2, 2)


async def test_replicas_share_entries_by_tenant_through_cache_events() -> None:
    """Another replica learns lab-a's entry from `cache-events` and serves it to lab-a only."""
    async with (
        SimulatedVendor("openai") as server,
        cache_bus() as (bus, stream),
        replica(bus, stream, server) as first,
        replica(bus, stream, server) as second,
    ):
        await analyse(first, [request("lab-a", het_variant(), "job-1")])
        await eventually(lambda: len(second.cache.cache) == 1)
        from_other = await analyse(second, [request("lab-a", het_variant(), "job-2")])
        other_tenant = await analyse(second, [request("lab-b", het_variant(), "job-3")])
        await eventually(lambda: len(first.cache.cache) == 2)
    assert (from_other[0].attempt, other_tenant[0].attempt) == (0, 1)
    assert len(server.requests) == 2
    assert (second.cache.cache.hits, second.cache.cache.misses) == (1, 1)
    # The entry that travelled is keyed by the tenant and the exact text the vendor received.
    system, user = (m["content"] for m in server.requests[0].body["messages"])
    sent = Prompt(system, user, PROMPT_VERSION)
    assert first.cache.cache.get(cache_key("lab-a", sent, "openai", "gpt-test")) is not None
    assert first.cache.cache.get(cache_key("lab-b", sent, "openai", "gpt-test")) is not None
    assert second.cache.cache.get(cache_key("lab-c", sent, "openai", "gpt-test")) is None


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)
