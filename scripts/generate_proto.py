"""Compile proto/ into the committed generated code (tests check it is current).

- src/vcf_agent/v1: every .proto, with gRPC stubs and typing stubs, plus descriptors.binpb, a
  FileDescriptorSet WITH source info (the comments), which the services' reflection serves so
  `grpcurl describe` explains every RPC, message and field (Python's generated code keeps no
  comments).
- clients/python/src/vcf_agent_client/v1: the public APIs a LIMS needs (jobs, notifier, query and
  what they import), compiled from the same .proto files under the same file names, so the two
  packages register byte-identical descriptors and can be imported into one process; only the
  Python import lines are moved to the client's package.

Usage: python scripts/generate_proto.py [SERVICE_OUT_DIR [CLIENT_OUT_DIR]]
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
DESCRIPTOR_SET = "descriptors.binpb"
# The client's APIs; their imports (events, analysis, variant) come along.
CLIENT_PROTOS = ("jobs", "notifier", "query")
CLIENT_PACKAGE = "vcf_agent_client"


def _protoc(out_dir: Path, protos: list[str], *extra: str) -> None:
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *extra,
        *protos,
    ]
    # protoc finds the mypy plugins on PATH; they live beside this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def _imports(name: str) -> set[str]:
    text = (PROTO_ROOT / "vcf_agent" / "v1" / f"{name}.proto").read_text()
    return set(re.findall(r'^import "vcf_agent/v1/(\w+)\.proto";', text, re.MULTILINE))


def client_protos() -> list[str]:
    """The client's .proto files and everything they import, transitively."""
    wanted: set[str] = set()
    pending = list(CLIENT_PROTOS)
    while pending:
        name = pending.pop()
        if name not in wanted:
            wanted.add(name)
            pending.extend(_imports(name))
    return [f"vcf_agent/v1/{name}.proto" for name in sorted(wanted)]


def generate(out_dir: Path) -> list[Path]:
    """The service package's code and descriptor set; returns the .proto files compiled."""
    protos = sorted(PROTO_ROOT.glob("vcf_agent/v1/*.proto"))
    target = out_dir / "vcf_agent" / "v1"
    _protoc(
        out_dir,
        [str(p.relative_to(PROTO_ROOT)) for p in protos],
        f"--descriptor_set_out={target / DESCRIPTOR_SET}",
        "--include_source_info",
        "--include_imports",
    )
    _without_json_names(target / DESCRIPTOR_SET)
    init = target / "__init__.py"
    if not init.exists():
        init.write_text('"""Generated protobuf and gRPC code for vcf_agent.v1 (do not edit)."""\n')
    return protos


def _without_json_names(path: Path) -> None:
    """Drop protoc's json_name from every field of the descriptor set.

    The descriptors Python's generated code registers carry none, so grpcurl has always printed
    the proto's own field names (job_id, not jobId), and scripts and tests read them; serving
    json_name through reflection would switch its JSON to lowerCamelCase under them.
    """
    from google.protobuf import descriptor_pb2

    files = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())

    def clear(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
        for message in messages:
            for field in (*message.field, *message.extension):
                field.ClearField("json_name")
            clear(message.nested_type)

    for file in files.file:
        clear(file.message_type)
    path.write_bytes(files.SerializeToString(deterministic=True))


def generate_client(out_dir: Path) -> list[str]:
    """The client package's generated modules under vcf_agent_client/v1; returns the .proto files."""
    protos = client_protos()
    target = out_dir / CLIENT_PACKAGE / "v1"
    with tempfile.TemporaryDirectory() as scratch:
        _protoc(Path(scratch), protos)
        generated = Path(scratch) / "vcf_agent" / "v1"
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for path in sorted(generated.iterdir()):
            text = path.read_text()
            if path.suffix == ".pyi":
                # Typing stubs hold no descriptor bytes: every reference moves.
                text = text.replace("vcf_agent.v1.", f"{CLIENT_PACKAGE}.v1.")
            # Only import statements move: the serialized descriptors (which name the .proto files
            # and the vcf_agent.v1 package, as on the wire) stay byte-identical to the service's.
            text = re.sub(r"^(from|import) vcf_agent\.v1\b", rf"\1 {CLIENT_PACKAGE}.v1", text, flags=re.M)
            (target / path.name).write_text(text)
    (target / "__init__.py").write_text(
        '"""Generated protobuf and gRPC code for the public vcf_agent.v1 APIs (do not edit;'
        ' scripts/generate_proto.py)."""\n'
    )
    return protos


if __name__ == "__main__":
    service_out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "src"
    client_out = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "clients" / "python" / "src"
    generate(service_out)
    generate_client(client_out)
