"""Correlating provider answers per variant and deciding completion.

A variant is complete when every requested provider answered, or partial
once the deadline passed. Offsets are committed only up to the oldest record
that still holds an incomplete variant (a per-partition watermark), so a
crash replays exactly what was pending and nothing completed is lost.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from google.protobuf.timestamp_pb2 import Timestamp

from vcf_agent import telemetry
from vcf_agent.bus import Bus, OutgoingMessage, Record
from vcf_agent.config import Settings
from vcf_agent.processing import CommitOffsets, DeadLetterSink, decode_or_dead_letter
from vcf_agent.schema import encode, message_type
from vcf_agent.v1 import analysis_pb2, events_pb2, variant_pb2

_MARKER_TYPE = variant_pb2.JobMarker.DESCRIPTOR.full_name
_PROGRESS_INTERVAL_S = 0.25

# Ranked most to least severe; the merged verdict takes the most severe confident call.
_SEVERITY = ("pathogenic", "likely_pathogenic", "uncertain", "likely_benign", "benign")


@dataclass(slots=True)
class _Pending:
    requested: frozenset[str]
    deadline: float
    results: dict[str, analysis_pb2.AnalysisResult] = field(default_factory=dict)
    # (stream, partition) -> lowest offset holding one of this variant's results
    positions: dict[tuple[str, int], int] = field(default_factory=dict)


@dataclass(slots=True)
class _JobProgress:
    tenant_id: str
    analysed: int = 0
    classifications: Counter[str] = field(default_factory=Counter)
    dirty: bool = False
    finished: bool = False


def merge_verdict(results: list[analysis_pb2.AnalysisResult]) -> tuple[str, str]:
    """(classification, priority tier): the most severe answer among successful providers."""
    ok = [r for r in results if r.status == analysis_pb2.AnalysisResult.STATUS_OK and r.classification]
    classification = "uncertain"
    if ok:
        ranked = sorted(
            ok, key=lambda r: _SEVERITY.index(r.classification) if r.classification in _SEVERITY else 2
        )
        classification = ranked[0].classification
    tier = next((r.annotation.priority_tier for r in results if r.annotation.priority_tier), "")
    return classification, tier


def build_write(
    cid: str, results: list[analysis_pb2.AnalysisResult], requested: frozenset[str], *, partial: bool
) -> events_pb2.DatabaseWrite:
    """The stored form of one variant's answers (results ordered by provider); empties their variants."""
    first = results[0]
    classification, tier = merge_verdict(results)
    write = events_pb2.DatabaseWrite(
        correlation_id=cid,
        job_id=first.job_id,
        tenant_id=first.tenant_id,
        classification=classification,
        priority_tier=tier,
        partial=partial,
        missing_providers=sorted(requested - {r.provider for r in results}),
    )
    write.variant.CopyFrom(first.variant)
    for result in results:
        # Drop the embedded variant before copying: the write carries it once.
        result.ClearField("variant")
    write.results.extend(results)
    return write


