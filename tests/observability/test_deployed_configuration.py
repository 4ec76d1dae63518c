"""deploy/observability is what compose and the Kubernetes manifests load: compose mounts its
files; `kustomize build` ships its files,
byte for byte, as ConfigMaps mounted where Prometheus and Grafana read them (the dev overlay runs
both; prod hands the dashboard to the cluster's Grafana sidecar), and the Prometheus
configuration as shipped passes `promtool check config`. (Every rendered object passing
kubernetes-validate --strict and kube-score is tests/deploy/test_kubernetes_manifests.py.)"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.deploy._deploy_files import render_overlay
from tests.observability._prometheus import OBSERVABILITY, ROOT, tool

# ConfigMap (name before kustomize's hash suffix) -> its keys and the files they are made from.
SHIPPED = {
    "vcf-agent-prometheus": {"prometheus.yml": "prometheus.yml", "alerts.yml": "alerts.yml"},
    "vcf-agent-grafana-provisioning": {
        "datasources.yml": "grafana-datasources.yml",
        "dashboards.yml": "grafana-dashboards.yml",
    },
    "vcf-agent-grafana-dashboards": {"vcf-agent.json": "dashboards/vcf-agent.json"},
}


def config_maps(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Generated ConfigMaps by their name without the hash suffix."""
    found = {}
    for o in objects:
        if o["kind"] == "ConfigMap":
            name = o["metadata"]["name"]
            found[name.rsplit("-", 1)[0] if name.rsplit("-", 1)[0] in SHIPPED else name] = o
    return found


def workload(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name)


def mounts(deployment: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """mount path -> (ConfigMap name, key or "" for the whole map) of the pod's single container."""
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v.get("configMap", {}).get("name", "") for v in pod["volumes"]}
    (container,) = pod["containers"]
    return {m["mountPath"]: (volumes[m["name"]], m.get("subPath", "")) for m in container["volumeMounts"]}


def test_dev_ships_prometheus_and_grafana_on_the_files_themselves(tmp_path: Path) -> None:
    objects = render_overlay("dev")
    maps = config_maps(objects)
    for name, files in SHIPPED.items():
        assert maps[name]["data"] == {key: (OBSERVABILITY / file).read_text() for key, file in files.items()}
    prometheus_map = maps["vcf-agent-prometheus"]["metadata"]["name"]
    prometheus = workload(objects, "prometheus")
    args = prometheus["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in args
    assert mounts(prometheus)["/etc/prometheus"] == (prometheus_map, "")
    # The scrape targets and the Grafana data source name Services the render holds, on their ports.
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    config = yaml.safe_load(maps["vcf-agent-prometheus"]["data"]["prometheus.yml"])
    targets = [t for job in config["scrape_configs"] for s in job["static_configs"] for t in s["targets"]]
    assert len(targets) == 5
    for target in targets:
        host, port = target.split(":")
        assert int(port) in {p["port"] for p in services[host]["spec"]["ports"]}, target
    provisioning = maps["vcf-agent-grafana-provisioning"]["metadata"]["name"]
    grafana = mounts(workload(objects, "grafana"))
    assert grafana["/etc/grafana/provisioning/datasources/vcf-agent.yml"] == (provisioning, "datasources.yml")
    assert grafana["/etc/grafana/provisioning/dashboards/vcf-agent.yml"] == (provisioning, "dashboards.yml")
    provider = yaml.safe_load((OBSERVABILITY / "grafana-dashboards.yml").read_text())["providers"][0]
    dashboards = maps["vcf-agent-grafana-dashboards"]["metadata"]["name"]
    assert grafana[provider["options"]["path"]] == (dashboards, "")
    sources = yaml.safe_load((OBSERVABILITY / "grafana-datasources.yml").read_text())["datasources"]
    prometheus_source = next(s for s in sources if s["type"] == "prometheus")
    assert prometheus_source["url"] == "http://prometheus:9090" and "prometheus" in services

    # The configuration exactly as the pod sees it loads in promtool.
    for key, text in maps["vcf-agent-prometheus"]["data"].items():
        (tmp_path / key).write_text(text)
    checked = subprocess.run(
        [tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout and "alerts.yml" in checked.stdout


def test_prod_hands_the_dashboard_to_the_grafana_sidecar() -> None:
    maps = config_maps(render_overlay("prod"))
    dashboard = maps["vcf-agent-grafana-dashboards"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"] == {
        "vcf-agent.json": (OBSERVABILITY / "dashboards" / "vcf-agent.json").read_text()
    }


def test_compose_mounts_the_same_files_where_the_programs_read_them() -> None:
    services = yaml.safe_load((ROOT / "compose" / "compose.yaml").read_text())["services"]

    def mounted(service: str) -> dict[str, Path]:
        """container path -> the file or folder of this repository mounted there."""
        found = {}
        for volume in services[service]["volumes"]:
            source, target = volume.split(":")[:2]
            if source.startswith("../"):
                found[target] = (ROOT / "compose" / source).resolve()
        return found

    prometheus = mounted("prometheus")
    assert prometheus["/etc/prometheus/prometheus.yml"] == OBSERVABILITY / "prometheus.yml"
    assert prometheus["/etc/prometheus/alerts.yml"] == OBSERVABILITY / "alerts.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    grafana = mounted("grafana")
    provider = yaml.safe_load((OBSERVABILITY / "grafana-dashboards.yml").read_text())["providers"][0]
    assert grafana[provider["options"]["path"]] == OBSERVABILITY / "dashboards"
    provisioned = {path for target, path in grafana.items() if target.startswith("/etc/grafana/provisioning")}
    assert provisioned == {
        OBSERVABILITY / "grafana-datasources.yml",
        OBSERVABILITY / "grafana-dashboards.yml",
    }
