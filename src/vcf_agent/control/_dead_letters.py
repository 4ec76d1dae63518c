"""Listing the `dead-letters` stream and sending letters back to the stream they came from."""

from __future__ import annotations

from collections.abc import Sequence

from vcf_agent.bus import Bus, BusError, OutgoingMessage
from vcf_agent.control._scan import scan_stream
from vcf_agent.schema import PayloadError, decode
from vcf_agent.v1 import control_pb2, events_pb2

# Downstream can tell a redriven message from a first delivery.
HEADER_REDRIVE = "redriven-from"


async def read_dead_letters(
    bus: Bus, stream: str, *, job_id: str = "", source_stream: str = "", timeout_s: float = 60.0
) -> list[control_pb2.DeadLetterEntry]:
    """Every retained letter matching the filters, oldest first per partition."""
    entries = []
    async for records in scan_stream(bus, stream, timeout_s=timeout_s):
        for record in records:
            try:
                letter = decode(record.value, record.headers, events_pb2.DeadLetter)
            except PayloadError:
                continue
            if job_id and letter.job_id != job_id:
                continue
            if source_stream and letter.source_stream != source_stream:
                continue
            entries.append(
                control_pb2.DeadLetterEntry(partition=record.partition, offset=record.offset, letter=letter)
            )
    entries.sort(key=lambda e: (e.letter.timestamp.ToMilliseconds(), e.partition, e.offset))
    return entries


async def _exists(bus: Bus, stream: str) -> bool:
    try:
        await bus.partitions(stream)
    except BusError:
        return False
    return True


async def redrive(bus: Bus, entries: Sequence[control_pb2.DeadLetterEntry]) -> tuple[int, int]:
    """Republish each letter's original payload and headers to its source; (redriven, skipped)."""
    by_stream: dict[str, list[OutgoingMessage]] = {}
    streams = {e.letter.source_stream for e in entries if e.letter.source_stream}
    # Letters about files (unparsable VCF lines) name no stream that exists.
    existing = {s for s in streams if await _exists(bus, s)}
    skipped = 0
    for entry in entries:
        letter = entry.letter
        if letter.source_stream not in existing or not letter.original_payload:
            skipped += 1
            continue
        headers = dict(letter.original_headers)
        headers[HEADER_REDRIVE] = f"{entry.partition}:{entry.offset}"
        # The original key is not kept; the job id keeps a job's redriven messages together.
        key = letter.job_id.encode() if letter.job_id else None
        by_stream.setdefault(letter.source_stream, []).append(
            OutgoingMessage(letter.original_payload, key, headers)
        )
    for stream, messages in by_stream.items():
        await bus.publish(stream, messages)
    return sum(len(m) for m in by_stream.values()), skipped
