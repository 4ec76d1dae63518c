"""The committed generated protobuf code is exactly what the pinned grpcio-tools emits."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "src" / "vcf_agent" / "v1"


def test_regenerating_changes_nothing(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "generate_proto.py"), str(tmp_path)], check=True)
    fresh = tmp_path / "vcf_agent" / "v1"
    generated = sorted(
        p.name for p in fresh.iterdir() if p.suffix in (".py", ".pyi", ".h") and p.name != "__init__.py"
    )
    committed = sorted(
        p.name for p in COMMITTED.iterdir() if p.suffix in (".py", ".pyi", ".h") and p.name != "__init__.py"
    )
    assert generated == committed, (
        "generated files differ from the committed set; run scripts/generate_proto.py"
    )
    _, mismatch, errors = filecmp.cmpfiles(fresh, COMMITTED, generated, shallow=False)
    assert not mismatch and not errors, (
        f"stale generated code: {mismatch or errors}; run scripts/generate_proto.py"
    )


def test_every_proto_is_compiled() -> None:
    protos = {p.stem for p in (ROOT / "proto" / "vcf_agent" / "v1").glob("*.proto")}
    modules = {p.name.removesuffix("_pb2.py") for p in COMMITTED.glob("*_pb2.py")}
    assert protos == modules
