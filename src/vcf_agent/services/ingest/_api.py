"""IngestService: the LIMS-facing gRPC API (submit, get, watch, list, cancel)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from vcf_agent.control import abort, invalid_argument, may_see, page_offset, requested_tenant, tenant_scope
from vcf_agent.schema import TERMINAL_STATES
from vcf_agent.v1 import jobs_pb2, jobs_pb2_grpc

from ._jobs import JobRecord, JobRegistry
from ._publisher import VariantPublisher
from ._submitted_paths import PathRefusedError, SubmittedPathPolicy
from ._uploads import Upload, UploadArea, UploadTooLargeError
from ._vcf_source import header_samples

Context = grpc.aio.ServicerContext[Any, Any]

# The shortest interval between two reads of a running job by one WatchJob stream, as in the poll
# it replaced: 50 watchers of a 100,000-variant job cost ingest 0.53-0.59 s of CPU at 0.2 s and
# 0.65-0.77 s at 0.1 s (one watcher: 0.47 s). A job's end is read at once whatever the interval.
_WATCH_PROGRESS_S = 0.2
# How long a refused upload's remaining chunks are read (and dropped) before the refusal is sent.
_DRAIN_S = 10.0


class IngestApi(jobs_pb2_grpc.IngestServiceServicer):
    def __init__(
        self,
        publisher: VariantPublisher,
        registry: JobRegistry,
        uploads: UploadArea,
        paths: SubmittedPathPolicy,
    ) -> None:
        self._publisher = publisher
        self._registry = registry
        self._uploads = uploads
        self._paths = paths

    async def SubmitVcf(
        self, request_iterator: AsyncIterator[jobs_pb2.SubmitVcfRequest], context: Context
    ) -> jobs_pb2.SubmitVcfResponse:
        upload: Upload | None = None
        try:
            metadata, tenant_id, upload = await self._receive(request_iterator, context)
            if upload is None:
                path = await self._server_path(metadata.path, tenant_id, context)
            else:
                path = upload.path
            job = await self._submit(metadata, tenant_id, path, context)
            if upload is not None:
                if self._publisher.reads(job.job_id, path):
                    self._uploads.attach(upload, job.job_id)
                else:
                    # Same content while that job still runs, or an idempotent retry: not needed.
                    upload.discard()
                upload = None
            return jobs_pb2.SubmitVcfResponse(job=job.to_proto())
        finally:
            # Refused, failed or cancelled before a job took it: nothing of it is kept.
            if upload is not None:
                upload.discard()

    async def _receive(
        self, request_iterator: AsyncIterator[jobs_pb2.SubmitVcfRequest], context: Context
    ) -> tuple[jobs_pb2.SubmitVcfMetadata, str, Upload | None]:
        """The metadata (checked before any chunk is stored), its tenant and the upload, if chunks came."""
        metadata: jobs_pb2.SubmitVcfMetadata | None = None
        tenant_id = ""
        upload: Upload | None = None
        try:
            async for part in request_iterator:
                if part.HasField("metadata"):
                    if metadata is not None:
                        await invalid_argument(context, "metadata", "metadata must be sent once, first")
                    metadata = part.metadata
                    tenant_id = metadata.tenant_id or tenant_scope() or "default"
                    if not may_see(tenant_id):
                        await abort(
                            context,
                            grpc.StatusCode.PERMISSION_DENIED,
                            "a tenant token submits only for its tenant",
                        )
                elif part.HasField("chunk"):
                    if metadata is None:
                        await invalid_argument(context, "metadata", "the first message must carry metadata")
                    if metadata.path:
                        await invalid_argument(context, "path", "send either chunks or a path, not both")
                    if upload is None:
                        upload = self._uploads.receive(tenant_id, _suffix(metadata.file_name))
                    try:
                        upload.write(part.chunk)
                    except UploadTooLargeError as exc:
                        upload = None  # already deleted
                        await _drain(request_iterator)
                        await abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except BaseException:
            if upload is not None:
                upload.discard()
            raise
        if upload is not None:
            upload.finish()
        if metadata is None:
            await invalid_argument(context, "metadata", "a SubmitVcf stream must start with metadata")
        if upload is None and not metadata.path:
            await invalid_argument(context, "path", "send file chunks or a path the ingest service may read")
        return metadata, tenant_id, upload

    async def _server_path(self, location: str, tenant_id: str, context: Context) -> Path:
        try:
            return await asyncio.to_thread(self._paths.resolve, location, tenant_id)
        except PathRefusedError as exc:
            if exc.code == grpc.StatusCode.INVALID_ARGUMENT:
                await invalid_argument(context, "path", exc.message)
            await abort(context, exc.code, f"path: {exc.message}")

    async def _submit(
        self, metadata: jobs_pb2.SubmitVcfMetadata, tenant_id: str, path: Path, context: Context
    ) -> JobRecord:
        key = metadata.idempotency_key
        earlier = self._registry.job_for_key(tenant_id, key) if key else None
        if earlier is not None:
            return earlier
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
        return job

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
        # Woken by the job's writes: its end is sent as soon as it is recorded, its progress read
        # at most every _WATCH_PROGRESS_S (a large job's stages report every batch).
        last = None
        with self._registry.changes.watch(request.job_id) as changes:
            while True:
                job = await self._visible_job(request.job_id, context)
                proto = job.to_proto()
                proto.ClearField("updated_at")
                if proto != last:
                    last = proto
                    yield job.to_proto()
                if job.state in TERMINAL_STATES:
                    return
                await changes.next(_WATCH_PROGRESS_S)

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
        response = jobs_pb2.ListJobsResponse(jobs=[j.to_proto(file_issues=False) for j in jobs[:size]])
        if len(jobs) > size:
            response.next_page_token = str(offset + size)
        return response

    async def CancelJob(self, request: jobs_pb2.CancelJobRequest, context: Context) -> jobs_pb2.Job:
        await self._visible_job(request.job_id, context)
        job = await self._publisher.cancel(request.job_id)
        if job is None:
            await abort(context, grpc.StatusCode.NOT_FOUND, f"no job {request.job_id!r}")
        return job.to_proto()


async def _drain(request_iterator: AsyncIterator[jobs_pb2.SubmitVcfRequest]) -> None:
    """Read and drop what the client still sends, for a bounded time, before refusing.

    A client still writing when the call ends sees its own write fail ("Internal error"),
    not the refusal; letting it finish (within the budget) lets it read why.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_DRAIN_S):
            async for _ in request_iterator:
                pass


def _suffix(file_name: str) -> str:
    for suffix in (".vcf.gz", ".vcf.bgz", ".bcf", ".vcf"):
        if file_name.endswith(suffix):
            return suffix
    return ".vcf"
