"""Bounds on every field of every request the services accept, checked before any servicer runs.

One table, REQUEST_LIMITS, holds a bound for each string, bytes, number and
enum field reachable from the requests of IngestService, QueryService,
ControlService and NotifierService (a test walks the descriptors so no field
is left out, and the README table is checked against it). The control plane
server checks each request message against it, the messages of a client
stream one by one as they arrive, and answers INVALID_ARGUMENT naming the
field by its path (`metadata.tenant_id`, `refs[3].offset`) with the rule it
broke, never the value: a 5 MB job id is refused without being echoed, and a
region outside int64 never reaches a store's query engine.

Empty strings and zero numbers are proto3's "not set" and always pass; the
servicers decide which fields are required.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from vcf_agent.control._auth import OPEN_SERVICES, Behavior, Handler, _rebuild
from vcf_agent.control._errors import invalid_argument
from vcf_agent.schema import INT64_MAX, TENANT_ID_PATTERN, parse_region

INT32_MAX = (1 << 31) - 1
# Largest page any list RPC serves, in rows.
MAX_PAGE_ROWS = 1000
# Largest QueryVariants page in serialized bytes: half of gRPC's default 4 MiB client receive
# limit, so a page of many-sample variants still reaches a client with default settings.
MAX_PAGE_BYTES = 2 << 20
# Timestamps the protobuf runtime can convert: 0001-01-01 to 9999-12-31.
_TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)


@dataclass(frozen=True, slots=True)
class Bound:
    """What one field may hold; `rule` is how the README and the error describe it."""

    rule: str
    max_chars: int = 0
    pattern: re.Pattern[str] | None = None
    max_bytes: int = 0
    minimum: float | None = None
    maximum: float | None = None
    # Repeated fields: most entries accepted (0: not repeated).
    max_items: int = 0
    # Extra check on a string; raises ValueError with a description that never repeats the value.
    check: Callable[[str], object] | None = None

    def violation(self, value: object) -> str | None:
        """Why `value` breaks this bound, or None."""
        if isinstance(value, str):
            if len(value) > self.max_chars:
                return f"at most {self.max_chars} characters ({self.rule})"
            if self.pattern is not None and value and not self.pattern.fullmatch(value):
                return self.rule
            if self.check is not None and value:
                try:
                    self.check(value)
                except ValueError as exc:
                    return f"{exc} ({self.rule})"
            return None
        if isinstance(value, bytes):
            return f"at most {self.max_bytes} bytes" if len(value) > self.max_bytes else None
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number ({self.rule})"
        assert isinstance(value, int | float)
        low = -math.inf if self.minimum is None else self.minimum
        high = math.inf if self.maximum is None else self.maximum
        return None if low <= value <= high else self.rule


def text(max_chars: int, rule: str = "", *, pattern: str | None = None, items: int = 0) -> Bound:
    return Bound(
        rule or f"text of at most {max_chars} characters",
        max_chars=max_chars,
        pattern=re.compile(pattern) if pattern else None,
        max_items=items,
    )


def number(minimum: float, maximum: float) -> Bound:
    low = f"{minimum:g}" if isinstance(minimum, float) else str(minimum)
    high = f"{maximum:g}" if isinstance(maximum, float) else str(maximum)
    return Bound(f"from {low} to {high}", minimum=minimum, maximum=maximum)


def _name(max_chars: int, what: str, *, items: int = 0) -> Bound:
    """Identifiers: letters and digits, then also '.', '_', ':' and '-'."""
    rule = f"{what}: 1-{max_chars} letters, digits, '.', '_', ':' or '-', starting with a letter or digit"
    if items:
        rule += f"; at most {items}"
    return text(max_chars, rule, pattern=rf"[A-Za-z0-9][A-Za-z0-9._:-]{{0,{max_chars - 1}}}", items=items)


# No '/', ':' or NUL: tenant ids are joined into stored keys with those (see vcf_agent.schema._ids).
TENANT_ID = Bound(
    "a tenant id: 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit",
    max_chars=63,
    pattern=TENANT_ID_PATTERN,
)
ID = _name(128, "an id")
STREAM_OR_GROUP = _name(128, "a stream or consumer group name")
FLAG_KEY = text(
    200, "a flag key: 1-200 letters, digits, '_', '.', ':' or '-'", pattern=r"[A-Za-z0-9_.:-]{1,200}"
)
PAGE_SIZE = number(0, MAX_PAGE_ROWS)
PAGE_TOKEN = text(18, "a page token this service issued (digits)", pattern=r"[0-9]{1,18}")
REGION = Bound("chr, chr:pos or chr:start-end, positions 0 to 2^63-1", max_chars=256, check=parse_region)
COUNT64 = number(0, INT64_MAX)

REQUEST_LIMITS: Mapping[str, Bound] = {
    # IngestService
    "vcf_agent.v1.SubmitVcfMetadata.tenant_id": TENANT_ID,
    "vcf_agent.v1.SubmitVcfMetadata.file_name": text(255),
    "vcf_agent.v1.SubmitVcfMetadata.sample_ids": text(
        256, "sample names of at most 256 characters; at most 10000", items=10_000
    ),
    "vcf_agent.v1.SubmitVcfMetadata.priority": number(0, 1000),
    "vcf_agent.v1.SubmitVcfMetadata.providers": _name(64, "provider or pool names", items=16),
    "vcf_agent.v1.SubmitVcfMetadata.idempotency_key": text(128),
    "vcf_agent.v1.SubmitVcfMetadata.path": text(4096, "a path or file:// URI of at most 4096 characters"),
    "vcf_agent.v1.SubmitVcfMetadata.user_id": text(128),
    "vcf_agent.v1.SubmitVcfRequest.chunk": Bound(
        "file bytes, at most 16 MiB per message", max_bytes=16 << 20
    ),
    "vcf_agent.v1.GetJobRequest.job_id": ID,
    "vcf_agent.v1.WatchJobRequest.job_id": ID,
    "vcf_agent.v1.ListJobsRequest.tenant_id": TENANT_ID,
    "vcf_agent.v1.ListJobsRequest.page_size": PAGE_SIZE,
    "vcf_agent.v1.ListJobsRequest.page_token": PAGE_TOKEN,
    "vcf_agent.v1.CancelJobRequest.job_id": ID,
    # QueryService
    "vcf_agent.v1.GetVariantRequest.correlation_id": ID,
    "vcf_agent.v1.QueryVariantsRequest.job_id": ID,
    "vcf_agent.v1.QueryVariantsRequest.region": REGION,
    "vcf_agent.v1.QueryVariantsRequest.gene": text(128),
    "vcf_agent.v1.QueryVariantsRequest.sample": text(256),
    "vcf_agent.v1.QueryVariantsRequest.classification": text(64),
    "vcf_agent.v1.QueryVariantsRequest.page_size": PAGE_SIZE,
    "vcf_agent.v1.QueryVariantsRequest.page_token": PAGE_TOKEN,
    "vcf_agent.v1.QueryVariantsRequest.tenant_id": TENANT_ID,
    "vcf_agent.v1.GetStoreStatsRequest.job_id": ID,
    # ControlService
    "vcf_agent.v1.Flag.key": FLAG_KEY,
    "vcf_agent.v1.Flag.type": Bound("a FlagType value"),
    "vcf_agent.v1.FlagValue.string_value": text(4096),
    "vcf_agent.v1.FlagValue.number_value": Bound("any finite number"),
    "vcf_agent.v1.Flag.percentage": number(0, 100),
    "vcf_agent.v1.Flag.bucket_by": _name(64, "a context attribute name"),
    "vcf_agent.v1.Flag.description": text(1024),
    "vcf_agent.v1.Flag.version": COUNT64,
    "vcf_agent.v1.Flag.updated_by": text(128),
    "google.protobuf.Timestamp.seconds": number(*_TIMESTAMP_SECONDS),
    "google.protobuf.Timestamp.nanos": number(0, 999_999_999),
    "vcf_agent.v1.SetFlagRequest.expected_version": COUNT64,
    "vcf_agent.v1.EvaluateFlagRequest.key": FLAG_KEY,
    "vcf_agent.v1.EvaluateFlagRequest.targeting_key": text(256),
    "vcf_agent.v1.EvaluateFlagRequest.context": Bound("at most 64 entries", max_items=64),
    "vcf_agent.v1.EvaluateFlagRequest.ContextEntry.key": _name(64, "a context attribute name"),
    "vcf_agent.v1.EvaluateFlagRequest.ContextEntry.value": text(256),
    "vcf_agent.v1.WatchFlagsRequest.keys": Bound(
        f"at most 1000 flag keys ({FLAG_KEY.rule})", max_chars=200, pattern=FLAG_KEY.pattern, max_items=1000
    ),
    "vcf_agent.v1.ListFlagAuditRequest.key": FLAG_KEY,
    "vcf_agent.v1.ListFlagAuditRequest.page_size": PAGE_SIZE,
    "vcf_agent.v1.ListFlagAuditRequest.page_token": PAGE_TOKEN,
    "vcf_agent.v1.ListCheckpointsRequest.group": STREAM_OR_GROUP,
    "vcf_agent.v1.ResetCheckpointRequest.group": STREAM_OR_GROUP,
    "vcf_agent.v1.ResetCheckpointRequest.stream": STREAM_OR_GROUP,
    "vcf_agent.v1.ResetCheckpointRequest.partition": number(0, INT32_MAX),
    "vcf_agent.v1.ResetCheckpointRequest.offset": COUNT64,
    "vcf_agent.v1.ConsumptionRequest.group": STREAM_OR_GROUP,
    "vcf_agent.v1.ReplayJobRequest.job_id": ID,
    "vcf_agent.v1.ListDeadLettersRequest.job_id": ID,
    "vcf_agent.v1.ListDeadLettersRequest.source_stream": STREAM_OR_GROUP,
    "vcf_agent.v1.ListDeadLettersRequest.page_size": PAGE_SIZE,
    "vcf_agent.v1.ListDeadLettersRequest.page_token": PAGE_TOKEN,
    "vcf_agent.v1.RedriveDeadLettersRequest.refs": Bound("at most 10000 refs", max_items=10_000),
    "vcf_agent.v1.DeadLetterRef.partition": number(0, INT32_MAX),
    "vcf_agent.v1.DeadLetterRef.offset": COUNT64,
    "vcf_agent.v1.RedriveDeadLettersRequest.job_id": ID,
    "vcf_agent.v1.RedriveDeadLettersRequest.source_stream": STREAM_OR_GROUP,
    "vcf_agent.v1.CompareModesRequest.tenant_id": TENANT_ID,
    # NotifierService
    "vcf_agent.v1.WatchRequest.job_id": ID,
    "vcf_agent.v1.WatchRequest.tenant_id": TENANT_ID,
    "vcf_agent.v1.CreateWebSocketTicketRequest.job_id": ID,
    "vcf_agent.v1.CreateWebSocketTicketRequest.tenant_id": TENANT_ID,
}


@dataclass(frozen=True, slots=True)
class LimitViolation:
    """The first field of a request over its bound: its path in the request and why."""

    field: str
    description: str


def request_violation(message: Message) -> LimitViolation | None:
    """The first field of `message` that breaks its bound, or None."""
    return _violation(message, "")


def _violation(message: Message, prefix: str) -> LimitViolation | None:
    for field, value in message.ListFields():
        path = prefix + field.name
        bound = REQUEST_LIMITS.get(field.full_name)
        if field.is_repeated and bound is not None and len(value) > bound.max_items:
            return LimitViolation(path, f"at most {bound.max_items} entries")
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            for key, item in value.items():
                found = _scalar_violation(entry.fields_by_name["key"], key, path)
                found = found or _scalar_violation(entry.fields_by_name["value"], item, path)
                if found:
                    return found
        elif entry is not None:
            items = value if field.is_repeated else [value]
            for index, item in enumerate(items):
                inner = f"{path}[{index}]." if field.is_repeated else f"{path}."
                found = _violation(item, inner)
                if found:
                    return found
        else:
            for item in value if field.is_repeated else [value]:
                found = _scalar_violation(field, item, path)
                if found:
                    return found
    return None


def _scalar_violation(field: FieldDescriptor, value: object, path: str) -> LimitViolation | None:
    if field.type == FieldDescriptor.TYPE_BOOL:
        return None
    if field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None and isinstance(value, int)
        known = value in field.enum_type.values_by_number
        return None if known else LimitViolation(path, f"one of {', '.join(field.enum_type.values_by_name)}")
    # A field without a bound is a gap in the table, which a test rules out; refuse rather than pass.
    bound = REQUEST_LIMITS.get(field.full_name)
    if bound is None:
        return LimitViolation(path, "this field has no documented bound")
    description = bound.violation(value)
    return None if description is None else LimitViolation(path, description)


def request_fields(root: Descriptor) -> list[FieldDescriptor]:
    """Every field reachable from a request type, each once: what REQUEST_LIMITS must cover."""
    found: list[FieldDescriptor] = []
    seen: set[str] = set()
    pending = [root]
    while pending:
        message = pending.pop()
        if message.full_name in seen:
            continue
        seen.add(message.full_name)
        for field in message.fields:
            found.append(field)
            if field.message_type is not None:
                pending.append(field.message_type)
    return found


class RequestLimitInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Checks each request message against REQUEST_LIMITS before the servicer sees it."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        service = handler_call_details.method.strip("/").split("/")[0]
        if handler is None or service in OPEN_SERVICES:
            return handler
        return _rebuild(handler, _checked_stream if handler.request_streaming else _checked)


async def _enforce(message: Message, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    found = request_violation(message)
    if found is not None:
        await invalid_argument(context, found.field, found.description)


def _checked(behavior: Behavior) -> Behavior:
    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            await _enforce(request, context)
            async for item in behavior(request, context):
                yield item

        return stream

    async def call(request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await _enforce(request, context)
        return await behavior(request, context)

    return call


def _checked_stream(behavior: Behavior) -> Behavior:
    """Client streams: each message is checked as the servicer reads it, so none is held back."""

    async def checked(
        requests: AsyncIterator[Message], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Message]:
        async for request in requests:
            await _enforce(request, context)
            yield request

    if inspect.isasyncgenfunction(behavior):

        async def stream(
            requests: AsyncIterator[Message], context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            async for item in behavior(checked(requests, context), context):
                yield item

        return stream

    async def call(requests: AsyncIterator[Message], context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await behavior(checked(requests, context), context)

    return call
