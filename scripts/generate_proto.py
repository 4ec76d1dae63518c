"""Compile proto/ into the committed generated code (tests check it is current).

- src/vcf_agent/v1: every .proto, with gRPC stubs and typing stubs, plus descriptors.binpb, a
  FileDescriptorSet WITH source info (the comments), which the services' reflection serves so
  `grpcurl describe` explains every RPC, message and field (Python's generated code keeps no
  comments).
- clients/python/src/vcf_agent_client/v1: the public APIs a LIMS needs (jobs, notifier, query and
  what they import), compiled from the same .proto files under the same file names, so the two
  packages register byte-identical descriptors and can be imported into one process; only the
  Python import lines are moved to the client's package.

Besides protoc's Python code it writes the wire numbers of the stream payloads (the messages of
variant.proto, analysis.proto and events.proto and the well-known types they use) twice, as
wire_numbers.h for the compiled extensions and wire_numbers.py for the Python code that splices
serialized messages by hand, together with the numeric codes Python hands the extensions
(SHARED_CODES below). Neither C nor Python writes a field number or a tag by hand.

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

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
DESCRIPTOR_SET = "descriptors.binpb"
# The client's APIs; their imports (events, analysis, variant) come along.
CLIENT_PROTOS = ("jobs", "notifier", "query")
CLIENT_PACKAGE = "vcf_agent_client"

# The files whose messages travel on the streams, read or written as wire bytes by our own code.
WIRE_FILES = ("vcf_agent/v1/variant.proto", "vcf_agent/v1/analysis.proto", "vcf_agent/v1/events.proto")

# Codes that are not wire data but that Python hands the compiled extensions, which must agree on
# them: declared here once, written into both generated files. (prefix, why, {name: value}).
SHARED_CODES: tuple[tuple[str, str, dict[str, int]], ...] = (
    (
        "FORMAT_NATIVE",
        "FORMAT keys whose plain values the record encoder checks without a cache: encoded (DP, GQ"
        " as Integer or rounded Float, AD) or only checked (any other Integer or Float key)",
        {
            "NONE": 0,
            "DEPTH": 1,
            "GQ": 2,
            "AD": 3,
            "CHECK_INTEGER": 4,
            "CHECK_FLOAT": 5,
            "DEPTH_FLOAT": 6,
            "GQ_FLOAT": 7,
        },
    ),
    ("INFO_KIND", "INFO types the record encoder checks and encodes itself", {"INTEGER": 1, "FLOAT": 2}),
    (
        "NUMBER",
        "A header Number that is not a count (a count is itself); ANY for LA, LR, LG and '.'",
        {"A": -1, "R": -2, "G": -3, "ANY": -4},
    ),
    (
        "WIRE_CHECK",
        "What the row builder's wire check verifies of a field of each type",
        {"BYTES": 0, "STRING": 1, "MESSAGE": 2, "VARINT": 3, "FIXED64": 4, "FIXED32": 5},
    ),
)

_F = descriptor_pb2.FieldDescriptorProto
_FIXED64 = {_F.TYPE_DOUBLE, _F.TYPE_FIXED64, _F.TYPE_SFIXED64}
_FIXED32 = {_F.TYPE_FLOAT, _F.TYPE_FIXED32, _F.TYPE_SFIXED32}
_LENGTH = {_F.TYPE_STRING, _F.TYPE_BYTES, _F.TYPE_MESSAGE}


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
    files = descriptor_pb2.FileDescriptorSet.FromString((target / DESCRIPTOR_SET).read_bytes()).file
    numbers = wire_numbers(list(files))
    (target / "wire_numbers.h").write_text(c_header(numbers))
    (target / "wire_numbers.py").write_text(python_module(numbers))
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


# (constant name, value, comment): a field number, a tag (bytes) or an enum value.
Constant = tuple[str, int | bytes, str]


def _upper(name: str) -> str:
    """CamelCase or snake_case to UPPER_SNAKE."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).upper()


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _wire_type(field: descriptor_pb2.FieldDescriptorProto, proto3: bool) -> int:
    """The wire type a writer uses: repeated numbers are packed in proto3 unless told otherwise."""
    repeated = field.label == _F.LABEL_REPEATED
    packed = field.options.packed if field.options.HasField("packed") else proto3
    if field.type in _LENGTH or (repeated and packed):
        return 2
    if field.type in _FIXED64:
        return 1
    if field.type in _FIXED32:
        return 5
    return 0


