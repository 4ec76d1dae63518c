"""Encoding of protobuf messages onto the bus: headers name the type, version and codec."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TypeVar

import zstandard
from google.protobuf.message import DecodeError, Message

from vcf_agent import tracing

# Version 2: a VariantMessage's genotypes travel column-wise (GenotypeColumns, field 21); version 1's
# per-call GenotypeCall submessages (field 18) would parse as a variant without genotypes, so a
# version-1 payload is refused, never read.
SCHEMA_VERSION = "2"

HEADER_SCHEMA_VERSION = "schema-version"
HEADER_CONTENT_ENCODING = "content-encoding"
HEADER_MESSAGE_TYPE = "message-type"
HEADER_TENANT = "tenant-id"
# On records that carry one job's variants (vcf-variants, database-writes): whose and how
# many, readable when the payload is not, so a dead letter still says what was lost.
HEADER_JOB = "job-id"
HEADER_VARIANT_COUNT = "variant-count"

ENCODING_IDENTITY = "identity"
ENCODING_ZSTD = "zstd"

# Below this size compression costs more CPU than it saves bytes.
DEFAULT_COMPRESSION_THRESHOLD = 4096

M = TypeVar("M", bound=Message)


class _ZstdContexts(threading.local):
    """zstd contexts are not thread-safe, and encoding runs on reader and worker threads too."""

    def __init__(self) -> None:
        self.compressor = zstandard.ZstdCompressor(level=1)
        self.decompressor = zstandard.ZstdDecompressor()


_zstd = _ZstdContexts()


class PayloadError(ValueError):
    """A payload could not be decoded; carries enough to dead-letter it."""


def encode_serialized(
    raw: bytes,
    type_name: str,
    *,
    tenant_id: str = "",
    trace_headers: Mapping[str, str] | None = None,
    compression_threshold: int = DEFAULT_COMPRESSION_THRESHOLD,
) -> tuple[bytes, dict[str, str]]:
    """Like encode(), for a message the caller already serialized (the ingest hot path).

    `trace_headers` (vcf_agent.tracing) carry the trace context and ingest time to the next stage.
    """
    headers = {HEADER_SCHEMA_VERSION: SCHEMA_VERSION, HEADER_MESSAGE_TYPE: type_name}
    if tenant_id:
        headers[HEADER_TENANT] = tenant_id
    if trace_headers:
        headers.update(trace_headers)
    elif tracing.enabled():
        # Published inside a stage's span (ingest's job span, a stage's batch span): its context.
        headers.update(tracing.current_headers())
    if len(raw) >= compression_threshold:
        headers[HEADER_CONTENT_ENCODING] = ENCODING_ZSTD
        return _zstd.compressor.compress(raw), headers
    headers[HEADER_CONTENT_ENCODING] = ENCODING_IDENTITY
    return raw, headers


def encode(
    message: Message,
    *,
    tenant_id: str = "",
    trace_headers: Mapping[str, str] | None = None,
    compression_threshold: int = DEFAULT_COMPRESSION_THRESHOLD,
) -> tuple[bytes, dict[str, str]]:
    """Serialize, compressing with zstd above the threshold; returns (payload, headers)."""
    return encode_serialized(
        message.SerializeToString(),
        message.DESCRIPTOR.full_name,
        tenant_id=tenant_id,
        trace_headers=trace_headers,
        compression_threshold=compression_threshold,
    )


def message_type(headers: Mapping[str, str]) -> str:
    return headers.get(HEADER_MESSAGE_TYPE, "")


def decode(payload: bytes, headers: Mapping[str, str], message_class: type[M]) -> M:
    """Parse a payload published by encode(); raises PayloadError with the reason."""
    return decode_serialized(payload, headers, message_class)[0]


def decode_serialized(payload: bytes, headers: Mapping[str, str], message_class: type[M]) -> tuple[M, bytes]:
    """decode(), plus the serialized message itself, for a stage that forwards it unchanged."""
    payload = serialized_message(payload, headers, message_class)
    message = message_class()
    try:
        message.ParseFromString(payload)
    except DecodeError as exc:
        raise PayloadError(f"corrupt {message_class.DESCRIPTOR.full_name} payload: {exc}") from exc
    return message, payload


def serialized_message(payload: bytes, headers: Mapping[str, str], message_class: type[Message]) -> bytes:
    """The serialized message in a payload, checked against its headers and decompressed but not parsed.

    For a stage that reads the wire bytes itself (the writer's row builder).
    """
    version = headers.get(HEADER_SCHEMA_VERSION, SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise PayloadError(
            f"unsupported schema version {version!r} (this build reads {SCHEMA_VERSION} only: since version 2"
            " genotypes travel column-wise, so an older payload would read as having none)"
        )
    declared = headers.get(HEADER_MESSAGE_TYPE)
    expected = message_class.DESCRIPTOR.full_name
    if declared and declared != expected:
        raise PayloadError(f"expected a {expected} but the message is a {declared}")
    encoding = headers.get(HEADER_CONTENT_ENCODING, ENCODING_IDENTITY)
    try:
        if encoding == ENCODING_ZSTD:
            payload = _zstd.decompressor.decompress(payload)
        elif encoding != ENCODING_IDENTITY:
            raise PayloadError(f"unknown content encoding {encoding!r}")
    except zstandard.ZstdError as exc:
        raise PayloadError(f"corrupt zstd payload: {exc}") from exc
    return payload
