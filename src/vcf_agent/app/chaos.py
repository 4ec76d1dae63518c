"""`vcf-agent chaos`: the failover bus (Iggy primary, Kafka fallback) through outages, five processes.

Each scenario starts a real iggy-server and a real Kafka broker, the five
services as `vcf-agent serve` processes on `failover://?primary=iggy…&fallback=kafka…`,
submits one synthetic job, injects its fault as soon as the first variants
are stored (`healthy` injects none: any switch there is flapping; `primary-slow`
pauses the primary with SIGSTOP for a few seconds now and then until the job ends: a primary
that answers late, not a dead one, so a switch there is flapping too), and waits for
the job to finish. It measures what an operator would:
when each service switched backends (from its GetStatus), the longest time the
stored count did not grow while a backend was up (stall), how long the job
took, what GetJob said while records were stranded, and how often and how much
ingest published again; and it checks what must hold afterwards: stored ==
expected, with the writer's table read directly after the services stopped
(distinct variants of the job == expected, rows == distinct: no duplicate, none
lost), one member per live consumer in every group on each backend, and every
committed offset inside its backend's log.

The same code runs the CI tests (a few thousand variants) and the command (500,000).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from vcf_agent.localdev import (
    IggyServerError,
    LocalIggyServer,
    LocalKafkaBroker,
    ServiceProcess,
    running_pipeline,
)
from vcf_agent.schema import TERMINAL_STATES

if TYPE_CHECKING:
    from vcf_agent.v1 import control_pb2

log = logging.getLogger(__name__)

HEALTHY = "healthy"
PRIMARY_KILLED = "primary-killed"
PRIMARY_BACK_FRESH = "primary-back-fresh"
FALLBACK_KILLED = "fallback-killed"
BOTH_DOWN = "both-down"
PRIMARY_SLOW = "primary-slow"
SCENARIOS = (HEALTHY, PRIMARY_KILLED, PRIMARY_BACK_FRESH, FALLBACK_KILLED, BOTH_DOWN, PRIMARY_SLOW)
# Scenarios with a live primary throughout: a switch there is a false alarm (flapping).
_NO_SWITCH_EXPECTED = (HEALTHY, PRIMARY_SLOW)
# primary-slow: the primary is paused (SIGSTOP) this long, this often, from the fault to the
# job's end. Shorter than the default silent period (10 s), longer than three probe timeouts.
SLOW_PAUSE_S = 6.0
SLOW_EVERY_S = 15.0
# What the failover scenarios' primary can be (see ChaosServers).
PRIMARIES = ("iggy", "kafka")
TENANT = "chaos-lab"
# A scenario that strands records kills the primary once ingest's watchdog has read their lag
# there (a dead backend's stranded records are its last lag read while it answered). Each read
# may take the watchdog's 5 s timeout and a round counts only if all its reads answered, so a
# loaded machine can fail a few rounds in a row; past this the scenario gives up, saying so.
_WATCHDOG_READ_GUARD_S = 180.0
# A broker's boot, first or after a kill: the restart in fallback-killed at load 50-70 was still
# loading its metadata log after the default 90 s (the services meanwhile ran on Iggy alone).
_BROKER_BOOT_S = 300.0


@dataclass
class ScenarioResult:
    """What one scenario measured and the problems it found (empty when everything held)."""

    scenario: str
    expected: int
    stored: int = 0
    store_variants: int = 0
    store_analyses: int = 0
    state: str = ""
    # Seconds after the fault at which each service's active backend changed: "router kafka@1.6".
    switches: list[str] = field(default_factory=list)
    stall_s: float = 0.0
    outage_s: float = 0.0
    # Stored between the fault and the first server's return: progress through the fallback alone.
    stored_during_outage: int = 0
    # Seconds after the fault until every service published to Iggy again (0: never left or not asked).
    back_on_primary_s: float = 0.0
    # primary-slow: times the primary was paused (its seconds paused in all are outage_s).
    pauses: int = 0
    completion_s: float = 0.0
    # Times ingest published the job again from its file (records stranded on a lost backend),
    # and of those the times it was the whole file rather than what the lost backend had taken.
    republished: int = 0
    republished_whole: int = 0
    # Variants ingest published again in all (spans the lost backend had taken, or whole files).
    republished_variants: int = 0
    # From the writer's table after the services stopped: rows beyond one per variant, and
    # expected variants with no row.
    duplicates: int = 0
    lost: int = 0
    # What GetJob said while records were stranded (its stall detail), empty if it never did.
    stranded: str = ""
    # Members per (backend, group, topic) for groups some live service runs.
    members: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    # Things that went wrong around the system under test (a server slow to restart).
    notes: list[str] = field(default_factory=list)

    @property
    def switch_times(self) -> list[float]:
        return [float(entry.rsplit("@", 1)[1]) for entry in self.switches]


class ChaosServers:
    """An iggy-server and a Kafka broker that can be killed and brought back on the same ports.

    With `primary="kafka"` the failover scenarios' primary is a second Kafka broker instead of
    iggy-server (where no iggy-server binary is at hand: the same switching, stranding and
    re-publishing, with backends named kafka-primary and kafka-fallback).
    """

    def __init__(self, root: Path, iggy_binary: str, *, primary: str = "iggy") -> None:
        if primary not in PRIMARIES:
            raise ValueError(f"primary must be one of {', '.join(PRIMARIES)}, not {primary!r}")
        self._root = root
        self.primary = primary
        self.iggy = LocalIggyServer(iggy_binary, data_dir=root / "iggy")
        self.notes: list[str] = []
        self._kafka_released = threading.Event()
        self.kafka = LocalKafkaBroker(data_dir=root / "kafka", startup_timeout_s=_BROKER_BOOT_S)
        self.kafka_primary = LocalKafkaBroker(
            data_dir=root / "kafka-primary", startup_timeout_s=_BROKER_BOOT_S
        )
        self._primary_released = threading.Event()

    @property
    def backend_names(self) -> tuple[str, str]:
        """(primary, fallback) as the failover bus names them (GetStatus, FailoverRecord.backend)."""
        return ("iggy", "kafka") if self.primary == "iggy" else ("kafka-primary", "kafka-fallback")

    @property
    def primary_url(self) -> str:
        if self.primary == "iggy":
            return self.iggy_url
        return f"kafka://{self.kafka_primary.host}:{self.kafka_primary.port}"

    async def start_primary(self) -> None:
        if self.primary == "iggy":
            await self.start_iggy()
        else:
            self._primary_released = await self._keep_started(self.kafka_primary)

    def pause_primary(self) -> None:
        """SIGSTOP the primary: it keeps its connections and answers nothing until resume_primary()."""
        (self.iggy if self.primary == "iggy" else self.kafka_primary).pause()

    def resume_primary(self) -> None:
        (self.iggy if self.primary == "iggy" else self.kafka_primary).resume()

    async def kill_primary(self) -> None:
        if self.primary == "iggy":
            await self.iggy.kill()
        else:
            self.kafka_primary.kill_sync()
            self._primary_released.set()

    async def restart_primary_fresh(self) -> None:
        """Bring the primary back on its port with nothing of its log: everything on it is lost."""
        if self.primary == "iggy":
            await self.restart_iggy_fresh()
            return
        await self.kill_primary()
        log = self._root / "kafka-primary" / "data"
        await asyncio.to_thread(shutil.rmtree, log, True)
        await self.start_primary()

    @property
    def iggy_url(self) -> str:
        return self.iggy.url

    @property
    def kafka_url(self) -> str:
        return f"kafka://{self.kafka.host}:{self.kafka.port}"

    def failover_url(self, options: str = "") -> str:
        """The services' bus URL; `options` are more query parameters ("failures_to_switch=1")."""
        return (
            f"failover://?primary={quote(self.primary_url, safe='')}"
            f"&fallback={quote(self.kafka_url, safe='')}" + (f"&{options}" if options else "")
        )

    async def start(self) -> None:
        await self.start_primary()
        await self.start_kafka()

    async def start_iggy(self) -> None:
        """Start (or restart on the same data and port); a restart the server itself fails is retried."""
        for attempt in range(3):
            try:
                await self.iggy.start()
                return
            except IggyServerError as exc:
                self.notes.append(f"iggy-server failed to start (attempt {attempt + 1}): {str(exc)[-300:]}")
                await asyncio.sleep(1)
        await self.iggy.start()

    async def start_kafka(self) -> None:
        """Start (or restart) the broker from a thread that lives as long as it does.

        Booting takes seconds and must not block the event loop (the scenario keeps
        measuring meanwhile); the JVM gets SIGTERM when its spawning thread ends,
        so that thread waits until the broker is killed or stopped.
        """
        self._kafka_released = await self._keep_started(self.kafka)

    @staticmethod
    async def _keep_started(broker: LocalKafkaBroker) -> threading.Event:
        """Start the broker from a thread that waits until the returned event is set."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        released = threading.Event()

        def keep() -> None:
            try:
                broker.start_sync()
            except BaseException as exc:  # handed to the awaiting coroutine
                loop.call_soon_threadsafe(ready.set_exception, exc)
                return
            loop.call_soon_threadsafe(ready.set_result, None)
            released.wait()

        threading.Thread(target=keep, name="chaos-kafka", daemon=True).start()
        await ready
        return released

    async def kill_kafka(self) -> None:
        self.kafka.kill_sync()
        self._kafka_released.set()

    async def restart_iggy_fresh(self) -> None:
        """Bring Iggy back on its port with an empty data directory: everything on it is lost."""
        await self.iggy.kill()
        fresh = self._root / f"iggy-fresh-{time.monotonic_ns()}"
        self.iggy.use_data_dir(fresh)
        await self.start_iggy()

    async def stop(self) -> None:
        if self.primary == "iggy":
            await self.iggy.stop()
        else:
            await self.kill_primary()
        await self.kill_kafka()


async def _stored(ingest: str, job_id: str) -> tuple[int, int, str, str]:
    """(stored, state, state name, why it is stalled) of the job, from GetJob."""
    import grpc

    from vcf_agent.schema import state_name
    from vcf_agent.v1 import jobs_pb2, jobs_pb2_grpc

    async with grpc.aio.insecure_channel(ingest) as channel:
        job = await jobs_pb2_grpc.IngestServiceStub(channel).GetJob(
            jobs_pb2.GetJobRequest(job_id=job_id), timeout=10
        )
    return job.counts.stored, job.state, state_name(job.state), job.stall_detail


async def _status(address: str) -> control_pb2.GetStatusResponse:
    import grpc

    from vcf_agent.v1 import control_pb2, control_pb2_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        return await control_pb2_grpc.ControlServiceStub(channel).GetStatus(
            control_pb2.GetStatusRequest(), timeout=10
        )


async def _until_watchdog_read(ingest: str, backend: str, since: float) -> float:
    """Seconds until ingest's job watchdog completed a round of lag reads on `backend` that began
    after `since` (wall clock): records published there before are then in its last known lag."""
    import grpc

    waiting_since = time.monotonic()
    reads = "none"
    while True:
        try:
            status = await _status(ingest)
        except grpc.aio.AioRpcError as exc:  # a loaded ingest slow to answer: ask again
            log.info("chaos: ingest's GetStatus failed: %s", exc.code())
        else:
            for seen in status.backends:
                if seen.name == backend:
                    if seen.watchdog_lag_read_at.ToNanoseconds() > since * 1e9:
                        return time.monotonic() - waiting_since
                    reads = f"{seen.watchdog_lag_reads} complete rounds, none after"
        if time.monotonic() - waiting_since > _WATCHDOG_READ_GUARD_S:
            raise _ScenarioProblem(
                f"ingest's watchdog read no lag on {backend} in {_WATCHDOG_READ_GUARD_S:.0f} s after the"
                f" job's records reached it ({reads}): GetJob could not name them once stranded"
            )
        await asyncio.sleep(0.2)


class _DatabaseWrites:
    """Records on `database-writes` on one backend, read over one connection (one login)."""

    def __init__(self, url: str) -> None:
        from vcf_agent.bus import open_bus

        self._bus = open_bus(url)
        self._started = False

    async def count(self, deadline: float) -> int:
        """Asked again until it answers: a loaded debug iggy-server can take over 5 s to log a
        client in (a CLI run at load 66 broke on it), and a guessed 0 could end the wait early."""
        from vcf_agent.config import Topology

        while True:
            try:
                if not self._started:
                    await self._bus.start()
                    self._started = True
                return sum((await self._bus.end_offsets(Topology().database_writes)).values())
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise _ScenarioProblem(f"database-writes on the primary unreadable: {exc!r}") from exc
                await asyncio.sleep(0.5)

    async def read_through(self, group: str, deadline: float) -> None:
        """Returns once `group` has committed everything on database-writes here.

        A stage commits after it announces what it stored, so a completed job's offsets can
        still be in flight: a writer paused right after the warm-up job completed had not
        committed there, its group was not listed as a reader, and nothing it left unread on
        the killed primary was named stranded.
        """
        from vcf_agent.config import Topology

        stream = Topology().database_writes
        while True:
            with contextlib.suppress(Exception):  # a loaded backend: asked again below
                if not self._started:
                    await self._bus.start()
                    self._started = True
                if group in await self._bus.consumer_groups(stream):
                    lags = await self._bus.lag(group, stream)
                    if lags and all(item.lag == 0 for item in lags):
                        return
            if time.monotonic() > deadline:
                raise _ScenarioProblem(f"{group} did not commit database-writes on the primary")
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self._bus.stop()


async def _until_final(ingest: str, job_id: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while (await _stored(ingest, job_id))[1] not in TERMINAL_STATES:
        if time.monotonic() > deadline:
            raise _ScenarioProblem(f"job {job_id} not finished after {timeout_s:.0f}s")
        await asyncio.sleep(0.2)


async def _submit(ingest: str, path: Path) -> str:
    import grpc

    from vcf_agent.v1 import jobs_pb2, jobs_pb2_grpc

    async def upload() -> AsyncIterator[jobs_pb2.SubmitVcfRequest]:
        meta = jobs_pb2.SubmitVcfMetadata(tenant_id=TENANT, file_name=path.name, path=str(path))
        yield jobs_pb2.SubmitVcfRequest(metadata=meta)

    async with grpc.aio.insecure_channel(ingest) as channel:
        reply = await jobs_pb2_grpc.IngestServiceStub(channel).SubmitVcf(upload(), timeout=60)
    return str(reply.job.job_id)


class _Watch:
    """Samples the job's stored count and every service's active backend until stopped.

    `services` maps each service's name to its gRPC address ("ingest" answers GetJob);
    `primary` is the primary backend's name as GetStatus reports it.
    """

    def __init__(self, services: dict[str, str], job_id: str, primary: str) -> None:
        self._services = services
        self._job_id = job_id
        self._primary = primary
        self.stored = 0
        self.state = 0
        self.state_name = ""
        self.fault_at: float | None = None
        self.stored_at_fault = 0
        # When the job reached a final state, as sampled (the fault may still be in progress then).
        self.finished_at: float | None = None
        self.stored_at_return = 0
        self.switches: list[str] = []
        # Some service was seen off the primary after the fault.
        self.left_primary = False
        # When every service was last seen back on the primary after leaving it (None while one
        # is still off it): sampled as it happens, so a return before the job's end counts then.
        self.returned_at: float | None = None
        # The first stall detail of the job that named records stranded on a backend.
        self.stranded = ""
        self.stranded_seen = asyncio.Event()
        self._active: dict[str, str] = {}
        # Intervals (start, end) when no backend was up: a stall there is not the bus's fault.
        self.both_down: list[tuple[float, float]] = []
        self._last_growth = time.monotonic()
        self._gaps: list[tuple[float, float]] = []

    async def run(self) -> None:
        next_status = 0.0
        while True:
            now = time.monotonic()
            with contextlib.suppress(Exception):  # a service busy restarting a client; sample again
                stored, self.state, self.state_name, detail = await _stored(
                    self._services["ingest"], self._job_id
                )
                if "stranded" in detail and not self.stranded:
                    self.stranded = detail
                    self.stranded_seen.set()
                if stored > self.stored:
                    self._gaps.append((self._last_growth, now))
                    self._last_growth = now
                    self.stored = stored
                if self.state in TERMINAL_STATES and self.finished_at is None:
                    self.finished_at = now
            if now >= next_status:
                next_status = now + 0.5
                await asyncio.gather(*(self._sample_backend(name) for name in self._services))
            await asyncio.sleep(0.1)

    async def _sample_backend(self, name: str) -> None:
        try:
            status = await _status(self._services[name])
        except Exception:  # a slow answer is sampled again
            return
        sampled_at = time.monotonic()
        active = status.active_backend
        if self._active.get(name) not in (None, active) and self.fault_at is not None:
            self.switches.append(f"{name} {active}@{sampled_at - self.fault_at:.1f}")
        self._active[name] = active
        if self.fault_at is None:
            return
        if active != self._primary:
            self.left_primary = True
            self.returned_at = None
        elif self.left_primary and self.returned_at is None and self.all_on(self._primary):
            self.returned_at = sampled_at

    def all_on(self, backend: str) -> bool:
        return len(self._active) == len(self._services) and set(self._active.values()) == {backend}

    async def back_on_primary_s(self, timeout_s: float) -> float:
        """Seconds after the fault at which every service was back on the primary (0: none left it).

        Waits up to timeout_s for services still off it; the moment reported is when the last
        of them was seen switching back, which may be long before this is asked.
        """
        if self.fault_at is None:
            raise ValueError("no fault yet")
        deadline = time.monotonic() + timeout_s
        while not self.all_on(self._primary) or (self.left_primary and self.returned_at is None):
            if time.monotonic() > deadline:
                raise _ScenarioProblem(f"publishing did not return to the primary within {timeout_s:.0f} s")
            await asyncio.sleep(0.2)
        return 0.0 if self.returned_at is None else self.returned_at - self.fault_at

    def stall_s(self, since: float, until: float) -> float:
        """Longest time the stored count did not grow between since and until, outside both-down spans."""
        gaps = [*self._gaps, (self._last_growth, until)]
        longest = 0.0
        for start, end in gaps:
            start, end = max(start, since), min(end, until)
            for down_start, down_end in self.both_down:
                # Time with no backend up does not count as a stall.
                overlap = max(0.0, min(end, down_end) - max(start, down_start))
                end -= overlap
            longest = max(longest, end - start)
        return longest


async def _check_groups(
    servers: ChaosServers, services: dict[str, ServiceProcess], result: ScenarioResult
) -> None:
    """One member per live consumer and committed offsets inside each backend's log."""
    live: dict[str, list[str]] = {}
    for service in services.values():
        status = await _status(service.grpc)
        for state in status.groups:
            live[state.group] = list(state.streams)
    for name, url in zip(servers.backend_names, (servers.primary_url, servers.kafka_url), strict=True):
        try:
            await _check_backend_groups(name, url, live, result)
        except Exception as exc:  # a check that cannot log in is a problem of the row, not the end of it
            result.problems.append(f"{name}: groups not checked: {exc!r}"[:300])


