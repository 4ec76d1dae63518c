"""A real Prometheus scrapes, and a real Jaeger receives the traces of, the five services, each
its own process, through a job.

The job is PyVCF3's 1000 Genomes extract (381 records, 629 samples) with one
record's POS broken, so one record is dead-lettered: its HTTP API must then show
every series the design names, with values that agree with the job (variants
stored by the writer equal the job's stored count, lag back to 0), no id of a job,
variant or sample in any label, and every panel of the shipped dashboard must name
only metrics this scrape returns. The job's trace, exported over OTLP by the five processes,
must arrive in Jaeger as one trace covering the five services, rooted at the SubmitVcf call.
"""

from __future__ import annotations

import gzip
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_five_processes import ONE_KG, submit_and_watch
from tests.observability._jaeger import Jaeger, running_jaeger
from tests.observability._prometheus import OBSERVABILITY, Prometheus, running_prometheus, tool
from vcf_agent.config import SERVICES
from vcf_agent.localdev import running_pipeline
from vcf_agent.v1 import events_pb2

# PromQL words that are not metric names.
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
}


def one_bad_record(directory: Path) -> tuple[Path, list[str]]:
    """The 1000 Genomes extract as plain VCF with the 10th record's POS made unreadable; its samples."""
    with gzip.open(ONE_KG, "rt") as source:
        lines = source.read().splitlines(keepends=True)
    header = next(line for line in lines if line.startswith("#CHROM"))
    first = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    columns = lines[first + 9].split("\t")
    columns[1] = "x1"
    lines[first + 9] = "\t".join(columns)
    path = directory / "1kg-one-bad.vcf"
    path.write_text("".join(lines))
    return path, header.rstrip("\n").split("\t")[9:]


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, labels or keywords."""
    text = re.sub(r'"[^"]*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        following = text[match.end() :].lstrip()
        if following.startswith("(") or match.group() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((OBSERVABILITY / "dashboards" / "vcf-agent.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_metric_names_are_read_from_expressions() -> None:
    expr = (
        'sum by (le, stage) (rate(vcf_processing_latency_seconds_bucket{stage="end_to_end"}[5m])) / x_total'
    )
    assert metric_names(expr) == {"vcf_processing_latency_seconds_bucket", "x_total"}


def check_series(prometheus: Prometheus, job_id: str, total: int, stored: int, dead: int) -> None:
    value = prometheus.value
    prometheus.wait_for('count(up{job="vcf-agent"} == 1)', 5)
    # Throughput per service and stage agrees with the job, once each target's last scrape has it:
    # Prometheus scrapes the five on their own schedules, so the writer's series can show every
    # variant stored while ingest's last scrape predates its last publish (CI saw 212 of 380).
    prometheus.wait_for('sum(vcf_variants_processed_total{service="writer", stage="stored"})', stored)
    prometheus.wait_for('sum(vcf_variants_processed_total{service="ingest", stage="published"})', total)
    prometheus.wait_for('sum(vcf_variants_processed_total{service="router", stage="routed"})', total)
    prometheus.wait_for('sum(vcf_variants_processed_total{service="aggregator", stage="aggregated"})', total)
    prometheus.wait_for('sum(provider_requests_total{provider="local", outcome="ok"})', total)
    prometheus.wait_for('sum(dead_letters_total{service="ingest", stream="input"})', dead)
    # Every stored row went through one LanceDB transaction or another.
    prometheus.wait_for('sum(vcf_store_write_rows_sum{store="lancedb"})', stored)
    assert (value('sum(vcf_store_write_seconds_count{store="graph"})') or 0) >= 1
    # Latency: per stage and ingest-to-stored, within the job's own duration.
    assert (value('sum(vcf_processing_latency_seconds_count{stage="end_to_end"})') or 0) >= 1
    p50 = value(
        'histogram_quantile(0.5, sum by (le) (vcf_processing_latency_seconds_bucket{stage="end_to_end"}))'
    )
    assert p50 is not None and 0 < p50 < 240, p50
    stages = {r["metric"]["stage"] for r in prometheus.query("vcf_processing_latency_seconds_count > 0")}  # type: ignore[index]
    assert {"router", "aggregator", "writer", "notifier", "end_to_end"} <= stages, stages
    # Queues drain, the bus is healthy, the job is counted as ended with errors (its file's one
    # broken record was dead-lettered), watchers are gone.
    prometheus.wait_for("max(vcf_consumer_lag_messages)", 0)
    assert value('min(platform_health_status{backend="embedded"})') == 1
    prometheus.wait_for('sum(vcf_jobs{state="complete_with_errors"})', 1)
    # The gRPC Watch ended at the terminal state, the WebSocket client closed: no connections left.
    prometheus.wait_for('sum(vcf_notifier_connections{kind="watch"})', 0)
    prometheus.wait_for('sum(vcf_notifier_connections{kind="websocket"})', 0)
    assert (value('sum(vcf_notifications_delivered_total{kind="websocket"})') or 0) >= 1
    assert (value('sum(vcf_notifications_delivered_total{kind="watch"})') or 0) >= 1
    assert value('sum(vcf_jobs_submitted_total{tenant="lab-a"})') == 1
    # The client's default process collector, from each of the five processes.
    assert value("count(process_resident_memory_bytes > 10e6)") == 5
    assert value("count(process_open_fds > 0)") == 5
    assert value("count(process_cpu_seconds_total > 0)") == 5


def check_cardinality(prometheus: Prometheus, job_id: str, samples: list[str]) -> None:
    """No label holds an id of a job or a sample name; the series stay few."""
    names = [n for n in prometheus.label_values("__name__")]
    assert names
    labels = httpx.get(f"{prometheus.url}/api/v1/labels", timeout=10).json()["data"]
    assert not {"job_id", "variant", "correlation_id", "sample", "file_id"} & set(labels), labels
    values = {value for label in labels for value in prometheus.label_values(label)}
    assert job_id not in values
    leaked = [s for s in samples if s in values]
    assert not leaked, leaked
    series = prometheus.value('count({job="vcf-agent"})')
    assert series is not None and series < 3000, series


def check_dashboard(prometheus: Prometheus) -> None:
    scraped = set(prometheus.label_values("__name__"))
    for expr in dashboard_expressions():
        missing = metric_names(expr) - scraped
        assert not missing, (expr, missing)
        prometheus.query(expr)  # and it evaluates


def check_jaeger(jaeger: Jaeger, job_id: str) -> None:
    """The job's spans from all five processes form one trace under the SubmitVcf server span."""

    def is_job_span(span: dict[str, Any]) -> bool:
        tags = {tag["key"]: tag["value"] for tag in span["tags"]}
        return bool(span["operationName"] == "ingest.job" and tags.get("job_id") == job_id)

    deadline = time.monotonic() + 60
    services: set[str] = set()
    trace: dict[str, Any] = {}
    while time.monotonic() < deadline:
        found = [t for t in jaeger.traces("vcf-agent-ingest") if any(map(is_job_span, t["spans"]))]  # type: ignore[arg-type]
        if found:
            assert len(found) == 1, [t["traceID"] for t in found]
            trace = jaeger.trace(str(found[0]["traceID"]))
            services = {p["serviceName"] for p in trace["processes"].values()}
            if len(services) == len(SERVICES):
                break
        time.sleep(1)
    assert services == {f"vcf-agent-{name}" for name in SERVICES}, services
    spans = trace["spans"]
    ids = {span["spanID"] for span in spans}
    roots = [
        s
        for s in spans
        if not any(r["refType"] == "CHILD_OF" and r["spanID"] in ids for r in s["references"])
    ]
    assert [r["operationName"] for r in roots] == ["/vcf_agent.v1.IngestService/SubmitVcf"], roots
    by_id = {span["spanID"]: span for span in spans}
    (job_span,) = [s for s in spans if is_job_span(s)]
    assert by_id[job_span["references"][0]["spanID"]] is roots[0]
    names = {span["operationName"] for span in spans}
    assert {
        "router.route",
        "router.analyse",
        "aggregator.aggregate",
        "writer.store",
        "notifier.deliver",
    } <= names


