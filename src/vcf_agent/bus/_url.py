"""Choosing a backend by URL: embedded:///path, memory://name, kafka://host:port,
iggy://user:pass@host:port, failover://?primary=URL&fallback=URL."""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from vcf_agent.bus._base import Bus, BusError

# The optional dependency (and the package extra that installs it) of a backend that needs one.
_EXTRAS = {"kafka": ("aiokafka", "kafka"), "iggy": ("apache_iggy", "iggy")}

_BACKENDS = {
    "memory": "vcf_agent.bus._memory",
    "embedded": "vcf_agent.bus._embedded",
    "kafka": "vcf_agent.bus._kafka",
    "iggy": "vcf_agent.bus._iggy",
    "failover": "vcf_agent.bus._failover",
}
# What a bus URL may start with, for checking settings before anything is opened.
BUS_SCHEMES = tuple(sorted(_BACKENDS))


def open_bus(url: str) -> Bus:
    """An unstarted Bus for the URL; each backend module exposes from_url(url) -> Bus."""
    scheme = urlsplit(url).scheme
    module_name = _BACKENDS.get(scheme)
    if module_name is None:
        raise BusError(f"unknown bus URL scheme {scheme!r} in {url!r}; use one of {sorted(_BACKENDS)}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        dependency, extra = _EXTRAS.get(scheme, ("", ""))
        if not dependency or exc.name != dependency:
            raise
        raise BusError(
            f"{scheme}:// needs the {extra!r} extra ({dependency} is not installed):"
            f" pip install 'vcf-analysis-agent[{extra}]'"
        ) from exc
    bus: Bus = module.from_url(url)
    return bus
