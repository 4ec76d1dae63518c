"""Aggregator service: correlates provider answers per variant and decides completion."""

from __future__ import annotations

from vcf_agent.bus import Bus
from vcf_agent.config import Settings
from vcf_agent.control import FlagStore
from vcf_agent.processing import StreamProcessor
from vcf_agent.runner import ServiceParts

from ._correlator import Correlator

__all__ = ["Correlator", "build"]

NAME = "aggregator"


def build(settings: Settings, bus: Bus, *, flags: FlagStore | None = None) -> ServiceParts:
    """Flags are accepted for the common builder shape; this service reads none yet."""
    del flags
    correlator = Correlator(bus, settings)
    processor = StreamProcessor(
        bus,
        [settings.topology.analysis_results],
        "aggregator",
        correlator.handle,
        service=NAME,
        max_records=4,
        idle_calls=True,
        reset=correlator.reset,
        flush=correlator.flush,
    )
    return ServiceParts(NAME, components=[processor])
