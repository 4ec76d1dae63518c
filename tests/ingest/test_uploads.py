"""Uploads: a size limit checked while streaming, one area per tenant, nothing kept longer than needed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import vcf

from tests._grpc_errors import violated_field
from vcf_agent.app.pipeline import service_builder
from vcf_agent.bus import open_bus
from vcf_agent.config import Settings
from vcf_agent.runner import ServiceHost, ensure_topology
from vcf_agent.services import ingest
from vcf_agent.services.ingest import JobRegistry, UploadArea
from vcf_agent.synthetic_vcf import SyntheticVcfSpec, write_synthetic_vcf
from vcf_agent.v1 import events_pb2, jobs_pb2, jobs_pb2_grpc

LIMIT = 64 * 1024


@pytest.fixture
async def ingest_host(tmp_path: Path) -> AsyncIterator[tuple[jobs_pb2_grpc.IngestServiceStub, UploadArea]]:
    settings = Settings(
        data_dir=tmp_path / "service", bus_url=f"embedded://{tmp_path / 'bus'}", upload_max_bytes=LIMIT
    )
    bus = open_bus(settings.bus_url)
    await bus.start()
    await ensure_topology(bus, settings)
    parts = ingest.build(settings, bus)
    uploads = parts.uploads
    async with (
        ServiceHost(parts, bus, settings) as host,
        grpc.aio.insecure_channel(host.control.address) as channel,
    ):
        yield jobs_pb2_grpc.IngestServiceStub(channel), uploads
    await bus.stop()


def chunks(data: bytes, size: int = 8192) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def upload(stub: jobs_pb2_grpc.IngestServiceStub, data: bytes, **metadata: object) -> jobs_pb2.Job:
    requests = [jobs_pb2.SubmitVcfRequest(metadata=jobs_pb2.SubmitVcfMetadata(file_name="x.vcf", **metadata))]  # type: ignore[arg-type]
    requests += [jobs_pb2.SubmitVcfRequest(chunk=c) for c in chunks(data)]
    return (await stub.SubmitVcf(iter(requests), timeout=30)).job


async def eventually(check: object, timeout_s: float = 10.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_an_upload_over_the_limit_is_refused_while_streaming_and_nothing_is_kept(
    ingest_host: tuple[jobs_pb2_grpc.IngestServiceStub, UploadArea],
) -> None:
    stub, uploads = ingest_host
    sent = 0

    def requests() -> Iterator[jobs_pb2.SubmitVcfRequest]:
        nonlocal sent
        yield jobs_pb2.SubmitVcfRequest(
            metadata=jobs_pb2.SubmitVcfMetadata(tenant_id="lab", file_name="big.vcf")
        )
        # An endless stream: only a check while streaming can end it.
        while True:
            sent += 8192
            yield jobs_pb2.SubmitVcfRequest(chunk=b"#" * 8192)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.SubmitVcf(requests(), timeout=30)
    # The server ends an endless stream after its bounded drain. The client sees the refusal, or,
    # when one of its own writes was in flight as the refusal arrived, grpc-python's local
    # "Internal error from Core" for that write (the client overwrites the status it had not yet
    # read): a client that never stops writing cannot be told reliably. A finite one is, below.
    code, details = refused.value.code(), refused.value.details() or ""
    assert (code, str(LIMIT) in details) == (grpc.StatusCode.RESOURCE_EXHAUSTED, True) or (
        code,
        details,
    ) == (grpc.StatusCode.INTERNAL, "Internal error from Core"), (code, details)
    assert uploads.held() == []


async def test_a_finite_upload_over_the_limit_is_told_why_and_nothing_is_kept(
    ingest_host: tuple[jobs_pb2_grpc.IngestServiceStub, UploadArea],
) -> None:
    stub, uploads = ingest_host
    # Four times the limit: the server refuses at the limit and reads the rest (its drain), so the
    # client finishes writing and reads the status the server sent.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await upload(stub, b"#" * (4 * LIMIT), tenant_id="lab")
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert str(LIMIT) in (refused.value.details() or "")
    assert uploads.held() == []


async def test_a_failed_job_s_upload_is_deleted_and_a_refused_one_is_never_kept(
    ingest_host: tuple[jobs_pb2_grpc.IngestServiceStub, UploadArea], tmp_path: Path
) -> None:
    stub, uploads = ingest_host
    job = await upload(stub, b"\x89PNG\r\n\x1a\n not a VCF at all", tenant_id="lab")
    await eventually(lambda: uploads.held() == [])
    final = await stub.GetJob(jobs_pb2.GetJobRequest(job_id=job.job_id))
    assert final.state == events_pb2.JOB_STATE_FAILED

    vcf = write_synthetic_vcf(tmp_path / "two-samples.vcf", SyntheticVcfSpec(records=5, samples=2, seed=7))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await upload(stub, vcf.read_bytes(), tenant_id="lab", sample_ids=["NA12878"])
    assert violated_field(refused.value) == "sample_ids"
    assert uploads.held() == []


async def test_a_retry_s_upload_is_deleted_at_once_and_each_tenant_has_its_own_area(
    ingest_host: tuple[jobs_pb2_grpc.IngestServiceStub, UploadArea], tmp_path: Path
) -> None:
    stub, uploads = ingest_host
    vcf = write_synthetic_vcf(tmp_path / "a.vcf", SyntheticVcfSpec(records=50, seed=8)).read_bytes()
    first = await upload(stub, vcf, tenant_id="lab-a", idempotency_key="run-1")
    # This ingest has no downstream services, so the job never completes and its upload stays.
    held = uploads.held()
    assert len(held) == 1 and held[0].parent == uploads.tenant_dir("lab-a")
    again = await upload(stub, vcf, tenant_id="lab-a", idempotency_key="run-1")
    assert again.job_id == first.job_id
    assert uploads.held() == held
    other = await upload(stub, vcf, tenant_id="lab-b")
    assert other.tenant_id == "lab-b"
    areas = {p.parent for p in uploads.held()}
    assert areas == {uploads.tenant_dir("lab-a"), uploads.tenant_dir("lab-b")}
    assert uploads.tenant_dir("../lab-a").parent == uploads.root  # a tenant id cannot steer the path


def test_retention_keeps_a_completed_job_s_upload_for_its_time_then_deletes_it(tmp_path: Path) -> None:
    registry = JobRegistry(tmp_path / "jobs.sqlite")
    area = UploadArea(tmp_path / "uploads", registry, lambda _: False, max_bytes=LIMIT, retention_s=100)
    stray = area.tenant_dir("lab") / "left-by-a-crash.vcf"
    stray.parent.mkdir(parents=True)
    stray.write_text("##fileformat=VCFv4.2\n")
    received = area.receive("lab", ".vcf")
    received.write(b"##fileformat=VCFv4.2\n")
    received.finish()
    job = registry.begin("lab", "digest", "x.vcf", ["local"])
    area.attach(received, job.job_id)
    area.sweep(now=1000.0)
    assert area.held() == [received.path]  # the stray file no job claims is gone, the running job's stays

    job.state = events_pb2.JOB_STATE_COMPLETE
    registry.save(job)
    area.sweep(now=1000.0)
    area.sweep(now=1099.0)
    assert area.held() == [received.path]
    area.sweep(now=1100.0)
    assert area.held() == []

    failed = area.receive("lab", ".vcf")
    failed.finish()
    other = registry.begin("lab", "digest-2", "y.vcf", ["local"])
    other.state = events_pb2.JOB_STATE_FAILED
    registry.save(other)
    area.attach(failed, other.job_id)
    area.sweep(now=2000.0)
    assert area.held() == []  # retention is for completed jobs; a failed job's file goes at once
    registry.close()


async def test_a_completed_job_s_upload_is_deleted_once_the_job_is_final(tmp_path: Path) -> None:
    """Ingest's API with the router, aggregator and writer on one bus, so the job really completes."""
    source = Path(vcf.__file__).parent / "test" / "gatk.vcf"  # a real GATK output from the PyVCF3 wheel
    settings = Settings(data_dir=tmp_path / "service", bus_url=f"embedded://{tmp_path / 'bus'}")
    bus = open_bus(settings.bus_url)
    await bus.start()
    await ensure_topology(bus, settings)
    downstream = [
        component
        for name in ("writer", "aggregator", "router")
        for component in service_builder(name)(settings, bus).components
    ]
    for component in downstream:
        await component.start()
    parts = ingest.build(settings, bus)
    uploads = parts.uploads
    try:
        async with (
            ServiceHost(parts, bus, settings) as host,
            grpc.aio.insecure_channel(host.control.address) as channel,
        ):
            stub = jobs_pb2_grpc.IngestServiceStub(channel)
            job = await upload(stub, await asyncio.to_thread(source.read_bytes), tenant_id="lab")
            assert len(uploads.held()) == 1
            deadline = time.monotonic() + 120
            while job.state != events_pb2.JOB_STATE_COMPLETE:
                assert time.monotonic() < deadline, job
                await asyncio.sleep(0.2)
                job = await stub.GetJob(jobs_pb2.GetJobRequest(job_id=job.job_id))
            assert job.counts.stored == 37  # 37 records, one ALT each, in the file's text
            # The sweep runs every second: the file goes soon after the job is final.
            await eventually(lambda: uploads.held() == [], timeout_s=5)
    finally:
        for component in reversed(downstream):
            await component.stop()
        await bus.stop()
