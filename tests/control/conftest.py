"""In-process services for control-plane tests: real ServiceHosts over an embedded log in tmp_path."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import grpc
import pytest

from vcf_agent.bus import Bus, Record, StreamSpec, open_bus
from vcf_agent.config import Settings
from vcf_agent.control import SecuritySettings
from vcf_agent.processing import CommitOffsets, StreamProcessor
from vcf_agent.runner import ServiceHost, ServiceParts, ensure_topology
from vcf_agent.v1 import control_pb2_grpc

PROBE_STREAM = "control-probe"


class Recorder:
    """A real consuming stage that keeps what it saw, so tests can check replays."""

    def __init__(self) -> None:
        self.values: list[bytes] = []

    async def __call__(self, records: list[Record]) -> CommitOffsets | None:
        self.values.extend(r.value for r in records)
        return None


def probe_service(bus: Bus, name: str = "probe") -> tuple[ServiceParts, Recorder]:
    recorder = Recorder()
    processor = StreamProcessor(bus, [PROBE_STREAM], f"{name}-group", recorder, service=name)
    return ServiceParts(name, components=[processor]), recorder


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[Bus]:
    bus = open_bus(f"embedded://{tmp_path / 'bus'}")
    await bus.start()
    await ensure_topology(bus, Settings(data_dir=tmp_path))
    await bus.ensure_streams([StreamSpec(PROBE_STREAM, 2)])
    yield bus
    await bus.stop()


HostFactory = Callable[..., AbstractAsyncContextManager[ServiceHost]]


@pytest.fixture
def run_host(tmp_path: Path, bus: Bus) -> HostFactory:
    """run_host(parts, security=None, batch_size=...) starts a ServiceHost on loopback and stops it after."""

    @asynccontextmanager
    async def run(
        parts: ServiceParts, security: SecuritySettings | None = None, *, batch_size: int = 2000
    ) -> AsyncIterator[ServiceHost]:
        settings = Settings(
            data_dir=tmp_path / parts.name, bus_url=f"embedded://{tmp_path / 'bus'}", batch_size=batch_size
        )
        async with ServiceHost(parts, bus, settings, security=security) as host:
            yield host

    return run


@asynccontextmanager
async def control_stub(address: str) -> AsyncIterator[control_pb2_grpc.ControlServiceAsyncStub]:
    async with grpc.aio.insecure_channel(address) as channel:
        yield control_pb2_grpc.ControlServiceStub(channel)
