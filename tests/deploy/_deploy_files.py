"""The shipped deployment files as the tools that read them see them: compose-go's resolved
project, kustomize's rendered objects, and the health names the probes ask for.

Tools are found in .venv/bin (where scripts/install-deploy-tools.sh puts them) or on PATH; a test
that needs a missing one skips naming it and the script that installs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
COMPOSE_FILE = ROOT / "compose" / "compose.yaml"
ENV_EXAMPLE = ROOT / "compose" / ".env.example"
OVERLAYS = ("dev", "prod")
# Stacks of compose.yaml; observability combines with any of them.
STACK_PROFILES = ("failover", "kafka", "embedded")
SERVICE_PROFILE_PREFIX = {"failover": "", "kafka": "kafka-", "embedded": "embedded-"}
# The Kubernetes versions the manifests support: gRPC probes are GA from 1.27; the newest is the
# newest schema kubernetes-validate carries.
KUBERNETES_VERSIONS = ("1.27.0", "1.37.0")

# Values a filled-in compose/.env would have (tests only).
TEST_ENV = {
    "VCF_AGENT_ADMIN_TOKENS": "ops:deploy-test-admin-token",
    "VCF_AGENT_TENANT_TOKENS": "lab-a:deploy-test-tenant-token",
    "IGGY_ROOT_USERNAME": "vcf",
    "IGGY_ROOT_PASSWORD": "deploy-test-iggy-password",
    "GRAFANA_ADMIN_PASSWORD": "deploy-test-grafana",
}
ADMIN_TOKEN = "deploy-test-admin-token"
TENANT_TOKEN = "deploy-test-tenant-token"


def tool(name: str) -> str:
    """Path of an installed tool, or skip naming it."""
    candidate = VENV_BIN / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (scripts/install-deploy-tools.sh installs it)")
    return found


def filled_env_file(directory: Path) -> Path:
    """compose/.env.example with the REQUIRED values filled in, as an operator would."""
    lines = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        key = line.partition("=")[0]
        lines.append(f"{key}={TEST_ENV[key]}" if key in TEST_ENV and line.endswith("=") else line)
    path = directory / "compose.env"
    path.write_text("\n".join(lines) + "\n")
    return path


def load_compose(env_file: Path, *profiles: str) -> dict[str, Any]:
    """The project compose-go resolves for these profiles (interpolated, merged, validated)."""
    args = [tool("compose-check"), "-f", str(COMPOSE_FILE), "--env-file", str(env_file)]
    for profile in profiles:
        args += ["--profile", profile]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, env=_clean_env())
    if result.returncode != 0:
        raise AssertionError(f"compose-go rejected compose.yaml for {profiles}: {result.stderr}")
    project: dict[str, Any] = json.loads(result.stdout)
    return project


def _clean_env() -> dict[str, str]:
    # The loader must see only the env file, not variables of whoever runs the tests.
    names = set(TEST_ENV) | {"COMPOSE_PROFILES", "VCF_AGENT_IMAGE"}
    return {k: v for k, v in os.environ.items() if k not in names}


def render_overlay(overlay: str) -> list[dict[str, Any]]:
    """Every object `kustomize build k8s/overlays/NAME` renders."""
    result = subprocess.run(
        [tool("kustomize"), "build", str(ROOT / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise AssertionError(f"kustomize build {overlay} failed: {result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def service_workloads(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The five services' Deployments/StatefulSets by service name."""
    return {
        o["metadata"]["name"]: o
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet")
        and o["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
        == "vcf-agent-service"
    }


def liveness_health_name() -> str:
    """The health entry liveness probes ask for: named once, in k8s/base/liveness-probe.yaml."""
    patch = yaml.safe_load((ROOT / "k8s" / "base" / "liveness-probe.yaml").read_text())
    name: str = patch[0]["value"]["grpc"]["service"]
    return name


def compose_services(project: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The vcf-agent services of a resolved project (those running the image's `serve`)."""
    return {
        name: service
        for name, service in project["services"].items()
        if (service.get("command") or [None])[0] == "serve"
    }