async def _check_backend_groups(
    name: str, url: str, live: dict[str, list[str]], result: ScenarioResult
) -> None:
    """_check_groups on one backend."""
    from vcf_agent.bus import Bus, open_bus

    bus: Bus = open_bus(url)
    await bus.start()
    try:
        members = await _members(name, url, live)
        for (group, topic), count in members.items():
            result.members[f"{name} {group}/{topic}"] = count
            if count != 1:
                result.problems.append(f"{name}: group {group} on {topic} has {count} members, 1 consumer")
        for group, streams in live.items():
            for stream in streams:
                committed = await bus.committed_offsets(group, stream)
                ends = await bus.end_offsets(stream)
                for partition, offset in committed.items():
                    if not 0 <= offset <= ends.get(partition, 0):
                        result.problems.append(
                            f"{name}: {group} committed {stream}[{partition}]={offset}, "
                            f"outside 0..{ends.get(partition, 0)}"
                        )
    finally:
        await bus.stop()


async def _members(backend: str, url: str, live: dict[str, list[str]]) -> dict[tuple[str, str], int]:
    """Members per (group, topic) for the live groups, as the backend's own admin API reports them."""
    counts: dict[tuple[str, str], int] = {}
    if backend == "iggy":
        from apache_iggy import IggyClient

        from vcf_agent.bus._iggy import parse_url

        settings = parse_url(url)
        client = IggyClient(settings.address)
        await client.connect()
        await client.login_user(settings.username, settings.password)
        for group, streams in live.items():
            for stream in streams:
                for details in await client.get_consumer_groups(settings.stream_name, stream):
                    if details.name == group:
                        counts[group, stream] = details.members_count
        return counts
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=url.removeprefix("kafka://"))
    await admin.start()
    try:
        # One group per request: aiokafka 0.14 fails to decode some multi-group replies.
        for group_id, streams in live.items():
            for response in await admin.describe_consumer_groups([group_id]):
                for group in response.groups:
                    # (error_code, group_id, state, protocol_type, protocol, members, ...)
                    counts[group_id, ",".join(streams)] = len(group[5])
    finally:
        await admin.close()
    return counts


