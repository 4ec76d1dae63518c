"""The `vcf-agent-client` distribution (clients/python), installed alone into a fresh venv, drives the
secured deployment (separate ingest, notifier and writer processes, TLS, tokens) as a LIMS would."""

from __future__ import annotations

import asyncio
import json
import subprocess
import venv
from pathlib import Path

import pysam
import pytest

from tests.security.conftest import PYVCF_TESTS, Deployment, TwoTenants

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("_client_package_driver.py")


@pytest.fixture(scope="module")
def client_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with only vcf-agent-client and its two dependencies (pip's warm cache serves them)."""
    directory = tmp_path_factory.mktemp("client-venv")
    venv.create(directory, with_pip=True)
    python = directory / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(ROOT / "clients" / "python")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    return python


def test_the_client_package_installs_alone(client_python: Path) -> None:
    listed = subprocess.run(
        [str(client_python), "-m", "pip", "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert {"vcf-agent-client", "grpcio", "protobuf"} <= names
    assert "vcf-analysis-agent" not in names
    # It needs nothing of the service package, and the generated code is its own.
    probe = "import vcf_agent_client.v1.jobs_pb2 as j; import importlib.util as u;" + (
        "print(j.__file__, u.find_spec('vcf_agent') is None)"
    )
    found = subprocess.run([str(client_python), "-c", probe], capture_output=True, text=True, check=True)
    location, absent = found.stdout.split()
    assert "site-packages/vcf_agent_client/v1/jobs_pb2.py" in location and absent == "True"


async def test_a_lims_uploads_watches_and_queries_with_the_client_package(
    client_python: Path, deployment: Deployment, two_tenants: TwoTenants, tmp_path: Path
) -> None:
    source = PYVCF_TESTS / "example-4.1.vcf"
    # The VCF 4.1 specification's example (section 1.1): five records, two with two ALTs, one
    # REF-only (no ALT): six stored variants.
    with pysam.VariantFile(str(source)) as vcf:
        expected = sorted(f"{r.chrom}:{r.pos}" for r in vcf for _ in r.alts or ())
    assert len(expected) == 6
    services = deployment.services
    command = [
        str(client_python), str(DRIVER), services["ingest"].grpc, services["notifier"].grpc,
        services["writer"].grpc, str(deployment.certificates.ca), deployment.tokens["lab-a"],
        two_tenants.b.job.job_id, str(source),
    ]  # fmt: skip
    result = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"{result.stderr}\n{deployment.logs()}"
    seen = json.loads(result.stdout)
    assert seen["final"] and seen["final_state"] == "JOB_STATE_COMPLETE"
    assert seen["tenant"] == "lab-a"  # from the token
    assert seen["total"] == seen["stored"] == 6
    assert seen["stored_positions"] == expected
    assert "STAGE_STORAGE" in seen["watched_stages"]
    assert seen["retry_same_job"]
    assert seen["foreign"] == "NOT_FOUND"  # lab-b's job does not exist for lab-a
    assert seen["no_token"] == "UNAUTHENTICATED"
    assert seen["plaintext"] == "UNAVAILABLE"  # the services speak only TLS
    assert deployment.tokens["lab-a"] not in seen["connection_repr"]


def test_the_client_package_is_typed(client_python: Path) -> None:
    """py.typed and the generated .pyi stubs ship, so integrators' type checkers see the messages."""
    probe = (
        "import pathlib, vcf_agent_client as c; root = pathlib.Path(c.__file__).parent;"
        "print((root / 'py.typed').exists(), (root / 'v1' / 'jobs_pb2.pyi').exists())"
    )
    found = subprocess.run([str(client_python), "-c", probe], capture_output=True, text=True, check=True)
    assert found.stdout.split() == ["True", "True"]
