"""Process-wide metrics (Prometheus); vcf_agent.observability serves them on /metrics.

Metrics are module-level singletons because Prometheus registries are
process-global; every component labels its series instead of owning a registry.
"""

from __future__ import annotations

import threading

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

# The *_created series double what every scrape carries and nothing here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

platform_health_status = Gauge(
    "platform_health_status",
    "1 when the bus backend answers its health probe, 0 when it does not.",
    ["backend"],
)
bus_active_backend = Gauge(
    "bus_active_backend",
    "1 for the backend a failover bus currently publishes to.",
    ["backend"],
)
bus_backend_switches = Counter(
    "bus_backend_switches_total",
    "Times a failover bus moved publishing from one backend to the other.",
    ["source", "target"],
)
messages_consumed = Counter(
    "bus_messages_consumed_total", "Messages consumed from a stream.", ["service", "stream", "group"]
)
# Throughput per service and stage: `service` is the process's service, `stage` the work done
# (published, routed, analysed, aggregated, stored); ingest's batch path does all of it in ingest.
variants_processed = Counter(
    "vcf_variants_processed_total", "Variants that completed a stage.", ["service", "stage"]
)
processing_latency = Histogram(
    "vcf_processing_latency_seconds",
    "Time from a message's publication to the end of its processing at a stage; stage=end_to_end"
    " is from ingest publishing a batch to the writer storing it.",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
# stream: where the message came from (`input` for records of a submitted file).
dead_letters = Counter(
    "dead_letters_total", "Messages sent to the dead-letter stream.", ["service", "stream", "code"]
)
stage_failures = Counter(
    "vcf_stage_failures_total",
    "Failures that stopped a stage's work (handler errors, failed polls, failed store writes).",
    ["service", "reason"],
)
consumer_lag = Gauge(
    "vcf_consumer_lag_messages",
    "Messages published to a stream and not yet committed by a consumer group (sampled from the bus).",
    ["stream", "group"],
)
store_write_rows = Histogram(
    "vcf_store_write_rows",
    "Rows per store transaction.",
    ["store"],
    buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 25000, 50000),
)
store_write_latency = Histogram(
    "vcf_store_write_seconds",
    "Duration of one store transaction.",
    ["store"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
notifier_connections = Gauge("vcf_notifier_connections", "Open client connections to the notifier.", ["kind"])
notifications_delivered = Counter(
    "vcf_notifications_delivered_total", "Job events delivered to watching clients.", ["kind"]
)
jobs_by_state = Gauge("vcf_jobs", "Jobs the ingest service knows, by state.", ["state"])
job_oldest_progress_age = Gauge(
    "vcf_job_oldest_progress_age_seconds",
    "Seconds since the least recently progressing unfinished job last progressed (0: none running).",
)
jobs_submitted = Counter(
    "vcf_jobs_submitted_total",
    "Jobs submitted, by tenant (tenants beyond the first 100 seen are counted as `other`).",
    ["tenant"],
)
provider_requests = Counter(
    "provider_requests_total", "Analysis requests sent to a provider.", ["provider", "outcome"]
)
provider_latency = Histogram(
    "provider_latency_seconds",
    "Provider call latency.",
    ["provider"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
stage_retries = Counter(
    "stage_retries_total",
    "Handler errors a stage recovered from by redelivering its uncommitted records.",
    ["service", "error"],
)
stage_in_flight = Gauge("stage_in_flight", "Records fetched but not yet committed.", ["service"])
jobs_stalled = Gauge("jobs_stalled", "Jobs with no progress for the stall time (state stalled).")
job_republishes = Counter(
    "job_republishes_total", "Jobs ingest published again from their file after records were stranded."
)


_TENANT_LABELS_MAX = 100
_tenant_labels: set[str] = set()
_tenant_lock = threading.Lock()


def tenant_label(tenant_id: str) -> str:
    """The tenant as a label value, bounded: the first 100 tenants seen, then `other`.

    With authentication on, tenants come from the configured tokens; with it off a caller could
    name any number of them, and each would be a new series.
    """
    if tenant_id in _tenant_labels:
        return tenant_id
    with _tenant_lock:
        if len(_tenant_labels) < _TENANT_LABELS_MAX:
            _tenant_labels.add(tenant_id)
            return tenant_id
    return "other"
