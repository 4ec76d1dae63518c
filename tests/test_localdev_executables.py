"""How the local servers' executables are found (iggy-server, versitygw): one lookup, its order."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from vcf_agent.localdev import find_iggy_server, find_s3_server
from vcf_agent.localdev._executables import find_executable

UNSET = "VCF_AGENT_TEST_NO_SUCH_VARIABLE"


def _executable(directory: Path, name: str, mode: int = 0o755) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n")
    path.chmod(mode)
    return path


def test_a_set_variable_is_final_even_when_it_names_nothing_runnable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_path = tmp_path / "on-path"
    _executable(on_path, "iggy-server")
    _executable(on_path, "versitygw")
    monkeypatch.setenv("PATH", str(on_path))

    configured = _executable(tmp_path / "configured", "my-iggy")
    monkeypatch.setenv("IGGY_SERVER_BIN", str(configured))
    assert find_iggy_server() == str(configured)

    not_runnable = _executable(tmp_path / "configured", "my-versitygw", mode=0o644)
    monkeypatch.setenv("VERSITYGW_BIN", str(not_runnable))
    assert find_s3_server() is None
    monkeypatch.setenv("IGGY_SERVER_BIN", str(tmp_path / "configured"))  # a directory
    assert find_iggy_server() is None


def test_unset_variables_fall_back_to_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IGGY_SERVER_BIN", raising=False)
    monkeypatch.delenv("VERSITYGW_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_iggy_server() is None
    on_path = _executable(tmp_path / "on-path", "iggy-server")
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert find_iggy_server() == str(on_path)


def test_beside_this_python_comes_before_path_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # versitygw's lookup, with a name that is certainly beside this Python: the interpreter.
    interpreter = Path(sys.executable)
    monkeypatch.delenv(UNSET, raising=False)
    monkeypatch.setenv("PATH", str(_executable(tmp_path / "on-path", interpreter.name).parent))
    assert find_executable(interpreter.name, UNSET, beside_python=True) == str(interpreter)
    # Iggy's lookup does not look there: PATH only.
    assert find_executable(interpreter.name, UNSET) == str(tmp_path / "on-path" / interpreter.name)
