"""Router metrics beyond the shared provider_requests/provider_latency series."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

breaker_state = Gauge(
    "provider_breaker_state", "Circuit breaker per provider: 0 closed, 1 half-open, 2 open.", ["provider"]
)
provider_outstanding = Gauge(
    "provider_outstanding_requests", "Requests queued or in flight per provider.", ["provider"]
)
provider_tokens = Counter(
    "provider_tokens_total", "Tokens the provider reported using.", ["provider", "direction"]
)
provider_cost = Counter(
    "provider_cost_usd_total", "Cost of reported token usage at the configured prices.", ["provider"]
)
provider_failovers = Counter(
    "provider_failovers_total", "Requests moved from a provider to the next one in the policy.", ["provider"]
)
cache_lookups = Counter("router_cache_lookups_total", "Answer cache lookups.", ["result"])
cache_hit_ratio = Gauge("router_cache_hit_ratio", "Answer cache hits / lookups since start.")
cache_bytes = Gauge("router_cache_bytes", "Bytes held by the answer cache.")
