"""A full data directory stops the writer only until space returns, and nothing is lost or doubled.

The writer runs as a service (ServiceHost: gRPC health, its consumer, both stores)
with its data directory on a real size-limited tmpfs; the disk is filled while a
job's batches arrive. The graph refuses a batch while less than its reserve is free
(its engine aborts the process when a commit's log write hits ENOSPC), so the writer
waits, NOT_SERVING, and goes on by itself once the space is back.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.observability._log_lines import json_log_lines, of
from vcf_agent.bus import Bus, OutgoingMessage, open_bus
from vcf_agent.config import Settings
from vcf_agent.control import LIVENESS
from vcf_agent.localdev import SmallDisk, SmallDiskUnavailableError
from vcf_agent.runner import ServiceHost, ensure_topology
from vcf_agent.schema import HEADER_JOB, HEADER_VARIANT_COUNT, encode
from vcf_agent.services import writer
from vcf_agent.services.writer import LanceStore
from vcf_agent.v1 import events_pb2, variant_pb2

from ._writes import SAMPLES, make_write
from .test_job_outcome import storage_notes

SERVING = health_pb2.HealthCheckResponse.SERVING
JOB, TENANT = "job-disk", "tenant-disk"
BATCH = 250


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    try:
        with SmallDisk(tmp_path / "disk", 96 << 20) as mounted:
            yield mounted
    except SmallDiskUnavailableError as exc:
        pytest.skip(f"a full disk needs a mountable tmpfs: {exc}")


async def _publish(bus: Bus, settings: Settings, first: int, count: int, *markers: int) -> None:
    """Writes first..first+count of the job as the aggregator sends them, BATCH per record."""
    messages = []
    for start in range(first, first + count, BATCH):
        writes = [make_write(i, job_id=JOB, tenant_id=TENANT) for i in range(start, start + BATCH)]
        payload, headers = encode(events_pb2.DatabaseWriteBatch(writes=writes), tenant_id=TENANT)
        headers |= {HEADER_JOB: JOB, HEADER_VARIANT_COUNT: str(BATCH)}
        messages.append(OutgoingMessage(payload, JOB.encode(), headers))
    for kind in markers:
        marker = variant_pb2.JobMarker(kind=kind, job_id=JOB, tenant_id=TENANT, variant_count=first + count)
        payload, headers = encode(events_pb2.DatabaseWriteBatch(markers=[marker]), tenant_id=TENANT)
        headers |= {HEADER_JOB: JOB, HEADER_VARIANT_COUNT: "0"}
        messages.append(OutgoingMessage(payload, JOB.encode(), headers))
    await bus.publish(settings.topology.database_writes, messages)


async def _until(condition: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


def _stored_ids(lance: LanceStore) -> list[str]:
    variants, _ = lance._tables()
    return list(variants.to_arrow().column("correlation_id").to_pylist())


async def test_a_full_disk_pauses_the_writer_until_space_returns(tmp_path: Path, disk: SmallDisk) -> None:
    settings = Settings(
        data_dir=disk.path,
        bus_url=f"embedded://{tmp_path / 'bus'}",
        writer_batch_rows=BATCH,
        writer_disk_reserve_bytes=16 << 20,
        # The reserve holds a checkpoint's worth of log: small here, for a small disk.
        writer_graph_checkpoint_bytes=8 << 20,
    )
    bus = open_bus(settings.bus_url)
    await bus.start()
    await ensure_topology(bus, settings)
    parts = writer.build(settings, bus)
    lance, graph = parts.lance, parts.graph
    [processor] = parts.processors()
    try:
        async with (
            ServiceHost(parts, bus, settings) as host,
            grpc.aio.insecure_channel(host.control.address) as channel,
        ):
            health = health_pb2_grpc.HealthStub(channel)

            async def status(name: str) -> int:
                answer = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
                return int(answer.status)

            await _publish(bus, settings, 0, 2_000, variant_pb2.JobMarker.KIND_STARTED)
            await _until(lambda: asyncio.to_thread(lambda: lance.count(JOB) == 2_000), "nothing stored")

            disk.fill()
            with json_log_lines("writer") as lines:
                await _publish(bus, settings, 2_000, 4_000, variant_pb2.JobMarker.KIND_FINISHED)

                async def not_ready() -> bool:
                    return await status("") != SERVING

                await _until(not_ready, "readiness stayed SERVING on a full disk")
            # --log-format json: the failed batch is logged naming its job, never a sample.
            failed = [
                line for line in of(lines, "vcf_agent.services.writer._sink") if line["level"] == "ERROR"
            ]
            assert failed and all(line["job_id"] == JOB for line in failed), lines
            assert "storing a batch failed" in failed[0]["message"]
            assert not any(sample in json.dumps(lines) for sample in SAMPLES)
            assert processor.state == "retrying"
            # The graph's refusal, or SQLite's (the job book) when a flush got past the graph.
            reason = str(processor.retrying)
            assert "No space left on device" in reason or "database or disk is full" in reason, reason
            assert await status(LIVENESS) == SERVING
            # It keeps failing while the disk is full: nothing passes, readiness stays down.
            await asyncio.sleep(2)
            assert await status("") != SERVING

            disk.free()

            async def healed() -> bool:
                # Stored first, committed just after: the lag reaches 0 a moment after the count.
                lags = await bus.lag("writer", settings.topology.database_writes)
                return (
                    await status("") == SERVING
                    and await asyncio.to_thread(lance.count, JOB) == 6_000
                    and sum(lag.lag for lag in lags) == 0
                )

            await _until(healed, "the writer did not resume after space returned")
            ids = await asyncio.to_thread(_stored_ids, lance)
            assert len(ids) == len(set(ids)) == 6_000
            expected = {make_write(i, job_id=JOB, tenant_id=TENANT).correlation_id for i in range(6_000)}
            assert set(ids) == expected
            counts = await asyncio.to_thread(graph.counts, JOB)
            assert (counts.variants, counts.in_file) == (6_000, 6_000)
            final = (await storage_notes(bus))[-1]
            assert (final.state, final.done, final.total) == (events_pb2.JOB_STATE_COMPLETE, 6_000, 6_000)
    finally:
        await bus.stop()
