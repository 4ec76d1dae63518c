"""The gRPC server every service runs: health, reflection, ControlService, plus its own APIs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

import vcf_agent
from vcf_agent import tracing
from vcf_agent.bus import Bus
from vcf_agent.config import SecuritySettings, Topology
from vcf_agent.control._auth import TokenAuthInterceptor, current_principal
from vcf_agent.control._bus_status import LagReadSource, fill_bus_status
from vcf_agent.control._checkpoints import (
    NotPausedError,
    UnknownGroupError,
    group_states,
    reset_checkpoint,
    select,
)
from vcf_agent.control._dead_letters import read_dead_letters, redrive
from vcf_agent.control._errors import abort, invalid_argument, page_offset
from vcf_agent.control._flags import FieldError, FlagNotFoundError, FlagStore, StaleVersionError
from vcf_agent.control._limits import MAX_PAGE_ROWS, RequestLimitInterceptor
from vcf_agent.control._modes import JobRunSource, compare_modes
from vcf_agent.control._reflection import enable_reflection
from vcf_agent.control._replay import JobIncompleteError, JobNotRetainedError, replay_job
from vcf_agent.processing import StreamProcessor
from vcf_agent.v1 import control_pb2, control_pb2_grpc

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

CONTROL_SERVICE = control_pb2.DESCRIPTOR.services_by_name["ControlService"].full_name

# The grpc.health.v1 name for liveness (the Kubernetes livenessProbe's `service`): the process
# works. Readiness is the overall name "" and the per-service names, which also follow the bus.
LIVENESS = "liveness"

Context = grpc.aio.ServicerContext[Any, Any]

# Long scans of the log stop here even without a client deadline.
_SCAN_LIMIT_S = 120.0


class StatusSource(Protocol):
    """What a service reports in GetStatus beyond the bus."""

    def in_flight(self) -> int: ...

    def processors(self) -> list[StreamProcessor]: ...

    @property
    def job_runs(self) -> JobRunSource | None:
        """The service's completed job runs, if it is the one that knows jobs (CompareModes)."""
        ...

    @property
    def lag_reads(self) -> LagReadSource | None:
        """Lag reads the service makes on its own schedule, reported per backend (ingest's watchdog)."""
        ...


@dataclass(frozen=True, slots=True)
class ServiceApi:
    """A service-specific servicer and the full names of the services it adds."""

    register: Callable[[grpc.aio.Server], None]
    service_names: Sequence[str]


def _time_left(context: Context) -> float:
    remaining = context.time_remaining()
    return _SCAN_LIMIT_S if remaining is None else max(0.0, min(remaining, _SCAN_LIMIT_S))


