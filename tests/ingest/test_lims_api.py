"""IngestService as a LIMS meets it: idempotency keys, file:// URIs, sample ids, priority."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests._grpc_errors import violated_field
from vcf_agent.bus import Bus, OutgoingMessage, open_bus
from vcf_agent.config import Settings
from vcf_agent.runner import ServiceHost, ensure_topology
from vcf_agent.schema import decode, encode, message_type
from vcf_agent.services import ingest
from vcf_agent.services.ingest import _job_changes as job_changes
from vcf_agent.synthetic_vcf import SyntheticVcfSpec, write_synthetic_vcf
from vcf_agent.v1 import events_pb2, jobs_pb2, jobs_pb2_grpc, variant_pb2


@pytest.fixture
async def ingest_api(tmp_path: Path) -> AsyncIterator[tuple[jobs_pb2_grpc.IngestServiceStub, Bus]]:
    # The tests' VCFs are written in tmp_path, which the service may read by path; its own data is below.
    settings = Settings(
        data_dir=tmp_path / "service",
        bus_url=f"embedded://{tmp_path / 'bus'}",
        ingest_allowed_dirs={"*": (tmp_path,)},
    )
    bus = open_bus(settings.bus_url)
    await bus.start()
    await ensure_topology(bus, settings)
    async with (
        ServiceHost(ingest.build(settings, bus), bus, settings) as host,
        grpc.aio.insecure_channel(host.control.address) as channel,
    ):
        yield jobs_pb2_grpc.IngestServiceStub(channel), bus
    await bus.stop()


async def _submit(stub: jobs_pb2_grpc.IngestServiceStub, **metadata: object) -> jobs_pb2.Job:
    request = jobs_pb2.SubmitVcfRequest(metadata=jobs_pb2.SubmitVcfMetadata(**metadata))  # type: ignore[arg-type]
    response = await stub.SubmitVcf(iter([request]), timeout=30)
    return response.job


async def test_same_idempotency_key_returns_the_first_job(
    ingest_api: tuple[jobs_pb2_grpc.IngestServiceStub, Bus], tmp_path: Path
) -> None:
    stub, _ = ingest_api
    first = write_synthetic_vcf(tmp_path / "a.vcf", SyntheticVcfSpec(records=20, seed=1))
    other = write_synthetic_vcf(tmp_path / "b.vcf", SyntheticVcfSpec(records=20, seed=2))
    job = await _submit(stub, tenant_id="lab", path=str(first), idempotency_key="run-42")
    # A retry that (wrongly) points at another file still gets the job the key was first used for.
    again = await _submit(stub, tenant_id="lab", path=str(other), idempotency_key="run-42")
    assert again.job_id == job.job_id
    fresh = await _submit(stub, tenant_id="lab", path=str(other), idempotency_key="run-43")
    assert fresh.job_id != job.job_id


async def test_file_uris_work_and_other_schemes_name_the_path_field(
    ingest_api: tuple[jobs_pb2_grpc.IngestServiceStub, Bus], tmp_path: Path
) -> None:
    stub, _ = ingest_api
    path = write_synthetic_vcf(tmp_path / "c.vcf", SyntheticVcfSpec(records=5, seed=3))
    job = await _submit(stub, tenant_id="lab", path=path.resolve().as_uri())
    assert job.source_name == "c.vcf"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _submit(stub, tenant_id="lab", path="s3://bucket/c.vcf")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_field(caught.value) == "path"


async def test_unknown_sample_ids_are_rejected_by_name(
    ingest_api: tuple[jobs_pb2_grpc.IngestServiceStub, Bus], tmp_path: Path
) -> None:
    stub, _ = ingest_api
    path = write_synthetic_vcf(tmp_path / "d.vcf", SyntheticVcfSpec(records=5, samples=2, seed=4))
    await _submit(stub, tenant_id="lab", path=str(path), sample_ids=["S0000", "S0001"])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _submit(stub, tenant_id="lab", path=str(path), sample_ids=["S0000", "NA12878"])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_field(caught.value) == "sample_ids"
    assert "NA12878" in (caught.value.details() or "")


async def test_priority_travels_on_every_published_batch(
    ingest_api: tuple[jobs_pb2_grpc.IngestServiceStub, Bus], tmp_path: Path
) -> None:
    stub, bus = ingest_api
    path = write_synthetic_vcf(tmp_path / "e.vcf", SyntheticVcfSpec(records=30, seed=5))
    await _submit(stub, tenant_id="lab", path=str(path), priority=7)
    batches: list[variant_pb2.VariantBatch] = []
    async with bus.consumer(["vcf-variants"], "priority-check") as consumer:
        for _ in range(50):
            for record in await consumer.poll(timeout_s=0.2):
                if message_type(record.headers) == variant_pb2.VariantBatch.DESCRIPTOR.full_name:
                    batches.append(decode(record.value, record.headers, variant_pb2.VariantBatch))
            if sum(len(b.variants) for b in batches) >= 30:
                break
    assert sum(len(b.variants) for b in batches) == 30
    assert {b.priority for b in batches} == {7}


async def test_watch_job_sends_the_end_when_it_is_recorded_not_at_a_poll(
    ingest_api: tuple[jobs_pb2_grpc.IngestServiceStub, Bus], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A LIMS watching a job is told of its end by the write that records it: with the stream's
    fallback re-read moved past the test's bound, only that wake-up can end the stream in time.
    Progress is sent too, each change once, and the stream closes at the end."""
    monkeypatch.setattr(job_changes, "FALLBACK_S", 60.0)
    stub, bus = ingest_api
    path = write_synthetic_vcf(tmp_path / "a.vcf", SyntheticVcfSpec(records=20, seed=1))
    job = await _submit(stub, tenant_id="lab", path=str(path))
    stream = stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=job.job_id))
    seen: list[jobs_pb2.Job] = []

    async def until(state: int) -> None:
        async for update in stream:
            seen.append(update)
            if update.state == state:
                return

    # Nothing downstream runs here: ingest reads the 20 records and waits for their analysis.
    await asyncio.wait_for(until(events_pb2.JOB_STATE_ANALYSING), 30)
    notes = Settings().topology.user_notifications
    ended = events_pb2.Notification(
        job_id=job.job_id,
        stage=events_pb2.STAGE_STORAGE,
        state=events_pb2.JOB_STATE_COMPLETE,
        done=20,
        total=20,
    )
    payload, headers = encode(ended, tenant_id="lab")
    await bus.publish(notes, [OutgoingMessage(payload, job.job_id.encode(), headers)])
    await asyncio.wait_for(until(events_pb2.JOB_STATE_COMPLETE), 10)
    assert (seen[-1].counts.stored, seen[-1].counts.total) == (20, 20)
    assert [update async for update in stream] == []  # closed after the end
    shown = [(u.state, u.counts.ingested, u.counts.stored) for u in seen]
    assert len(shown) == len(set(shown)), shown
