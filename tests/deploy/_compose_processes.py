"""Compose services run as they are written: their command and environment, with only what names
the host (brokers, ports, /data) rewritten for a run on this machine's loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vcf_agent.config import Topology
from vcf_agent.localdev import free_ports
from vcf_agent.localdev._child_process import stop_process

# Variables of the caller that must not leak into a service meant to see only the file's.
_OWN_PREFIXES = ("VCF_AGENT_", "IGGY_", "KAFKA_")


def unique_streams() -> dict[str, str]:
    """VCF_AGENT_STREAM_* for streams of this run only (the session's broker is shared)."""
    run = uuid.uuid4().hex[:8]
    return {
        f"VCF_AGENT_STREAM_{f.name.upper()}": f"deploy-{run}-{f.default}"
        for f in fields(Topology)
        if not f.name.endswith("_partitions")
    }


@dataclass
class Endpoints:
    """Where this machine's brokers and scratch space are, replacing the file's host names."""

    data_dir: Path
    kafka: str = ""
    iggy: str = ""  # host:port


def local_command(service: dict[str, Any]) -> tuple[list[str], int, int]:
    """The compose command with its listen address on loopback and free ports."""
    command = list(service["command"])
    serves_websocket = "--websocket-port" in command
    grpc_port, *websocket = free_ports(2 if serves_websocket else 1)
    assert command[command.index("--grpc-host") + 1] == "0.0.0.0"
    command[command.index("--grpc-host") + 1] = "127.0.0.1"
    assert command[command.index("--grpc-port") + 1] == "50051"
    command[command.index("--grpc-port") + 1] = str(grpc_port)
    if serves_websocket:
        command[command.index("--websocket-port") + 1] = str(websocket[0])
    return command, grpc_port, websocket[0] if websocket else 0


def local_environment(service: dict[str, Any], where: Endpoints) -> dict[str, str]:
    env = dict(service["environment"])
    assert env["VCF_AGENT_DATA_DIR"] == "/data"
    env["VCF_AGENT_DATA_DIR"] = str(where.data_dir)
    # Every container has 9464 to itself; processes on one host take any free port each.
    assert env["VCF_AGENT_METRICS_PORT"] == "9464"
    env["VCF_AGENT_METRICS_PORT"] = "0"
    if "VCF_AGENT_BUS" in env:
        assert env["VCF_AGENT_BUS"] == "embedded:///data/bus"
        env["VCF_AGENT_BUS"] = f"embedded://{where.data_dir / 'bus'}"
    if "KAFKA_BOOTSTRAP_SERVERS" in env:
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        env["KAFKA_BOOTSTRAP_SERVERS"] = where.kafka
    if "IGGY_HOST" in env:
        assert (env["IGGY_HOST"], env["IGGY_PORT"]) == ("iggy", "8090")
        env["IGGY_HOST"], env["IGGY_PORT"] = where.iggy.split(":")
    return env


@dataclass
class RunningService:
    name: str
    process: subprocess.Popen[str]
    grpc: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def start(name: str, service: dict[str, Any], where: Endpoints, extra_env: dict[str, str]) -> RunningService:
    """Start the service as compose would, including its restart policy: a process that exits
    before it is up (a broker join timing out on a busy machine) is started again, twice at most."""
    command, grpc_port, _ = local_command(service)
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}
    env.update(local_environment(service, where))
    env.update(extra_env)
    env["PYTHONUNBUFFERED"] = "1"
    where.data_dir.mkdir(parents=True, exist_ok=True)
    attempts = 3 if service.get("restart") in ("always", "unless-stopped", "on-failure") else 1
    for attempt in range(attempts):
        log_path = where.data_dir / f"{name}.{attempt}.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "vcf_agent", *command],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
            )
        assert process.stdout is not None
        line = process.stdout.readline()
        if line.startswith("{"):
            address = json.loads(line)["grpc"]
            assert address == f"127.0.0.1:{grpc_port}"
            return RunningService(name, process, address, log_path)
        process.wait(timeout=30)
    raise AssertionError(f"{name} did not start ({process.returncode}):\n{log_path.read_text()[-3000:]}")


def stop(service: RunningService) -> int:
    if stop_process(service.process, 30, 15):
        raise AssertionError(f"{service.name} ignored SIGTERM:\n{service.log()}")
    return service.process.returncode


def wait_serving(address: str, health_names: list[str], timeout_s: float = 60) -> dict[str, str]:
    """Each health name's status once all are SERVING (or their last status at the deadline)."""
    statuses: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            for name in health_names:
                try:
                    response = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=3)
                    statuses[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
                except grpc.RpcError as exc:
                    statuses[name] = exc.code().name
            if all(s == "SERVING" for s in statuses.values()) or time.monotonic() > deadline:
                return statuses
            time.sleep(0.5)
