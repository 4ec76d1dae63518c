"""Server-side paths and uploads in the secured deployment.

lab-a may submit from its own directory and the shared one; lab-b from the
shared one and (an operator's mistake, on purpose) the services' data
directory. Every forbidden path, missing files included, gets the same
PERMISSION_DENIED with the same message, and no upload is reachable by path.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.security.conftest import PYVCF_TESTS, UPLOAD_LIMIT, Deployment, TwoTenants, bearer, wait_final
from vcf_agent.services.ingest import NOT_ALLOWED
from vcf_agent.v1 import events_pb2, jobs_pb2, jobs_pb2_grpc


def uploads_dir(deployment: Deployment) -> Path:
    # running_pipeline gives each service --data-dir <data_dir>/<service>.
    return deployment.data_dir / "ingest" / "ingest" / "uploads"


def held_uploads(deployment: Deployment) -> list[Path]:
    return sorted(p for p in uploads_dir(deployment).rglob("*") if p.is_file())


async def submit_path(deployment: Deployment, tenant: str, location: str) -> jobs_pb2.Job:
    async def requests() -> AsyncIterator[jobs_pb2.SubmitVcfRequest]:
        yield jobs_pb2.SubmitVcfRequest(metadata=jobs_pb2.SubmitVcfMetadata(path=location))

    async with deployment.channel("ingest") as channel:
        stub = jobs_pb2_grpc.IngestServiceStub(channel)
        response = await stub.SubmitVcf(requests(), metadata=bearer(deployment.tokens[tenant]), timeout=10)
    return response.job


async def refusal(deployment: Deployment, tenant: str, location: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await submit_path(deployment, tenant, location)
    return refused.value


async def test_forbidden_paths_all_get_the_same_permission_denied(
    deployment: Deployment, two_tenants: TwoTenants
) -> None:
    lab_a, shared = deployment.lab_a_dir, deployment.shared_dir
    allowed_a = lab_a / "samtools.vcf"
    shutil.copy(PYVCF_TESTS / "samtools.vcf", allowed_a)
    (lab_a / "escape.vcf").symlink_to("/etc/passwd")
    (shared / "into-lab-a.vcf").symlink_to(allowed_a)
    # Both tenants' uploads are kept (retention is on), each in its tenant's area under the data dir.
    uploads = held_uploads(deployment)
    assert len({p.parent for p in uploads}) >= 2
    (lab_a / "to-an-upload.vcf").symlink_to(uploads[0])

    attempts = {
        "lab-a": [
            "/etc/passwd",
            "/etc/shadow",
            "/proc/self/environ",
            "file:///etc/passwd",
            "../../etc/passwd",
            "samtools.vcf",  # relative: never resolved against the service's working directory
            f"{lab_a}/../../../../../../etc/passwd",
            f"{lab_a}/escape.vcf",
            f"{lab_a}/to-an-upload.vcf",
            f"{lab_a}/no-such-file.vcf",
            str(lab_a),
            *(str(p) for p in uploads),
        ],
        # lab-b may read the data directory by configuration, yet never an upload or a store file.
        "lab-b": [
            str(allowed_a),
            allowed_a.as_uri(),
            str(shared / "into-lab-a.vcf"),
            *(str(p) for p in uploads),
            str(deployment.data_dir / "ingest" / "ingest" / "jobs.sqlite"),
            str(deployment.data_dir / "no-such-file.vcf"),
        ],
    }
    for tenant, locations in attempts.items():
        for location in locations:
            error = await refusal(deployment, tenant, location)
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED, (tenant, location, error)
            # One message for all: a missing file cannot be told from a forbidden one.
            assert error.details() == f"path: {NOT_ALLOWED}", (tenant, location)
    assert held_uploads(deployment) == uploads

    # Other schemes are refused by their form alone, naming the field.
    error = await refusal(deployment, "lab-a", "http://169.254.169.254/latest/meta-data")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT

    # What is allowed works: lab-a from its directory, lab-b from the shared one.
    job = await submit_path(deployment, "lab-a", str(allowed_a))
    assert job.tenant_id == "lab-a" and job.source_name == "samtools.vcf"
    shutil.copy(PYVCF_TESTS / "bcftools.vcf", shared / "bcftools.vcf")
    shared_job = await submit_path(deployment, "lab-b", (shared / "bcftools.vcf").as_uri())
    assert shared_job.tenant_id == "lab-b"
    for submitted in (job, shared_job):
        assert (await wait_final(deployment, submitted.job_id)).state == events_pb2.JOB_STATE_COMPLETE


async def oversized_upload(stub: jobs_pb2_grpc.IngestServiceStub, token: str) -> tuple[grpc.StatusCode, str]:
    """Send up to four times the limit, chunk by chunk, and return the status the server ended with.

    Written call by call: once the server has refused, a further write fails on the client side,
    and the server's status is what counts.
    """
    call = stub.SubmitVcf(metadata=bearer(token), timeout=30)
    try:
        await call.write(jobs_pb2.SubmitVcfRequest(metadata=jobs_pb2.SubmitVcfMetadata(file_name="huge.vcf")))
        for _ in range(4 * UPLOAD_LIMIT // (256 * 1024) + 1):
            await call.write(jobs_pb2.SubmitVcfRequest(chunk=b"#" * (256 * 1024)))
        await call.done_writing()
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        pass
    return await call.code(), await call.details()


async def test_an_oversized_upload_is_refused_while_streaming_and_nothing_is_kept(
    deployment: Deployment, two_tenants: TwoTenants
) -> None:
    before = held_uploads(deployment)
    async with deployment.channel("ingest") as channel:
        code, details = await oversized_upload(
            jobs_pb2_grpc.IngestServiceStub(channel), deployment.tokens["lab-a"]
        )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
    assert f"limit of {UPLOAD_LIMIT} bytes" in details
    assert held_uploads(deployment) == before
