"""The four services that store results, in this process on one embedded log, each with a gRPC server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import grpc

from vcf_agent.analysis import RouterSettings
from vcf_agent.bus import Bus, open_bus
from vcf_agent.config import Settings
from vcf_agent.control import SecuritySettings
from vcf_agent.runner import ServiceHost, ensure_topology
from vcf_agent.schema import TERMINAL_STATES
from vcf_agent.services import aggregator, ingest, router, writer
from vcf_agent.v1 import jobs_pb2, jobs_pb2_grpc


@asynccontextmanager
async def running_services(
    tmp_path: Path, security: SecuritySettings | None = None
) -> AsyncIterator[dict[str, str]]:
    """Writer, aggregator, router (local provider) and ingest; yields service name -> gRPC address."""
    settings = Settings(data_dir=tmp_path / "data", bus_url=f"embedded://{tmp_path / 'bus'}")
    bus: Bus = open_bus(settings.bus_url)
    await bus.start()
    await ensure_topology(bus, settings)
    offline = RouterSettings()
    try:
        async with AsyncExitStack() as stack:
            addresses = {}
            for parts in (
                writer.build(settings, bus),
                aggregator.build(settings, bus),
                router.build(settings, bus, offline),
                ingest.build(settings, bus, router_settings=offline),
            ):
                host = ServiceHost(parts, bus, settings, security=security)
                await stack.enter_async_context(host)
                addresses[parts.name] = host.control.address
            yield addresses
    finally:
        await bus.stop()


async def submit_and_finish(
    address: str, path: Path, metadata: list[tuple[str, str]] | None = None
) -> jobs_pb2.Job:
    """Upload the file in chunks as a LIMS does, then follow the job to its final state."""
    data = await asyncio.to_thread(path.read_bytes)

    async def parts() -> AsyncIterator[jobs_pb2.SubmitVcfRequest]:
        yield jobs_pb2.SubmitVcfRequest(metadata=jobs_pb2.SubmitVcfMetadata(file_name=path.name))
        for start in range(0, len(data), 64 << 10):
            yield jobs_pb2.SubmitVcfRequest(chunk=data[start : start + (64 << 10)])

    async with grpc.aio.insecure_channel(address) as channel:
        stub = jobs_pb2_grpc.IngestServiceStub(channel)
        submitted = (await stub.SubmitVcf(parts(), metadata=metadata, timeout=30)).job
        last = submitted
        async for job in stub.WatchJob(
            jobs_pb2.WatchJobRequest(job_id=submitted.job_id), metadata=metadata, timeout=240
        ):
            last = job
        assert last.state in TERMINAL_STATES
        return last
