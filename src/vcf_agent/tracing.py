"""OpenTelemetry traces across the five services: one trace per job.

Tracing is on only when the standard OTLP endpoint variable is set
(OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) and
OTEL_SDK_DISABLED is not true; the SDK reads every other OTEL_* variable itself
(OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER and its
argument, the exporter's headers, timeout and certificates). When it is off no
provider is installed and every helper here returns at its first line, so the
hot path pays one boolean test per message.

Trace context travels in stream message headers, written and read by
OpenTelemetry's own propagators (W3C traceparent/tracestate by default,
OTEL_PROPAGATORS honoured). Ingest opens a span per job; every batch at every
stage is a span under the context of the message it came from, so a job's
spans form one trace. A stage that merges many messages into one piece of work
(the writer's store transactions) parents its span on one of them and links
the others.

Spans carry ids, counts and stage names only: never sample names or genotypes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, Span, SpanKind

log = logging.getLogger(__name__)

# Milliseconds since the epoch at which ingest published the variants a message is about; carried
# from stage to stage so the writer can measure ingest-to-stored latency per batch.
HEADER_INGESTED_AT = "ingested-at-ms"

# The sampling and resource settings the SDK reads itself, logged when tracing starts (exporter
# headers are left out: they may hold credentials).
SDK_SETTINGS = (
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_PROPAGATORS",
    "OTEL_BSP_SCHEDULE_DELAY",
)

# The SDK's parent-based samplers (the default, and every `parentbased_*` OTEL_TRACES_SAMPLER) keep
# a remote parent's decision: under an unsampled parent nothing is ever recorded.
_PARENT_BASED_SAMPLERS = ("parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio")
# The W3C header whose last field carries the sampled flag (bit 0).
_TRACEPARENT = "traceparent"

_enabled = False
_provider: Any = None
_tracer: trace.Tracer | None = None
# With a parent-based sampler and W3C propagation, a stage passes an unsampled message's trace
# headers (every field the propagators write) on as they came instead of starting a span that
# would not be recorded: at 1% sampling that is 99% of messages, so they cost what tracing off costs.
_passed_through: tuple[str, ...] = ()

ServiceName = str


def enabled() -> bool:
    return _enabled


def configure(service: str, *, exporter: Any = None) -> bool:
    """Install the SDK's tracer provider for this process when OTLP export is configured.

    `exporter` (a SpanExporter) replaces OTLP, for tests; returns whether tracing is on.
    """
    global _enabled, _provider, _tracer, _passed_through
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    disabled = os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    if exporter is None and (not endpoint or disabled):
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    # OTEL_SERVICE_NAME, when set, wins over the service's own name (Resource.create merges it last).
    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or f"vcf-agent-{service}"})
    provider = TracerProvider(resource=resource)
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    if _provider is None:
        trace.set_tracer_provider(provider)
    _provider = provider
    _tracer = provider.get_tracer("vcf_agent")
    _passed_through = _pass_through_fields(provider)
    _enabled = True
    settings = {name: os.environ[name] for name in SDK_SETTINGS if name in os.environ}
    log.info("tracing on: OTLP to %s %s", endpoint or "a test exporter", settings)
    return True


def shutdown() -> None:
    """Flush what the batch processor holds (called when a service stops)."""
    global _enabled
    if _provider is not None:
        _provider.force_flush()
    _enabled = False


def _pass_through_fields(provider: Any) -> tuple[str, ...]:
    """The header fields to pass on unchanged under an unsampled parent; () when that is not safe
    (a sampler that may record under an unsampled parent, or no W3C trace context propagator)."""
    from opentelemetry.sdk.trace.sampling import ParentBased

    named = os.environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    fields = propagate.get_global_textmap().fields
    if (
        named in _PARENT_BASED_SAMPLERS
        and isinstance(provider.sampler, ParentBased)
        and _TRACEPARENT in fields
    ):
        return tuple(sorted(fields))
    return ()


def _unsampled(parent: Mapping[str, str]) -> bool:
    """Whether `parent` headers carry a W3C context (version-traceid-spanid-flags) whose sampled
    flag, bit 0 of the flags byte, is off (its low hex digit is even)."""
    fields = parent.get(_TRACEPARENT, "").split("-")
    return (
        len(fields) >= 4
        and len(fields[1]) == 32
        and fields[1] != "0" * 32
        and len(fields[2]) == 16
        and len(fields[3]) == 2
        and fields[3][1] in "02468ace"
    )


def grpc_server_interceptors() -> list[Any]:
    """The instrumentation's aio server interceptor (health probes excluded), when tracing is on."""
    if not _enabled:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    health = filters.negate(filters.health_check())
    return [aio_server_interceptor(tracer_provider=_provider, filter_=health)]  # type: ignore[no-untyped-call]


