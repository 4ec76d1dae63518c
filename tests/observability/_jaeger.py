"""A real Jaeger (v2, all-in-one with memory storage) built by scripts/install-observability-tools.sh."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.observability._prometheus import ROOT
from vcf_agent.localdev import free_ports
from vcf_agent.localdev._child_process import stop_process

JAEGER_VERSION = "1.76.0"

_CONFIG = """
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{otlp}
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


def jaeger_binary() -> str:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    for candidate in (
        shutil.which("jaeger"),
        str(ROOT / ".venv" / "bin" / "jaeger"),
        str(cache / "vcf-agent" / f"jaeger-{JAEGER_VERSION}" / "jaeger"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.skip("no `jaeger` binary (scripts/install-observability-tools.sh builds it with Go)")


@dataclass
class Jaeger:
    otlp_endpoint: str
    query_url: str

    def traces(self, service: str) -> list[dict[str, object]]:
        response = httpx.get(
            f"{self.query_url}/api/traces", params={"service": service, "limit": 100}, timeout=10
        )
        response.raise_for_status()
        data: list[dict[str, object]] = response.json()["data"] or []
        return data

    def trace(self, trace_id: str) -> dict[str, object]:
        response = httpx.get(f"{self.query_url}/api/traces/{trace_id}", timeout=10)
        response.raise_for_status()
        data: list[dict[str, object]] = response.json()["data"]
        assert len(data) == 1
        return data[0]


@contextmanager
def running_jaeger(directory: Path) -> Iterator[Jaeger]:
    binary = jaeger_binary()
    directory.mkdir(parents=True, exist_ok=True)
    ports = dict(zip(("query", "query_grpc", "otlp"), free_ports(3), strict=True))
    config = directory / "jaeger.yaml"
    config.write_text(_CONFIG.format(**ports))
    log_path = directory / "jaeger.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [binary, "--config", f"file:{config}"], stdout=log, stderr=subprocess.STDOUT, cwd=directory
        )
    try:
        jaeger = Jaeger(f"http://127.0.0.1:{ports['otlp']}", f"http://127.0.0.1:{ports['query']}")
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{jaeger.query_url}/api/services", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"jaeger did not start: {log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield jaeger
    finally:
        stop_process(process, 10)
