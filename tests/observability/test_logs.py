"""--log-format json lines carry the service, trace, span and job ids; bad settings are one line."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from vcf_agent import tracing
from vcf_agent.app.cli import main
from vcf_agent.bus import StreamSpec, open_bus
from vcf_agent.observability import JsonLogFormatter, log_context
from vcf_agent.processing import DeadLetterSink
from vcf_agent.v1 import events_pb2


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
        with log_context(job_id="job-1"), tracing.current_span("router.route", "router") as span:
            assert span is not None
            record = logging.LogRecord("vcf_agent.x", logging.INFO, __file__, 1, "routed %d", (3,), None)
            line = json.loads(formatter.format(record))
            context = span.get_span_context()
    finally:
        tracing.shutdown()
    assert line["service"] == "router" and line["level"] == "INFO" and line["message"] == "routed 3"
    assert line["trace_id"] == f"{context.trace_id:032x}" and line["span_id"] == f"{context.span_id:016x}"
    assert line["job_id"] == "job-1" and line["timestamp"].endswith("+00:00")
    outside = json.loads(
        formatter.format(logging.LogRecord("x", logging.WARNING, __file__, 1, "m", (), None))
    )
    assert "trace_id" not in outside and "job_id" not in outside


def test_a_json_line_names_the_job_and_variant_of_its_log_context() -> None:
    formatter = JsonLogFormatter("router")

    def line(**extra: str) -> dict[str, str]:
        record = logging.LogRecord("vcf_agent.x", logging.INFO, __file__, 1, "m", (), None)
        record.__dict__.update(extra)
        parsed: dict[str, str] = json.loads(formatter.format(record))
        return parsed

    with log_context(job_id="job-1", correlation_id="c0ffee"):
        inside = line()
        given = line(correlation_id="beef")
        with log_context(correlation_id="cafe"):
            nested = line()
        back = line()
    after = line()
    assert (inside["job_id"], inside["correlation_id"]) == ("job-1", "c0ffee")
    assert given["correlation_id"] == "beef"  # the call's own extra wins
    assert (nested["job_id"], nested["correlation_id"]) == ("job-1", "cafe")
    assert back["correlation_id"] == "c0ffee"
    assert "job_id" not in after and "correlation_id" not in after


async def test_a_dead_letter_is_logged_with_its_job_and_variant(caplog: pytest.LogCaptureFixture) -> None:
    letter = events_pb2.DeadLetter(
        job_id="job-7",
        correlation_id="9f" * 16,
        source_stream="analysis-requests",
        error_code="provider_failed",
        reason="local: circuit open",
    )
    async with open_bus("memory://dead-letter-log") as bus:
        await bus.ensure_streams([StreamSpec("dead-letters", 1)])
        with caplog.at_level(logging.INFO, logger="vcf_agent.processing"):
            await DeadLetterSink(bus, "dead-letters", "router").send([letter])
    (record,) = [r for r in caplog.records if r.name == "vcf_agent.processing"]
    line = json.loads(JsonLogFormatter("router").format(record))
    assert line["job_id"] == "job-7" and line["correlation_id"] == "9f" * 16
    assert line["message"] == "dead letter from analysis-requests (provider_failed): local: circuit open"
