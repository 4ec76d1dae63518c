"""Process-wide metrics (Prometheus) and W3C trace context.

Metrics are module-level singletons because Prometheus registries are
process-global; every component labels its series instead of owning a registry.
"""

from __future__ import annotations

import os
import secrets

from prometheus_client import Counter, Gauge, Histogram

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
messages_published = Counter("bus_messages_published_total", "Messages published to a stream.", ["stream"])
messages_consumed = Counter(
    "bus_messages_consumed_total", "Messages consumed from a stream.", ["stream", "group"]
)
variants_processed = Counter("variants_processed_total", "Variants handled by a service stage.", ["service"])
dead_letters = Counter("dead_letters_total", "Messages sent to the dead-letter stream.", ["service", "code"])
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


def new_traceparent() -> str:
    """A fresh W3C traceparent header value (version 00, sampled)."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def child_traceparent(parent: str) -> str:
    """Same trace id, new span id; a malformed parent starts a new trace."""
    parts = parent.split("-")
    if len(parts) != 4 or len(parts[1]) != 32:
        return new_traceparent()
    return f"{parts[0]}-{parts[1]}-{os.urandom(8).hex()}-{parts[3]}"
