"""Running services: the one place that handles signals and ordered shutdown.

A service is a list of components (AsyncComponents) plus the gRPC APIs it adds
to its control plane. `serve` runs one service in its own process; the app's
LocalPipeline runs all five in one process (``vcf-agent run``). Both start and
stop components through lifecycle.ComponentStack.
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Protocol

from vcf_agent.bus import Bus, StreamSpec, open_bus
from vcf_agent.config import Settings, is_loopback
from vcf_agent.control import (
    ControlPlaneServer,
    FlagStore,
    JobRunSource,
    LagReadSource,
    SecuritySettings,
    ServiceApi,
    instance_group,
)
from vcf_agent.lifecycle import AsyncComponent, ComponentStack
from vcf_agent.observability import BusSampler, MetricsEndpoint
from vcf_agent.processing import StreamProcessor

log = logging.getLogger(__name__)

# The exit status of a service whose shutdown was abandoned (sysexits' EX_SOFTWARE): it did not
# finish stopping in `shutdown_timeout_s`, or a second signal asked it to stop at once.
EXIT_SHUTDOWN_ABANDONED = 70


@dataclass(slots=True)
class ServiceParts:
    """What a service contributes: components started in order, stopped in reverse.

    A service whose in-process callers (the `run` command, tests) need its handles returns a
    subclass with them as typed fields (ingest's IngestParts, the writer's WriterParts, ...).
    """

    name: str
    components: list[AsyncComponent] = field(default_factory=list)
    apis: list[ServiceApi] = field(default_factory=list)
    # What ControlService.CompareModes answers from: only ingest knows jobs.
    job_runs: JobRunSource | None = None
    # Lag reads GetStatus reports per backend: only ingest's job watchdog makes its own.
    lag_reads: LagReadSource | None = None
    # Gauges the service samples for /metrics (started only when metrics are served).
    samplers: list[AsyncComponent] = field(default_factory=list)

    def processors(self) -> list[StreamProcessor]:
        return [c for c in self.components if isinstance(c, StreamProcessor)]

    def in_flight(self) -> int:
        return sum(p.in_flight for p in self.processors())


class ServiceBuilder(Protocol):
    """A service package's `build`: its parts, given the process's bus and flag store."""

    def __call__(self, settings: Settings, bus: Bus, *, flags: FlagStore | None = None) -> ServiceParts: ...


def service_flags(service: str, settings: Settings, bus: Bus) -> FlagStore:
    """The flag store of one service instance: data_dir/control/<service>, fed by `control-events`."""
    directory = settings.data_dir / "control" / service
    return FlagStore(
        directory / "flags.sqlite",
        bus,
        settings.topology.control_events,
        service,
        group=instance_group(service, directory),
    )


async def ensure_topology(bus: Bus, settings: Settings) -> None:
    await bus.ensure_streams([StreamSpec(name, n) for name, n in settings.topology.specs()])


class ServiceHost(AsyncComponent):
    """One service with its control plane, flags and health.

    Health follows the bus and the lifecycle (see ControlPlaneServer); flags
    live under data_dir/control/<service> and converge through `control-events`.
    """

    def __init__(
        self,
        parts: ServiceParts,
        bus: Bus,
        settings: Settings,
        *,
        flags: FlagStore | None = None,
        security: SecuritySettings | None = None,
    ) -> None:
        self._security = security or settings.security
        settings.check_bind(self._security)
        self.parts = parts
        self.settings = settings
        self._bus = bus
        self.flags = flags or service_flags(parts.name, settings, bus)
        # Flags first: components may evaluate them as soon as they start.
        self._running = ComponentStack(parts.name, [self.flags, *parts.components])
        self.control = ControlPlaneServer(
            parts.name,
            bus,
            parts,
            host=settings.grpc_host,
            port=settings.grpc_port,
            apis=parts.apis,
            flags=self.flags,
            topology=settings.topology,
            security=self._security,
            grace_s=settings.shutdown_grace_s,
        )
        # /metrics, and the lag and bus health it shows, when a metrics port is configured.
        self.metrics: MetricsEndpoint | None = None
        observed: list[AsyncComponent] = []
        if settings.metrics_port is not None:
            self.metrics = MetricsEndpoint(settings.grpc_host, settings.metrics_port)
            observed = [BusSampler(bus, parts.processors), *parts.samplers, self.metrics]
        self._observed = ComponentStack(f"{parts.name} metrics", observed)

    async def start(self) -> None:
        await self._running.start()
        async with self._running.starting():
            await self.control.start()
            await self._observed.start()
        if not self._security.auth_enabled:
            # WARNING, the default level: whoever starts a service sees that anyone local may call it.
            host = self.settings.grpc_host
            where = (
                f"listening on {host} only"
                if is_loopback(host)
                else f"listening on {host} because of --insecure: anyone who can connect may read and"
                " change every tenant's data"
            )
            log.warning("%s: no tokens configured, authentication is off; %s", self.parts.name, where)

    async def stop(self) -> None:
        """A full drain within the grace: NOT_SERVING first; every stage stops fetching, finishes and
        stores what it holds and commits it (`shutdown_drain_s`), while the gRPC server gives open
        calls its grace; only then do the consumers leave their groups and the stores close.
        """
        await self.control.begin_shutdown()
        began = time.monotonic()
        processors = [*self.parts.processors(), self.flags.processor]
        for processor in processors:
            processor.begin_drain(self.settings.shutdown_drain_s)
        # Open calls may still read the stores: the server stops before the components do.
        await self.control.stop()
        await self._running.stop()
        await self._observed.stop()
        left = sum(processor.uncommitted() for processor in processors)
        log.info(
            "%s: stopped in %.1fs; %d records left uncommitted",
            self.parts.name,
            time.monotonic() - began,
            left,
        )


async def serve(
    name: str,
    builder: ServiceBuilder,
    settings: Settings,
    *,
    ready: Callable[[ServiceHost], None] | None = None,
) -> None:
    """Run one service until SIGTERM/SIGINT, then shut down in order within the grace period.

    The shutdown is bounded: a second signal, or `shutdown_timeout_s` after the first, ends the
    process with every thread's and task's stack logged (ShutdownDeadline).
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    deadline = ShutdownDeadline(name, settings.shutdown_timeout_s, loop)

    def on_signal() -> None:
        if stop.is_set():
            deadline.abandon("a second signal asked for an immediate exit")
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    # The bus outlives the host: the host's components commit through it while they stop.
    async with ComponentStack(name) as running:
        bus = await running.enter(open_bus(settings.bus_url))
        await ensure_topology(bus, settings)
        flags = service_flags(name, settings, bus)
        parts = builder(settings, bus, flags=flags)
        host = await running.enter(ServiceHost(parts, bus, settings, flags=flags))
        freeze_startup_heap()
        if ready is not None:
            ready(host)
        await stop.wait()
        log.info("%s: shutting down", name)
        deadline.start()
        began = time.monotonic()
    # Everything is committed and closed: what the process does after this is its own teardown.
    log.info("%s: shut down in %.1fs", name, time.monotonic() - began)


