"""Ingest's job calls as the e2e tests make them: a file submitted by path, a job read back."""

from __future__ import annotations

from pathlib import Path

import grpc

from vcf_agent.v1 import jobs_pb2, jobs_pb2_grpc


async def get_job(address: str, job_id: str) -> jobs_pb2.Job:
    async with grpc.aio.insecure_channel(address) as channel:
        return await jobs_pb2_grpc.IngestServiceStub(channel).GetJob(
            jobs_pb2.GetJobRequest(job_id=job_id), timeout=10
        )


async def submit_path(address: str, path: Path, tenant: str) -> str:
    """Submit a file ingest reads from its own disk (an allowed directory); returns the job id."""
    async with grpc.aio.insecure_channel(address) as channel:

        async def request():  # type: ignore[no-untyped-def]
            meta = jobs_pb2.SubmitVcfMetadata(tenant_id=tenant, file_name=path.name, path=str(path))
            yield jobs_pb2.SubmitVcfRequest(metadata=meta)

        response = await jobs_pb2_grpc.IngestServiceStub(channel).SubmitVcf(request(), timeout=30)
    return response.job.job_id
