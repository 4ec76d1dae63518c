"""Router service: picks providers per variant and runs the provider workers."""

from __future__ import annotations

from vcf_agent.analysis import ProviderWorker, RouterSettings, VariantRouter, analysis_providers
from vcf_agent.bus import Bus
from vcf_agent.config import Settings
from vcf_agent.control import FlagStore
from vcf_agent.processing import StreamProcessor
from vcf_agent.runner import ServiceParts

__all__ = ["build"]

NAME = "router"


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
