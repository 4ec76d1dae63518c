"""IngestService: the LIMS-facing gRPC API (submit, get, watch, list, cancel)."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import grpc

from vcf_agent.control import abort, invalid_argument, may_see, page_offset, requested_tenant, tenant_scope
from vcf_agent.schema import TERMINAL_STATES
from vcf_agent.v1 import jobs_pb2, jobs_pb2_grpc

from ._jobs import JobRecord, JobRegistry
from ._publisher import VariantPublisher
from ._vcf_source import header_samples

Context = grpc.aio.ServicerContext[Any, Any]

_WATCH_INTERVAL_S = 0.2


class IngestApi(jobs_pb2_grpc.IngestServiceServicer):
    def __init__(self, publisher: VariantPublisher, registry: JobRegistry, upload_dir: Path) -> None:
        self._publisher = publisher
        self._registry = registry
        self._upload_dir = upload_dir

    async def SubmitVcf(
        self, request_iterator: AsyncIterator[jobs_pb2.SubmitVcfRequest], context: Context
    ) -> jobs_pb2.SubmitVcfResponse:
        metadata: jobs_pb2.SubmitVcfMetadata | None = None
        upload: Path | None = None
        handle = None
        try:
            async for part in request_iterator:
                if part.HasField("metadata"):
                    if metadata is not None:
                        await invalid_argument(context, "metadata", "metadata must be sent once, first")
                    metadata = part.metadata
                elif part.HasField("chunk"):
                    if metadata is None:
                        await invalid_argument(context, "metadata", "the first message must carry metadata")
                    if handle is None:
                        self._upload_dir.mkdir(parents=True, exist_ok=True)
                        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in finally
                            dir=self._upload_dir,
                            suffix=_suffix(metadata.file_name if metadata else ""),
                            delete=False,
                        )
                        upload = Path(handle.name)
                    handle.write(part.chunk)
        finally:
            if handle is not None:
                handle.close()
        if metadata is None:
            await invalid_argument(context, "metadata", "a SubmitVcf stream must start with metadata")
            raise AssertionError("unreachable")
        if upload is None and not metadata.path:
            await invalid_argument(context, "path", "send file chunks or a path the ingest service can read")
        if upload is not None and metadata.path:
            await invalid_argument(context, "path", "send either chunks or a path, not both")
        path = upload if upload is not None else await _readable_path(metadata.path, context)
        tenant_id = metadata.tenant_id or tenant_scope() or "default"
        if not may_see(tenant_id):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, "a tenant token submits only for its tenant"
            )
        key = metadata.idempotency_key
        earlier = self._registry.job_for_key(tenant_id, key) if key else None
        if earlier is not None:
            if upload is not None:
                upload.unlink(missing_ok=True)
            return jobs_pb2.SubmitVcfResponse(job=earlier.to_proto())
        if metadata.sample_ids:
            present = set(await asyncio.to_thread(header_samples, path))
            missing = sorted(set(metadata.sample_ids) - present)
            if missing:
                await invalid_argument(
                    context, "sample_ids", f"not samples of this file: {', '.join(missing)}"
                )
        job = await self._publisher.submit(
            path,
            tenant_id=tenant_id,
            source_name=metadata.file_name or path.name,
            providers=list(metadata.providers) or None,
            priority=metadata.priority,
        )
        if key:
            self._registry.remember_key(tenant_id, key, job.job_id)
        return jobs_pb2.SubmitVcfResponse(job=job.to_proto())

    async def _visible_job(self, job_id: str, context: Context) -> JobRecord:
        """The job, or NOT_FOUND: another tenant's job is reported as absent, so it does not leak."""
        if not job_id:
            await invalid_argument(context, "job_id", "job_id is required")
        job = self._registry.get(job_id)
        if job is None or not may_see(job.tenant_id):
            await abort(context, grpc.StatusCode.NOT_FOUND, f"no job {job_id!r}")
        return job

    async def GetJob(self, request: jobs_pb2.GetJobRequest, context: Context) -> jobs_pb2.Job:
        return (await self._visible_job(request.job_id, context)).to_proto()

    async def WatchJob(
        self, request: jobs_pb2.WatchJobRequest, context: Context
    ) -> AsyncIterator[jobs_pb2.Job]:
        last = None
        while True:
            job = await self._visible_job(request.job_id, context)
            proto = job.to_proto()
            proto.ClearField("updated_at")
            if proto != last:
                last = proto
                yield job.to_proto()
            if job.state in TERMINAL_STATES:
                return
            await asyncio.sleep(_WATCH_INTERVAL_S)

    async def ListJobs(
        self, request: jobs_pb2.ListJobsRequest, context: Context
    ) -> jobs_pb2.ListJobsResponse:
        offset = await page_offset(context, request.page_size, request.page_token, max_size=None)
        size = request.page_size or 50
        tenant = requested_tenant(request.tenant_id)
        if not may_see(tenant):
            await abort(
                context, grpc.StatusCode.PERMISSION_DENIED, "a tenant token lists only its tenant's jobs"
            )
        jobs = self._registry.page(tenant, size + 1, offset)
        response = jobs_pb2.ListJobsResponse(jobs=[j.to_proto() for j in jobs[:size]])
        if len(jobs) > size:
            response.next_page_token = str(offset + size)
        return response

    async def CancelJob(self, request: jobs_pb2.CancelJobRequest, context: Context) -> jobs_pb2.Job:
        await self._visible_job(request.job_id, context)
        job = await self._publisher.cancel(request.job_id)
        if job is None:
            await abort(context, grpc.StatusCode.NOT_FOUND, f"no job {request.job_id!r}")
        return job.to_proto()


async def _readable_path(location: str, context: Context) -> Path:
    """A plain path or a file:// URI; other schemes are not readable by this service."""
    parts = urlsplit(location)
    if parts.scheme not in ("", "file"):
        await invalid_argument(
            context, "path", f"{parts.scheme}:// is not readable here; use a path or file://"
        )
    path = Path(unquote(parts.path) if parts.scheme == "file" else location)
    if not await asyncio.to_thread(path.is_file):
        await invalid_argument(context, "path", f"no readable file at {location!r}")
    return path


def _suffix(file_name: str) -> str:
    for suffix in (".vcf.gz", ".vcf.bgz", ".bcf", ".vcf"):
        if file_name.endswith(suffix):
            return suffix
    return ".vcf"
