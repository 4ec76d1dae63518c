"""SIGTERM is a full drain: a stopping service stores what it holds and commits it before it leaves.

Real services as OS processes on the embedded log. The writer's proof reads the log and the
store after it exited: the writes in the `database-writes` records below its committed offsets
are exactly the variants in LanceDB, so a restarted writer is handed nothing it already stored.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import lancedb
import vcf as pyvcf

from vcf_agent.bus import open_bus
from vcf_agent.localdev import (
    SIMULATED_ANSWER,
    SIMULATED_API_KEY,
    Reply,
    Seen,
    SimulatedVendor,
    running_pipeline,
    start_service,
    stop_service,
)
from vcf_agent.runner import EXIT_SHUTDOWN_ABANDONED
from vcf_agent.schema import serialized_message
from vcf_agent.synthetic_vcf import SyntheticVcfSpec, write_synthetic_vcf
from vcf_agent.v1 import events_pb2

from ._ingest_calls import get_job, submit_path

_WRITES_STREAM = "database-writes"
# Real GATK output, 37 records (PyVCF3's test data).
GATK_VCF = Path(pyvcf.__file__).parent / "test" / "gatk.vcf"


def _stored_ids(data_dir: Path, job_id: str) -> set[str]:
    """The job's variants in the writer's LanceDB, read from its files (the writer has exited)."""
    table = lancedb.connect(str(data_dir / "writer" / "writer" / "lance")).open_table("variants")
    ids = table.search().where(f"job_id = '{job_id}'").select(["correlation_id"]).limit(None).to_arrow()
    return set(ids.column("correlation_id").to_pylist())


async def _committed_ids(bus_url: str, group: str) -> tuple[dict[int, int], set[str]]:
    """The group's committed offsets on `database-writes`, and the variants the records below them hold."""
    async with open_bus(bus_url) as bus:
        committed = await bus.committed_offsets(group, _WRITES_STREAM)
        reader = bus.consumer([_WRITES_STREAM], "test-reader", start="earliest")
        ids: set[str] = set()
        read_to: dict[int, int] = {}
        async with reader:
            deadline = time.monotonic() + 60
            while any(read_to.get(p, 0) < end for p, end in committed.items()):
                assert time.monotonic() < deadline, f"read {read_to} of {committed}"
                for record in await reader.poll(500, 0.5):
                    read_to[record.partition] = record.offset + 1
                    if record.offset >= committed.get(record.partition, 0):
                        continue
                    batch = events_pb2.DatabaseWriteBatch.FromString(
                        serialized_message(record.value, record.headers, events_pb2.DatabaseWriteBatch)
                    )
                    ids.update(write.correlation_id for write in batch.writes)
    return committed, ids


async def test_sigterm_writer_mid_job_commits_all_it_stored_before_leaving(tmp_path: Path) -> None:
    """Before: the writer stored its buffered and in-flight batches after its consumer had left the
    group, uncommitted, so the restarted writer was handed them again (merged, never doubled)."""
    path = write_synthetic_vcf(
        tmp_path / "job.vcf.gz", SyntheticVcfSpec(records=16_000, samples=1, seed=14), bgzip=True
    )
    bus_url = f"embedded://{tmp_path / 'bus'}?session_timeout_ms=2000"
    data_dir = tmp_path / "services"
    # Small batches keep the writer's stores busy, so a SIGTERM finds batches buffered and in flight.
    env = {"VCF_AGENT_INGEST_ALLOWED_DIRS": str(tmp_path), "VCF_AGENT_WRITER_BATCH_ROWS": "500"}
    with running_pipeline(bus_url, data_dir, env=env) as services:
        job_id = await submit_path(services["ingest"].grpc, path, "lab-t")
        deadline = time.monotonic() + 180
        while (job := await get_job(services["ingest"].grpc, job_id)).counts.stored < 1_500:
            assert time.monotonic() < deadline, f"nothing stored: {job}"
            await asyncio.sleep(0.1)
        assert stop_service(services["writer"]) == 0
        log = services["writer"].log_path.read_text()

        stored = _stored_ids(data_dir, job_id)
        committed, covered = await _committed_ids(bus_url, "writer")
        assert job.state != events_pb2.JOB_STATE_COMPLETE, "the job ended before SIGTERM; use a bigger file"
        assert stored, "nothing stored before SIGTERM"
        assert stored - covered == set(), (
            f"{len(stored - covered)} stored variants are not committed ({committed}): they come again"
        )
        assert covered - stored == set(), f"{len(covered - stored)} committed variants are not stored"
        assert "writer: stopped in" in log and "; 0 records left uncommitted" in log, log[-3000:]

        services["writer"] = start_service("writer", bus_url, data_dir, env=env)
        deadline = time.monotonic() + 300
        while (job := await get_job(services["ingest"].grpc, job_id)).state != events_pb2.JOB_STATE_COMPLETE:
            assert job.state != events_pb2.JOB_STATE_FAILED, job.error
            assert time.monotonic() < deadline, f"job stuck after the writer's restart: {job}"
            await asyncio.sleep(0.2)
        assert job.counts.stored == job.counts.total


