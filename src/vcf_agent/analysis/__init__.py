"""Variant analysis shared by the router and ingest's batch path: providers (the local annotator and
LLM pools), the answer cache, request routing and the stored verdict."""

from __future__ import annotations

from dataclasses import dataclass

from vcf_agent.bus import Bus
from vcf_agent.config import ProviderSettings, RouterSettings, Secret, Settings

from ._cache import AnswerCache, CacheSync
from ._dispatch import PoolSlot, ProviderPool
from ._prompt import PROMPT_VERSION
from ._providers import AnalysisProvider, LocalProvider, WholeBatchProvider
from ._routing import (
    ProviderWorker,
    VariantRouter,
    analysis_requests,
    expanded_requests,
    provider_deadline,
)
from ._spliced_results import split_results
from ._verdict import build_write, merge_verdict

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
    "WholeBatchProvider",
    "analysis_providers",
    "analysis_requests",
    "build_write",
    "expanded_requests",
    "merge_verdict",
    "provider_deadline",
    "split_results",
]


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
