"""The layering of docs/architecture.md holds: the import contracts pass and the drawing is fresh."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_import_contracts_are_kept() -> None:
    """Services never import each other, the core imports no service or app, v1 imports nothing of ours."""
    ran = subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ", 0 broken." in ran.stdout


def test_the_committed_import_diagram_is_drawn_from_today_s_imports() -> None:
    ran = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "draw-imports.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_every_package_in_the_tree_is_listed_for_the_wheel() -> None:
    """pyproject lists packages by name: a new one left out installs editable but not in a wheel or image."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    source = ROOT / "src"
    in_tree = {
        ".".join(init.parent.relative_to(source).parts) for init in source.glob("vcf_agent/**/__init__.py")
    }
    assert in_tree - listed == set(), f"add to pyproject's [tool.setuptools] packages: {in_tree - listed}"
