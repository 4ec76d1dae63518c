"""Choosing a backend by URL: embedded:///path, memory://name, kafka://host:port,
iggy://user:pass@host:port, failover://?primary=URL&fallback=URL."""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from vcf_agent.bus._base import Bus, BusError

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
    module = importlib.import_module(module_name)
    bus: Bus = module.from_url(url)
    return bus
