"""Run by tests/security/test_python_client_package.py INSIDE a fresh venv holding only vcf-agent-client.

It drives a running deployment the way a LIMS would and prints one JSON object of what it saw.
Arguments: INGEST NOTIFIER WRITER CA_FILE TOKEN OTHER_TENANTS_JOB_ID VCF_FILE
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import grpc
from vcf_agent_client import Connection, VcfAgentClient, is_final
from vcf_agent_client.v1 import events_pb2


async def main(ingest: str, notifier: str, writer: str, ca: str, token: str, foreign: str, vcf: str) -> None:
    seen: dict[str, object] = {}
    connection = Connection(token=token, ca_file=Path(ca))
    async with VcfAgentClient(connection, ingest=ingest, notifier=notifier, writer=writer) as client:
        job = await client.upload(Path(vcf), file_name="lims-run.vcf", idempotency_key="lims-run-1")
        seen["submitted_state"] = events_pb2.JobState.Name(job.state)
        watched = [
            events_pb2.Stage.Name(event.stage)
            async for event in client.watch(job.job_id)  # NotifierService.Watch, ends at the final state
        ]
        seen["watched_stages"] = sorted(set(watched))
        final = await client.wait(job.job_id, timeout_s=120)
        seen["final_state"] = events_pb2.JobState.Name(final.state)
        seen["final"] = is_final(final)
        seen["tenant"] = final.tenant_id
        seen["total"] = final.counts.total
        stored = [v async for v in client.variants(job_id=job.job_id, page_size=2)]
        seen["stored"] = len(stored)
        seen["stored_positions"] = sorted(f"{v.chromosome}:{v.position}" for v in stored)
        again = await client.upload(Path(vcf), file_name="lims-run.vcf", idempotency_key="lims-run-1")
        seen["retry_same_job"] = again.job_id == job.job_id
        try:
            await client.get_job(foreign)
            seen["foreign"] = "visible"
        except grpc.aio.AioRpcError as exc:
            seen["foreign"] = exc.code().name
    async with VcfAgentClient(Connection(ca_file=Path(ca)), ingest=ingest) as anonymous:
        try:
            await anonymous.get_job(job.job_id)
            seen["no_token"] = "allowed"
        except grpc.aio.AioRpcError as exc:
            seen["no_token"] = exc.code().name
    async with VcfAgentClient(Connection(token=token), ingest=ingest) as plaintext:
        try:
            await plaintext.get_job(job.job_id)
            seen["plaintext"] = "allowed"
        except grpc.aio.AioRpcError as exc:
            seen["plaintext"] = exc.code().name
    seen["connection_repr"] = repr(connection)
    print(json.dumps(seen))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:8]))