class ControlServicer(control_pb2_grpc.ControlServiceServicer):
    def __init__(self, plane: ControlPlaneServer) -> None:
        self._plane = plane
        self._started = time.time()

    @property
    def _bus(self) -> Bus:
        return self._plane.bus

    def _flags(self) -> FlagStore:
        if self._plane.flags is None:
            raise RuntimeError("flags are not configured")
        return self._plane.flags

    async def GetStatus(
        self, request: control_pb2.GetStatusRequest, context: Context
    ) -> control_pb2.GetStatusResponse:
        started = Timestamp()
        started.FromSeconds(int(self._started))
        status = self._plane.status
        response = control_pb2.GetStatusResponse(
            service=self._plane.service,
            version=vcf_agent.__version__,
            bus_backend=self._bus.backend,
            # The health watcher's probe (at most one interval old): a hung bus cannot hang this call.
            bus_healthy=self._plane.bus_healthy,
            uptime_seconds=time.time() - self._started,
            in_flight=status.in_flight(),
            started_at=started,
            state=self._plane.state,
            health="SERVING" if self._plane.serving else "NOT_SERVING",
        )
        await fill_bus_status(
            response,
            self._bus,
            status.processors(),
            bus_healthy=self._plane.bus_healthy,
            watched=None if status.lag_reads is None else status.lag_reads.lag_read_rounds(),
        )
        return response

    # ---- flags ----

    async def SetFlag(
        self, request: control_pb2.SetFlagRequest, context: Context
    ) -> control_pb2.SetFlagResponse:
        if not request.HasField("flag"):
            await invalid_argument(context, "flag", "flag is required")
        expected = request.expected_version if request.HasField("expected_version") else None
        try:
            flag = await self._flags().set(
                request.flag, expected, _actor(context), timeout_s=_time_left(context)
            )
        except FieldError as exc:
            await invalid_argument(context, exc.field, exc.description)
        except StaleVersionError as exc:
            await abort(context, grpc.StatusCode.ABORTED, str(exc))
        except TimeoutError:
            await abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                "the change was published but not yet applied; read it back",
            )
        return control_pb2.SetFlagResponse(flag=flag)

    async def ListFlags(
        self, request: control_pb2.ListFlagsRequest, context: Context
    ) -> control_pb2.ListFlagsResponse:
        return control_pb2.ListFlagsResponse(flags=self._flags().flags())

    async def EvaluateFlag(
        self, request: control_pb2.EvaluateFlagRequest, context: Context
    ) -> control_pb2.EvaluateFlagResponse:
        if not request.key:
            await invalid_argument(context, "key", "key is required")
        try:
            return self._flags().evaluate(request.key, request.targeting_key, request.context)
        except FlagNotFoundError:
            await abort(context, grpc.StatusCode.NOT_FOUND, f"no flag {request.key!r}")
        except FieldError as exc:
            await invalid_argument(context, exc.field, exc.description)

    async def WatchFlags(
        self, request: control_pb2.WatchFlagsRequest, context: Context
    ) -> AsyncIterator[control_pb2.FlagUpdate]:
        async for update in self._flags().watch(request.keys):
            yield update

    async def ListFlagAudit(
        self, request: control_pb2.ListFlagAuditRequest, context: Context
    ) -> control_pb2.ListFlagAuditResponse:
        offset = await page_offset(context, request.page_size, request.page_token, max_size=MAX_PAGE_ROWS)
        size = request.page_size or 100
        entries = self._flags().audit(request.key, size + 1, offset)
        response = control_pb2.ListFlagAuditResponse(entries=entries[:size])
        if len(entries) > size:
            response.next_page_token = str(offset + size)
        return response

    # ---- checkpoints and consumption ----

    async def _chosen(self, context: Context, group: str) -> list[StreamProcessor]:
        try:
            return select(self._plane.status.processors(), group)
        except UnknownGroupError as exc:
            await abort(context, grpc.StatusCode.NOT_FOUND, str(exc))

    async def ListCheckpoints(
        self, request: control_pb2.ListCheckpointsRequest, context: Context
    ) -> control_pb2.ListCheckpointsResponse:
        chosen = await self._chosen(context, request.group)
        return control_pb2.ListCheckpointsResponse(groups=await group_states(self._bus, chosen))

    async def ResetCheckpoint(
        self, request: control_pb2.ResetCheckpointRequest, context: Context
    ) -> control_pb2.ResetCheckpointResponse:
        try:
            lags = await reset_checkpoint(self._bus, self._plane.status.processors(), request)
        except FieldError as exc:
            await invalid_argument(context, exc.field, exc.description)
        except UnknownGroupError as exc:
            await abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        except NotPausedError as exc:
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        log.warning("%s: checkpoint of %s reset by %s", self._plane.service, request.group, _actor(context))
        return control_pb2.ResetCheckpointResponse(checkpoints=lags)

    async def Pause(
        self, request: control_pb2.ConsumptionRequest, context: Context
    ) -> control_pb2.ConsumptionResponse:
        chosen = await self._chosen(context, request.group)
        for processor in chosen:
            processor.pause()
        for processor in chosen:
            await processor.wait_parked(_time_left(context))
        return control_pb2.ConsumptionResponse(groups=await group_states(self._bus, chosen))

    async def Resume(
        self, request: control_pb2.ConsumptionRequest, context: Context
    ) -> control_pb2.ConsumptionResponse:
        chosen = await self._chosen(context, request.group)
        for processor in chosen:
            processor.resume()
        await self._plane.refresh_health()
        return control_pb2.ConsumptionResponse(groups=await group_states(self._bus, chosen))

    async def Drain(
        self, request: control_pb2.ConsumptionRequest, context: Context
    ) -> control_pb2.ConsumptionResponse:
        chosen = await self._chosen(context, request.group)
        budget = _time_left(context) if context.time_remaining() is not None else self._plane.grace_s
        for processor in chosen:
            # Health goes NOT_SERVING before the drain runs, so traffic moves away meanwhile.
            processor.begin_drain(budget)
        await self._plane.refresh_health()
        left = await asyncio.gather(*(p.drain(budget) for p in chosen))
        await self._plane.refresh_health()
        return control_pb2.ConsumptionResponse(
            groups=await group_states(self._bus, chosen), uncommitted=sum(left)
        )

    async def ReplayJob(
        self, request: control_pb2.ReplayJobRequest, context: Context
    ) -> control_pb2.ReplayJobResponse:
        if not request.job_id:
            await invalid_argument(context, "job_id", "job_id is required")
        stream = self._plane.topology.variants
        try:
            done = await replay_job(self._bus, stream, request.job_id, timeout_s=_time_left(context))
        except JobNotRetainedError as exc:
            await abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        except JobIncompleteError as exc:
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except TimeoutError as exc:
            await abort(context, grpc.StatusCode.DEADLINE_EXCEEDED, str(exc))
        log.warning(
            "%s: job %s replayed by %s",
            self._plane.service,
            request.job_id,
            _actor(context),
            extra={"job_id": request.job_id},
        )
        return control_pb2.ReplayJobResponse(
            job_id=request.job_id,
            stream=stream,
            batches=done.batches,
            variants=done.variants,
            markers=done.markers,
        )

    # ---- dead letters ----

    async def ListDeadLetters(
        self, request: control_pb2.ListDeadLettersRequest, context: Context
    ) -> control_pb2.ListDeadLettersResponse:
        offset = await page_offset(context, request.page_size, request.page_token, max_size=MAX_PAGE_ROWS)
        entries = await self._dead_letters(request.job_id, request.source_stream, context)
        size = request.page_size or 100
        page = entries[offset : offset + size]
        if request.omit_payload:
            for entry in page:
                entry.letter.ClearField("original_payload")
        response = control_pb2.ListDeadLettersResponse(entries=page)
        if offset + size < len(entries):
            response.next_page_token = str(offset + size)
        return response

    async def _dead_letters(
        self, job_id: str, source_stream: str, context: Context
    ) -> list[control_pb2.DeadLetterEntry]:
        """The retained dead letters matching the filters, read within the caller's deadline."""
        try:
            return await read_dead_letters(
                self._bus,
                self._plane.topology.dead_letters,
                job_id=job_id,
                source_stream=source_stream,
                timeout_s=_time_left(context),
            )
        except TimeoutError as exc:
            await abort(context, grpc.StatusCode.DEADLINE_EXCEEDED, str(exc))
            raise

    async def RedriveDeadLetters(
        self, request: control_pb2.RedriveDeadLettersRequest, context: Context
    ) -> control_pb2.RedriveDeadLettersResponse:
        if not (request.refs or request.job_id or request.source_stream or request.all):
            await invalid_argument(context, "all", "name refs, a job_id or a source_stream, or set all")
        entries = await self._dead_letters(request.job_id, request.source_stream, context)
        if request.refs:
            wanted = {(ref.partition, ref.offset) for ref in request.refs}
            entries = [e for e in entries if (e.partition, e.offset) in wanted]
            if len(entries) < len(wanted):
                await abort(context, grpc.StatusCode.NOT_FOUND, "some refs name no retained dead letter")
        redriven, skipped = await redrive(self._bus, entries)
        log.warning("%s: %d dead letters redriven by %s", self._plane.service, redriven, _actor(context))
        return control_pb2.RedriveDeadLettersResponse(redriven=redriven, skipped=skipped)

    async def CompareModes(
        self, request: control_pb2.CompareModesRequest, context: Context
    ) -> control_pb2.CompareModesResponse:
        source = self._plane.status.job_runs
        if source is None:
            await abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the {self._plane.service} service does not track jobs; call CompareModes on ingest",
            )
        since = request.since.ToNanoseconds() / 1e9 if request.HasField("since") else 0.0
        return compare_modes(source.job_runs(since, request.tenant_id))


