"""--log-format json lines carry the service, trace, span and job ids; bad settings are one line.

The lines about a job (a provider failing for it, a subscriber of it dropped) are captured from
the real code paths: the router calling a simulated vendor over HTTP, a real WebSocket client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.observability._log_lines import json_log_lines, of
from tests.router.test_routing import Harness, provider, router
from vcf_agent import tracing
from vcf_agent.analysis import RouterSettings
from vcf_agent.app.benchmarks import synthetic_batch
from vcf_agent.app.cli import main
from vcf_agent.bus import OutgoingMessage, StreamSpec, open_bus
from vcf_agent.localdev import SimulatedVendor
from vcf_agent.observability import JsonLogFormatter, log_context
from vcf_agent.processing import DeadLetterSink
from vcf_agent.progress import progress_notification
from vcf_agent.schema import HEADER_JOB, decode, encode
from vcf_agent.services.notifier import ProgressHub, WebSocketGateway
from vcf_agent.v1 import events_pb2

# What must never reach a log line: a sample's name and its genotype (0/1 in the batch below).
SAMPLE = "NA12878-private"
GENOTYPES = ("0/1", "0|1", "[0, 1]")


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


async def _publish_job(harness: Harness, job: str, variants: int) -> set[str]:
    """A job's batch as ingest publishes it (job-id header, a named sample); its correlation ids."""
    batch = synthetic_batch(0, variants)
    del batch.providers[:]
    batch.providers.extend(["local", "openai"])
    for variant in batch.variants:
        variant.job_id = job
        variant.correlation_id = f"{job}-{variant.record_index:04d}"
        variant.genotypes.samples[0] = SAMPLE
    payload, headers = encode(batch)
    headers[HEADER_JOB] = job
    topology = harness.settings.topology
    await harness.bus.publish(topology.variants, [OutgoingMessage(payload, job.encode(), headers)])
    return {variant.correlation_id for variant in batch.variants}


async def _job_headers(harness: Harness, stream: str, count: int) -> list[str]:
    """The job-id header of the first `count` records on a stream."""
    found: list[str] = []
    async with (
        harness.bus.consumer([stream], f"headers-{uuid.uuid4().hex}", start="earliest") as consumer,
        asyncio.timeout(60),
    ):
        while len(found) < count:
            found.extend(record.headers.get(HEADER_JOB, "") for record in await consumer.poll(100, 0.2))
    return found


async def test_a_failing_provider_is_logged_naming_the_job_and_variant_never_the_sample() -> None:
    async with SimulatedVendor("openai", lambda v, s: v.error(500, "upstream exploded")) as broken:
        config = RouterSettings(
            providers={
                "openai": provider(
                    broken, max_concurrency=2, breaker_failures=3, max_attempts=2, breaker_reset_s=60
                )
            }
        )
        with json_log_lines("router") as lines:
            async with router(config, ("local", "openai")) as harness:
                variants = await _publish_job(harness, "job-logs", 6)
                results = await harness.collect("openai", 6)
                topology = harness.settings.topology
                # Downstream stages read whose records these are without decoding them.
                requests = await _job_headers(harness, topology.analysis_requests, 2)
                answers = await _job_headers(harness, topology.analysis_results, 2)
    assert {r.correlation_id for r in results} == variants and len(harness.letters) == 6
    assert requests == answers == ["job-logs", "job-logs"]
    lanes = of(lines, "vcf_agent.analysis._dispatch")
    failed_calls = [line for line in lanes if "HTTP 500" in line["message"]]
    opened = [line for line in lanes if "circuit opened" in line["message"]]
    assert failed_calls and len(opened) == 1, lanes
    assert all(line["level"] == "WARNING" for line in lanes)
    # Each line about a call names the job and the variant it was for.
    for line in lanes:
        assert line["job_id"] == "job-logs" and line["correlation_id"] in variants, line
    letters = [line for line in of(lines, "vcf_agent.processing") if "dead letter" in line["message"]]
    assert sorted(line["correlation_id"] for line in letters) == sorted(variants)
    assert {line["job_id"] for line in letters} == {"job-logs"}
    written = "\n".join(json.dumps(line) for line in lines)
    assert SAMPLE not in written and not any(genotype in written for genotype in GENOTYPES)


async def test_a_dropped_subscriber_is_logged_naming_the_job() -> None:
    hub = ProgressHub()
    gateway = WebSocketGateway(hub, "127.0.0.1", 0)
    await gateway.start()

    def progress(done: int) -> None:
        message = progress_notification(
            "job-slow", "tenant-1", events_pb2.STAGE_STORAGE, events_pb2.JOB_STATE_STORING, done=done
        )
        # Every stage's progress names its job in a header too (for the notifier's dead letters).
        assert message.headers[HEADER_JOB] == "job-slow"
        hub.publish(decode(message.value, message.headers, events_pb2.Notification))

    try:
        async with connect(f"ws://127.0.0.1:{gateway.port}/jobs/job-slow") as socket:
            progress(0)
            # Subscribed once the first event arrived (as the latest, or live).
            assert json.loads(await asyncio.wait_for(socket.recv(), 30))["job_id"] == "job-slow"
            with json_log_lines("notifier") as lines:
                # Published without a pause, so the subscriber cannot keep up: its queue fills.
                for done in range(1, 1_100):
                    progress(done)
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(60):
                    while True:
                        await socket.recv()
    finally:
        await gateway.stop()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    [dropped] = of(lines, "vcf_agent.services.notifier._hub")
    assert dropped["level"] == "WARNING" and dropped["job_id"] == "job-slow"
    assert dropped["message"] == "dropped a websocket subscriber: 1000 events behind; it may reconnect"
