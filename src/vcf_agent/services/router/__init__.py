"""Router service: picks providers per variant and runs the provider workers."""

from __future__ import annotations

from dataclasses import dataclass

from vcf_agent.analysis import (
    AnalysisProvider,
    CacheSync,
    ProviderPool,
    ProviderWorker,
    RouterSettings,
    VariantRouter,
    analysis_providers,
)
from vcf_agent.bus import Bus
from vcf_agent.config import Settings
from vcf_agent.control import FlagStore
from vcf_agent.processing import StreamProcessor
from vcf_agent.runner import ServiceParts

__all__ = ["RouterParts", "build", "worker_processor"]

NAME = "router"


@dataclass(slots=True, kw_only=True)
class RouterParts(ServiceParts):
    """The router's parts with its LLM provider pool and answer cache (None without LLM providers)."""

    provider_pool: ProviderPool | None = None
    answer_cache: CacheSync | None = None


def build(
    settings: Settings,
    bus: Bus,
    router_settings: RouterSettings | None = None,
    *,
    flags: FlagStore | None = None,
) -> RouterParts:
    """The router's components; LLM providers come from `router_settings` (`settings.router` when None).

    With `flags`, the ROUTING_PROVIDERS flag can override which providers a job's variants see.
    """
    found = analysis_providers(settings, bus, router_settings or settings.router)
    providers = found.providers
    parts = RouterParts(name=NAME, provider_pool=found.pool, answer_cache=found.cache)
    if found.pool is not None:
        # Started before the workers that call it, stopped after them.
        parts.components.append(found.pool)
    router = VariantRouter(bus, settings, frozenset(p.name for p in providers), flags=flags)
    parts.components.append(
        StreamProcessor(
            bus, [settings.topology.variants], "router", router.handle, service=NAME, max_records=16
        )
    )
    known = frozenset(p.name for p in providers)
    for index, provider in enumerate(providers):
        # One worker dead-letters requests that no configured provider's worker would read.
        worker = ProviderWorker(bus, settings, provider, known_providers=known if index == 0 else None)
        parts.components.append(worker_processor(bus, settings, provider, worker))
    return parts


def worker_processor(
    bus: Bus, settings: Settings, provider: AnalysisProvider, worker: ProviderWorker
) -> StreamProcessor:
    """The consumer that hands a provider's requests to its worker."""
    return StreamProcessor(
        bus,
        [settings.topology.analysis_requests],
        worker.group,
        worker.handle,
        service=NAME,
        # The worker answers what one poll gave it together: the provider says how many suit it.
        max_records=provider.batches_per_poll,
    )
