"""Readiness follows the bus; liveness follows the process alone.

Readiness ("" and the per-service names) is NOT_SERVING while the bus is unreachable
and SERVING again when it is back, and while a stage waits to retry after an error;
liveness ("liveness") stays SERVING through a bus outage, a stage's errors and a drain,
and fails only when the process cannot answer.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.control.conftest import PROBE_STREAM, HostFactory, probe_service
from vcf_agent.bus import Bus, OutgoingMessage, Record, StreamSpec, open_bus
from vcf_agent.config import Settings
from vcf_agent.control import LIVENESS
from vcf_agent.localdev import LocalKafkaBroker
from vcf_agent.localdev._child_process import free_port
from vcf_agent.localdev._kafka_broker import KafkaToolMissingError
from vcf_agent.processing import CommitOffsets, StreamProcessor
from vcf_agent.runner import ServiceHost, ServiceParts, ensure_topology
from vcf_agent.v1 import control_pb2, control_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def check(health: health_pb2_grpc.HealthStub, name: str) -> int:
    response = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
    return int(response.status)


async def test_readiness_is_not_serving_while_the_bus_is_unreachable_and_liveness_stays_serving(
    tmp_path: Path,
) -> None:
    url = f"memory://{uuid.uuid4().hex}"
    # A second connection keeps the in-memory log alive while the service's own one is down.
    keeper, bus = open_bus(url), open_bus(url)
    await keeper.start()
    await bus.start()
    settings = Settings(data_dir=tmp_path, bus_url=url)
    await ensure_topology(keeper, settings)
    await keeper.ensure_streams([StreamSpec(PROBE_STREAM, 2)])
    try:
        async with (
            ServiceHost(probe_service(bus)[0], bus, settings) as host,
            grpc.aio.insecure_channel(host.control.address) as channel,
        ):
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(service="vcf_agent.probe"))
            assert (await watch.read()).status == SERVING
            assert await check(health, LIVENESS) == SERVING
            await bus.stop()
            assert (await asyncio.wait_for(watch.read(), 30)).status == NOT_SERVING
            assert await check(health, "") == NOT_SERVING
            assert await check(health, LIVENESS) == SERVING
            await bus.start()
            assert (await asyncio.wait_for(watch.read(), 30)).status == SERVING
            assert await check(health, LIVENESS) == SERVING
            watch.cancel()
    finally:
        await bus.stop()
        await keeper.stop()


def start_broker(port: int, data_dir: Path) -> LocalKafkaBroker:
    broker = LocalKafkaBroker(port=port, data_dir=data_dir)
    try:
        broker.start_sync()
    except KafkaToolMissingError as exc:
        pytest.skip(f"local Kafka broker unavailable: {exc}")
    return broker


async def until(health: health_pb2_grpc.HealthStub, name: str, status: int, timeout_s: float) -> float:
    """Seconds until `name` reports `status`, checking that liveness stays SERVING meanwhile."""
    started = time.monotonic()
    while (await check(health, name)) != status:
        assert await check(health, LIVENESS) == SERVING
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"{name!r} did not become {status} within {timeout_s}s")
        await asyncio.sleep(0.2)
    return time.monotonic() - started


@pytest.mark.kafka
async def test_a_stopped_kafka_broker_fails_readiness_but_never_liveness(tmp_path: Path) -> None:
    """A broker of this test's own is stopped, then a broker is started again on its port.

    The second one starts with an empty log (a broker that lost its disk): what readiness
    needs back is a broker that answers, and a restart on the same log is the failover
    suite's business.
    """
    port = free_port()
    broker = start_broker(port, tmp_path / "kafka-1")
    url = f"kafka://{broker.bootstrap_servers}"
    bus = open_bus(url)
    settings = Settings(data_dir=tmp_path / "data", bus_url=url)
    try:
        await bus.start()
        await ensure_topology(bus, settings)
        await bus.ensure_streams([StreamSpec(PROBE_STREAM, 2)])
        async with (
            ServiceHost(probe_service(bus)[0], bus, settings) as host,
            grpc.aio.insecure_channel(host.control.address) as channel,
        ):
            health = health_pb2_grpc.HealthStub(channel)
            await until(health, "", SERVING, 30)
            assert await check(health, LIVENESS) == SERVING
            await asyncio.to_thread(broker.stop_sync)
            await until(health, "", NOT_SERVING, 15)
            assert await check(health, "vcf_agent.probe") == NOT_SERVING
            # The outage goes on well past one liveness period: liveness never wavers.
            for _ in range(10):
                assert await check(health, LIVENESS) == SERVING
                await asyncio.sleep(0.3)
            broker = await asyncio.to_thread(start_broker, port, tmp_path / "kafka-2")
            await until(health, "", SERVING, 60)
            assert await check(health, "vcf_agent.probe") == SERVING
            assert await check(health, LIVENESS) == SERVING
    finally:
        await bus.stop()
        await asyncio.to_thread(broker.stop_sync)


async def test_liveness_is_answered_by_the_event_loop_so_a_blocked_loop_fails_it(
    run_host: HostFactory, bus: Bus
) -> None:
    async with run_host(probe_service(bus)[0]) as host:
        answers: list[str] = []

        def probe() -> None:
            # A kubelet's probe: its own connection, a short deadline.
            with grpc.insecure_channel(host.control.address) as channel:
                try:
                    health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(service=LIVENESS), timeout=0.5
                    )
                    answers.append("answered")
                except grpc.RpcError as exc:
                    answers.append(exc.code().name)

        prober = threading.Thread(target=probe)
        prober.start()
        # Blocking the loop is the point: nothing else runs on it meanwhile.
        time.sleep(1.5)  # noqa: ASYNC251
        prober.join(timeout=10)
        assert answers == ["DEADLINE_EXCEEDED"]
        # Once the loop runs again, so does the answer.
        async with grpc.aio.insecure_channel(host.control.address) as channel:
            assert await check(health_pb2_grpc.HealthStub(channel), LIVENESS) == SERVING


async def test_a_drain_ends_readiness_and_leaves_liveness_serving(run_host: HostFactory, bus: Bus) -> None:
    async with (
        run_host(probe_service(bus)[0]) as host,
        grpc.aio.insecure_channel(host.control.address) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        await host.control.begin_shutdown()
        assert await check(health, "") == NOT_SERVING
        assert await check(health, "vcf_agent.probe") == NOT_SERVING
        assert await check(health, LIVENESS) == SERVING
        # Later refreshes cannot make a shutting-down process ready again.
        await host.control.refresh_health()
        assert await check(health, "") == NOT_SERVING


class FlakyStage:
    """A real stage that fails while `broken` is set, buffering what it saw as a stage does."""

    def __init__(self) -> None:
        self.broken = True
        self.buffered: list[bytes] = []
        self.done: list[bytes] = []
        self.resets = 0

    async def handle(self, records: list[Record]) -> CommitOffsets | None:
        self.buffered.extend(r.value for r in records)
        if self.broken:
            raise OSError(28, "No space left on device")
        self.done.extend(self.buffered)
        self.buffered.clear()
        return None

    async def reset(self) -> None:
        self.resets += 1
        self.buffered.clear()


async def test_a_failing_stage_is_not_ready_stays_alive_and_heals_by_itself(
    run_host: HostFactory, bus: Bus
) -> None:
    stage = FlakyStage()
    processor = StreamProcessor(
        bus, [PROBE_STREAM], "flaky-group", stage.handle, service="flaky", reset=stage.reset, retry_max_s=1
    )
    async with (
        run_host(ServiceParts("flaky", components=[processor])) as host,
        grpc.aio.insecure_channel(host.control.address) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        await bus.publish(PROBE_STREAM, [OutgoingMessage(b"x", b"k", {}), OutgoingMessage(b"y", b"k", {})])
        deadline = time.monotonic() + 10
        while await check(health, "") == SERVING:
            assert time.monotonic() < deadline, "readiness stayed SERVING with its stage failing"
            await asyncio.sleep(0.1)
        assert processor.state == "retrying"
        assert isinstance(processor.retrying, OSError)
        status = await control_pb2_grpc.ControlServiceStub(channel).GetStatus(
            control_pb2.GetStatusRequest(), timeout=5
        )
        [group] = [g for g in status.groups if g.group == "flaky-group"]
        assert group.state == "retrying"
        assert group.retry_reason == "OSError: [Errno 28] No space left on device"
        # The process works: no probe should restart it for an error that can clear.
        assert await check(health, LIVENESS) == SERVING
        while stage.resets < 2:
            assert time.monotonic() < deadline, "the stage was not retried"
            await asyncio.sleep(0.1)
        stage.broken = False
        deadline = time.monotonic() + 10
        while await check(health, "") != SERVING:
            assert time.monotonic() < deadline, "readiness did not come back once the stage healed"
            await asyncio.sleep(0.1)
        # Each record once: what was buffered before an error was dropped and delivered again.
        assert stage.done == [b"x", b"y"]
        assert processor.retrying is None
        lags = await bus.lag("flaky-group", PROBE_STREAM)
        assert sum(lag.lag for lag in lags) == 0
