"""Router service: picks providers per variant and runs the provider workers."""

from __future__ import annotations

from vcf_agent.bus import Bus
from vcf_agent.config import Settings
from vcf_agent.processing import StreamProcessor
from vcf_agent.runner import ServiceParts

from ._bench import bench_providers
from ._cache import AnswerCache, CacheSync
from ._config import ProviderSettings, RouterSettings, Secret
from ._dispatch import PoolSlot, ProviderPool
from ._local_annotator import LocalAnnotator
from ._prompt import PROMPT_VERSION
from ._providers import AnalysisProvider, LocalProvider
from ._routing import ProviderWorker, VariantRouter

__all__ = [
    "PROMPT_VERSION",
    "AnalysisProvider",
    "AnswerCache",
    "CacheSync",
    "LocalProvider",
    "ProviderPool",
    "ProviderSettings",
    "ProviderWorker",
    "RouterSettings",
    "Secret",
    "VariantRouter",
    "bench_providers",
    "build",
]

NAME = "router"


def build(settings: Settings, bus: Bus, router_settings: RouterSettings | None = None) -> ServiceParts:
    """The router's components; LLM providers come from `router_settings` (the environment when None)."""
    config = router_settings or RouterSettings.from_env()
    local = LocalProvider(settings.genes_file)
    slots = {p for p in (*settings.providers, *config.pools) if p != local.name and config.members(p)}
    parts = ServiceParts(NAME)
    providers: list[AnalysisProvider] = [local]
    if slots:
        cache = CacheSync(bus, settings.topology.cache_events, AnswerCache(config.cache_max_bytes))
        pool = ProviderPool(
            config,
            slots,
            cache=cache,
            annotator=LocalAnnotator(gene_index=local.gene_index),
            default_deadline_s=settings.analysis_deadline_s,
        )
        # Started before the workers that call it, stopped after them.
        parts.components.append(pool)
        parts.state["provider_pool"] = pool
        parts.state["answer_cache"] = cache
        providers.extend(PoolSlot(pool, slot) for slot in sorted(slots))
    router = VariantRouter(bus, settings, frozenset(p.name for p in providers))
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