async def _store_stats(writer: str, job_id: str) -> tuple[int, int]:
    import grpc

    from vcf_agent.v1 import query_pb2, query_pb2_grpc

    async with grpc.aio.insecure_channel(writer) as channel:
        stats = await query_pb2_grpc.QueryServiceStub(channel).GetStoreStats(
            query_pb2.GetStoreStatsRequest(job_id=job_id), timeout=60
        )
    return stats.variants, stats.analyses


def expected_variants(path: Path) -> int:
    """ALT alleles in the file, counted by pysam (not by this project's reader): one stored row each."""
    import pysam

    with pysam.VariantFile(str(path)) as vcf:
        return sum(len(record.alts or ()) for record in vcf)


async def _all_health(services: dict[str, ServiceProcess]) -> set[int]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    states = set()
    for service in services.values():
        async with grpc.aio.insecure_channel(service.grpc) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=5
            )
            states.add(int(reply.status))
    return states


async def _inject(
    scenario: str,
    servers: ChaosServers,
    services: dict[str, ServiceProcess],
    watch: _Watch,
    outage_s: float,
    stranded_wait_s: float = 0.0,
) -> None:
    from grpc_health.v1 import health_pb2

    if scenario == HEALTHY:
        return  # the measurement of flapping: no fault, so any switch is a false alarm
    if scenario in (PRIMARY_KILLED, PRIMARY_BACK_FRESH):
        if stranded_wait_s > 0:
            # The writer was paused before the job was submitted (see run_scenario), so what
            # the aggregator published onto the primary is unread there when the primary dies.
            try:
                await servers.kill_primary()
            finally:
                services["writer"].process.send_signal(signal.SIGCONT)
        else:
            await servers.kill_primary()
        await asyncio.sleep(outage_s)
        # Kept down until GetJob names what is stranded on it (at most stranded_wait_s more).
        if stranded_wait_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watch.stranded_seen.wait(), stranded_wait_s)
        watch.stored_at_return = watch.stored
        if scenario == PRIMARY_KILLED:
            await servers.start_primary()
        else:
            await servers.restart_primary_fresh()
    elif scenario == FALLBACK_KILLED:
        await servers.kill_kafka()
        await asyncio.sleep(outage_s)
        watch.stored_at_return = watch.stored
        await servers.start_kafka()
    elif scenario == BOTH_DOWN:
        down_from = time.monotonic()
        await servers.kill_primary()
        await servers.kill_kafka()
        deadline = time.monotonic() + max(outage_s, 15.0)
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        while await _all_health(services) != {not_serving}:
            if time.monotonic() > deadline:
                raise _ScenarioProblem("with both backends down, not every service reported NOT_SERVING")
            await asyncio.sleep(0.2)
        await asyncio.sleep(outage_s / 2)
        # The fallback returns first; the primary later.
        watch.stored_at_return = watch.stored
        await servers.start_kafka()
        watch.both_down.append((down_from, time.monotonic()))
        await asyncio.sleep(outage_s / 2)
        await servers.start_primary()
    else:
        raise ValueError(f"unknown scenario {scenario!r}; one of {', '.join(SCENARIOS)}")


