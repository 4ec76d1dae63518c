"""deploy/observability: the Prometheus config and rules load in promtool, every alert has a unit
test that fires on a faulty series and one that stays quiet on a healthy one, the Kubernetes
PrometheusRule carries the same rules, and the dashboard has the design's panels."""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict

import yaml

from tests.observability._prometheus import OBSERVABILITY, ROOT, tool

DESIGN_PANELS = {
    "Message throughput",
    "Processing latency (p95)",
    "Error rates",
    "Queue depths (consumer lag)",
    "AI provider performance",
    "Database write performance",
    "Jobs by state",
}
DESIGN_ALERTS = {
    "VcfAgentThroughputLow",
    "VcfAgentLatencyHigh",
    "VcfAgentErrorRateHigh",
    "VcfAgentQueueDepthHigh",
    "VcfAgentConsumerStalled",
    "VcfAgentProviderBreakerOpen",
    "VcfAgentBusUnhealthy",
    "VcfAgentJobStalled",
    "VcfAgentDeadLettersGrowing",
}


def promtool(*args: str) -> str:
    result = subprocess.run(
        [tool("promtool"), *args], cwd=OBSERVABILITY, capture_output=True, text=True, timeout=900, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def alert_names() -> set[str]:
    rules = yaml.safe_load((OBSERVABILITY / "alerts.yml").read_text())
    return {rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule}


def test_prometheus_config_and_rules_load() -> None:
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in promtool("check", "rules", "alerts.yml")


def test_every_alert_fires_on_a_fault_and_not_on_health() -> None:
    assert alert_names() >= DESIGN_ALERTS
    assert "SUCCESS" in promtool("test", "rules", "alerts.test.yml")
    outcomes: dict[str, set[bool]] = defaultdict(set)
    for test in yaml.safe_load((OBSERVABILITY / "alerts.test.yml").read_text())["tests"]:
        for check in test["alert_rule_test"]:
            outcomes[check["alertname"]].add(bool(check["exp_alerts"]))
    assert {name: outcomes[name] for name in alert_names()} == {name: {True, False} for name in alert_names()}


def test_kubernetes_rules_are_the_shipped_rules() -> None:
    shipped = yaml.safe_load((OBSERVABILITY / "alerts.yml").read_text())["groups"]
    rule = yaml.safe_load((ROOT / "k8s" / "components" / "monitoring" / "rules.yaml").read_text())
    groups = rule["spec"]["groups"]
    assert groups[: len(shipped)] == shipped
    assert [g["name"] for g in groups[len(shipped) :]] == ["vcf-agent.kubernetes"]


def test_dashboard_has_the_design_panels() -> None:
    dashboard = json.loads((OBSERVABILITY / "dashboards" / "vcf-agent.json").read_text())
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert titles >= DESIGN_PANELS, DESIGN_PANELS - titles
    for panel in dashboard["panels"]:
        assert panel["targets"] and all(target["expr"] for target in panel["targets"]), panel["title"]