def grpc_client_interceptors() -> list[Any]:
    if not _enabled:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors, filters

    health = filters.negate(filters.health_check())
    return list(aio_client_interceptors(tracer_provider=_provider, filter_=health))  # type: ignore[no-untyped-call]


def _context(headers: Mapping[str, str] | None) -> otel_context.Context | None:
    return propagate.extract(headers) if headers else None


def _links(others: Sequence[Mapping[str, str]]) -> list[Link]:
    links = []
    for headers in others:
        span_context = trace.get_current_span(propagate.extract(headers)).get_span_context()
        if span_context.is_valid:
            links.append(Link(span_context))
    return links


def start_span(
    name: str,
    service: ServiceName,
    parent: Mapping[str, str] | None = None,
    *,
    start_ns: int | None = None,
    links: Sequence[Mapping[str, str]] = (),
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, str | int | bool] | None = None,
) -> Span | None:
    """A span of `service` under the trace context in `parent` headers (None: the current context).

    None when tracing is off. The caller ends it (span.end()).
    """
    if not _enabled:
        return None
    assert _tracer is not None
    return _tracer.start_span(
        name,
        context=_context(parent),
        kind=kind,
        links=_links(links),
        start_time=start_ns,
        attributes={"vcf_agent.service": service, **(attributes or {})},
    )


def headers_of(span: Span | None, carried_from: Mapping[str, str] | None = None) -> dict[str, str]:
    """Headers that carry `span`'s context (and the ingest time of `carried_from`) to the next stage."""
    headers: dict[str, str] = {}
    if carried_from is not None:
        ingested = carried_from.get(HEADER_INGESTED_AT)
        if ingested is not None:
            headers[HEADER_INGESTED_AT] = ingested
    if span is not None:
        propagate.inject(headers, context=trace.set_span_in_context(span))
    return headers


def stage_headers(
    name: str,
    service: ServiceName,
    parent: Mapping[str, str],
    *,
    start_ns: int | None = None,
    links: Sequence[Mapping[str, str]] = (),
    **attributes: str | int | bool,
) -> dict[str, str]:
    """Record one finished span of a stage's work on the message with `parent` headers; returns the
    headers for what the stage publishes from it (its trace context and the carried ingest time)."""
    if not _enabled:
        ingested = parent.get(HEADER_INGESTED_AT)
        return {} if ingested is None else {HEADER_INGESTED_AT: ingested}
    if _passed_through and _unsampled(parent):
        return {name: parent[name] for name in (*_passed_through, HEADER_INGESTED_AT) if name in parent}
    span = start_span(name, service, parent, start_ns=start_ns, links=links, attributes=attributes)
    assert span is not None
    span.end()
    return headers_of(span, parent)


@contextlib.contextmanager
def current_span(
    name: str, service: ServiceName, parent: Mapping[str, str] | None = None, **attributes: str | int | bool
) -> Iterator[Span | None]:
    """A span made current for the block (log records inside it carry its ids)."""
    if not _enabled:
        yield None
        return
    span = start_span(name, service, parent, attributes=attributes)
    assert span is not None
    with trace.use_span(span, end_on_exit=True):
        yield span


def current_headers() -> dict[str, str]:
    """The current span's context as message headers ({} with tracing off)."""
    if not _enabled:
        return {}
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers


def ingested_now() -> dict[str, str]:
    """The ingest-time header of a batch published now."""
    return {HEADER_INGESTED_AT: str(time.time_ns() // 1_000_000)}


def current_ids() -> tuple[str, str]:
    """(trace id, span id) of the current span in hex, or ("", "") outside one or with tracing off."""
    if not _enabled:
        return "", ""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return "", ""
    return f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"