class _ScenarioProblem(Exception):
    pass


async def _pause_now_and_then(servers: ChaosServers, result: ScenarioResult) -> None:
    """Pause the primary SLOW_PAUSE_S every SLOW_EVERY_S until cancelled; it is running after."""
    while True:
        paused_at = time.monotonic()
        servers.pause_primary()
        result.pauses += 1
        try:
            await asyncio.sleep(SLOW_PAUSE_S)
        finally:
            servers.resume_primary()
            result.outage_s += time.monotonic() - paused_at
        await asyncio.sleep(SLOW_EVERY_S - SLOW_PAUSE_S)


async def run_scenario(
    scenario: str,
    root: Path,
    *,
    iggy_binary: str,
    variants: int,
    outage_s: float = 10.0,
    timeout_s: float = 600.0,
    on_progress: Callable[[str], None] | None = None,
    stranded_wait_s: float = 0.0,
    primary: str = "iggy",
    failover_options: str = "",
) -> ScenarioResult:
    """One scenario end to end in `root`; problems are collected in the result, not raised.

    `failover_options`: more query parameters of the services' failover URL, e.g.
    "silent_to_switch_ms=0&failures_to_switch=1" (the most eager switching: a control run of
    primary-slow that must switch, showing the scenario can see flapping).

    With `stranded_wait_s`, records are stranded on the primary for sure (the writer is paused
    from before the job's submission until the kill, which comes once the aggregator has
    published onto the primary), and a killed primary stays down past `outage_s` until GetJob
    reports them, or that much longer.
    """
    from vcf_agent.synthetic_vcf import SyntheticVcfSpec, write_synthetic_vcf

    say = on_progress or (lambda _text: None)
    path = write_synthetic_vcf(
        root / "chaos.vcf.gz", SyntheticVcfSpec(records=variants, samples=1, seed=18), bgzip=True
    )
    result = ScenarioResult(scenario, expected_variants(path))
    servers = ChaosServers(root, iggy_binary, primary=primary)
    await servers.start()
    try:
        # The job is read by path, allowed from root (the services' data dir stays unreachable).
        # Records stranded on a lost Iggy log are published again from ingest's checkpoint once
        # the job has been idle this long after a switch (the default, 60 s, suits production).
        strands = stranded_wait_s > 0 and scenario in (PRIMARY_KILLED, PRIMARY_BACK_FRESH)
        allowed = {"VCF_AGENT_INGEST_ALLOWED_DIRS": str(root)}
        if not strands:
            # Stranded records then wait for the primary's return, and GetJob names them
            # meanwhile, instead of completing from a re-publish first.
            allowed["VCF_AGENT_REPUBLISH_GRACE_S"] = "10"
        bus_url = servers.failover_url(failover_options)
        with running_pipeline(bus_url, root / "services", env=allowed) as services:
            say(f"{scenario}: five services up on {bus_url}")
            primary_writes = _DatabaseWrites(servers.primary_url)
            published_before = 0
            if strands:
                # A stage's group is known to read a stream once it committed there (throw-away
                # readers never do), so a small job runs through first; then, paused before the
                # job exists, the writer cannot have fetched any of its records: what the
                # aggregator publishes onto the primary is unread there, whatever the load.
                # (Pausing it mid-job stranded nothing in one CI run: it had fetched them all.)
                warm_up = write_synthetic_vcf(
                    root / "warm-up.vcf.gz", SyntheticVcfSpec(records=200, samples=1, seed=19), bgzip=True
                )
                await _until_final(
                    services["ingest"].grpc, await _submit(services["ingest"].grpc, warm_up), timeout_s
                )
                await primary_writes.read_through("writer", time.monotonic() + timeout_s)
                services["writer"].process.send_signal(signal.SIGSTOP)
                # The warm-up job made the stream, so it answers with what is there now.
                published_before = await primary_writes.count(time.monotonic() + timeout_s)
            began = time.monotonic()
            job_id = await _submit(services["ingest"].grpc, path)
            watch = _Watch(
                {name: service.grpc for name, service in services.items()}, job_id, servers.backend_names[0]
            )
            watcher = asyncio.create_task(watch.run())
            pauser: asyncio.Task[None] | None = None
            try:
                deadline = began + timeout_s
                if strands:
                    while await primary_writes.count(deadline) <= published_before:
                        if time.monotonic() > deadline:
                            raise _ScenarioProblem("nothing reached database-writes on the primary")
                        await asyncio.sleep(0.1)
                    reached_at = time.time()
                    await primary_writes.stop()
                    waited = await _until_watchdog_read(
                        services["ingest"].grpc, servers.backend_names[0], reached_at
                    )
                    result.notes.append(
                        f"ingest's watchdog read the lag on the primary {waited:.1f} s after"
                        " the job's records reached it"
                    )
                while not strands and watch.stored == 0 and watch.state not in TERMINAL_STATES:
                    if time.monotonic() > deadline:
                        raise _ScenarioProblem("nothing was stored before the fault")
                    await asyncio.sleep(0.05)
                if watch.state in TERMINAL_STATES:
                    raise _ScenarioProblem("the job finished before the fault; use more variants")
                watch.fault_at = fault_at = time.monotonic()
                watch.stored_at_fault = watch.stored
                say(f"{scenario}: fault at {watch.stored}/{result.expected} stored")
                if scenario == PRIMARY_SLOW:
                    pauser = asyncio.create_task(_pause_now_and_then(servers, result))
                else:
                    await _inject(scenario, servers, services, watch, outage_s, stranded_wait_s)
                    result.outage_s = time.monotonic() - fault_at
                # After the fresh restart the stranded records are gone: ingest publishes the job
                # again from its file, and it completes.
                while watch.finished_at is None:
                    now = time.monotonic()
                    if now > deadline:
                        raise _ScenarioProblem(f"job not finished after {timeout_s:.0f}s")
                    await asyncio.sleep(0.1)
                finished = watch.finished_at or time.monotonic()
                if pauser is not None:
                    await _stopped(pauser)
                result.completion_s = finished - began
                result.stall_s = watch.stall_s(fault_at, finished)
                result.stored_during_outage = max(0, watch.stored_at_return - watch.stored_at_fault)
                if scenario in (PRIMARY_KILLED, PRIMARY_BACK_FRESH, BOTH_DOWN, PRIMARY_SLOW):
                    # Clean return: publishing goes back to the primary after its stable period,
                    # within 90 s of the job's end if not before it.
                    result.back_on_primary_s = await watch.back_on_primary_s(90)
            except _ScenarioProblem as problem:
                result.problems.append(str(problem))
            finally:
                if pauser is not None:
                    await _stopped(pauser)
                if strands:
                    services["writer"].process.send_signal(signal.SIGCONT)
                await primary_writes.stop()
                await _stopped(watcher)
            result.stored, _, result.state, _ = await _stored(services["ingest"].grpc, job_id)
            result.switches = watch.switches
            result.stranded = watch.stranded
            # Consumers rejoin within a few probe intervals and heartbeats; give them that.
            await asyncio.sleep(5)
            result.store_variants, result.store_analyses = await _store_stats(services["writer"].grpc, job_id)
            await _check_groups(servers, services, result)
        # The services stopped: the writer's table, read directly (as the fault scenarios do).
        from vcf_agent.app.fault_chaos import _store_verdict

        distinct, rows = await asyncio.to_thread(_store_verdict, root, job_id)
        result.duplicates, result.lost = rows - distinct, result.expected - distinct
    finally:
        await servers.stop()
        result.notes.extend(servers.notes)
    ingest_log = root / "services" / "ingest.log"
    if ingest_log.exists():
        text = ingest_log.read_text(encoding="utf-8", errors="replace")
        result.republished = text.count("publishing it again from")
        result.republished_whole = text.count(", the whole file: ")
        result.republished_variants = (
            sum(int(found) for found in re.findall(r"published (\d+) variants again", text))
            + result.republished_whole * result.expected
        )
    if result.stored != result.expected:
        result.problems.append(f"stored {result.stored} of {result.expected}")
    if scenario in _NO_SWITCH_EXPECTED and result.switches:
        result.problems.append(f"{len(result.switches)} switches with a live primary (flapping)")
    if result.pauses:
        result.notes.append(f"paused the primary {result.pauses} times, {result.outage_s:.1f} s in all")
    if result.duplicates or result.lost:
        result.problems.append(f"the writer's table: {result.duplicates} duplicates, {result.lost} lost")
    if result.store_variants != result.stored or result.store_analyses != result.stored:
        result.problems.append(
            f"store holds {result.store_variants} variants and {result.store_analyses} analyses "
            f"for {result.stored} stored (duplicates or losses)"
        )
    return result


