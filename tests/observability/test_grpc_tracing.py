"""The gRPC instrumentation as the services and the CLI's clients install it: every call is a
server and a client span, health probes are not; and the standard OTEL_* variables decide
whether tracing is on and what the spans' resource says."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from vcf_agent import tracing
from vcf_agent._client_channel import open_channel
from vcf_agent.config import ClientSettings


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:  # type: ignore[type-arg]
    return request


async def test_calls_are_spans_and_health_probes_are_not() -> None:
    exporter = InMemorySpanExporter()
    assert tracing.configure("ingest", exporter=exporter)
    try:
        server = grpc.aio.server(interceptors=tracing.grpc_server_interceptors())
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        echo = grpc.unary_unary_rpc_method_handler(_echo)
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Echo", {"Say": echo})])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with open_channel(f"127.0.0.1:{port}", ClientSettings()) as channel:
                probe = health_pb2_grpc.HealthStub(channel)
                await probe.Check(health_pb2.HealthCheckRequest(), timeout=10)
                say = channel.unary_unary("/test.Echo/Say")
                assert await say(b"hi", timeout=10) == b"hi"
                await probe.Check(health_pb2.HealthCheckRequest(), timeout=10)
        finally:
            await server.stop(None)
    finally:
        tracing.shutdown()
    spans = exporter.get_finished_spans()
    by_kind = {s.kind: s for s in spans}
    assert len(spans) == 2 and {s.name for s in spans} == {"/test.Echo/Say"}
    client, server_span = by_kind[SpanKind.CLIENT], by_kind[SpanKind.SERVER]
    assert server_span.parent is not None and server_span.parent.span_id == client.context.span_id


def test_tracing_follows_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    assert not tracing.configure("router")  # no endpoint: off
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:4317")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not tracing.configure("router")  # the SDK switched off
    assert not tracing.enabled()

    monkeypatch.delenv("OTEL_SDK_DISABLED")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "lab-router")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging")
    exporter = InMemorySpanExporter()
    assert tracing.configure("router", exporter=exporter)
    try:
        tracing.stage_headers("router.route", "router", {})
    finally:
        tracing.shutdown()
    (span,) = exporter.get_finished_spans()
    assert span.resource.attributes["service.name"] == "lab-router"
    assert span.resource.attributes["deployment.environment"] == "staging"
