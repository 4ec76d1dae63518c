"""Router service: picks providers per variant and runs the provider workers."""

from __future__ import annotations

from vcf_agent.bus import Bus
from vcf_agent.config import Settings
from vcf_agent.processing import StreamProcessor
from vcf_agent.runner import ServiceParts

from ._providers import AnalysisProvider, LocalProvider
from ._routing import ProviderWorker, VariantRouter

__all__ = ["AnalysisProvider", "LocalProvider", "ProviderWorker", "VariantRouter", "build"]

NAME = "router"


def build(settings: Settings, bus: Bus) -> ServiceParts:
    providers: dict[str, AnalysisProvider] = {"local": LocalProvider(settings.genes_file)}
    router = VariantRouter(bus, settings, frozenset(providers))
    parts = ServiceParts(NAME)
    parts.components.append(
        StreamProcessor(
            bus, [settings.topology.variants], "router", router.handle, service=NAME, max_records=16
        )
    )
    for provider in providers.values():
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
