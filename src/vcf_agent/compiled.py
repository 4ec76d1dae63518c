"""Which compiled extensions are in use.

Every extension (the ingest record encoder, the writer's row builder, the router's local wire
format) is optional: setup.py builds it when a C compiler is there, and each has a pure-Python
twin that produces the same bytes. The twin is used when the extension is absent, or everywhere
when the environment sets VCF_AGENT_NO_EXTENSIONS=1, as aiokafka's AIOKAFKA_NO_EXTENSIONS does
(read when a module picks its implementation: at import, or for the row builder per collector).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

NO_EXTENSIONS_VARIABLE = "VCF_AGENT_NO_EXTENSIONS"

# Every extension setup.py builds, by module name.
EXTENSIONS = (
    "vcf_agent.services.ingest._record_encoder",
    "vcf_agent.services.writer._row_builder",
    "vcf_agent.analysis._local_wire",
)


def extensions_disabled() -> bool:
    """Whether VCF_AGENT_NO_EXTENSIONS asks for the pure-Python twins."""
    return os.environ.get(NO_EXTENSIONS_VARIABLE, "").strip().lower() not in ("", "0", "false", "no")


def compiled_module(name: str) -> ModuleType | None:
    """The compiled extension `name`, or None when it was not built or the twins are forced."""
    if extensions_disabled():
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def extensions_in_use() -> dict[str, bool]:
    """Each extension by module name: True when the compiled module is the one in use."""
    return {name: compiled_module(name) is not None for name in EXTENSIONS}
