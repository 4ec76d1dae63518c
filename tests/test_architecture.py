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
