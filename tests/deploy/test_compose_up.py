"""podman-compose brings up compose.yaml's embedded-only stack with the project's image, and every
service reports SERVING, both to a gRPC health client and through its own compose health check.

Traffic stays on loopback: a small override file (written here, beside the shipped one, as an
operator's compose.override.yaml would be) puts the five containers on the host network with
free ports; everything else (image, environment, volumes, read-only root) is the shipped file's.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import _compose_processes as processes
from tests.deploy import _podman
from tests.deploy._deploy_files import COMPOSE_FILE, compose_services, filled_env_file, load_compose, tool

pytestmark = pytest.mark.slow


def _host_network_override(services: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
    override: dict[str, Any] = {"services": {}}
    addresses: dict[str, str] = {}
    for name, service in services.items():
        command, grpc_port, _ = processes.local_command(service)
        check = list(service["healthcheck"]["test"])
        check[-1] = check[-1].replace("127.0.0.1:50051", f"127.0.0.1:{grpc_port}")
        assert check != service["healthcheck"]["test"]
        override["services"][name] = {
            "network_mode": "host",
            "networks": _Reset(),
            "ports": _Reset(),
            "command": command,
            # Each container has 9464 to itself in the shipped stack; on the host network each
            # service takes any free port instead.
            "environment": {"VCF_AGENT_METRICS_PORT": "0"},
            "healthcheck": {"test": _Override(check)},
        }
        addresses[name] = f"127.0.0.1:{grpc_port}"
    return override, addresses


class _Reset:
    """Compose's `!reset` tag: drop the shipped value (here: networks and published ports)."""


class _Override(list[str]):
    """Compose's `!override` tag: replace a sequence instead of merging into it."""


yaml.SafeDumper.add_representer(_Reset, lambda dumper, _: dumper.represent_scalar("!reset", "null"))
yaml.SafeDumper.add_representer(
    _Override, lambda dumper, value: dumper.represent_sequence("!override", list(value))
)


@pytest.fixture
def project_name() -> Iterator[str]:
    _podman.require_podman()
    name = f"vcf-agent-compose-test-{abs(hash(object())) % 10**8}"
    yield name


# The first deploy test to run after a change to src/ also builds the image (and, on a new machine,
# the base image); seen at 300 s of image build and start-up at load 40 on 2 cores.
@pytest.mark.timeout(900)
def test_podman_compose_up_embedded_stack_serves(project_name: str, tmp_path: Path) -> None:
    podman_compose = tool("podman-compose")
    image = _podman.build_image()
    env_file = filled_env_file(tmp_path)
    with env_file.open("a") as env:
        env.write(f"VCF_AGENT_IMAGE={image}\nCOMPOSE_PROFILES=embedded\n")
    services = compose_services(load_compose(env_file, "embedded"))
    override, addresses = _host_network_override(services)
    override_file = tmp_path / "compose.host-network.yaml"
    override_file.write_text(yaml.safe_dump(override))
    base = [
        podman_compose, "--project-name", project_name, "--in-pod", "false", "--env-file", str(env_file),
        "-f", str(COMPOSE_FILE), "-f", str(override_file),
    ]  # fmt: skip

    def compose(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*base, *args], capture_output=True, text=True, timeout=timeout, env=_podman.podman_env()
        )

    try:
        up = compose("up", "-d", "--no-build")
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        for name, address in addresses.items():
            statuses = processes.wait_serving(address, [""], timeout_s=120)
            logs = compose("logs", name).stdout[-2000:]
            assert statuses == {"": "SERVING"}, f"{name}: {statuses}\n{logs}"
            container = f"{project_name}_{name}_1"
            # The compose file's own health check, run by podman inside the container.
            check = _podman.podman("healthcheck", "run", container, check=False)
            assert check.returncode == 0 and "unhealthy" not in check.stdout, check.stdout + check.stderr
            inspected = _podman.podman("inspect", container, "--format", "{{.HostConfig.ReadonlyRootfs}}")
            assert inspected.stdout.strip() == "true"
    finally:
        down = compose("down", "--volumes", "--timeout", "20")
        assert down.returncode == 0, down.stderr[-2000:]
