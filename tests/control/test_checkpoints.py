"""Checkpoints: pause, reset, resume replays; reset refused while running; drain and health."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.control.conftest import PROBE_STREAM, HostFactory, Recorder, control_stub, probe_service
from tests.control.test_flags import bad_request_fields
from vcf_agent.bus import Bus, OutgoingMessage
from vcf_agent.processing import StreamProcessor
from vcf_agent.runner import ServiceParts
from vcf_agent.v1 import control_pb2

GROUP = "probe-group"


async def publish(bus: Bus, values: list[bytes]) -> None:
    await bus.publish(PROBE_STREAM, [OutgoingMessage(v, v) for v in values])


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def committed(response: control_pb2.ListCheckpointsResponse) -> dict[int, tuple[int, int]]:
    (group,) = response.groups
    return {p.partition: (p.committed, p.lag) for p in group.partitions}


async def test_pause_reset_to_earliest_resume_replays(bus: Bus, run_host: HostFactory) -> None:
    parts, recorder = probe_service(bus)
    first = [f"v{i}".encode() for i in range(20)]
    async with run_host(parts) as host, control_stub(host.control.address) as stub:
        await publish(bus, first)
        await until(lambda: len(recorder.values) == 20)
        await until(lambda: parts.processors()[0].uncommitted() == 0)
        listed = await stub.ListCheckpoints(control_pb2.ListCheckpointsRequest(group=GROUP))
        assert sum(c for c, _ in committed(listed).values()) == 20
        assert all(lag == 0 for _, lag in committed(listed).values())
        assert listed.groups[0].state == "running"

        with pytest.raises(grpc.aio.AioRpcError) as running:
            await stub.ResetCheckpoint(control_pb2.ResetCheckpointRequest(group=GROUP, earliest=True))
        assert running.value.code() == grpc.StatusCode.FAILED_PRECONDITION

        paused = await stub.Pause(control_pb2.ConsumptionRequest(group=GROUP))
        assert paused.groups[0].state == "paused"
        await publish(bus, [b"while-paused"])
        await asyncio.sleep(0.5)
        assert b"while-paused" not in recorder.values
        lagging = await stub.ListCheckpoints(control_pb2.ListCheckpointsRequest())
        assert sum(lag for _, lag in committed(lagging).values()) == 1

        reset = await stub.ResetCheckpoint(control_pb2.ResetCheckpointRequest(group=GROUP, earliest=True))
        assert {(c.partition, c.committed) for c in reset.checkpoints} == {(0, 0), (1, 0)}
        assert sum(c.lag for c in reset.checkpoints) == 21

        await stub.Resume(control_pb2.ConsumptionRequest(group=GROUP))
        await until(lambda: len(recorder.values) == 41)
        assert sorted(recorder.values[20:]) == sorted([*first, b"while-paused"])


async def test_reset_to_latest_offset_and_timestamp(bus: Bus, run_host: HostFactory) -> None:
    parts, recorder = probe_service(bus)
    async with run_host(parts) as host, control_stub(host.control.address) as stub:
        await publish(bus, [f"old{i}".encode() for i in range(10)])
        await until(lambda: len(recorder.values) == 10)
        await asyncio.sleep(0.05)
        boundary = Timestamp()
        boundary.GetCurrentTime()
        await asyncio.sleep(0.05)
        await publish(bus, [f"new{i}".encode() for i in range(6)])
        await until(lambda: len(recorder.values) == 16)
        await stub.Pause(control_pb2.ConsumptionRequest())

        await stub.ResetCheckpoint(control_pb2.ResetCheckpointRequest(group=GROUP, earliest=True))
        latest = await stub.ResetCheckpoint(control_pb2.ResetCheckpointRequest(group=GROUP, latest=True))
        assert all(c.lag == 0 for c in latest.checkpoints)

        by_time = await stub.ResetCheckpoint(
            control_pb2.ResetCheckpointRequest(group=GROUP, timestamp=boundary)
        )
        assert sum(c.lag for c in by_time.checkpoints) == 6
        recorder.values.clear()
        await stub.Resume(control_pb2.ConsumptionRequest())
        await until(lambda: len(recorder.values) == 6)
        assert all(v.startswith(b"new") for v in recorder.values)

        await stub.Pause(control_pb2.ConsumptionRequest())
        with pytest.raises(grpc.aio.AioRpcError) as no_partition:
            await stub.ResetCheckpoint(control_pb2.ResetCheckpointRequest(group=GROUP, offset=1))
        assert bad_request_fields(no_partition.value) == ["partition"]
        with pytest.raises(grpc.aio.AioRpcError) as beyond:
            await stub.ResetCheckpoint(
                control_pb2.ResetCheckpointRequest(group=GROUP, partition=0, offset=10**6)
            )
        assert bad_request_fields(beyond.value) == ["offset"]
        with pytest.raises(grpc.aio.AioRpcError) as no_position:
            await stub.ResetCheckpoint(control_pb2.ResetCheckpointRequest(group=GROUP))
        assert bad_request_fields(no_position.value) == ["position"]
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.ResetCheckpoint(control_pb2.ResetCheckpointRequest(group="nobody", earliest=True))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        one = await stub.ResetCheckpoint(
            control_pb2.ResetCheckpointRequest(group=GROUP, partition=1, offset=1)
        )
        assert [(c.partition, c.committed) for c in one.checkpoints] == [(1, 1)]


async def test_drain_commits_and_reports_not_serving_until_resumed(bus: Bus, run_host: HostFactory) -> None:
    recorder = Recorder()
    held: list[tuple[str, int, int]] = []
    last_record = [0.0]

    async def buffering(records):  # type: ignore[no-untyped-def]
        # Like the writer: hold records across polls and release them after a linger.
        await recorder(records)
        if records:
            held.extend((r.stream, r.partition, r.offset + 1) for r in records)
            last_record[0] = time.monotonic()
        if time.monotonic() - last_record[0] < 1.0:
            return {}
        released = {(s, p): o for s, p, o in held}
        held.clear()
        return released

    processor = StreamProcessor(bus, [PROBE_STREAM], GROUP, buffering, service="probe", idle_calls=True)
    parts = ServiceParts("probe", components=[processor])
    async with (
        run_host(parts) as host,
        control_stub(host.control.address) as stub,
        grpc.aio.insecure_channel(host.control.address) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        check = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        await publish(bus, [f"d{i}".encode() for i in range(30)])
        await until(lambda: len(recorder.values) == 30)
        assert processor.uncommitted() == 30
        drained = await stub.Drain(control_pb2.ConsumptionRequest())
        assert drained.uncommitted == 0
        assert drained.groups[0].state == "drained"
        assert all(p.lag == 0 for p in drained.groups[0].partitions)
        check = await health.Check(health_pb2.HealthCheckRequest(service="vcf_agent.probe"))
        assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING
        status = await stub.GetStatus(control_pb2.GetStatusRequest())
        assert status.health == "NOT_SERVING" and status.groups[0].state == "drained"

        await publish(bus, [b"after-drain"])
        await asyncio.sleep(0.4)
        assert b"after-drain" not in recorder.values
        await stub.Resume(control_pb2.ConsumptionRequest())
        check = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        await until(lambda: b"after-drain" in recorder.values)
