"""compose/compose.yaml as the Compose specification's own loader (compose-go) resolves it, for
every profile: health-gated start on the brokers, loopback-only ports, tokens from the env file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy._deploy_files import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    SERVICE_PROFILE_PREFIX,
    STACK_PROFILES,
    compose_services,
    filled_env_file,
    load_compose,
    tool,
)
from vcf_agent.config import SERVICES

BROKERS = {"failover": {"iggy", "kafka"}, "kafka": {"kafka"}, "embedded": set()}


@pytest.mark.parametrize("observability", [False, True], ids=["plain", "with-observability"])
@pytest.mark.parametrize("profile", STACK_PROFILES)
def test_each_profile_loads_with_five_services_from_one_image(
    profile: str, observability: bool, tmp_path: Path
) -> None:
    profiles = [profile, "observability"] if observability else [profile]
    project = load_compose(filled_env_file(tmp_path), *profiles)
    services = compose_services(project)
    prefix = SERVICE_PROFILE_PREFIX[profile]
    assert sorted(services) == sorted(prefix + name for name in SERVICES)
    assert len({s["image"] for s in services.values()}) == 1
    # One build of the one image: the other services run the tag it produces.
    builds = [name for name, s in services.items() if "build" in s]
    assert builds == [prefix + "ingest"]
    assert Path(services[builds[0]]["build"]["context"]) / services[builds[0]]["build"]["dockerfile"] == (
        COMPOSE_FILE.parents[1] / "Dockerfile"
    )
    others = set(project["services"]) - set(services)
    tools = {"prometheus", "grafana", "jaeger"} if observability else set()
    assert others == BROKERS[profile] | tools


@pytest.mark.parametrize("profile", STACK_PROFILES)
def test_services_start_after_their_brokers_are_healthy(profile: str, tmp_path: Path) -> None:
    project = load_compose(filled_env_file(tmp_path), profile)
    for name in BROKERS[profile]:
        broker = project["services"][name]
        assert broker["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
        assert broker.get("volumes"), f"{name} keeps its log on a named volume"
    for name, service in compose_services(project).items():
        depends = service.get("depends_on", {})
        assert set(depends) == BROKERS[profile], name
        assert all(d["condition"] == "service_healthy" for d in depends.values()), name
        # Their own health check asks the full grpc.health.v1 status on the command's port.
        check = " ".join(service["healthcheck"]["test"])
        port = service["command"][service["command"].index("--grpc-port") + 1]
        assert f"127.0.0.1:{port}" in check and "service=''" in check


def test_iggy_gets_what_its_server_needs(tmp_path: Path) -> None:
    iggy = load_compose(filled_env_file(tmp_path), "failover")["services"]["iggy"]
    assert iggy["ulimits"]["memlock"] == {"soft": -1, "hard": -1}
    assert iggy["environment"]["IGGY_ROOT_USERNAME"] == "vcf"
    assert iggy["environment"]["IGGY_ROOT_PASSWORD"] == "deploy-test-iggy-password"
    assert iggy["volumes"][0]["target"] == iggy["environment"]["IGGY_SYSTEM_PATH"]


@pytest.mark.parametrize("profile", STACK_PROFILES)
def test_ports_are_published_on_loopback_only_and_services_keep_their_data(
    profile: str, tmp_path: Path
) -> None:
    project = load_compose(filled_env_file(tmp_path), profile, "observability")
    published = []
    for name, service in project["services"].items():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{name} publishes {port} beyond loopback"
            published.append(port["published"])
    assert len(published) == len(set(published)), "two services publish the same host port"
    for name, service in compose_services(project).items():
        assert service["read_only"] is True
        data = [v for v in service["volumes"] if v["target"] == "/data"]
        assert data and data[0]["type"] == "volume", f"{name}: /data is not a named volume"
        assert set(service["expose"]) >= {"50051", "9464"}


def test_the_example_env_file_is_refused_until_tokens_are_set() -> None:
    """Shipping defaults would run services with known tokens: the loader refuses instead."""
    result = subprocess.run(
        [
            tool("compose-check"),
            "-f",
            str(COMPOSE_FILE),
            "--env-file",
            str(ENV_EXAMPLE),
            "--profile",
            "embedded",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    for variable in ("VCF_AGENT_ADMIN_TOKENS", "VCF_AGENT_TENANT_TOKENS", "IGGY_ROOT_PASSWORD"):
        assert f"required variable {variable} is missing a value" in result.stderr


def test_env_example_documents_every_variable_the_file_uses() -> None:
    used = set(re.findall(r"\$\{(\w+)", COMPOSE_FILE.read_text()))
    documented = {
        line.partition("=")[0] for line in ENV_EXAMPLE.read_text().splitlines() if re.match(r"^\w+=", line)
    }
    assert used - documented == set(), f"undocumented in .env.example: {sorted(used - documented)}"
    assert "COMPOSE_PROFILES" in documented
