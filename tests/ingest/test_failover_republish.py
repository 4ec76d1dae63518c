"""Issue 18: records stranded on a failover bus's lost primary are named, then published again, only them.

The bus is a real FailoverBus over two real memory buses; the primary is made
to fail its probes and publishes mid-job (fault injection into a real
backend), after ingest published part of the file on it and the rest went to
the fallback. The watchdog must name what is stranded there, per stream and
group as the backend lists them (not a fixed list), and ingest must publish
again exactly the records the lost primary had taken, then, if the job stays
idle, the whole file.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from pathlib import Path

from vcf_agent.bus import BusUnavailableError, OutgoingMessage, PartitionLag, PublishedPosition
from vcf_agent.bus._failover import FailoverBus
from vcf_agent.bus._memory import MemoryBus
from vcf_agent.config import Settings
from vcf_agent.schema import HEADER_JOB, HEADER_VARIANT_COUNT, decode, message_type
from vcf_agent.v1 import events_pb2, variant_pb2

from ._vcf_text import record, write_vcf
from ._watched_ingest import watched_ingest

RECORDS = 60
BATCH = 5
# Batches the primary takes before it dies.
ON_PRIMARY = 4


class DyingMemoryBus(MemoryBus):
    """A real memory bus that holds the job's next batch after `take` batches, then is killed."""

    def __init__(self, name: str, stream: str, take: int) -> None:
        super().__init__(name)
        self.dead = False
        self._stream, self._take = stream, take
        self.taken = 0
        self.holding = asyncio.Event()
        self.killed = asyncio.Event()

    async def healthy(self) -> bool:
        return not self.dead and await super().healthy()

    async def publish(self, stream: str, messages: Sequence[OutgoingMessage]) -> list[PublishedPosition]:
        if stream == self._stream and HEADER_VARIANT_COUNT in messages[0].headers and not self.dead:
            if self.taken == self._take:
                self.holding.set()
                await self.killed.wait()
            else:
                self.taken += 1
        if self.dead:
            raise BusUnavailableError("injected: the primary was killed")
        return await super().publish(stream, messages)

    async def lag(self, group: str, stream: str) -> list[PartitionLag]:
        if self.dead:
            raise BusUnavailableError("injected: the primary was killed")
        return await super().lag(group, stream)


async def _batches(bus: MemoryBus, stream: str, job_id: str) -> list[variant_pb2.VariantBatch]:
    found = []
    async with bus.consumer([stream], f"check-{uuid.uuid4().hex[:6]}") as consumer:
        while records := await consumer.poll(timeout_s=0.2):
            for r in records:
                if r.headers.get(HEADER_JOB) == job_id and message_type(r.headers).endswith("VariantBatch"):
                    found.append(decode(r.value, r.headers, variant_pb2.VariantBatch))
    return found


async def _finished_counts(bus: MemoryBus, stream: str, job_id: str) -> list[int]:
    counts = []
    async with bus.consumer([stream], f"markers-{uuid.uuid4().hex[:6]}") as consumer:
        while records := await consumer.poll(timeout_s=0.2):
            for r in records:
                if message_type(r.headers).endswith("JobMarker"):
                    marker = decode(r.value, r.headers, variant_pb2.JobMarker)
                    if marker.job_id == job_id and marker.kind == variant_pb2.JobMarker.KIND_FINISHED:
                        counts.append(marker.variant_count)
    return counts


def _positions(batches: list[variant_pb2.VariantBatch]) -> list[int]:
    return sorted(v.position for batch in batches for v in batch.variants)


