"""The store key scheme a writer data directory was written with, stamped beside the stores.

Keys changed meaning (STORE_KEY_VERSION 2 scopes them by tenant, 3 gives graph
variants integer keys), and rows
keyed the old way would neither be found by their tenant's ids nor be
overwritten by them: a second copy of every result would pile up beside the
first. So a directory holding stores without this version's stamp is
refused at start, in one line saying what to do, instead of mixing schemes.
"""

from __future__ import annotations

from pathlib import Path

from vcf_agent.config import ConfigError
from vcf_agent.schema import STORE_KEY_VERSION

STAMP_NAME = "store-key-version"
# What the stores leave in the directory: any of them means it holds data.
_STORE_ENTRIES = ("lance", "graph.lbug")


def check_key_stamp(directory: Path) -> None:
    """Stamp a fresh directory; accept one stamped with this version; refuse anything else."""
    stamp = directory / STAMP_NAME
    if stamp.exists():
        found = stamp.read_text(encoding="utf-8").strip()
        if found == str(STORE_KEY_VERSION):
            return
        written = f"key scheme {found!r}"
    elif any((directory / entry).exists() for entry in _STORE_ENTRIES):
        written = "content-only keys (before tenant-scoped keys)"
    else:
        directory.mkdir(parents=True, exist_ok=True)
        stamp.write_text(f"{STORE_KEY_VERSION}\n", encoding="utf-8")
        return
    raise ConfigError(
        f"writer data directory {directory} holds results stored with {written}; this version keys them"
        f" by tenant with integer graph keys (key scheme {STORE_KEY_VERSION}): start with an empty data"
        " directory and resubmit"
        " the files (this version does not re-key stored results)"
    )
