"""`vcf-agent submit`: stream a file to IngestService.SubmitVcf and optionally watch the job."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import grpc

from vcf_agent._client_channel import call_metadata, open_channel
from vcf_agent.config import ClientSettings
from vcf_agent.schema import ended_badly, exit_code, file_issues_summary, state_name
from vcf_agent.v1 import events_pb2, jobs_pb2, jobs_pb2_grpc

CHUNK_BYTES = 1 << 20


async def upload_requests(
    path: Path, metadata: jobs_pb2.SubmitVcfMetadata
) -> AsyncIterator[jobs_pb2.SubmitVcfRequest]:
    yield jobs_pb2.SubmitVcfRequest(metadata=metadata)
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield jobs_pb2.SubmitVcfRequest(chunk=chunk)


async def submit_file(
    address: str,
    path: Path,
    metadata: Mapping[str, Any],
    *,
    watch: bool = False,
    client: ClientSettings | None = None,
) -> int:
    """Upload `path` with SubmitVcfMetadata fields from `metadata`; exit code 0 when it succeeded."""
    if not await asyncio.to_thread(path.is_file):
        print(f"vcf-agent submit: no such file: {path}", file=sys.stderr)
        return 2
    client = client or ClientSettings()
    auth = call_metadata(client)
    async with open_channel(address, client) as channel:
        stub = jobs_pb2_grpc.IngestServiceStub(channel)
        fields = jobs_pb2.SubmitVcfMetadata(file_name=path.name, **metadata)
        try:
            response = await stub.SubmitVcf(upload_requests(path, fields), timeout=600, metadata=auth)
        except grpc.aio.AioRpcError as exc:
            print(f"vcf-agent submit: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
        job = response.job
        print(f"submitted {path.name} as job {job.job_id}")
        if not watch:
            return 0
        async for update in stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=job.job_id), metadata=auth):
            state = state_name(update.state)
            counts = update.counts
            failures = "".join(
                f" {name}-failed {answers.failed + answers.missing}"
                for name, answers in sorted(counts.provider_counts.items())
                if answers.failed or answers.missing
            )
            print(
                f"{state:<10} ingested {counts.ingested}/{counts.total or '?'} analysed {counts.analysed}"
                f" stored {counts.stored} dead-lettered {counts.dead_lettered}{failures}",
                flush=True,
            )
            job = update
        if job.file_issues:
            # WatchJob's last update is the whole job: the file's faults it read past and kept going.
            headline, rows = file_issues_summary(job)
            print(f"file issues: {headline}")
            for where, what in rows:
                print(f"  {where}: {what}")
        if job.state != events_pb2.JOB_STATE_COMPLETE:
            print(f"vcf-agent submit: {ended_badly(job)}", file=sys.stderr, flush=True)
        return exit_code([job.state])
