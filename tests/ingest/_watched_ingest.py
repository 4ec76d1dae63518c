"""Ingest's publisher and job watchdog on a real bus, as the watchdog tests run them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import NamedTuple

from vcf_agent.bus import Bus, StreamSpec
from vcf_agent.config import Settings
from vcf_agent.services.ingest import CheckpointBook, JobRegistry, JobWatchdog, VariantPublisher


class WatchedIngest(NamedTuple):
    registry: JobRegistry
    checkpoints: CheckpointBook
    publisher: VariantPublisher
    watchdog: JobWatchdog


@asynccontextmanager
async def watched_ingest(bus: Bus, settings: Settings, directory: Path) -> AsyncIterator[WatchedIngest]:
    """Starts `bus` with the settings' streams; jobs and checkpoints share directory/jobs.sqlite, as in
    the service. On leaving: stops the publisher and the bus and closes the job database."""
    jobs_db = directory / "jobs.sqlite"
    await bus.start()
    await bus.ensure_streams([StreamSpec(name, partitions) for name, partitions in settings.topology.specs()])
    registry = JobRegistry(jobs_db)
    checkpoints = CheckpointBook(jobs_db)
    publisher = VariantPublisher(bus, settings, registry, checkpoints=checkpoints)
    try:
        yield WatchedIngest(registry, checkpoints, publisher, JobWatchdog(registry, publisher, bus, settings))
    finally:
        await publisher.stop()
        await bus.stop()
        registry.close()
        checkpoints.close()
