"""Running services: the one place that handles signals and ordered shutdown.

A service is a list of components (objects with async start()/stop()) plus
the gRPC APIs it adds to its control plane. `serve` runs one service in its
own process; `run_in_process` runs several in one process (``vcf-agent run``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from vcf_agent.bus import Bus, StreamSpec, open_bus
from vcf_agent.config import Settings
from vcf_agent.control import ControlPlaneServer, ServiceApi
from vcf_agent.processing import StreamProcessor

log = logging.getLogger(__name__)


class Component(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(slots=True)
class ServiceParts:
    """What a service contributes: components started in order, stopped in reverse."""

    name: str
    components: list[Component] = field(default_factory=list)
    apis: list[ServiceApi] = field(default_factory=list)
    # Named handles for in-process callers (the `run` command, tests).
    state: dict[str, object] = field(default_factory=dict)

    def processors(self) -> list[StreamProcessor]:
        return [c for c in self.components if isinstance(c, StreamProcessor)]

    def in_flight(self) -> int:
        return sum(p.in_flight for p in self.processors())

    def lag_groups(self) -> Sequence[tuple[str, str]]:
        return [(p.group, s) for p in self.processors() for s in p.streams]


ServiceBuilder = Callable[[Settings, Bus], ServiceParts]


async def ensure_topology(bus: Bus, settings: Settings) -> None:
    await bus.ensure_streams([StreamSpec(name, n) for name, n in settings.topology.specs()])


class ServiceHost:
    """One service with its control plane; health follows the bus and the lifecycle."""

    def __init__(self, parts: ServiceParts, bus: Bus, settings: Settings) -> None:
        self.parts = parts
        self.settings = settings
        self._bus = bus
        self.control = ControlPlaneServer(
            parts.name,
            bus,
            parts,
            host=settings.grpc_host,
            port=settings.grpc_port,
            apis=parts.apis,
        )
        self._health_task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        for component in self.parts.components:
            await component.start()
        await self.control.start()
        self._health_task = asyncio.create_task(self._watch_bus_health())

    async def stop(self) -> None:
        self._stopping = True
        await self.control.begin_shutdown()
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        for component in reversed(self.parts.components):
            try:
                await component.stop()
            except Exception:
                log.exception("%s: stopping %r failed", self.parts.name, component)
        await self.control.stop(self.settings.shutdown_grace_s)

    async def _watch_bus_health(self) -> None:
        """NOT_SERVING while the bus is unreachable or a consumer loop has died."""
        serving = True
        while not self._stopping:
            await asyncio.sleep(0.5)
            try:
                healthy = await asyncio.wait_for(self._bus.healthy(), timeout=2)
            except Exception:
                healthy = False
            healthy = healthy and all(p.failed is None for p in self.parts.processors())
            if healthy != serving and not self._stopping:
                serving = healthy
                await self.control.set_serving(healthy)
                log.warning("%s: health now %s", self.parts.name, "SERVING" if healthy else "NOT_SERVING")


async def serve(
    builder: ServiceBuilder, settings: Settings, *, ready: Callable[[str], None] | None = None
) -> None:
    """Run one service until SIGTERM/SIGINT, then shut down in order within the grace period."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bus = open_bus(settings.bus_url)
    await bus.start()
    try:
        await ensure_topology(bus, settings)
        host = ServiceHost(builder(settings, bus), bus, settings)
        await host.start()
        if ready is not None:
            ready(host.control.address)
        await stop.wait()
        log.info("%s: shutting down", host.parts.name)
        await host.stop()
    finally:
        await bus.stop()