def wire_numbers(files: list[descriptor_pb2.FileDescriptorProto]) -> list[tuple[str, list[Constant]]]:
    """Per message of the wire files and the types they use (first), its field numbers and tags."""
    messages: dict[str, tuple[descriptor_pb2.DescriptorProto, str, bool]] = {}
    enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}

    def collect(prefix: str, message: descriptor_pb2.DescriptorProto, package: str, proto3: bool) -> None:
        full = f"{prefix}.{message.name}"
        messages[full] = (message, full.removeprefix(f".{package}.").replace(".", ""), proto3)
        for nested in message.nested_type:
            collect(full, nested, package, proto3)
        for enum in message.enum_type:
            enums[f"{full}.{enum.name}"] = enum

    for file in files:
        for message in file.message_type:
            collect(f".{file.package}", message, file.package, file.syntax == "proto3")
        for enum in file.enum_type:
            enums[f".{file.package}.{enum.name}"] = enum
    wanted: list[str] = []

    def reach(full: str) -> None:
        if full in wanted:
            return
        wanted.append(full)
        for field in messages[full][0].field:
            if field.type == _F.TYPE_MESSAGE:
                reach(field.type_name)

    for file in files:
        if file.name in WIRE_FILES:
            for message in file.message_type:
                reach(f".{file.package}.{message.name}")
    groups = []
    for full in sorted(wanted, key=lambda name: (not name.startswith(".google."), name)):
        message, short, proto3 = messages[full]
        prefix = _upper(short)
        constants: list[Constant] = []
        for field in message.field:
            name = f"{prefix}_{_upper(field.name)}"
            constants.append((name, field.number, ""))
            tag = _varint(field.number << 3 | _wire_type(field, proto3))
            constants.append((f"{name}_TAG", tag, ""))
        for enum in message.enum_type:
            for value in enum.value:
                constants.append((f"{prefix}_{value.name}", value.number, f"{enum.name}"))
        groups.append((full.lstrip("."), constants))
    return groups


_HEADER_NOTE = "Generated by scripts/generate_proto.py from the .proto files: do not edit."


def c_header(groups: list[tuple[str, list[Constant]]]) -> str:
    lines = [
        f"/* {_HEADER_NOTE}",
        " * Field numbers (NAME), tags as string literals of their wire bytes (NAME_TAG; TAG_LEN gives",
        " * their length) and enum values of the stream payloads, then the codes Python hands the",
        " * compiled extensions. */",
        "#ifndef VCF_AGENT_V1_WIRE_NUMBERS_H",
        "#define VCF_AGENT_V1_WIRE_NUMBERS_H",
        "",
        "#define TAG_LEN(tag) (sizeof(tag) - 1)",
    ]
    for message, constants in groups:
        lines += ["", f"/* {message} */"]
        for name, value, _ in constants:
            text = str(value) if isinstance(value, int) else '"' + "".join(f"\\x{b:02x}" for b in value) + '"'
            lines.append(f"#define {name} {text}")
    for prefix, why, codes in SHARED_CODES:
        lines += ["", f"/* {why}. */"]
        lines += [f"#define {prefix}_{name} ({value})" for name, value in codes.items()]
    lines += ["", "#endif", ""]
    return "\n".join(lines)


def _python_literal(value: int | bytes) -> str:
    return 'b"' + "".join(f"\\x{b:02x}" for b in value) + '"' if isinstance(value, bytes) else str(value)


def python_module(groups: list[tuple[str, list[Constant]]]) -> str:
    lines = [
        f'"""{_HEADER_NOTE}',
        "",
        "Field numbers (NAME), tags as their wire bytes (NAME_TAG) and enum values of the stream",
        "payloads, then the codes Python hands the compiled extensions (the same as wire_numbers.h).",
        '"""',
    ]
    for message, constants in groups:
        lines += ["", f"# {message}"]
        lines += [f"{name} = {_python_literal(value)}" for name, value, _ in constants]
    for prefix, why, codes in SHARED_CODES:
        lines += ["", f"# {why}."]
        lines += [f"{prefix}_{name} = {value}" for name, value in codes.items()]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    service_out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "src"
    client_out = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "clients" / "python" / "src"
    generate(service_out)
    generate_client(client_out)
