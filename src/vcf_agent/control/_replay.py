"""Re-running a job from the retained `vcf-variants` stream instead of the file.

The job's last run is its last STARTED marker up to the FINISHED marker after
it; its batches are those published in between (markers share one partition,
batches spread over all, so the span is taken by publish time). Republishing
them in that order, with their original keys and headers, runs the job through
every downstream stage again, whose deterministic ids make it an update.
"""

from __future__ import annotations

from dataclasses import dataclass

from vcf_agent.bus import Bus, OutgoingMessage, Record
from vcf_agent.control._scan import scan_stream
from vcf_agent.schema import PayloadError, decode, message_type
from vcf_agent.v1 import variant_pb2

HEADER_REPLAY = "replay-of"

_MARKER = variant_pb2.JobMarker.DESCRIPTOR.full_name
_BATCH = variant_pb2.VariantBatch.DESCRIPTOR.full_name


class JobNotRetainedError(LookupError):
    pass


class JobIncompleteError(Exception):
    """The job's last run has no FINISHED marker, so its batches are not all there."""


@dataclass(frozen=True, slots=True)
class Replayed:
    batches: int
    variants: int
    markers: int


async def replay_job(bus: Bus, stream: str, job_id: str, *, timeout_s: float = 60.0) -> Replayed:
    started: Record | None = None
    finished: Record | None = None
    batches: list[tuple[Record, int]] = []
    async for records in scan_stream(bus, stream, timeout_s=timeout_s):
        for record in records:
            kind = message_type(record.headers)
            try:
                if kind == _MARKER:
                    marker = decode(record.value, record.headers, variant_pb2.JobMarker)
                    if marker.job_id != job_id:
                        continue
                    if marker.kind == variant_pb2.JobMarker.KIND_STARTED:
                        started, finished = record, None
                    elif marker.kind == variant_pb2.JobMarker.KIND_FINISHED:
                        finished = record
                elif kind == _BATCH:
                    batch = decode(record.value, record.headers, variant_pb2.VariantBatch)
                    if batch.variants and batch.variants[0].job_id == job_id:
                        batches.append((record, len(batch.variants)))
            except PayloadError:
                continue  # Corrupt records were dead-lettered when first consumed.
    if started is None:
        raise JobNotRetainedError(f"no run of job {job_id!r} is retained on {stream}")
    if finished is None:
        raise JobIncompleteError(
            f"the last run of job {job_id!r} did not finish ingest; submit the file again"
        )
    span = sorted(
        ((r, n) for r, n in batches if started.timestamp_ms <= r.timestamp_ms <= finished.timestamp_ms),
        key=lambda item: (item[0].timestamp_ms, item[0].partition, item[0].offset),
    )
    ordered = [started, *(r for r, _ in span), finished]
    await bus.publish(
        stream, [OutgoingMessage(r.value, r.key, {**r.headers, HEADER_REPLAY: job_id}) for r in ordered]
    )
    return Replayed(batches=len(span), variants=sum(n for _, n in span), markers=2)
