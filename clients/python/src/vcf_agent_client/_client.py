"""A typed asyncio client for the public APIs: IngestService, NotifierService, QueryService."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import grpc

from vcf_agent_client.v1 import (
    events_pb2,
    jobs_pb2,
    jobs_pb2_grpc,
    notifier_pb2,
    notifier_pb2_grpc,
    query_pb2,
    query_pb2_grpc,
)

# Uploads travel in chunks of this size (the service accepts any size up to its message limit).
CHUNK_BYTES = 1 << 20
FINAL_STATES = frozenset(
    {
        events_pb2.JOB_STATE_COMPLETE,
        events_pb2.JOB_STATE_COMPLETE_WITH_ERRORS,
        events_pb2.JOB_STATE_FAILED,
        events_pb2.JOB_STATE_CANCELLED,
    }
)


def is_final(job: jobs_pb2.Job) -> bool:
    """Whether a job has reached a state it never leaves."""
    return job.state in FINAL_STATES


@dataclass(frozen=True, slots=True)
class Connection:
    """How to reach a deployment: a bearer token and TLS.

    `ca_file` (a PEM file of the CA that signed the services' certificate) or `tls=True` (the
    system's roots) turn TLS on; without either the channel is plaintext, for loopback only.
    """

    token: str = ""
    tls: bool = False
    ca_file: Path | None = None

    def __repr__(self) -> str:  # never the token
        return (
            f"Connection(token={'***' if self.token else ''!r}, tls={self.uses_tls}, ca_file={self.ca_file})"
        )

    @property
    def uses_tls(self) -> bool:
        return self.tls or self.ca_file is not None

    def channel(self, address: str) -> grpc.aio.Channel:
        if self.uses_tls:
            roots = self.ca_file.read_bytes() if self.ca_file is not None else None
            return grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=roots))
        return grpc.aio.insecure_channel(address)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        # Metadata rather than call credentials, so a plaintext loopback channel can carry it too.
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


class VcfAgentClient:
    """One deployment's public APIs; give the address of each service you call.

    Use as `async with VcfAgentClient(connection, ingest=..., notifier=..., writer=...) as client`.
    Calls raise `grpc.aio.AioRpcError` with the service's status (UNAUTHENTICATED,
    PERMISSION_DENIED, NOT_FOUND, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ...).
    """

    def __init__(
        self,
        connection: Connection | None = None,
        *,
        ingest: str | None = None,
        notifier: str | None = None,
        writer: str | None = None,
    ) -> None:
        self._connection = connection or Connection()
        self._addresses = {"ingest": ingest, "notifier": notifier, "writer": writer}
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def __aenter__(self) -> VcfAgentClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(None)

    def _channel(self, service: str) -> grpc.aio.Channel:
        address = self._addresses[service]
        if not address:
            raise ValueError(f"this client was given no {service} address ({service}='HOST:PORT')")
        if service not in self._channels:
            if self._connection.token and not self._connection.uses_tls and not _is_loopback(address):
                print(f"vcf_agent_client: warning: sending a token to {address} without TLS", file=sys.stderr)
            self._channels[service] = self._connection.channel(address)
        return self._channels[service]

    @property
    def _ingest(self) -> jobs_pb2_grpc.IngestServiceAsyncStub:
        return jobs_pb2_grpc.IngestServiceStub(self._channel("ingest"))

    # Submitting.

    async def upload(
        self,
        path: Path,
        *,
        file_name: str | None = None,
        tenant_id: str = "",
        sample_ids: Sequence[str] = (),
        providers: Sequence[str] = (),
        priority: int = 0,
        idempotency_key: str = "",
        timeout_s: float = 600.0,
    ) -> jobs_pb2.Job:
        """Stream a local VCF/BCF file to the ingest service; returns the job it started.

        `tenant_id` may stay empty: the token decides it. A retry with the same `idempotency_key`
        returns the same job instead of starting another.
        """
        metadata = _metadata(
            file_name or path.name, tenant_id, sample_ids, providers, priority, idempotency_key
        )
        response = await self._ingest.SubmitVcf(
            _chunks(path, metadata), timeout=timeout_s, metadata=self._connection.metadata()
        )
        return response.job

    async def submit_path(
        self,
        server_path: str,
        *,
        tenant_id: str = "",
        sample_ids: Sequence[str] = (),
        providers: Sequence[str] = (),
        priority: int = 0,
        idempotency_key: str = "",
        timeout_s: float = 60.0,
    ) -> jobs_pb2.Job:
        """Start a job on a file the ingest service reads itself (only under its allowed directories)."""
        metadata = _metadata(
            Path(server_path).name, tenant_id, sample_ids, providers, priority, idempotency_key
        )
        metadata.path = server_path

        async def only_metadata() -> AsyncIterator[jobs_pb2.SubmitVcfRequest]:
            yield jobs_pb2.SubmitVcfRequest(metadata=metadata)

        response = await self._ingest.SubmitVcf(
            only_metadata(), timeout=timeout_s, metadata=self._connection.metadata()
        )
        return response.job

    # Following jobs.

    async def get_job(self, job_id: str) -> jobs_pb2.Job:
        return await self._ingest.GetJob(
            jobs_pb2.GetJobRequest(job_id=job_id), metadata=self._connection.metadata()
        )

    async def cancel_job(self, job_id: str) -> jobs_pb2.Job:
        return await self._ingest.CancelJob(
            jobs_pb2.CancelJobRequest(job_id=job_id), metadata=self._connection.metadata()
        )

    async def list_jobs(self, *, page_size: int = 100) -> AsyncIterator[jobs_pb2.Job]:
        """Every job of the token's tenant, page by page."""
        token = ""
        while True:
            page = await self._ingest.ListJobs(
                jobs_pb2.ListJobsRequest(page_size=page_size, page_token=token),
                metadata=self._connection.metadata(),
            )
            for job in page.jobs:
                yield job
            token = page.next_page_token
            if not token:
                return

    async def job_updates(self, job_id: str) -> AsyncIterator[jobs_pb2.Job]:
        """IngestService.WatchJob: the job each time it changes, ending once it is final."""
        call = self._ingest.WatchJob(
            jobs_pb2.WatchJobRequest(job_id=job_id), metadata=self._connection.metadata()
        )
        async for job in call:
            yield job
            if is_final(job):
                call.cancel()
                return

    async def wait(self, job_id: str, *, timeout_s: float | None = None) -> jobs_pb2.Job:
        """The job once final (complete, complete with errors, failed or cancelled)."""

        async def last() -> jobs_pb2.Job:
            latest = await self.get_job(job_id)
            async for job in self.job_updates(job_id):
                latest = job
            return latest

        return await asyncio.wait_for(last(), timeout_s)

    async def watch(
        self, job_id: str = "", *, tenant_id: str = "", include_latest: bool = True
    ) -> AsyncIterator[events_pb2.Notification]:
        """NotifierService.Watch: live progress of one job (or, with no job_id, of every job of the
        tenant), ending after the job's final state when a job is named."""
        stub = notifier_pb2_grpc.NotifierServiceStub(self._channel("notifier"))
        call = stub.Watch(
            notifier_pb2.WatchRequest(job_id=job_id, tenant_id=tenant_id, include_latest=include_latest),
            metadata=self._connection.metadata(),
        )
        async for event in call:
            yield event
            if job_id and event.state in FINAL_STATES:
                call.cancel()
                return

    # Reading results.

    async def query(
        self,
        *,
        job_id: str = "",
        region: str = "",
        gene: str = "",
        sample: str = "",
        classification: str = "",
        page_size: int = 100,
        page_token: str = "",
    ) -> query_pb2.QueryVariantsResponse:
        """One page of stored variants (region: `chr` or `chr:start-end`, 1-based inclusive)."""
        stub = query_pb2_grpc.QueryServiceStub(self._channel("writer"))
        request = query_pb2.QueryVariantsRequest(
            job_id=job_id,
            region=region,
            gene=gene,
            sample=sample,
            classification=classification,
            page_size=page_size,
            page_token=page_token,
        )
        return await stub.QueryVariants(request, metadata=self._connection.metadata())

    async def variants(
        self, *, job_id: str = "", page_size: int = 500, **filters: str
    ) -> AsyncIterator[query_pb2.StoredVariant]:
        """Every stored variant matching the filters (region, gene, sample, classification)."""
        token = ""
        while True:
            page = await self.query(job_id=job_id, page_size=page_size, page_token=token, **filters)
            for variant in page.variants:
                yield variant
            token = page.next_page_token
            if not token:
                return

    async def get_variant(self, correlation_id: str) -> query_pb2.StoredVariant:
        stub = query_pb2_grpc.QueryServiceStub(self._channel("writer"))
        return await stub.GetVariant(
            query_pb2.GetVariantRequest(correlation_id=correlation_id), metadata=self._connection.metadata()
        )


def _metadata(
    file_name: str,
    tenant_id: str,
    sample_ids: Iterable[str],
    providers: Iterable[str],
    priority: int,
    idempotency_key: str,
) -> jobs_pb2.SubmitVcfMetadata:
    return jobs_pb2.SubmitVcfMetadata(
        file_name=file_name,
        tenant_id=tenant_id,
        sample_ids=list(sample_ids),
        providers=list(providers),
        priority=priority,
        idempotency_key=idempotency_key,
    )


async def _chunks(
    path: Path, metadata: jobs_pb2.SubmitVcfMetadata
) -> AsyncIterator[jobs_pb2.SubmitVcfRequest]:
    yield jobs_pb2.SubmitVcfRequest(metadata=metadata)
    with path.open("rb") as handle:
        while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
            yield jobs_pb2.SubmitVcfRequest(chunk=chunk)


def _is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")