def _actor(context: Context) -> str:
    """Who to record in the audit log: the token's principal, else what the peer claims."""
    principal = current_principal()
    if principal is not None:
        return str(principal)
    for key, value in context.invocation_metadata() or ():
        if key == "x-actor" and isinstance(value, str) and value:
            return f"unauthenticated:{value}"
    return f"unauthenticated:{context.peer()}"


class _ProbeHealth(HealthServicer):  # type: ignore[misc]  # grpc_health ships no type hints
    """grpc.health.v1 whose shutdown ends readiness for good but leaves liveness to its owner.

    The stock enter_graceful_shutdown turns every name NOT_SERVING, liveness included,
    which would tell a kubelet to kill a process that is draining as it should.
    """

    def __init__(self) -> None:
        super().__init__()
        self._closed = False

    async def set(self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        if self._closed and service != LIVENESS:
            return
        await super().set(service, status)

    async def close_readiness(self, names: Sequence[str]) -> None:
        """NOT_SERVING for `names` from now on; later set() calls for them are ignored."""
        self._closed = True
        for name in names:
            await super().set(name, NOT_SERVING)


class ControlPlaneServer:
    """grpc.aio server with grpc.health.v1, reflection and ControlService.

    Readiness: an overall entry ("") and one per service name; all go
    NOT_SERVING while the bus is unreachable, a stage waits to retry after a
    store or bus error, or a consumer is draining, and from the first moment of
    shutdown, so probes stop routing traffic before anything stops.

    Liveness (the name LIVENESS): SERVING while the process works, whatever the
    bus or the stores do. It is answered on the event loop, so a loop that
    does not run answers nothing and the probe times out. Stages heal by
    themselves (see StreamProcessor), so no error of theirs ends liveness; it
    stays SERVING while draining too.
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
        flags: FlagStore | None = None,
        topology: Topology | None = None,
        security: SecuritySettings | None = None,
        grace_s: float = 5.0,
    ) -> None:
        self.service = service
        self.bus = bus
        self.status = status
        self.flags = flags
        self.topology = topology or Topology()
        self.grace_s = grace_s
        self._security = security or SecuritySettings()
        self._host = host
        self._requested_port = port
        interceptors: list[grpc.aio.ServerInterceptor] = (  # type: ignore[type-arg]
            [TokenAuthInterceptor(self._security, admin_services=[CONTROL_SERVICE])]
            if self._security.auth_enabled
            else []
        )
        # After authentication, so an unauthenticated caller learns nothing about the bounds.
        interceptors.append(RequestLimitInterceptor())
        # Outermost: every call (health probes excluded) is a span, refused ones too.
        interceptors[:0] = tracing.grpc_server_interceptors()
        self._server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                # gRPC sets SO_REUSEPORT by default, so a second process on a busy port would
                # silently share it and take half the calls; binding must fail instead.
                ("grpc.so_reuseport", 0),
            ],
        )
        self.health = _ProbeHealth()
        self.state = "starting"
        self.serving = False
        self.bus_healthy = True
        self._health_task: asyncio.Task[None] | None = None
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        control_pb2_grpc.add_ControlServiceServicer_to_server(ControlServicer(self), self._server)
        names = [CONTROL_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
        for api in apis:
            api.register(self._server)
            names.extend(api.service_names)
        self._health_names = [
            "",
            f"vcf_agent.{service}",
            CONTROL_SERVICE,
            *[a for api in apis for a in api.service_names],
        ]
        enable_reflection(names, self._server)
        self.port = 0

    @property
    def address(self) -> str:
        return f"{self._host}:{self.port}"

    async def start(self) -> None:
        address = f"{self._host}:{self._requested_port}"
        if self._security.tls_enabled:
            assert self._security.tls_cert is not None and self._security.tls_key is not None
            credentials = grpc.ssl_server_credentials(
                [(self._security.tls_key.read_bytes(), self._security.tls_cert.read_bytes())]
            )
            self.port = self._bind(address, credentials)
        else:
            self.port = self._bind(address, None)
        if self.port == 0:
            raise OSError(f"cannot bind gRPC port {address} (in use by another process?)")
        await self._server.start()
        self.state = "serving"
        await self.refresh_health()
        self._health_task = asyncio.create_task(self._watch_health(), name=f"{self.service}:health")
        log.info(
            "%s gRPC control plane on %s (tls=%s)", self.service, self.address, self._security.tls_enabled
        )

    def _bind(self, address: str, credentials: grpc.ServerCredentials | None) -> int:
        """The bound port, or 0; grpcio raises on some failures and returns 0 on others."""
        try:
            if credentials is None:
                return self._server.add_insecure_port(address)
            return self._server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise OSError(f"cannot bind gRPC port {address} (in use by another process?): {exc}") from exc

    async def refresh_health(self) -> None:
        """Recompute health now rather than at the next probe of the bus."""
        if self.state == "stopping":
            return
        processors = list(self.status.processors())
        if self.flags is not None:
            processors.append(self.flags.processor)
        # A stage waiting to retry after a store or bus error is not ready, but the process works.
        healthy = self.bus_healthy and all(
            p.state not in ("draining", "drained", "retrying") for p in processors
        )
        if healthy != self.serving or self.state == "starting":
            log.log(
                logging.INFO if healthy else logging.WARNING,
                "%s: health now %s",
                self.service,
                "SERVING" if healthy else "NOT_SERVING",
            )
        await self._set(healthy)

    async def _set(self, serving: bool) -> None:
        self.serving = serving
        for name in self._health_names:
            await self.health.set(name, SERVING if serving else NOT_SERVING)
        await self.health.set(LIVENESS, SERVING)

    async def _watch_health(self) -> None:
        while self.state != "stopping":
            await asyncio.sleep(0.5)
            try:
                self.bus_healthy = await asyncio.wait_for(self.bus.healthy(), timeout=2)
            except Exception:
                self.bus_healthy = False
            await self.refresh_health()

    async def begin_shutdown(self) -> None:
        """Probes see NOT_SERVING from the first moment of shutdown; flag watchers are ended."""
        if self.state == "stopping":
            return
        self.state = "stopping"
        self.serving = False
        await self.health.close_readiness(self._health_names)
        if self.flags is not None:
            self.flags.close_watchers()
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task

    async def stop(self, grace_s: float | None = None) -> None:
        await self.begin_shutdown()
        # grace bounds how long open streams (health watchers) may keep the server up.
        await self._server.stop(self.grace_s if grace_s is None else grace_s)