@pytest.mark.timeout(420)
async def test_prometheus_scrapes_five_services_through_a_job(tmp_path: Path) -> None:
    tool("prometheus")
    vcf, samples = one_bad_record(tmp_path)
    with running_jaeger(tmp_path / "jaeger") as jaeger:
        # Every job sampled, exported within 200 ms; the SDK reads these itself.
        tracing_env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_endpoint,
            "OTEL_TRACES_SAMPLER": "parentbased_always_on",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }
        bus = f"embedded://{tmp_path / 'bus'}"
        with running_pipeline(bus, tmp_path / "services", env=tracing_env) as services:
            targets = {name: service.metrics for name, service in services.items()}
            assert all(targets.values()), targets
            with running_prometheus(targets, tmp_path / "prometheus") as prometheus:
                prometheus.wait_for('count(up{job="vcf-agent"} == 1)', 5)
                # The file's one broken record is dead-lettered: the job ends with errors.
                job, _ = await submit_and_watch(services, vcf, events_pb2.JOB_STATE_COMPLETE_WITH_ERRORS)
                assert job.state == events_pb2.JOB_STATE_COMPLETE_WITH_ERRORS, job
                assert job.counts.dead_lettered == 1, job
                assert job.counts.stored == job.counts.total > 0, job
                check_series(prometheus, job.job_id, job.counts.total, job.counts.stored, 1)
                check_cardinality(prometheus, job.job_id, samples)
                check_dashboard(prometheus)
        # The services flushed their spans as they stopped.
        check_jaeger(jaeger, job.job_id)