class Correlator:
    def __init__(self, bus: Bus, settings: Settings) -> None:
        self._bus = bus
        self._settings = settings
        self._sink = DeadLetterSink(bus, settings.topology.dead_letters, "aggregator")
        self._pending: dict[str, _Pending] = {}
        # Highest offset seen per partition, to commit through when nothing is pending there.
        self._seen: dict[tuple[str, int], int] = {}
        self._jobs: dict[str, _JobProgress] = {}
        self._last_progress = 0.0

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def handle(self, records: list[Record]) -> CommitOffsets | None:
        writes: list[events_pb2.DatabaseWrite] = []
        markers: list[variant_pb2.JobMarker] = []
        for record in records:
            position = (record.stream, record.partition)
            self._seen[position] = max(self._seen.get(position, -1), record.offset)
            if message_type(record.headers) == _MARKER_TYPE:
                marker = await decode_or_dead_letter(record, variant_pb2.JobMarker, self._sink)
                if marker is not None:
                    markers.append(marker)
                    self._on_marker(marker)
                continue
            batch = await decode_or_dead_letter(record, analysis_pb2.AnalysisResultBatch, self._sink)
            if batch is None:
                continue
            for result in batch.results:
                write = self._add(result, position, record.offset)
                if write is not None:
                    writes.append(write)
        writes.extend(self._expire(time.monotonic()))
        await self._publish(writes, markers)
        await self._progress()
        return self._watermarks()

    def _on_marker(self, marker: variant_pb2.JobMarker) -> None:
        job = self._jobs.get(marker.job_id)
        if marker.kind == variant_pb2.JobMarker.KIND_FINISHED:
            if job is None:
                job = self._jobs[marker.job_id] = _JobProgress(marker.tenant_id)
            job.finished = True
        elif marker.kind == variant_pb2.JobMarker.KIND_STARTED and job is not None and job.finished:
            # A resubmission counts from zero again. A STARTED marker that overtook the
            # first run's results (markers skip the provider hop) must not reset it.
            self._jobs[marker.job_id] = _JobProgress(marker.tenant_id)

    def _add(
        self, result: analysis_pb2.AnalysisResult, position: tuple[str, int], offset: int
    ) -> events_pb2.DatabaseWrite | None:
        cid = result.correlation_id
        entry = self._pending.get(cid)
        if entry is None and len(result.requested_providers) <= 1:
            # The common single-provider case completes at once: no pending state to keep.
            return self._build_write(cid, [result], frozenset({result.provider}), partial=False)
        if entry is None:
            requested = frozenset(result.requested_providers) or frozenset({result.provider})
            entry = _Pending(requested, time.monotonic() + self._settings.analysis_deadline_s)
            self._pending[cid] = entry
        entry.results[result.provider] = result
        if position not in entry.positions or offset < entry.positions[position]:
            entry.positions[position] = offset
        if entry.requested <= entry.results.keys():
            del self._pending[cid]
            return self._complete(cid, entry, partial=False)
        return None

    def _expire(self, now: float) -> list[events_pb2.DatabaseWrite]:
        expired = [cid for cid, entry in self._pending.items() if entry.deadline <= now]
        return [self._complete(cid, self._pending.pop(cid), partial=True) for cid in expired]

    def _complete(self, cid: str, entry: _Pending, *, partial: bool) -> events_pb2.DatabaseWrite:
        return self._build_write(
            cid, [entry.results[p] for p in sorted(entry.results)], entry.requested, partial
        )

    def _build_write(
        self,
        cid: str,
        results: list[analysis_pb2.AnalysisResult],
        requested: frozenset[str],
        partial: bool,
    ) -> events_pb2.DatabaseWrite:
        write = build_write(cid, results, requested, partial=partial)
        job = self._jobs.get(write.job_id)
        if job is None:
            job = self._jobs[write.job_id] = _JobProgress(write.tenant_id)
        job.analysed += 1
        job.classifications[write.classification] += 1
        job.dirty = True
        return write

    def _watermarks(self) -> CommitOffsets:
        floors: dict[tuple[str, int], int] = {}
        for entry in self._pending.values():
            for position, offset in entry.positions.items():
                if offset < floors.get(position, 1 << 62):
                    floors[position] = offset
        return {position: floors.get(position, seen + 1) for position, seen in self._seen.items()}

    async def _publish(
        self, writes: list[events_pb2.DatabaseWrite], markers: list[variant_pb2.JobMarker]
    ) -> None:
        if not writes and not markers:
            return
        by_job: dict[str, events_pb2.DatabaseWriteBatch] = {}
        for write in writes:
            by_job.setdefault(write.job_id, events_pb2.DatabaseWriteBatch()).writes.append(write)
        for marker in markers:
            by_job.setdefault(marker.job_id, events_pb2.DatabaseWriteBatch()).markers.append(marker)
        messages = []
        for job_id, batch in by_job.items():
            tenant = batch.writes[0].tenant_id if batch.writes else batch.markers[0].tenant_id
            payload, headers = encode(
                batch, tenant_id=tenant, compression_threshold=self._settings.compression_threshold
            )
            messages.append(OutgoingMessage(payload, job_id.encode(), headers))
        await self._bus.publish(self._settings.topology.database_writes, messages)
        telemetry.variants_processed.labels("aggregator").inc(len(writes))

    async def _progress(self) -> None:
        now = time.monotonic()
        if now - self._last_progress < _PROGRESS_INTERVAL_S:
            return
        self._last_progress = now
        stamp = Timestamp()
        stamp.GetCurrentTime()
        messages = []
        for job_id, job in self._jobs.items():
            if not job.dirty:
                continue
            job.dirty = False
            note = events_pb2.Notification(
                job_id=job_id,
                tenant_id=job.tenant_id,
                stage=events_pb2.STAGE_ANALYSIS,
                state=events_pb2.JOB_STATE_ANALYSING,
                done=job.analysed,
                timestamp=stamp,
                classifications=dict(job.classifications),
            )
            payload, headers = encode(note, tenant_id=job.tenant_id)
            messages.append(OutgoingMessage(payload, job_id.encode(), headers))
        if messages:
            await self._bus.publish(self._settings.topology.user_notifications, messages)
