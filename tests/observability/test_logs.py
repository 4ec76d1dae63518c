"""--log-format json lines carry the service, trace, span and job ids; bad settings are one line."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from vcf_agent import tracing
from vcf_agent.app.cli import main
from vcf_agent.observability import JsonLogFormatter, current_job_id


@pytest.mark.parametrize(
    ("argv", "env", "said"),
    [
        (["--log-level", "LOUD"], {}, "--log-level: input should be 'DEBUG', 'INFO', 'WARNING', 'ERROR' or"),
        (["--log-format", "xml"], {}, "--log-format: input should be 'text' or 'json', got 'xml'"),
        ([], {"VCF_AGENT_LOG_FORMAT": "yaml"}, "VCF_AGENT_LOG_FORMAT: input should be 'text' or 'json'"),
        (
            [],
            {"VCF_AGENT_METRICS_PORT": "many"},
            "VCF_AGENT_METRICS_PORT: must be a port number 0..65535 or off",
        ),
    ],
)
def test_bad_log_and_metrics_settings_are_one_line(
    argv: list[str],
    env: dict[str, str],
    said: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main([*argv, "validate", "/dev/null"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vcf-agent: ") and said in err and len(err.strip().splitlines()) == 1, err


def test_a_json_line_names_service_trace_span_and_job() -> None:
    formatter = JsonLogFormatter("router")
    exporter = InMemorySpanExporter()
    assert tracing.configure("router", exporter=exporter)
    try:
        token = current_job_id.set("job-1")
        try:
            with tracing.current_span("router.route", "router") as span:
                assert span is not None
                record = logging.LogRecord("vcf_agent.x", logging.INFO, __file__, 1, "routed %d", (3,), None)
                line = json.loads(formatter.format(record))
                context = span.get_span_context()
        finally:
            current_job_id.reset(token)
    finally:
        tracing.shutdown()
    assert line["service"] == "router" and line["level"] == "INFO" and line["message"] == "routed 3"
    assert line["trace_id"] == f"{context.trace_id:032x}" and line["span_id"] == f"{context.span_id:016x}"
    assert line["job_id"] == "job-1" and line["timestamp"].endswith("+00:00")
    outside = json.loads(
        formatter.format(logging.LogRecord("x", logging.WARNING, __file__, 1, "m", (), None))
    )
    assert "trace_id" not in outside and "job_id" not in outside
