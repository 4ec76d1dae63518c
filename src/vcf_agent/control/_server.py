"""The gRPC server every service runs: health, reflection, ControlService, plus its own APIs."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

import vcf_agent
from vcf_agent.bus import Bus
from vcf_agent.v1 import control_pb2, control_pb2_grpc

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class StatusSource(Protocol):
    """What a service reports in GetStatus beyond the bus."""

    def in_flight(self) -> int: ...

    def lag_groups(self) -> Sequence[tuple[str, str]]:
        """(group, stream) pairs whose lag GetStatus reports."""
        ...


@dataclass(frozen=True, slots=True)
class ServiceApi:
    """A service-specific servicer and the full names of the services it adds."""

    register: Callable[[grpc.aio.Server], None]
    service_names: Sequence[str]


class ControlServicer(control_pb2_grpc.ControlServiceServicer):
    def __init__(self, service: str, bus: Bus, status: StatusSource, state: Callable[[], str]) -> None:
        self._service = service
        self._bus = bus
        self._status = status
        self._state = state
        self._started = time.time()

    async def GetStatus(
        self, request: control_pb2.GetStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> control_pb2.GetStatusResponse:
        started = Timestamp()
        started.FromSeconds(int(self._started))
        response = control_pb2.GetStatusResponse(
            service=self._service,
            version=vcf_agent.__version__,
            bus_backend=self._bus.backend,
            bus_healthy=await self._bus.healthy(),
            uptime_seconds=time.time() - self._started,
            in_flight=self._status.in_flight(),
            started_at=started,
            state=self._state(),
        )
        for group, stream in self._status.lag_groups():
            for lag in await self._bus.lag(group, stream):
                response.lag.append(
                    control_pb2.PartitionLag(
                        stream=stream,
                        group=group,
                        partition=lag.partition,
                        committed=lag.committed,
                        end=lag.end,
                        lag=lag.lag,
                    )
                )
        return response


class ControlPlaneServer:
    """grpc.aio server with grpc.health.v1, reflection and ControlService.

    Health has an overall entry ("") and one per service name; both go
    NOT_SERVING the moment shutdown begins so probes stop routing traffic.
    """

    def __init__(
        self,
        service: str,
        bus: Bus,
        status: StatusSource,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        apis: Sequence[ServiceApi] = (),
    ) -> None:
        self.service = service
        self._host = host
        self._requested_port = port
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ]
        )
        self.health = HealthServicer()
        self._state = "starting"
        self._bus = bus
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        control_pb2_grpc.add_ControlServiceServicer_to_server(
            ControlServicer(service, bus, status, lambda: self._state), self._server
        )
        names = [
            control_pb2.DESCRIPTOR.services_by_name["ControlService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ]
        for api in apis:
            api.register(self._server)
            names.extend(api.service_names)
        self._health_names = [
            "",
            f"vcf_agent.{service}",
            *names[:1],
            *[a for api in apis for a in api.service_names],
        ]
        reflection.enable_server_reflection(names, self._server)
        self.port = 0

    @property
    def address(self) -> str:
        return f"{self._host}:{self.port}"

    async def start(self) -> None:
        self.port = self._server.add_insecure_port(f"{self._host}:{self._requested_port}")
        if self.port == 0:
            raise OSError(f"cannot bind gRPC port {self._host}:{self._requested_port}")
        await self._server.start()
        await self.set_serving(True)
        log.info("%s gRPC control plane on %s", self.service, self.address)

    async def set_serving(self, serving: bool) -> None:
        self._state = "serving" if serving else "not_serving"
        for name in self._health_names:
            await self.health.set(name, SERVING if serving else NOT_SERVING)

    async def begin_shutdown(self) -> None:
        """Probes see NOT_SERVING from the first moment of shutdown."""
        self._state = "stopping"
        await self.health.enter_graceful_shutdown()

    async def stop(self, grace_s: float = 5.0) -> None:
        await self.begin_shutdown()
        # grace bounds how long open streams (watchers) may keep the server up.
        await self._server.stop(grace_s)
