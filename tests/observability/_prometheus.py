"""A real Prometheus (Debian's package, installed by scripts/install-observability-tools.sh) for tests."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from vcf_agent.localdev import free_port
from vcf_agent.localdev._child_process import stop_process

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(ROOT / ".venv" / "bin"))
    if found is None:
        pytest.skip(f"no `{name}` on PATH (scripts/install-observability-tools.sh installs it)")
    return found


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, object]]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        result: list[dict[str, object]] = body["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single sample of an instant query, or None when it returns nothing."""
        result = self.query(expr)
        if not result:
            return None
        assert len(result) == 1, (expr, result)
        value = result[0]["value"]
        assert isinstance(value, list)
        return float(value[1])

    def wait_for(self, expr: str, expected: float, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        found: float | None = None
        while time.monotonic() < deadline:
            found = self.value(expr)
            if found == expected:
                return
            time.sleep(0.5)
        raise AssertionError(f"{expr} = {found}, expected {expected} within {timeout_s}s")

    def label_values(self, label: str) -> list[str]:
        response = httpx.get(f"{self.url}/api/v1/label/{label}/values", timeout=10)
        response.raise_for_status()
        values: list[str] = response.json()["data"]
        return values

    def targets(self) -> list[dict[str, object]]:
        response = httpx.get(f"{self.url}/api/v1/targets", timeout=10)
        response.raise_for_status()
        active: list[dict[str, object]] = response.json()["data"]["activeTargets"]
        return active


@contextmanager
def running_prometheus(targets: Mapping[str, str], directory: Path) -> Iterator[Prometheus]:
    """Prometheus scraping each service's metrics address every second, with the shipped rules."""
    binary = tool("prometheus")
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(OBSERVABILITY / "alerts.yml", directory / "alerts.yml")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [
            {
                "job_name": "vcf-agent",
                "static_configs": [{"targets": list(targets.values())}],
            }
        ],
    }
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = directory / "prometheus.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        yield Prometheus(url)
    finally:
        stop_process(process, 10)
