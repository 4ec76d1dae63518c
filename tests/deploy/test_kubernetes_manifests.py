"""k8s/: each overlay renders with kustomize, every object passes kubernetes-validate --strict for
the oldest and newest supported Kubernetes, kube-score finds nothing critical that is not
explained, and the objects say what the design needs (one writer, probes, ports, policies)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy._deploy_files import (
    KUBERNETES_VERSIONS,
    OVERLAYS,
    ROOT,
    liveness_health_name,
    render_overlay,
    service_workloads,
    tool,
)
from vcf_agent.config import SERVICES

# Custom resources of the Prometheus Operator: kubernetes-validate has no schema for them, so
# they are checked below against the objects they select.
OPERATOR_KINDS = {"PodMonitor", "PrometheusRule"}


def _validate(path: Path, version: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", "-k", version, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_passes_strict_schema_validation(
    overlay: str, version: str, tmp_path: Path
) -> None:
    objects = [o for o in render_overlay(overlay) if o["kind"] not in OPERATOR_KINDS]
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(yaml.safe_dump_all(objects))
    result = _validate(rendered, version)
    assert result.returncode == 0, result.stdout + result.stderr


def test_strict_validation_rejects_a_misspelt_field(tmp_path: Path) -> None:
    """The validator is really applied: one unknown field in a rendered Deployment fails it."""
    objects = render_overlay("prod")
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"grpc": {"port": 50051}}
    rendered = tmp_path / "broken.yaml"
    rendered.write_text(yaml.safe_dump(deployment))
    result = _validate(rendered, KUBERNETES_VERSIONS[-1])
    assert result.returncode != 0
    assert "readinesProbe" in result.stdout + result.stderr


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_secret_template_is_a_valid_secret(version: str) -> None:
    result = _validate(ROOT / "k8s" / "secret.template.yaml", version)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kube_score_finds_nothing_critical(overlay: str, tmp_path: Path) -> None:
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(
        yaml.safe_dump_all([o for o in render_overlay(overlay) if o["kind"] not in OPERATOR_KINDS])
    )
    result = subprocess.run(
        [tool("kube-score"), "score", "--output-format", "ci", str(rendered)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    critical = [line for line in result.stdout.splitlines() if line.startswith("[CRITICAL]")]
    assert critical == [], "\n".join(critical)


def test_every_kube_score_exception_has_a_comment_saying_why() -> None:
    for path in sorted((ROOT / "k8s").rglob("*.yaml")):
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            if "kube-score/ignore" in line:
                above = lines[max(0, number - 8) : number]
                assert any(text.strip().startswith("#") for text in above), (
                    f"{path.relative_to(ROOT)}:{number + 1}: kube-score check ignored without a comment"
                )


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_writer_can_never_run_twice(overlay: str) -> None:
    """The graph store takes one writing process: one replica, a StatefulSet (the old pod stops
    before the new one starts), and its data on a claim of its own."""
    writer = service_workloads(render_overlay(overlay))["writer"]
    assert writer["kind"] == "StatefulSet"
    assert writer["spec"]["replicas"] == 1
    assert writer["spec"]["podManagementPolicy"] == "OrderedReady"
    claims = [t["metadata"]["name"] for t in writer["spec"]["volumeClaimTemplates"]]
    mounts = {m["name"]: m["mountPath"] for m in _container(writer)["volumeMounts"]}
    assert mounts.get("data") == "/data" and "data" in claims


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_is_hardened_probed_and_exposed(overlay: str) -> None:
    objects = render_overlay(overlay)
    workloads = service_workloads(objects)
    assert sorted(workloads) == sorted(SERVICES)
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    claims = {o["metadata"]["name"] for o in objects if o["kind"] == "PersistentVolumeClaim"}
    for name, workload in workloads.items():
        pod = workload["spec"]["template"]["spec"]
        container = _container(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/tmp", "/data"} <= mounts, f"{name}: writable paths {mounts}"
        for volume in pod["volumes"]:
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            assert claim is None or claim in claims, f"{name} mounts undefined claim {claim}"
        # Native gRPC probes: readiness on the full health, liveness on the name set in one place.
        assert container["readinessProbe"]["grpc"] == {"port": 50051, "service": ""}
        assert container["livenessProbe"]["grpc"] == {"port": 50051, "service": liveness_health_name()}
        assert container["startupProbe"]["grpc"]["port"] == 50051
        # Longer than the drain: shutdown_grace_s (5 s) after consumers stop and commit.
        assert pod["terminationGracePeriodSeconds"] > 30
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]
        # Every container port is reachable through the service's Service.
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        exposed = {p["targetPort"] for p in services[name]["spec"]["ports"]}
        assert set(ports) == exposed, f"{name}: container ports {ports}, Service exposes {exposed}"
        assert services[name]["spec"]["selector"] == {"app.kubernetes.io/name": name}
    assert "websocket" in {p["name"] for p in _container(workloads["notifier"])["ports"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_and_secret_name_the_bus_every_service_reads(overlay: str) -> None:
    objects = render_overlay(overlay)
    settings = next(
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "vcf-agent-settings"
    )
    # Both brokers set: Iggy primary with Kafka fallback (config._bus_from_design_env).
    assert settings["data"]["IGGY_HOST"] and settings["data"]["KAFKA_BOOTSTRAP_SERVERS"]
    for workload in service_workloads(objects).values():
        sources = _container(workload)["envFrom"]
        assert {"configMapRef": {"name": "vcf-agent-settings"}} in sources
        assert {"secretRef": {"name": "vcf-agent-secrets"}} in sources


def test_dev_runs_its_own_brokers_and_prod_points_at_existing_ones() -> None:
    dev = render_overlay("dev")
    dev_brokers = {o["metadata"]["name"] for o in dev if o["kind"] == "StatefulSet"} - {"writer"}
    assert dev_brokers == {"iggy", "kafka"}
    dev_services = {o["metadata"]["name"] for o in dev if o["kind"] == "Service"}
    settings = next(
        o for o in dev if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "vcf-agent-settings"
    )["data"]
    assert settings["IGGY_HOST"] in dev_services
    assert settings["KAFKA_BOOTSTRAP_SERVERS"].split(":")[0] in dev_services
    assert any(o["kind"] == "Secret" and o["metadata"]["name"] == "vcf-agent-secrets" for o in dev)

    prod = render_overlay("prod")
    assert {o["metadata"]["name"] for o in prod if o["kind"] == "StatefulSet"} == {"writer"}
    # prod's Secret is the operator's (k8s/secret.template.yaml), never rendered from the repo.
    assert not any(o["kind"] == "Secret" for o in prod)
    template = list(yaml.safe_load_all((ROOT / "k8s" / "secret.template.yaml").read_text()))
    keys = set(template[0]["stringData"])
    assert keys == {"VCF_AGENT_ADMIN_TOKENS", "VCF_AGENT_TENANT_TOKENS", "IGGY_USERNAME", "IGGY_PASSWORD"}
    dev_secret = next(o for o in dev if o["kind"] == "Secret")
    assert set(dev_secret["data"]) == keys


def test_prod_scales_the_router_on_cpu_and_budgets_disruptions() -> None:
    prod = render_overlay("prod")
    autoscaler = next(o for o in prod if o["kind"] == "HorizontalPodAutoscaler")
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == "router"
    assert autoscaler["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert "replicas" not in service_workloads(prod)["router"]["spec"]
    budgets = {
        o["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for o in prod
        if o["kind"] == "PodDisruptionBudget"
    }
    assert budgets == set(SERVICES)


def test_network_policies_admit_only_the_designed_flows() -> None:
    prod = render_overlay("prod")
    policies = {o["metadata"]["name"]: o["spec"] for o in prod if o["kind"] == "NetworkPolicy"}
    deny = policies["vcf-agent-default-deny"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny and "egress" not in deny
    ingress_ports: dict[str, set[int]] = {}
    for spec in policies.values():
        selector = spec["podSelector"]
        targets = (
            list(SERVICES)
            if selector.get("matchLabels", {}).get("app.kubernetes.io/component") == "vcf-agent-service"
            else selector.get("matchLabels", {}).get("app.kubernetes.io/name", "").split()
            or selector["matchExpressions"][0]["values"]
        )
        for rule in spec.get("ingress", []):
            for target in targets:
                ingress_ports.setdefault(target, set()).update(p["port"] for p in rule["ports"])
    # No service accepts another service: they meet only on the bus.
    for rule in (r for spec in policies.values() for r in spec.get("ingress", [])):
        for peer in rule["from"]:
            labels = peer.get("podSelector", {}).get("matchLabels", {})
            assert "app.kubernetes.io/component" not in labels and "app.kubernetes.io/name" not in labels
    assert ingress_ports["notifier"] == {50051, 8765, 9464}
    assert ingress_ports["router"] == {50051, 9464}  # operators and Prometheus only


def test_monitoring_objects_select_the_services_metrics_ports() -> None:
    prod = render_overlay("prod")
    monitor = next(o for o in prod if o["kind"] == "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    for workload in service_workloads(prod).values():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()
        assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in {
            p["name"] for p in _container(workload)["ports"]
        }
    rules = next(o for o in prod if o["kind"] == "PrometheusRule")
    entries = [r for g in rules["spec"]["groups"] for r in g["rules"]]
    alerts = [r for r in entries if "alert" in r]
    assert alerts and all(r["alert"] and r["expr"] and r["labels"]["severity"] for r in alerts)
    # The rest are recording rules the alerts read.
    assert all(r["record"] and r["expr"] for r in entries if "alert" not in r)
