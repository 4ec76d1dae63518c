"""The Java LIMS client, built from clients/java with Maven, against the live five-service pipeline.

The jar's stubs come from the same proto/ files as the Python services, so a
passing run shows the two sides agree on the wire: upload in chunks, job id,
WatchJob updates and the final counts.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any, NoReturn

import grpc
import pysam
import pytest
import vcf

import vcf_agent
from vcf_agent.localdev import ServiceProcess, free_port, running_pipeline
from vcf_agent.services.ingest import file_digest, job_id_for

REPO = Path(__file__).resolve().parents[2]
CLIENT_DIR = REPO / "clients" / "java"
JAR = CLIENT_DIR / "target" / "vcf-agent-lims-client.jar"
EXAMPLE = Path(vcf_agent.__file__).parent / "examples" / "gatk-multisample.vcf"
# Real caller outputs shipped in the PyVCF3 wheel (a dev dependency), not written here.
STRELKA = Path(vcf.__file__).parent / "test" / "strelka.vcf"


def alt_alleles(path: Path) -> int:
    with pysam.VariantFile(str(path)) as vcf:
        return sum(len(record.alts or ()) for record in vcf)


def fields(line: str) -> dict[str, str]:
    """The client's `word key=value ...` progress line as a dict."""
    return dict(part.split("=", 1) for part in line.split()[1:] if "=" in part)


@pytest.fixture(scope="module")
def java() -> str:
    path = shutil.which("java")
    if path is None:
        pytest.skip("java (a JDK 17+) is not on PATH")
    return path


@pytest.fixture(scope="module")
def client_jar(java: str) -> Path:
    mvn = shutil.which("mvn")
    if mvn is None:
        pytest.skip("mvn (Apache Maven 3.8+) is not on PATH")
    # The first build downloads protoc and gRPC from Maven Central; later ones run from ~/.m2.
    built = subprocess.run(
        [mvn, "-q", "-B", "package"], cwd=CLIENT_DIR, capture_output=True, text=True, timeout=540
    )
    assert built.returncode == 0, f"mvn package failed:\n{built.stdout[-4000:]}\n{built.stderr[-4000:]}"
    assert JAR.is_file()
    return JAR


def run_client(java: str, jar: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([java, "-jar", str(jar), *args], capture_output=True, text=True, timeout=240)


def logs(services: dict[str, ServiceProcess]) -> str:
    return "\n".join(f"--- {s.name}\n{s.log()}" for s in services.values())


@pytest.mark.timeout(900)
def test_uploads_in_chunks_and_follows_the_job_to_complete(
    java: str, client_jar: Path, tmp_path: Path
) -> None:
    expected = alt_alleles(EXAMPLE)
    assert expected == 37  # 37 records, none multi-allelic, as counted in the raw text
    with running_pipeline(f"embedded://{tmp_path / 'bus'}", tmp_path / "services") as services:
        result = run_client(
            java, client_jar, "--ingest", services["ingest"].grpc, "--tenant", "lab-java", str(EXAMPLE)
        )
        assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{logs(services)}"
        # Same file again: the service recognises its content and the client still ends well.
        again = run_client(
            java, client_jar, "--ingest", services["ingest"].grpc, "--tenant", "lab-java", str(EXAMPLE)
        )
        assert again.returncode == 0, f"{again.stdout}\n{again.stderr}\n{logs(services)}"
        # A real Strelka output with one fault of VCF 4.1 §1.4.2 (line 55: its second sample's
        # AU, declared Integer, is empty) and no final newline: stored whole, and said so.
        faulty = run_client(
            java, client_jar, "--ingest", services["ingest"].grpc, "--tenant", "lab-java", str(STRELKA)
        )
        assert faulty.returncode == 0, f"{faulty.stdout}\n{faulty.stderr}\n{logs(services)}"

    lines = result.stdout.splitlines()
    submitted = fields(lines[0])
    assert lines[0].startswith("submitted ")
    # The job id derives from the uploaded bytes' digest: the chunks arrived whole and in order.
    assert submitted["job"] == job_id_for("lab-java", file_digest(EXAMPLE))
    assert submitted["duplicate_of_earlier"] == "false"
    updates = [fields(line) for line in lines[1:]]
    assert updates and all(line.startswith("update ") for line in lines[1:])
    assert all(update["job"] == submitted["job"] for update in updates)
    final = updates[-1]
    assert final["state"] == "JOB_STATE_COMPLETE"
    assert (final["total"], final["stored"], final["dead_lettered"]) == (str(expected), str(expected), "0")
    assert "error" not in final

    faulty_lines = faulty.stdout.splitlines()
    issues = [line for line in faulty_lines if line.startswith("issue ")]
    assert (
        faulty_lines[-len(issues) - 1].startswith("update ")
        and "state=JOB_STATE_COMPLETE" in (faulty_lines[-len(issues) - 1])
    )
    assert fields(faulty_lines[-len(issues) - 1])["stored"] == "3"
    assert [line.split(" message=")[0] for line in issues] == [
        "issue line=55 column=FORMAT code=FORMAT_TYPE severity=error",
        "issue line=57 column=CHROM code=MISSING_FINAL_NEWLINE severity=warning",
    ]
    assert "FORMAT AU value '' is not an integer" in issues[0]

    again_lines = again.stdout.splitlines()
    assert fields(again_lines[0])["job"] == submitted["job"]
    assert fields(again_lines[0])["duplicate_of_earlier"] == "true"
    assert fields(again_lines[-1])["state"] == "JOB_STATE_COMPLETE"


class _RecordingRejecter(grpc.ServerInterceptor):  # type: ignore[type-arg]  # generic only in the stubs
    """Turns every call away as UNAUTHENTICATED, keeping the metadata it arrived with."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        self._lock = threading.Lock()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        metadata = {str(k): str(v) for k, v in handler_call_details.invocation_metadata}
        with self._lock:
            self.seen.append((handler_call_details.method, metadata))

        def reject(request_iterator: Iterator[Any], context: grpc.ServicerContext) -> NoReturn:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "token rejected")

        return grpc.stream_unary_rpc_method_handler(reject)


@pytest.mark.timeout(600)
def test_token_travels_as_bearer_metadata_and_a_refusal_exits_non_zero(java: str, client_jar: Path) -> None:
    rejecter = _RecordingRejecter()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), interceptors=[rejecter])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        result = run_client(
            java, client_jar, "--ingest", f"127.0.0.1:{port}", "--tenant", "lab-java", str(EXAMPLE),
            "--token", "s3cret-token",
        )  # fmt: skip
    finally:
        server.stop(grace=None)
    assert result.returncode == 3, result
    assert "UNAUTHENTICATED" in result.stderr
    assert [method for method, _ in rejecter.seen] == ["/vcf_agent.v1.IngestService/SubmitVcf"]
    assert rejecter.seen[0][1].get("authorization") == "Bearer s3cret-token"


def test_unreachable_service_and_bad_arguments_exit_non_zero(java: str, client_jar: Path) -> None:
    unreachable = run_client(
        java, client_jar, "--ingest", f"127.0.0.1:{free_port()}", "--tenant", "t", str(EXAMPLE)
    )
    assert unreachable.returncode == 3
    assert "UNAVAILABLE" in unreachable.stderr
    no_tenant = run_client(java, client_jar, "--ingest", "127.0.0.1:1", str(EXAMPLE))
    assert no_tenant.returncode == 2
    assert "--tenant is required" in no_tenant.stderr
    assert not no_tenant.stdout
