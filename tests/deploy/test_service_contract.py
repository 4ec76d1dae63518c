"""What compose and Kubernetes tell each service is what the service accepts: every command parses
with `vcf-agent`'s own parser, every variable is one the settings read and yields the bus the
stack means, and the ports the files publish are the ports the commands listen on."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import pytest
import yaml

from tests.deploy._deploy_files import (
    OVERLAYS,
    ROOT,
    SERVICE_PROFILE_PREFIX,
    STACK_PROFILES,
    compose_services,
    filled_env_file,
    load_compose,
    render_overlay,
    service_workloads,
)
from vcf_agent.app._settings_tree import environment_variables, is_provider_variable, load_settings
from vcf_agent.app.cli import build_parser
from vcf_agent.config import SERVICES, Settings

# Only the command line reads the environment, through the settings tree: no other module may name
# a variable (so the tree's list below is every variable anything reads).
_SOURCE = ROOT / "src" / "vcf_agent"
_TREE = _SOURCE / "app" / "_settings_tree.py"


def variables_the_settings_read() -> set[str]:
    # Plus the OTEL_* variables tracing.py names for the OpenTelemetry SDK, which reads them itself.
    otel = re.findall(r"\"(OTEL_[A-Z_]+)\"", (_SOURCE / "tracing.py").read_text())
    return set(environment_variables()) | set(otel)


def test_nothing_below_the_command_line_reads_the_environment() -> None:
    readers = []
    for path in sorted(_SOURCE.rglob("*.py")):
        text = path.read_text()
        # localdev starts brokers and service processes for tests and passes its environment on;
        # it configures no service.
        if path == _TREE or "localdev" in path.parts or "/v1/" in str(path):
            continue
        # tracing.py hands the OpenTelemetry SDK its own OTEL_* variables; compiled.py reads
        # VCF_AGENT_NO_EXTENSIONS at import, before any settings exist (as aiokafka's switch does).
        if path.name in ("tracing.py", "compiled.py"):
            continue
        # Libraries' own variables are theirs, outside the tree: OpenTelemetry's OTEL_* (read by its
        # SDK's conventions) and Lance's LANCE_* (the writer fills in a default Lance reads).
        lines = [line for line in text.splitlines() if re.search(r"os\.environ|getenv\(", line)]
        if any("OTEL_" not in line and "LANCE_" not in line for line in lines):
            readers.append(str(path.relative_to(_SOURCE)))
    # The command line passes os.environ to the tree once; it is the only other reader.
    assert readers == ["app/cli.py"]


def _role(name: str) -> str:
    for prefix in ("kafka-", "embedded-"):
        name = name.removeprefix(prefix)
    return name


def _expected_bus(profile: str) -> str:
    return {
        "failover": "failover",
        "kafka": "kafka://kafka:9092",
        "embedded": "embedded:///data/bus",
        "k8s": "failover",
    }[profile]


def _check_bus(profile: str, settings: Settings, iggy_host: str, kafka: str) -> None:
    if _expected_bus(profile) != "failover":
        assert settings.bus_url == _expected_bus(profile)
        return
    url = urlparse(settings.bus_url)
    assert url.scheme == "failover"
    query = parse_qs(url.query)
    primary, fallback = urlparse(unquote(query["primary"][0])), unquote(query["fallback"][0])
    # Iggy primary with Kafka fallback, logging in with the credentials the stack configures.
    assert (primary.scheme, primary.hostname, primary.port) == ("iggy", iggy_host, 8090)
    assert primary.username and primary.password
    assert fallback == f"kafka://{kafka}"


@pytest.mark.parametrize("profile", STACK_PROFILES)
def test_compose_commands_and_environment_are_what_the_services_accept(profile: str, tmp_path: Path) -> None:
    project = load_compose(filled_env_file(tmp_path), profile)
    services = compose_services(project)
    assert sorted(services) == sorted(SERVICE_PROFILE_PREFIX[profile] + s for s in SERVICES)
    known = variables_the_settings_read()
    for name, service in services.items():
        args = build_parser().parse_args(service["command"])
        assert (args.command, args.service) == ("serve", _role(name))
        assert args.grpc_host == "0.0.0.0" and args.grpc_port == 50051
        published = {p["target"] for p in service.get("ports", [])}
        assert 50051 in published and str(args.grpc_port) in service["expose"]
        if args.service == "notifier":
            assert args.websocket_port in published and str(args.websocket_port) in service["expose"]
        env: dict[str, str] = service["environment"]
        unknown = {v for v in set(env) - known if not is_provider_variable(v)}
        assert unknown == set(), f"{name} sets variables nothing reads: {unknown}"
        settings = load_settings(
            env, flags={"grpc_port": args.grpc_port, "grpc_host": args.grpc_host}
        ).service
        assert settings.data_dir == Path("/data")
        _check_bus(profile, settings, "iggy", "kafka:9092")
        security = settings.security
        assert security.auth_enabled
        assert security.admin_tokens == {"deploy-test-admin-token": "ops"}
        assert security.tenant_tokens == {"deploy-test-tenant-token": "lab-a"}


def _pod_environment(objects: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container["envFrom"]:
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            env.update(
                next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name)["data"]
            )
        else:
            name = source["secretRef"]["name"]
            secret = next(
                (o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == name), None
            )
            if secret is None:  # prod: the operator's Secret, made from the template
                template = (ROOT / "k8s" / "secret.template.yaml").read_text()
                secret = {"stringData": next(yaml.safe_load_all(template))["stringData"]}
            env.update(secret.get("stringData", {}))
            env.update({k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()})
    env.update({e["name"]: e["value"] for e in container.get("env", [])})
    return env


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_args_and_environment_are_what_the_services_accept(overlay: str) -> None:
    objects = render_overlay(overlay)
    known = variables_the_settings_read()
    settings_map = next(
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "vcf-agent-settings"
    )["data"]
    for name, workload in service_workloads(objects).items():
        container = workload["spec"]["template"]["spec"]["containers"][0]
        args = build_parser().parse_args(container["args"])
        assert (args.command, args.service) == ("serve", name)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["grpc"] == args.grpc_port == container["readinessProbe"]["grpc"]["port"]
        assert args.grpc_host == "0.0.0.0"
        if name == "notifier":
            assert ports["websocket"] == args.websocket_port
        env = _pod_environment(objects, container)
        unknown = {v for v in set(env) - known if not is_provider_variable(v)}
        assert unknown == set(), f"{name} sets variables nothing reads: {unknown}"
        settings = load_settings(
            env, flags={"grpc_port": args.grpc_port, "grpc_host": args.grpc_host}
        ).service
        assert settings.data_dir == Path("/data")
        _check_bus("k8s", settings, settings_map["IGGY_HOST"], settings_map["KAFKA_BOOTSTRAP_SERVERS"])
        assert settings.security.auth_enabled


def test_the_variables_check_knows_the_settings_variables() -> None:
    """The tree's list is what it really reads (so a typo in a file would be caught)."""
    known = variables_the_settings_read()
    assert {"VCF_AGENT_DATA_DIR", "VCF_AGENT_BUS", "KAFKA_BOOTSTRAP_SERVERS", "IGGY_HOST"} <= known
    assert {"VCF_AGENT_ADMIN_TOKENS", "VCF_AGENT_TENANT_TOKENS", "VCF_AGENT_TLS_CERT"} <= known
    assert "VCF_AGENT_DATADIR" not in known
