"""Router service: picks providers per variant and runs the provider workers."""

from __future__ import annotations

from dataclasses import dataclass

from vcf_agent.bus import Bus
from vcf_agent.config import Settings
from vcf_agent.control import FlagStore
from vcf_agent.processing import StreamProcessor
from vcf_agent.runner import ServiceParts

from ._bench import bench_providers
from ._cache import AnswerCache, CacheSync
from ._config import ProviderSettings, RouterSettings, Secret
from ._dispatch import PoolSlot, ProviderPool
from ._prompt import PROMPT_VERSION
from ._providers import AnalysisProvider, LocalProvider
from ._routing import (
    ProviderWorker,
    VariantRouter,
    analysis_requests,
    expanded_requests,
    provider_deadline,
)

__all__ = [
    "PROMPT_VERSION",
    "AnalysisProvider",
    "AnswerCache",
    "CacheSync",
    "LocalProvider",
    "ProviderPool",
    "ProviderSet",
    "ProviderSettings",
    "ProviderWorker",
    "RouterSettings",
    "Secret",
    "VariantRouter",
    "analysis_providers",
    "analysis_requests",
    "bench_providers",
    "build",
    "expanded_requests",
    "provider_deadline",
]

NAME = "router"


@dataclass(slots=True)
class ProviderSet:
    """The providers a process calls; `pool` (with its cache) must run while they are called."""

    providers: list[AnalysisProvider]
    pool: ProviderPool | None = None
    cache: CacheSync | None = None


def analysis_providers(settings: Settings, bus: Bus, config: RouterSettings) -> ProviderSet:
    """The local provider plus one pool slot per configured LLM provider or pool.

    Shared by the router and ingest's in-process batch path, so both call the same providers.
    """
    local = LocalProvider(settings.genes_file, bs1_af=settings.acmg_bs1_af, pm2_af=settings.acmg_pm2_af)
    slots = {p for p in (*settings.providers, *config.pools) if p != local.name and config.members(p)}
    found = ProviderSet([local])
    if slots:
        found.cache = CacheSync(bus, settings.topology.cache_events, AnswerCache(config.cache_max_bytes))
        found.pool = ProviderPool(
            config,
            slots,
            cache=found.cache,
            annotator=local.annotator,
            default_deadline_s=settings.analysis_deadline_s,
        )
        found.providers.extend(PoolSlot(found.pool, slot) for slot in sorted(slots))
    return found


def build(
    settings: Settings,
    bus: Bus,
    router_settings: RouterSettings | None = None,
    *,
    flags: FlagStore | None = None,
) -> ServiceParts:
    """The router's components; LLM providers come from `router_settings` (the environment when None).

    With `flags`, the ROUTING_PROVIDERS flag can override which providers a job's variants see.
    """
    found = analysis_providers(settings, bus, router_settings or RouterSettings.from_env())
    providers = found.providers
    parts = ServiceParts(NAME)
    if found.pool is not None:
        # Started before the workers that call it, stopped after them.
        parts.components.append(found.pool)
        parts.state["provider_pool"] = found.pool
        parts.state["answer_cache"] = found.cache
    router = VariantRouter(bus, settings, frozenset(p.name for p in providers), flags=flags)
    parts.components.append(
        StreamProcessor(
            bus, [settings.topology.variants], "router", router.handle, service=NAME, max_records=16
        )
    )
    for provider in providers:
        worker = ProviderWorker(bus, settings, provider)
        parts.components.append(
            StreamProcessor(
                bus,
                [settings.topology.analysis_requests],
                worker.group,
                worker.handle,
                service=NAME,
                max_records=8,
            )
        )
    return parts
