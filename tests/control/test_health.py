"""Health follows the bus: NOT_SERVING while it is unreachable, SERVING again when it is back."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.control.conftest import probe_service
from vcf_agent.bus import StreamSpec, open_bus
from vcf_agent.config import Settings
from vcf_agent.runner import ServiceHost, ensure_topology

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_health_is_not_serving_while_the_bus_is_unreachable(tmp_path: Path) -> None:
    url = f"memory://{uuid.uuid4().hex}"
    # A second connection keeps the in-memory log alive while the service's own one is down.
    keeper, bus = open_bus(url), open_bus(url)
    await keeper.start()
    await bus.start()
    settings = Settings(data_dir=tmp_path, bus_url=url)
    await ensure_topology(keeper, settings)
    await keeper.ensure_streams([StreamSpec("control-probe", 2)])
    try:
        async with (
            ServiceHost(probe_service(bus)[0], bus, settings) as host,
            grpc.aio.insecure_channel(host.control.address) as channel,
        ):
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(service="vcf_agent.probe"))
            assert (await watch.read()).status == SERVING
            lost_at = time.monotonic()
            await bus.stop()
            assert (await asyncio.wait_for(watch.read(), 3)).status == NOT_SERVING
            assert time.monotonic() - lost_at < 2.0
            check = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert check.status == NOT_SERVING
            await bus.start()
            assert (await asyncio.wait_for(watch.read(), 3)).status == SERVING
            watch.cancel()
    finally:
        await bus.stop()
        await keeper.stop()
