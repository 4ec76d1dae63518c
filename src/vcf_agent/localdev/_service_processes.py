"""The five services as separate OS processes, the way operators deploy them (tests, benchmarks)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vcf_agent.config import SERVICES
from vcf_agent.localdev._child_process import free_port, log_tail, stop_process


@dataclass
class ServiceProcess:
    name: str
    process: subprocess.Popen[str]
    grpc: str
    log_path: Path
    websocket_port: int = 0
    # host:port of its Prometheus /metrics endpoint ("" when not served).
    metrics: str = ""

    def log(self) -> str:
        """The tail of the service's log, for failure messages."""
        return log_tail(self.log_path, 4000)


class ServiceStartError(RuntimeError):
    """A service process exited before it reported ready."""


def start_service(
    name: str,
    bus_url: str,
    data_dir: Path,
    *,
    timeout_s: float = 60,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> ServiceProcess:
    """`vcf-agent serve NAME` in a child process; returns once it reports its gRPC address.

    Its /metrics is on a free port (`metrics`); `--metrics-port off` in extra_args turns it off.

    `env` adds variables (tokens, TLS files, allowed directories) to this process's environment.
    """
    log_path = data_dir / f"{name}.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    websocket_port = free_port() if name == "notifier" else 0
    command = [
        sys.executable, "-m", "vcf_agent", "--log-level", "INFO", "serve", name,
        "--bus", bus_url, "--data-dir", str(data_dir / name), "--grpc-port", "0",
        "--websocket-port", str(websocket_port), "--metrics-port", "0", *extra_args,
    ]  # fmt: skip
    # Appended: a restarted service's log keeps what its previous run said before it died.
    with log_path.open("a") as log:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
        )
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    line = ""
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("{"):
            break
        if process.poll() is not None:
            raise ServiceStartError(
                f"{name} exited with {process.returncode}: {log_path.read_text()[-3000:]}"
            )
    ready = json.loads(line)
    return ServiceProcess(name, process, ready["grpc"], log_path, websocket_port, ready.get("metrics", ""))


def stop_service(service: ServiceProcess, sig: int = signal.SIGTERM, timeout_s: float = 30) -> int:
    """Signal the process and wait for it; a process that ignores SIGTERM is killed and reported."""
    if stop_process(service.process, timeout_s, sig):
        raise AssertionError(f"{service.name} ignored {sig} for {timeout_s}s:\n{service.log()}")
    return service.process.returncode


@contextmanager
def running_pipeline(
    bus_url: str, data_dir: Path, *, env: Mapping[str, str] | None = None
) -> Iterator[dict[str, ServiceProcess]]:
    """All five services, downstream first; stopped with SIGTERM in reverse order on exit."""
    started: dict[str, ServiceProcess] = {}
    try:
        # Downstream first, as LocalPipeline starts them.
        for name in reversed(SERVICES):
            started[name] = start_service(name, bus_url, data_dir, env=env)
        yield started
    finally:
        # Every service is stopped even when one ignores SIGTERM; that one is reported after.
        ignored: list[AssertionError] = []
        for service in reversed(list(started.values())):
            try:
                stop_service(service)
            except AssertionError as exc:
                ignored.append(exc)
        if ignored:
            raise ignored[0]