async def _stopped(task: asyncio.Task[None]) -> None:
    """Cancel the task and wait until it ended (its cleanup ran)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def render(results: list[ScenarioResult]) -> str:
    header = (
        "scenario",
        "expected",
        "stored",
        "duplicates",
        "lost",
        "state",
        "switches (s after fault)",
        "outage s",
        "stored in outage",
        "stall s",
        "back on primary s",
        "done s",
        "republished (whole) variants",
        "problems",
    )
    rows = [header]
    for r in results:
        rows.append(
            (
                r.scenario,
                str(r.expected),
                str(r.stored),
                str(r.duplicates),
                str(r.lost),
                r.state,
                ", ".join(r.switches) or "none",
                f"{r.outage_s:.1f}",
                str(r.stored_during_outage),
                f"{r.stall_s:.1f}",
                f"{r.back_on_primary_s:.1f}" if r.back_on_primary_s else "-",
                f"{r.completion_s:.1f}",
                f"{r.republished} ({r.republished_whole}) {r.republished_variants}",
                "; ".join(r.problems) or "none",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.extend(f"note ({r.scenario}): {note}" for r in results for note in r.notes)
    lines.extend(f"stranded ({r.scenario}): GetJob said {r.stranded!r}" for r in results if r.stranded)
    return "\n".join(lines)


async def run(
    scenarios: list[str],
    variants: int,
    outage_s: float,
    iggy_binary: str,
    primary: str = "iggy",
    stranded_wait_s: float = 0.0,
    failover_options: str = "",
) -> list[ScenarioResult]:
    """Each scenario in turn; its row is printed as soon as it ends, and a scenario that broke
    around the system under test (a server that did not come back) is a row with that problem,
    not the end of the run. `stranded_wait_s`: see run_scenario (primary-killed, primary-back-fresh)."""
    results = []
    for scenario in scenarios:
        with tempfile.TemporaryDirectory(prefix=f"vcf-agent-chaos-{scenario}-") as scratch:
            try:
                result = await run_scenario(
                    scenario,
                    Path(scratch),
                    iggy_binary=iggy_binary,
                    primary=primary,
                    variants=variants,
                    outage_s=outage_s,
                    timeout_s=max(600.0, variants / 200),
                    on_progress=lambda text: print(text, flush=True),
                    stranded_wait_s=stranded_wait_s,
                    failover_options=failover_options,
                )
            except Exception as exc:  # recorded, and the next scenario runs
                log.exception("chaos: scenario %s broke", scenario)
                result = ScenarioResult(scenario, expected=0, problems=[f"the scenario broke: {exc!r}"[:500]])
            print(render([result]), flush=True)
            results.append(result)
    return results
