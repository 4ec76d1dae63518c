"""A secured deployment: the five services as separate processes with two tenants, an admin and TLS.

Tokens come from the environment as operators set them; the ingest service may
read lab-a's directory for lab-a, a shared directory for everyone, and (an
operator's mistake, on purpose) the services' own data directory for lab-b,
to show that uploads and stores stay unreachable even then.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import vcf

from tests.security._certificates import Certificates, make_certificates
from vcf_agent.localdev import ServiceProcess, running_pipeline
from vcf_agent.schema import TERMINAL_STATES
from vcf_agent.v1 import events_pb2, jobs_pb2, jobs_pb2_grpc, query_pb2, query_pb2_grpc

# Real caller outputs shipped in the PyVCF3 wheel (a dev dependency), not written here.
PYVCF_TESTS = Path(vcf.__file__).parent / "test"
UPLOAD_LIMIT = 2 * 1024 * 1024


@dataclass
class Deployment:
    services: dict[str, ServiceProcess]
    certificates: Certificates
    root: Path
    admin: str
    tokens: dict[str, str]  # tenant -> token
    lab_a_dir: Path
    shared_dir: Path
    data_dir: Path

    def channel(self, service: str) -> grpc.aio.Channel:
        credentials = grpc.ssl_channel_credentials(root_certificates=self.certificates.ca.read_bytes())
        return grpc.aio.secure_channel(self.services[service].grpc, credentials)

    @property
    def websocket(self) -> str:
        return f"wss://127.0.0.1:{self.services['notifier'].websocket_port}"

    def logs(self) -> str:
        return "\n".join(f"--- {s.name}\n{s.log()}" for s in self.services.values())


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("secured")
    certificates = make_certificates(root / "tls")
    lab_a_dir, shared_dir, data_dir = root / "lab-a", root / "shared", root / "services"
    for directory in (lab_a_dir, shared_dir, data_dir):
        directory.mkdir()
    admin = secrets.token_urlsafe(24)
    tokens = {"lab-a": secrets.token_urlsafe(24), "lab-b": secrets.token_urlsafe(24)}
    env = {
        "VCF_AGENT_ADMIN_TOKENS": f"alice:{admin}",
        "VCF_AGENT_TENANT_TOKENS": ",".join(f"{tenant}:{token}" for tenant, token in tokens.items()),
        "VCF_AGENT_TLS_CERT": str(certificates.cert),
        "VCF_AGENT_TLS_KEY": str(certificates.key),
        "VCF_AGENT_INGEST_ALLOWED_DIRS": f"lab-a={lab_a_dir};*={shared_dir};lab-b={data_dir}",
        "VCF_AGENT_UPLOAD_MAX_BYTES": str(UPLOAD_LIMIT),
        # Kept after completion, so the tests can try to reach another tenant's upload by path.
        "VCF_AGENT_UPLOAD_RETENTION_S": "3600",
        "VCF_AGENT_NOTIFIER_JOB_WAIT_S": "0.5",
    }
    with running_pipeline(f"embedded://{data_dir / 'bus'}", data_dir, env=env) as services:
        yield Deployment(services, certificates, root, admin, tokens, lab_a_dir, shared_dir, data_dir)


async def upload(
    stub: jobs_pb2_grpc.IngestServiceStub, token: str, path: Path, *, file_name: str = "", tenant_id: str = ""
) -> jobs_pb2.Job:
    data = await asyncio.to_thread(path.read_bytes)

    async def requests() -> AsyncIterator[jobs_pb2.SubmitVcfRequest]:
        metadata = jobs_pb2.SubmitVcfMetadata(tenant_id=tenant_id, file_name=file_name or path.name)
        yield jobs_pb2.SubmitVcfRequest(metadata=metadata)
        yield jobs_pb2.SubmitVcfRequest(chunk=data)

    return (await stub.SubmitVcf(requests(), metadata=bearer(token), timeout=30)).job


async def wait_final(deployment: Deployment, job_id: str, timeout_s: float = 120) -> jobs_pb2.Job:
    async with deployment.channel("ingest") as channel:
        stub = jobs_pb2_grpc.IngestServiceStub(channel)
        deadline = time.monotonic() + timeout_s
        while True:
            job = await stub.GetJob(jobs_pb2.GetJobRequest(job_id=job_id), metadata=bearer(deployment.admin))
            if job.state in TERMINAL_STATES:
                return job
            assert time.monotonic() < deadline, f"job {job_id} not final:\n{deployment.logs()}"
            await asyncio.sleep(0.2)


@dataclass
class TenantData:
    """One tenant's finished job and every string that would betray it in another tenant's answer."""

    tenant: str
    job: jobs_pb2.Job
    variants: list[query_pb2.StoredVariant]
    markers: set[str] = field(default_factory=set)


@dataclass
class TwoTenants:
    a: TenantData
    b: TenantData


@pytest.fixture(scope="session")
async def two_tenants(deployment: Deployment) -> TwoTenants:
    """lab-a and lab-b each upload a different real VCF and see it stored."""
    found: list[TenantData] = []
    for tenant, source, name in (
        ("lab-a", PYVCF_TESTS / "gatk.vcf", "a-run-0042.vcf"),
        ("lab-b", PYVCF_TESTS / "freebayes.vcf", "b-confidential-run.vcf"),
    ):
        async with deployment.channel("ingest") as channel:
            job = await upload(
                jobs_pb2_grpc.IngestServiceStub(channel), deployment.tokens[tenant], source, file_name=name
            )
        job = await wait_final(deployment, job.job_id)
        assert job.state == events_pb2.JOB_STATE_COMPLETE, job
        async with deployment.channel("writer") as channel:
            stored = await query_pb2_grpc.QueryServiceStub(channel).QueryVariants(
                query_pb2.QueryVariantsRequest(job_id=job.job_id, page_size=1000),
                metadata=bearer(deployment.tokens[tenant]),
            )
        assert stored.total == job.counts.total > 0
        data = TenantData(tenant, job, list(stored.variants))
        data.markers = {job.job_id, job.file_id, name, *(v.correlation_id for v in stored.variants)}
        found.append(data)
    return TwoTenants(*found)
