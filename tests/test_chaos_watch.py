"""`vcf-agent chaos`'s watch: when publishing was back on the primary, as the services' GetStatus said.

Two services' real control planes (ControlPlaneServer, GetStatus over gRPC) each on a real
failover bus of two memory buses; stopping a primary memory bus makes its health probe fail,
and starting it again brings it back, so the services really switch away and back. Ingest's
GetJob is the one scripted answer (a job's state), standing in for a job that is still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from vcf_agent.app.chaos import _Watch
from vcf_agent.bus._failover import FailoverBus
from vcf_agent.bus._memory import MemoryBus
from vcf_agent.control import ControlPlaneServer
from vcf_agent.control._server import ServiceApi
from vcf_agent.runner import ServiceParts
from vcf_agent.v1 import events_pb2, jobs_pb2, jobs_pb2_grpc

SERVICES = ("ingest", "router")


class _JobState(jobs_pb2_grpc.IngestServiceServicer):
    """GetJob answers the job's state as the test sets it."""

    def __init__(self) -> None:
        self.state = events_pb2.JOB_STATE_STORING
        self.stored = 1

    async def GetJob(self, request: jobs_pb2.GetJobRequest, context: Any) -> jobs_pb2.Job:
        job = jobs_pb2.Job(job_id=request.job_id, state=self.state)
        job.counts.stored = self.stored
        return job


class _Service:
    """One service's control plane on a failover bus whose primary can be stopped and started."""

    def __init__(self, name: str, job: _JobState | None) -> None:
        self.primary = MemoryBus(f"watch-{uuid.uuid4().hex[:12]}")
        self.bus = FailoverBus(
            self.primary,
            MemoryBus(f"watch-{uuid.uuid4().hex[:12]}"),
            probe_interval_s=0.05,
            failures_to_switch=2,
            stable_period_s=0.2,
        )
        apis = []
        if job is not None:
            apis.append(
                ServiceApi(
                    lambda server: jobs_pb2_grpc.add_IngestServiceServicer_to_server(job, server),
                    [jobs_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name],
                )
            )
        self.plane = ControlPlaneServer(name, self.bus, ServiceParts(name), apis=apis)


@pytest.fixture
async def services() -> AsyncIterator[tuple[dict[str, _Service], _JobState]]:
    job = _JobState()
    running = {name: _Service(name, job if name == "ingest" else None) for name in SERVICES}
    async with contextlib.AsyncExitStack() as stack:
        for service in running.values():
            await service.bus.start()
            stack.push_async_callback(service.bus.stop)
            await service.plane.start()
            stack.push_async_callback(service.plane.stop, 0)
        yield running, job


async def _until(condition: Any, timeout_s: float = 30.0) -> float:
    """Waits until condition() holds; returns the moment it was seen holding."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.02)
    return time.monotonic()


async def test_a_return_to_the_primary_before_the_jobs_end_is_reported_when_it_happened(
    services: tuple[dict[str, _Service], _JobState],
) -> None:
    # `back_on_primary_s` was measured by polling from the job's end onwards, so services that
    # were back on the primary long before the job finished were reported back only at its end.
    running, job = services
    primary, fallback = next(iter(running.values())).bus.backend_names
    watch = _Watch({name: service.plane.address for name, service in running.items()}, "job-1", primary)
    watcher = asyncio.create_task(watch.run())
    try:
        await _until(lambda: watch.all_on(primary))
        watch.fault_at = time.monotonic()
        for service in running.values():
            await service.primary.stop()
        await _until(lambda: watch.all_on(fallback))
        for service in running.values():
            await service.primary.start()
        back_seen_at = await _until(lambda: watch.all_on(primary))
        # Only now does the job end: its end is after the return, whenever the samples came.
        job.state, job.stored = events_pb2.JOB_STATE_COMPLETE, 2
        await _until(lambda: watch.finished_at is not None)

        back_s = await watch.back_on_primary_s(timeout_s=30)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    assert 0 < back_s <= back_seen_at - watch.fault_at
    # Each service left the primary once and came back once.
    assert sorted(entry.split("@")[0] for entry in watch.switches) == sorted(
        [*(f"{name} {fallback}" for name in SERVICES), *(f"{name} {primary}" for name in SERVICES)]
    )


async def test_services_that_never_left_the_primary_report_no_return(
    services: tuple[dict[str, _Service], _JobState],
) -> None:
    running, job = services
    primary = next(iter(running.values())).bus.backend_names[0]
    watch = _Watch({name: service.plane.address for name, service in running.items()}, "job-1", primary)
    watcher = asyncio.create_task(watch.run())
    try:
        await _until(lambda: watch.all_on(primary))
        watch.fault_at = time.monotonic()
        job.state = events_pb2.JOB_STATE_COMPLETE
        await _until(lambda: watch.finished_at is not None)
        assert await watch.back_on_primary_s(timeout_s=30) == 0.0
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    assert watch.switches == []