async def test_sigterm_router_waiting_on_a_provider_exits_within_its_drain_leaving_the_batch_uncommitted(
    tmp_path: Path,
) -> None:
    """Before: stopping waited up to 30 s for the batch in the provider worker's handler (over Iggy
    at load, a router took 29.1 s of compose's 30 s grace). Now the drain's deadline cuts it short;
    the batch stays uncommitted and the restarted router asks the provider again."""
    answering = [False]

    def hang_until_answering(vendor: SimulatedVendor, seen: Seen) -> Reply:
        return vendor.success(SIMULATED_ANSWER) if answering[0] else Reply(hang=True)

    bus_url = f"embedded://{tmp_path / 'bus'}?session_timeout_ms=2000"
    data_dir = tmp_path / "services"
    async with SimulatedVendor("openai", hang_until_answering) as vendor:
        env = {
            "VCF_AGENT_INGEST_ALLOWED_DIRS": str(GATK_VCF.parent),
            "VCF_AGENT_PROVIDERS": "openai",
            "VCF_AGENT_PROVIDER_OPENAI_BASE_URL": vendor.base_url,
            "VCF_AGENT_PROVIDER_OPENAI_TIMEOUT_S": "600",
            "OPENAI_API_KEY": SIMULATED_API_KEY,
            "VCF_AGENT_SHUTDOWN_DRAIN_S": "2",
            # A request past its deadline is answered as missing without asking: not here.
            "VCF_AGENT_ANALYSIS_DEADLINE_S": "3600",
        }
        ingest = await asyncio.to_thread(start_service, "ingest", bus_url, data_dir, env=env)
        router = await asyncio.to_thread(start_service, "router", bus_url, data_dir, env=env)
        try:
            await submit_path(ingest.grpc, GATK_VCF, "lab-t")
            deadline = time.monotonic() + 120
            while not vendor.requests:
                assert time.monotonic() < deadline, f"the router never called the provider:\n{router.log()}"
                await asyncio.sleep(0.1)
            asked = len(vendor.requests)
            # Bounded by the drain (2 s) and the group's leave (3 s), not by the provider's 600 s.
            assert await asyncio.to_thread(stop_service, router, timeout_s=20) == 0
            async with open_bus(bus_url) as bus:
                ends = await bus.end_offsets("ai-analysis-requests")
                committed = await bus.committed_offsets("router-provider-openai", "ai-analysis-requests")
            assert any(committed.get(p, 0) < end for p, end in ends.items()), (committed, ends)

            answering[0] = True
            router = await asyncio.to_thread(start_service, "router", bus_url, data_dir, env=env)
            deadline = time.monotonic() + 120
            while True:
                async with open_bus(bus_url) as bus:
                    committed = await bus.committed_offsets("router-provider-openai", "ai-analysis-requests")
                if all(committed.get(p, 0) >= end for p, end in ends.items()):
                    break
                assert time.monotonic() < deadline, f"not redelivered: {committed} of {ends}\n{router.log()}"
                await asyncio.sleep(0.2)
            assert len(vendor.requests) > asked, "the batch cut short was not asked again"
        finally:
            for service in (router, ingest):
                if service.process.poll() is None:
                    await asyncio.to_thread(stop_service, service)


def test_a_shutdown_stuck_on_a_locked_bus_ends_at_its_deadline_with_every_stack_logged(
    tmp_path: Path,
) -> None:
    """A stop that cannot finish (the embedded log's write lock held by another process: the
    consumer's leave and heartbeat wait on SQLite's 30 s busy timeout) ends at
    `shutdown_timeout_s` with status 70, the log naming the deadline and showing the blocked
    thread's stack, instead of running into the orchestrator's SIGKILL silently.
    """
    bus_dir = tmp_path / "bus"
    aggregator = start_service(
        "aggregator",
        f"embedded://{bus_dir}",
        tmp_path / "services",
        env={"VCF_AGENT_SHUTDOWN_TIMEOUT_S": "1"},
    )
    lock = sqlite3.connect(bus_dir / "bus.sqlite3", isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        code = stop_service(aggregator)
    finally:
        lock.close()
    log = aggregator.log_path.read_text()
    assert code == EXIT_SHUTDOWN_ABANDONED, log[-3000:]
    assert "aggregator: shutdown abandoned: it did not finish in 1s; stacks follow" in log
    # faulthandler's dump: the thread waiting on the lock, inside the embedded log's code.
    assert "Thread 0x" in log and "bus/_embedded.py" in log, log[-3000:]
