"""Where a locally started server's executable is found: one lookup for every server here."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def find_executable(name: str, configured_by: str, *, beside_python: bool = False) -> str | None:
    """The file the variable `configured_by` names (None unless it is an executable file), else
    `name` beside this Python when `beside_python` (the .venv/bin the install scripts link into),
    else `name` on PATH, else None.

    A set variable is final: a wrong path is reported as missing rather than silently replaced
    by another build found elsewhere.
    """
    configured = os.environ.get(configured_by)
    if configured:
        return configured if os.access(configured, os.X_OK) and Path(configured).is_file() else None
    if beside_python:
        beside = Path(sys.executable).parent / name
        if os.access(beside, os.X_OK):
            return str(beside)
    return shutil.which(name)
