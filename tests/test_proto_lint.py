"""`buf lint` passes on proto/ with buf.yaml: the standard rules (with the documented exceptions)
and a comment on every service, RPC, message, field, enum and enum value."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _buf() -> str:
    found = ROOT / ".venv" / "bin" / "buf"
    if found.exists():
        return str(found)
    on_path = shutil.which("buf")
    if on_path is None:
        pytest.skip("buf is not installed (scripts/install-deploy-tools.sh installs it with Go)")
    return on_path


def test_buf_lint_is_clean() -> None:
    result = subprocess.run(
        [_buf(), "lint"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_lint_catches_an_undocumented_field(tmp_path: Path) -> None:
    """The lint really checks comments: the same tree with one comment removed fails."""
    shutil.copytree(ROOT / "proto", tmp_path / "proto")
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    jobs = tmp_path / "proto" / "vcf_agent" / "v1" / "jobs.proto"
    text = jobs.read_text()
    documented = "  // The job to cancel.\n  string job_id = 1;\n"
    assert documented in text
    jobs.write_text(text.replace(documented, "  string job_id = 1;\n"))
    result = subprocess.run(
        [_buf(), "lint"], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode != 0
    assert 'Field "job_id" should have a non-empty comment for documentation.' in result.stdout
