"""All five services in one process over one bus: what `vcf-agent run` and benchmarks use.

The services still talk only through the streams; sharing a process just
saves four interpreters. Each keeps its own consumer groups and state.

The pipeline has one FlagStore (under data_dir/control/pipeline), started
before the services and handed to ingest, so the streaming-versus-batch
flags apply to `vcf-agent run` too: flags set here, or by any service on the
same bus, reach it through `control-events`.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

from vcf_agent.bus import Bus, open_bus
from vcf_agent.config import SERVICES, Settings
from vcf_agent.lifecycle import AsyncComponent, ComponentStack
from vcf_agent.runner import ServiceBuilder, ServiceParts, ensure_topology, service_flags
from vcf_agent.schema import TERMINAL_STATES
from vcf_agent.v1 import jobs_pb2

if TYPE_CHECKING:
    from vcf_agent.services.ingest import IngestParts
    from vcf_agent.services.writer import WriterParts


# The shortest interval between two reads of a running job by `wait`: a progress bar's pace.
_PROGRESS_S = 0.05


def service_builder(name: str) -> ServiceBuilder:
    """The `build(settings, bus)` of a service package, imported on demand."""
    if name not in SERVICES:
        raise ValueError(f"unknown service {name!r}; choose one of {', '.join(SERVICES)}")
    module = importlib.import_module(f"vcf_agent.services.{name}")
    return cast(ServiceBuilder, module.build)


class LocalPipeline(AsyncComponent):
    """Starts ingest, router, aggregator, writer and notifier on one bus."""

    def __init__(self, settings: Settings, *, bus: Bus | None = None) -> None:
        """`bus` (unstarted) replaces the one settings.bus_url names, e.g. to inject faults."""
        self.settings = settings
        self.bus: Bus = bus if bus is not None else open_bus(settings.bus_url)
        self.parts: dict[str, ServiceParts] = {}
        self.flags = service_flags("pipeline", settings, self.bus)
        self._running = ComponentStack("pipeline")

    async def start(self) -> None:
        async with self._running.starting():
            await self._running.enter(self.bus)
            await ensure_topology(self.bus, self.settings)
            await self._running.enter(self.flags)
            # Downstream first, so nothing published has to wait for its consumer to exist.
            for name in reversed(SERVICES):
                parts = service_builder(name)(self.settings, self.bus, flags=self.flags)
                self.parts[name] = parts
                for component in parts.components:
                    await self._running.enter(component)

    async def stop(self) -> None:
        """Ingest first, the bus last: the reverse of start."""
        await self._running.stop()
        self.parts.clear()

    @property
    def ingest(self) -> IngestParts:
        from vcf_agent.services.ingest import IngestParts

        parts = self.parts["ingest"]
        assert isinstance(parts, IngestParts)
        return parts

    @property
    def writer(self) -> WriterParts:
        from vcf_agent.services.writer import WriterParts

        parts = self.parts["writer"]
        assert isinstance(parts, WriterParts)
        return parts

    def job(self, job_id: str) -> jobs_pb2.Job | None:
        record = self.ingest.registry.get(job_id)
        return record.to_proto() if record else None

    async def submit(self, path: Path, *, tenant_id: str = "default", region: str | None = None) -> str:
        job = await self.ingest.publisher.submit(path, tenant_id=tenant_id, region=region)
        return job.job_id

    async def wait(
        self,
        job_id: str,
        *,
        timeout_s: float = 3600,
        on_progress: Callable[[jobs_pb2.Job], None] | None = None,
    ) -> jobs_pb2.Job:
        """Until the job reaches a terminal state; calls on_progress with each change it reads.

        Woken by the registry's writes to the job, as WatchJob is: its end is read as soon as it
        is recorded (a poll added its own interval, and its CPU, to every job it timed); its
        progress at most every _PROGRESS_S.
        """
        last: jobs_pb2.Job | None = None
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline:
                with self.ingest.registry.changes.watch(job_id) as changes:
                    while True:
                        job = self.job(job_id)
                        if job is not None:
                            if on_progress is not None and (
                                last is None or job.counts != last.counts or job.state != last.state
                            ):
                                on_progress(job)
                            last = job
                            if job.state in TERMINAL_STATES:
                                return job
                        await changes.next(_PROGRESS_S)
        except TimeoutError:
            if deadline.expired():
                raise TimeoutError(f"job {job_id} did not finish within {timeout_s}s") from None
            raise
