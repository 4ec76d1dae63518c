"""Sampling as the OTEL_* variables set it: with a parent-based sampler (1% in production) a stage
passes an unsampled message's trace context on as it came, recording nothing and costing what
tracing off costs; a sampled one gets its child span; a sampler that ignores the parent still
records under an unsampled one."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from vcf_agent import tracing

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN = "b7ad6b7169203331"


def message(flags: str) -> dict[str, str]:
    return {
        "traceparent": f"00-{TRACE_ID}-{PARENT_SPAN}-{flags}",
        "tracestate": "lab=1",
        "ingested-at-ms": "1700000000000",
    }


def configured(monkeypatch: pytest.MonkeyPatch, sampler: str) -> InMemorySpanExporter:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.01")
    exporter = InMemorySpanExporter()
    assert tracing.configure("router", exporter=exporter)
    return exporter


def test_parent_based_sampling_passes_an_unsampled_context_on_and_continues_a_sampled_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter = configured(monkeypatch, "parentbased_traceidratio")
    try:
        unsampled = tracing.stage_headers("router.route", "router", message("00"), variants=3)
        sampled = tracing.stage_headers("router.route", "router", message("01"), variants=3)
    finally:
        tracing.shutdown()
    assert unsampled == message("00")
    _, trace_id, span_id, flags = sampled["traceparent"].split("-")
    assert (trace_id, flags) == (TRACE_ID, "01") and span_id != PARENT_SPAN
    assert sampled["ingested-at-ms"] == "1700000000000"
    (span,) = exporter.get_finished_spans()
    assert span.parent is not None and f"{span.parent.span_id:016x}" == PARENT_SPAN
    assert f"{span.context.span_id:016x}" == span_id


def test_a_sampler_that_ignores_the_parent_records_under_an_unsampled_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter = configured(monkeypatch, "always_on")
    try:
        headers = tracing.stage_headers("router.route", "router", message("00"))
    finally:
        tracing.shutdown()
    (span,) = exporter.get_finished_spans()
    assert headers["traceparent"] != message("00")["traceparent"]
    assert f"{span.context.trace_id:032x}" == TRACE_ID
