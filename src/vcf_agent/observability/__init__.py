"""What operators see: /metrics for Prometheus, bus and lag samples, JSON logs.

The series themselves are defined in vcf_agent.telemetry (and analysis._metrics);
traces in vcf_agent.tracing.
"""

from vcf_agent.observability._json_logs import (
    JsonLogFormatter,
    configure_logging,
    current_job_id,
    log_context,
)
from vcf_agent.observability._metrics_endpoint import MetricsEndpoint
from vcf_agent.observability._samplers import SAMPLE_INTERVAL_S, BusSampler, PeriodicSampler

__all__ = [
    "SAMPLE_INTERVAL_S",
    "BusSampler",
    "JsonLogFormatter",
    "MetricsEndpoint",
    "PeriodicSampler",
    "configure_logging",
    "current_job_id",
    "log_context",
]
