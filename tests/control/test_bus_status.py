"""GetStatus over a failover bus: active backend, per-backend health and lag, switches, stranded records.

Both backends are real memory buses with injected faults (tests/bus/test_failover.py's
FaultyMemoryBus); the service is a real ServiceHost with its gRPC control plane.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.bus.test_failover import FaultyMemoryBus
from tests.control.conftest import PROBE_STREAM, control_stub, probe_service
from tests.ingest._vcf_text import GOOD, record, write_vcf
from vcf_agent.bus import FailoverBus, OutgoingMessage, StreamSpec
from vcf_agent.config import Settings
from vcf_agent.runner import ServiceHost, ensure_topology
from vcf_agent.services.ingest import build as build_ingest
from vcf_agent.v1 import control_pb2, control_pb2_grpc

PROBE_INTERVAL_S = 0.1
FAILURES_TO_SWITCH = 3


@pytest.fixture
async def failover(tmp_path: Path) -> AsyncIterator[tuple[FailoverBus, FaultyMemoryBus, FaultyMemoryBus]]:
    primary = FaultyMemoryBus(f"status-p-{uuid.uuid4().hex[:8]}")
    fallback = FaultyMemoryBus(f"status-f-{uuid.uuid4().hex[:8]}")
    bus = FailoverBus(
        primary,
        fallback,
        probe_interval_s=PROBE_INTERVAL_S,
        failures_to_switch=FAILURES_TO_SWITCH,
        stable_period_s=0.5,
        publish_timeout_s=0.3,
        # A backend made to hang stands for a dead one here: left after half a second of silence
        # (a late answer counts toward a switch only after this long; 10 s by default).
        silent_to_switch_s=0.5,
    )
    async with bus:
        await ensure_topology(bus, Settings(data_dir=tmp_path))
        await bus.ensure_streams([StreamSpec(PROBE_STREAM, 2)])
        yield bus, primary, fallback


async def status_within(
    stub: control_pb2_grpc.ControlServiceAsyncStub, bound_s: float
) -> control_pb2.GetStatusResponse:
    started = time.monotonic()
    response = await stub.GetStatus(control_pb2.GetStatusRequest(), timeout=10)
    elapsed = time.monotonic() - started
    assert elapsed < bound_s, f"GetStatus took {elapsed:.2f}s"
    return response


async def health_of(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
        return int(reply.status)


async def test_status_reports_each_backend_switches_and_stranded_records_without_erroring(
    tmp_path: Path, failover: tuple[FailoverBus, FaultyMemoryBus, FaultyMemoryBus]
) -> None:
    bus, primary, fallback = failover
    parts, recorder = probe_service(bus)
    settings = Settings(data_dir=tmp_path / "probe")
    async with ServiceHost(parts, bus, settings) as host, control_stub(host.control.address) as stub:
        healthy = await status_within(stub, 2.0)
        assert healthy.bus_backend == "failover"
        assert healthy.active_backend == "memory-primary"
        assert [(b.name, b.role, b.active, b.healthy) for b in healthy.backends] == [
            ("memory-primary", "primary", True, True),
            ("memory-fallback", "fallback", False, True),
        ]
        assert healthy.backend_switches == 0 and not healthy.HasField("last_switch_at")

        # Records published while the group is paused are unread on the primary.
        await stub.Pause(control_pb2.ConsumptionRequest(group="probe-group"))
        await bus.publish(PROBE_STREAM, [OutgoingMessage(b"p%d" % i, b"k%d" % i) for i in range(7)])
        paused = await status_within(stub, 2.0)
        assert [b.lag for b in paused.backends] == [7, 0]
        assert paused.stranded_records == 0

        # The primary stops answering: status stays prompt, says which backend is active,
        # and counts the primary's unread records as stranded.
        primary.hang = True
        deadline = time.monotonic() + 5
        while bus.active_backend != "memory-fallback":
            assert time.monotonic() < deadline, "never switched"
            await asyncio.sleep(0.02)
        outage = await status_within(stub, bus.probe_timeout_s + 1.0)
        assert outage.active_backend == "memory-fallback"
        assert outage.backend_switches == 1 and outage.HasField("last_switch_at")
        primary_status, fallback_status = outage.backends
        assert not primary_status.healthy and primary_status.consecutive_failures >= FAILURES_TO_SWITCH
        assert primary_status.lag_stale and primary_status.lag == 7
        assert fallback_status.healthy and fallback_status.active and not fallback_status.lag_stale
        assert outage.stranded_records == 7
        assert outage.bus_healthy and outage.health == "SERVING"

        # Both down: NOT_SERVING, and GetStatus still answers.
        fallback.broken = True
        deadline = time.monotonic() + 5
        while await health_of(host.control.address) != health_pb2.HealthCheckResponse.NOT_SERVING:
            assert time.monotonic() < deadline, "still SERVING with both backends down"
            await asyncio.sleep(0.05)
        both_down = await status_within(stub, bus.probe_timeout_s + 1.0)
        assert not both_down.bus_healthy and both_down.health == "NOT_SERVING"
        assert [b.healthy for b in both_down.backends] == [False, False]

        # Either returns: SERVING again by itself, and the stranded records are read.
        primary.hang = False
        await stub.Resume(control_pb2.ConsumptionRequest(group="probe-group"))
        deadline = time.monotonic() + 10
        while await health_of(host.control.address) != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline, "did not resume by itself"
            await asyncio.sleep(0.05)
        while len(recorder.values) < 7:
            assert time.monotonic() < deadline, f"stranded records not read: {recorder.values}"
            await asyncio.sleep(0.05)
        assert sorted(recorder.values) == sorted(b"p%d" % i for i in range(7))
        back = await status_within(stub, 2.0)
        assert back.stranded_records == 0


async def test_status_with_the_fallback_stalled_and_the_primary_healthy_is_a_prompt_partial_answer(
    tmp_path: Path, failover: tuple[FailoverBus, FaultyMemoryBus, FaultyMemoryBus]
) -> None:
    """Issue 18: with Kafka down and Iggy healthy GetStatus failed (UNKNOWN, "lag unavailable on
    both backends") after 1.1-2.1 s; a stalled fallback must leave the primary's answer intact."""
    bus, _primary, fallback = failover
    parts, _recorder = probe_service(bus)
    settings = Settings(data_dir=tmp_path / "probe")
    async with ServiceHost(parts, bus, settings) as host, control_stub(host.control.address) as stub:
        await stub.Pause(control_pb2.ConsumptionRequest(group="probe-group"))
        await bus.publish(PROBE_STREAM, [OutgoingMessage(b"p%d" % i, b"k%d" % i) for i in range(3)])
        fallback.hang = True
        deadline = time.monotonic() + 5
        while not bus.declared_down(1):
            assert time.monotonic() < deadline, "the stalled fallback was never declared down"
            await asyncio.sleep(0.02)
        status = await status_within(stub, bus.probe_timeout_s + 1.0)
        assert status.active_backend == "memory-primary" and status.backend_switches == 0
        primary_status, fallback_status = status.backends
        assert primary_status.healthy and not primary_status.lag_stale and primary_status.lag == 3
        assert not fallback_status.healthy and fallback_status.lag_stale
        assert status.bus_healthy and status.health == "SERVING"
        # Nothing is stranded on the stalled fallback: it took nothing.
        assert status.stranded_records == 0


async def test_ingest_reports_its_watchdogs_lag_reads_per_backend_and_none_on_a_dead_one(
    tmp_path: Path, failover: tuple[FailoverBus, FaultyMemoryBus, FaultyMemoryBus]
) -> None:
    """A harness that kills a backend with records on it waits for a watchdog read that saw them
    (a fixed wait held no successful read once under load, and GetJob never named them)."""
    bus, primary, _fallback = failover
    settings = Settings(data_dir=tmp_path / "ingest")
    writes = settings.topology.database_writes
    # The writer's group has read database-writes on the primary: the watchdog lists it there.
    await primary.publish(writes, [OutgoingMessage(b"read", b"k")])
    async with primary.consumer([writes], "writer") as writer:
        read = await writer.poll(timeout_s=1)
        await writer.commit({(r.stream, r.partition): r.offset + 1 for r in read})
    parts = build_ingest(settings, bus)
    async with ServiceHost(parts, bus, settings) as host, control_stub(host.control.address) as stub:
        idle = await stub.GetStatus(control_pb2.GetStatusRequest(), timeout=10)
        # No job runs, so no watchdog read yet.
        assert [(b.watchdog_lag_reads, b.HasField("watchdog_lag_read_at")) for b in idle.backends] == [
            (0, False),
            (0, False),
        ]
        # A job runs (nothing downstream: it stays running), and the writer's records wait on the primary.
        job = await parts.publisher.submit(write_vcf(tmp_path / "two.vcf", [GOOD, record(pos="200")]))
        await parts.publisher.wait(job.job_id)
        await primary.publish(writes, [OutgoingMessage(b"unread", b"k")])
        published_at = time.time()

        deadline = time.monotonic() + 30
        while True:
            status = await stub.GetStatus(control_pb2.GetStatusRequest(), timeout=10)
            on_primary = status.backends[0]
            if on_primary.watchdog_lag_read_at.ToNanoseconds() > published_at * 1e9:
                break
            assert time.monotonic() < deadline, f"no watchdog lag read after the publish: {on_primary}"
            await asyncio.sleep(0.1)
        assert on_primary.name == "memory-primary" and on_primary.watchdog_lag_reads >= 1
        assert status.backends[1].watchdog_lag_reads >= 1

        # The primary stops answering: its reads stop counting, the fallback's go on, and GetJob
        # names the unread record, read by that round, as stranded there.
        primary.hang = True
        while not bus.declared_down(0):
            assert time.monotonic() < deadline + 30, "the hung primary was never declared down"
            await asyncio.sleep(0.02)
        down = await stub.GetStatus(control_pb2.GetStatusRequest(), timeout=10)
        deadline = time.monotonic() + 30
        while True:
            later = await stub.GetStatus(control_pb2.GetStatusRequest(), timeout=10)
            if later.backends[1].watchdog_lag_reads > down.backends[1].watchdog_lag_reads:
                break
            assert time.monotonic() < deadline, f"the fallback's watchdog reads stopped: {later.backends}"
            await asyncio.sleep(0.1)
        assert later.backends[0].watchdog_lag_reads == down.backends[0].watchdog_lag_reads
        assert later.backends[0].watchdog_lag_read_at == down.backends[0].watchdog_lag_read_at
        deadline = time.monotonic() + 30
        while "1 on database-writes for writer (memory-primary, unreachable)" not in (
            stall := parts.registry.get(job.job_id).stall_detail  # type: ignore[union-attr]
        ):
            assert time.monotonic() < deadline, f"GetJob never named the stranded record: {stall!r}"
            await asyncio.sleep(0.1)
