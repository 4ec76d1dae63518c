"""The committed generated code is exactly what the pinned grpcio-tools emits from proto/: the
service package's modules and documented descriptor set, and the client package's modules."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "src" / "vcf_agent" / "v1"
CLIENT = ROOT / "clients" / "python" / "src" / "vcf_agent_client" / "v1"
GENERATED_SUFFIXES = (".py", ".pyi", ".binpb", ".h")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("generated")
    script = ROOT / "scripts" / "generate_proto.py"
    subprocess.run([sys.executable, str(script), str(out / "service"), str(out / "client")], check=True)
    return out


def _generated(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.suffix in GENERATED_SUFFIXES)


@pytest.mark.parametrize(
    ("tree", "committed"), [("service/vcf_agent/v1", COMMITTED), ("client/vcf_agent_client/v1", CLIENT)]
)
def test_regenerating_changes_nothing(fresh: Path, tree: str, committed: Path) -> None:
    generated = _generated(fresh / tree)
    assert generated == _generated(committed), "the committed set differs; run scripts/generate_proto.py"
    _, mismatch, errors = filecmp.cmpfiles(fresh / tree, committed, generated, shallow=False)
    assert not mismatch and not errors, (
        f"stale generated code: {mismatch or errors}; run scripts/generate_proto.py"
    )


def test_every_proto_is_compiled() -> None:
    protos = {p.stem for p in (ROOT / "proto" / "vcf_agent" / "v1").glob("*.proto")}
    modules = {p.name.removesuffix("_pb2.py") for p in COMMITTED.glob("*_pb2.py")}
    assert protos == modules


def test_the_descriptor_set_keeps_the_comments() -> None:
    """What reflection serves: every .proto file, with source info (so its comments)."""
    files = descriptor_pb2.FileDescriptorSet.FromString((COMMITTED / "descriptors.binpb").read_bytes()).file
    ours = {f.name: f for f in files if f.name.startswith("vcf_agent/")}
    assert set(ours) == {
        f"vcf_agent/v1/{p.name}" for p in (ROOT / "proto" / "vcf_agent" / "v1").glob("*.proto")
    }
    jobs = ours["vcf_agent/v1/jobs.proto"]
    comments = " ".join(location.leading_comments for location in jobs.source_code_info.location)
    assert "LIMS" in comments
    # Without json_name, as Python's own descriptors: grpcurl keeps printing the proto field names.
    assert not any(
        field.HasField("json_name") for f in ours.values() for m in f.message_type for field in m.field
    )


def test_the_client_holds_only_the_public_apis_and_the_same_descriptors() -> None:
    """Only IngestService, NotifierService and QueryService (and what they import); the serialized
    descriptors equal the service package's, so both register the same files and share classes."""
    from vcf_agent.v1 import jobs_pb2

    stubs = sorted(
        line.removeprefix("class ").rstrip(":") for p in CLIENT.glob("*_pb2_grpc.py")
        for line in p.read_text().splitlines() if line.startswith("class ") and line.endswith("Stub:")
    )  # fmt: skip
    assert stubs == ["IngestServiceStub", "NotifierServiceStub", "QueryServiceStub"]
    assert not (CLIENT / "control_pb2.py").exists()
    sys.path.insert(0, str(CLIENT.parents[1]))
    try:
        from vcf_agent_client.v1 import jobs_pb2 as client_jobs_pb2
    finally:
        sys.path.remove(str(CLIENT.parents[1]))
    assert client_jobs_pb2.DESCRIPTOR.serialized_pb == jobs_pb2.DESCRIPTOR.serialized_pb
    assert client_jobs_pb2.Job is jobs_pb2.Job