async def test_only_what_the_lost_primary_took_is_published_again_then_the_whole_file(
    tmp_path: Path,
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        bus_url="memory://unused",
        batch_size=BATCH,
        batch_linger_ms=60_000,
        max_pending_batches=1,
        job_stall_s=0.0,
        republish_grace_s=10.0,
    )
    stream = settings.topology.variants
    primary = DyingMemoryBus(f"primary-{uuid.uuid4().hex[:8]}", stream, ON_PRIMARY)
    fallback = MemoryBus(f"fallback-{uuid.uuid4().hex[:8]}")
    bus = FailoverBus(primary, fallback, probe_interval_s=0.05, failures_to_switch=2, publish_timeout_s=30.0)
    async with watched_ingest(bus, settings, tmp_path) as (registry, _, publisher, watchdog):
        path = write_vcf(tmp_path / "sixty.vcf", [record(pos=str(100 + i)) for i in range(RECORDS)])
        job = await publisher.submit(path)
        await asyncio.wait_for(primary.holding.wait(), 10)
        # A stage read part of what the primary took and committed it: a real group on a real stream.
        async with primary.consumer([stream], "router") as router:
            read = await router.poll(max_records=3, timeout_s=1)
            await router.commit({(r.stream, r.partition): r.offset + 1 for r in read})
        # While the primary answers, the watchdog learns its groups and their lag.
        await watchdog.tick(now=1000.0)
        router_lag = sum(lag.lag for lag in await primary.lag("router", stream))
        assert router_lag > 0

        primary.dead = True
        primary.killed.set()
        await publisher.wait(job.job_id)
        assert bus.active_backend == "memory-fallback" and bus.outages("memory-primary") == 1
        on_primary = _positions(await _batches(primary, stream, job.job_id))
        first_run = _positions(await _batches(fallback, stream, job.job_id))
        assert len(on_primary) == ON_PRIMARY * BATCH
        assert sorted(on_primary + first_run) == [100 + i for i in range(RECORDS)]

        # Idle while records wait on the dead primary: stalled, saying how many, where, for whom.
        await watchdog.tick(now=1001.0)
        await watchdog.tick(now=1006.0)
        stalled = registry.get(job.job_id)
        assert stalled is not None and stalled.state == events_pb2.JOB_STATE_STALLED
        assert f"{router_lag} on {stream} for router (memory-primary, unreachable)" in stalled.stall_detail

        # After the grace period: the batches the primary took, and only those, go to the fallback.
        await watchdog.tick(now=1011.0)
        await publisher.wait(job.job_id)
        assert _positions(await _batches(fallback, stream, job.job_id)) == sorted(first_run + on_primary)
        assert await _finished_counts(fallback, stream, job.job_id) == [RECORDS, RECORDS]

        # Still idle a grace period later: something else was stranded, so the whole file.
        await watchdog.tick(now=1020.0)
        await watchdog.tick(now=1021.0)
        await publisher.wait(job.job_id)
        everything = [100 + i for i in range(RECORDS)]
        assert _positions(await _batches(fallback, stream, job.job_id)) == sorted(
            first_run + on_primary + everything
        )


class LateMemoryBus(MemoryBus):
    """A real memory bus whose probes and lag reads fail while `late` is set (a loaded broker)."""

    late = False

    async def healthy(self) -> bool:
        return not self.late and await super().healthy()

    async def lag(self, group: str, stream: str) -> list[PartitionLag]:
        if self.late:
            raise TimeoutError("injected: a late answer")
        return await super().lag(group, stream)


async def test_a_backend_late_for_one_probe_strands_nothing(tmp_path: Path) -> None:
    # A CLI primary-killed run at load 60 reported "records stranded: 18 on database-writes for
    # writer (kafka, unreachable)": Kafka had missed one probe, and its lag read timed out. Only a
    # backend declared down (failures_to_switch probes in a row) holds records it cannot deliver.
    settings = Settings(data_dir=tmp_path / "data", bus_url="memory://unused")
    stream = settings.topology.variants
    primary = MemoryBus(f"primary-{uuid.uuid4().hex[:8]}")
    fallback = LateMemoryBus(f"fallback-{uuid.uuid4().hex[:8]}")
    bus = FailoverBus(primary, fallback, probe_interval_s=60.0, failures_to_switch=3)
    async with watched_ingest(bus, settings, tmp_path) as (_, _, _, watchdog):
        await fallback.publish(stream, [OutgoingMessage(b"v", key=str(i).encode()) for i in range(6)])
        async with fallback.consumer([stream], "writer") as writer:
            read = await writer.poll(max_records=2, timeout_s=1)
            await writer.commit({(r.stream, r.partition): r.offset + 1 for r in read})
        assert await watchdog._stranded(1000.0) == ""

        fallback.late = True
        await bus._probe()
        assert not bus.answering(1) and not bus.declared_down(1)
        assert await watchdog._stranded(1001.0) == ""

        await bus._probe()
        await bus._probe()
        assert bus.declared_down(1)
        stranded = await watchdog._stranded(1002.0)
        assert f"on {stream} for writer ({bus.backend_names[1]}, unreachable)" in stranded