def freeze_startup_heap() -> None:
    """Leave the objects a started service holds out of every later garbage collection.

    A full collection walks every object the collector tracks, and a started service holds
    hundreds of thousands that live as long as it does (imported modules, protobuf descriptors,
    the Arrow, LanceDB, graph and gRPC bindings): the full collections a job set off took 37-56 ms
    each in the router, aggregator and writer (measured 2026-12-06 with gc.callbacks, five
    processes, a 100,000-variant job). Frozen, they are skipped. Alternating, five processes on
    2 cores: `single` 59.3 / 62.6 against 61.9 / 63.7 us of CPU per variant in all, 30,388 /
    28,870 against 28,947 / 28,096 variants/s; `latency` cold 0.564 / 0.551 / 0.561 s against
    0.607 / 0.592 / 0.558, warm the same. Collected first, so no garbage is frozen with them.
    """
    gc.collect()
    gc.freeze()


class ShutdownDeadline:
    """Ends the process when its shutdown does not finish in time, saying where it was stuck.

    A stop can wait on what the process does not control: a store or bus call blocked in a
    worker thread (SQLite's busy wait, a broker that stopped answering), a thread the
    interpreter's teardown joins. An orchestrator would SIGKILL such a process at the end of its
    own grace and the log would not say why; this timer runs on its own thread, so a blocked
    event loop cannot hold it back: it logs every thread's stack and every asyncio task's, then
    exits with EXIT_SHUTDOWN_ABANDONED. Nothing is lost by that: what was not committed is
    delivered again to the next member of the group, and the stores take it idempotently.
    """

    def __init__(self, service: str, timeout_s: float, loop: asyncio.AbstractEventLoop) -> None:
        self._service = service
        self._timeout_s = timeout_s
        self._loop = loop
        self._timer: threading.Timer | None = None

    def start(self) -> None:
        if self._timer is not None:
            return
        self._timer = threading.Timer(
            self._timeout_s, self.abandon, args=(f"it did not finish in {self._timeout_s:g}s",)
        )
        self._timer.name = f"{self._service}-shutdown-deadline"
        self._timer.daemon = True
        self._timer.start()

    def abandon(self, why: str) -> None:
        """Log where every thread and task is, then exit at once (any thread)."""
        log.error("%s: shutdown abandoned: %s; stacks follow", self._service, why)
        for handler in logging.getLogger().handlers:
            handler.flush()
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        self._log_tasks()
        logging.shutdown()
        sys.stderr.flush()
        os._exit(EXIT_SHUTDOWN_ABANDONED)

    def _log_tasks(self) -> None:
        """The asyncio tasks' stacks, when the loop still runs callbacks (within a second)."""
        logged = threading.Event()

        def log_tasks() -> None:
            try:
                for task in asyncio.all_tasks(self._loop):
                    frames = "".join(
                        f"\n  {f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}"
                        for f in _awaited_frames(task.get_coro())
                    )
                    log.error("%s: task %s still running:%s", self._service, task.get_name(), frames)
            finally:
                logged.set()

        if threading.current_thread() is threading.main_thread():
            log_tasks()
            return
        try:
            self._loop.call_soon_threadsafe(log_tasks)
        except RuntimeError:  # the loop is closed: there are no tasks to show
            return
        if not logged.wait(1.0):
            log.error("%s: the event loop did not answer within 1s: it is blocked", self._service)


def _awaited_frames(coro: object) -> Iterator[FrameType]:
    """The frames of a suspended coroutine and of everything it awaits, outermost first.

    Task.get_stack shows only the outermost frame of a suspended coroutine; where it waits is
    at the end of its `cr_await` chain.
    """
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if isinstance(frame, FrameType):
            yield frame
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
