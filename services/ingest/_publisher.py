"""From a VCF file to `vcf-variants`: read in a thread, publish with bounded memory.

The reader thread parses and encodes batches and blocks when
`max_pending_batches` wait to be published, so memory stays bounded whatever
the file size. Job boundaries are published as JobMarkers carrying the exact
variant count, which is how the writer knows a job is complete.

Validation modes: in `lenient` (the default) a record that breaks the spec is
dead-lettered with its line and reason and every good record flows on; in
`strict` the whole file is checked first and any error fails the job before
anything is published. In both, a file that cannot be ingested at all (empty,
binary, truncated, no header, no records) fails the job before publishing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from google.protobuf.timestamp_pb2 import Timestamp

from vcf_agent import telemetry
from vcf_agent.bus import Bus, OutgoingMessage
from vcf_agent.config import Settings
from vcf_agent.processing import DeadLetterSink
from vcf_agent.schema import encode, encode_serialized
from vcf_agent.v1 import events_pb2, variant_pb2

from ._jobs import JobRecord, JobRegistry
from ._vcf_reader import VcfFileError, VcfReader, file_digest

__all__ = ["VALIDATION_MODES", "ValidationMode", "VariantPublisher", "file_digest"]

log = logging.getLogger(__name__)

# Loci closer than this share a partition key, so one locus always stays ordered.
_KEY_BIN = 100_000
_PROGRESS_INTERVAL_S = 0.25
_BATCH_TYPE = variant_pb2.VariantBatch.DESCRIPTOR.full_name
# How many errors a strict-mode failure reason quotes.
_QUOTED_ERRORS = 3

ValidationMode = Literal["strict", "lenient"]
VALIDATION_MODES: tuple[ValidationMode, ...] = ("strict", "lenient")


@dataclass(slots=True)
class _Encoded:
    key: bytes
    payload: bytes
    headers: dict[str, str]
    variants: int


@dataclass(slots=True)
class _Progress:
    records: int = 0
    variants: int = 0
    samples: list[str] = field(default_factory=list)
    dead_letters: list[events_pb2.DeadLetter] = field(default_factory=list)
    dead_lettered: int = 0


class VariantPublisher:
    """Runs ingest jobs; one asyncio task per job."""

    def __init__(
        self, bus: Bus, settings: Settings, registry: JobRegistry, *, validation: ValidationMode = "lenient"
    ) -> None:
        if validation not in VALIDATION_MODES:
            raise ValueError(f"validation must be one of {VALIDATION_MODES}, got {validation!r}")
        self._validation: ValidationMode = validation
        self._bus = bus
        self._settings = settings
        self._registry = registry
        self._stream = settings.topology.variants
        self._notifications = settings.topology.user_notifications
        self._dead_letters = DeadLetterSink(bus, settings.topology.dead_letters, "ingest")
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._records: dict[str, int] = {}

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def records(self, job_id: str) -> int:
        """Data lines the last run of the job read (REF-only and rejected ones included)."""
        return self._records.get(job_id, 0)

    def running(self, job_id: str) -> bool:
        task = self._tasks.get(job_id)
        return task is not None and not task.done()

    async def submit(
        self,
        path: Path,
        *,
        tenant_id: str = "default",
        source_name: str = "",
        providers: list[str] | None = None,
        region: str | None = None,
        validation: ValidationMode | None = None,
    ) -> JobRecord:
        """Register the job and start publishing; returns at once with the queued job.

        `validation` overrides the publisher's mode for this job.
        """
        mode = validation or self._validation
        if mode not in VALIDATION_MODES:
            raise ValueError(f"validation must be one of {VALIDATION_MODES}, got {mode!r}")
        file_id = await asyncio.to_thread(file_digest, path)
        job = self._registry.begin(
            tenant_id, file_id, source_name or path.name, list(providers or self._settings.providers)
        )
        if self.running(job.job_id):
            return job
        self._tasks[job.job_id] = asyncio.create_task(
            self._run(job, path, region, mode), name=f"ingest:{job.job_id}"
        )
        return job

    async def wait(self, job_id: str) -> None:
        task = self._tasks.get(job_id)
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def cancel(self, job_id: str) -> JobRecord | None:
        task = self._tasks.get(job_id)
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        job = self._registry.get(job_id)
        if job is not None and job.state not in (events_pb2.JOB_STATE_COMPLETE, events_pb2.JOB_STATE_FAILED):
            job.state = events_pb2.JOB_STATE_CANCELLED
            self._registry.save(job)
            await self._notify(job, events_pb2.STAGE_INGEST, events_pb2.JOB_STATE_CANCELLED, 0, "cancelled")
        return job

    async def _run(self, job: JobRecord, path: Path, region: str | None, mode: ValidationMode) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[_Encoded | None] = asyncio.Queue(self._settings.max_pending_batches)
        progress = _Progress()
        job.state = events_pb2.JOB_STATE_INGESTING
        self._registry.save(job)
        try:
            if mode == "strict":
                errors = await asyncio.to_thread(_strict_errors, path, job, region)
                if errors:
                    await self._fail(job, errors)
                    return
            reader = await asyncio.to_thread(
                VcfReader,
                path,
                file_id=job.file_id,
                job_id=job.job_id,
                tenant_id=job.tenant_id,
                source_name=job.source_name,
                batch_size=self._settings.batch_size,
                linger_ms=self._settings.batch_linger_ms,
                region=region,
            )
        except VcfFileError as exc:
            await self._fail(job, str(exc))
            return
        for issue in reader.header_issues:
            log.warning("job %s: %s line %d: %s", job.job_id, job.source_name, issue.line, issue.message)
        progress.samples = list(reader.samples)
        await self._marker(job, variant_pb2.JobMarker.KIND_STARTED, progress)
        await self._notify(job, events_pb2.STAGE_INGEST, events_pb2.JOB_STATE_INGESTING, 0, "ingest started")

        def put(item: _Encoded | None) -> None:
            asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()

        producer = loop.run_in_executor(
            None, self._produce, reader, put, progress, job.tenant_id, job.providers
        )
        published = 0
        last_note = time.monotonic()
        try:
            while (item := await queue.get()) is not None:
                await self._bus.publish(self._stream, [OutgoingMessage(item.payload, item.key, item.headers)])
                published += item.variants
                telemetry.variants_processed.labels("ingest").inc(item.variants)
                if time.monotonic() - last_note >= _PROGRESS_INTERVAL_S:
                    last_note = time.monotonic()
                    await self._flush_dead_letters(progress)
                    await self._notify(
                        job, events_pb2.STAGE_INGEST, events_pb2.JOB_STATE_INGESTING, published, "", progress
                    )
            await producer
        except VcfFileError as exc:
            await self._fail(job, str(exc))
            return
        except asyncio.CancelledError:
            reader.close()
            with contextlib.suppress(Exception):
                # Unblock the reader thread so it can observe close().
                while not producer.done():
                    with contextlib.suppress(asyncio.QueueEmpty):
                        queue.get_nowait()
                    await asyncio.sleep(0.01)
            raise
        await self._flush_dead_letters(progress)
        job.ingested = published
        job.total = published
        job.samples = len(progress.samples)
        job.dead_lettered = progress.dead_lettered = reader.dead_lettered
        self._records[job.job_id] = progress.records = reader.records
        job.state = events_pb2.JOB_STATE_ANALYSING
        self._registry.save(job)
        await self._marker(job, variant_pb2.JobMarker.KIND_FINISHED, progress, published)
        await self._notify(
            job,
            events_pb2.STAGE_INGEST,
            events_pb2.JOB_STATE_ANALYSING,
            published,
            "ingest finished",
            progress,
            total=published,
        )

    def _produce(
        self,
        reader: VcfReader,
        put: Callable[[_Encoded | None], None],
        progress: _Progress,
        tenant_id: str,
        job_providers: list[str],
    ) -> None:
        """Reader thread: parse, encode, hand over; blocks when the publisher is behind."""
        threshold = self._settings.compression_threshold
        # Appending an encoded field to a serialized message merges it in: the job's
        # providers ride on every batch without re-encoding the variants.
        providers = variant_pb2.VariantBatch(providers=job_providers).SerializeToString()
        try:
            for batch in reader.batches():
                key = f"{batch.chromosome}:{batch.position // _KEY_BIN}".encode()
                payload, headers = encode_serialized(
                    batch.payload + providers,
                    _BATCH_TYPE,
                    tenant_id=tenant_id,
                    traceparent=telemetry.new_traceparent(),
                    compression_threshold=threshold,
                )
                put(_Encoded(key, payload, headers, batch.variant_count))
                progress.records = reader.records
                progress.variants += batch.variant_count
                progress.dead_letters.extend(reader.take_dead_letters())
                progress.dead_lettered = reader.dead_lettered
            progress.dead_letters.extend(reader.take_dead_letters())
            progress.dead_lettered = reader.dead_lettered
        finally:
            reader.close()
            put(None)

    async def _flush_dead_letters(self, progress: _Progress) -> None:
        letters, progress.dead_letters = progress.dead_letters, []
        await self._dead_letters.send(letters)

    async def _fail(self, job: JobRecord, reason: str) -> None:
        log.warning("job %s failed: %s", job.job_id, reason)
        job.state = events_pb2.JOB_STATE_FAILED
        job.error = reason
        self._registry.save(job)
        await self._marker(job, variant_pb2.JobMarker.KIND_FAILED, _Progress(), reason=reason)
        await self._notify(job, events_pb2.STAGE_INGEST, events_pb2.JOB_STATE_FAILED, 0, reason)

    async def _marker(
        self,
        job: JobRecord,
        kind: variant_pb2.JobMarker.Kind.ValueType,
        progress: _Progress,
        variant_count: int = 0,
        reason: str = "",
    ) -> None:
        now = Timestamp()
        now.GetCurrentTime()
        marker = variant_pb2.JobMarker(
            kind=kind,
            job_id=job.job_id,
            file_id=job.file_id,
            tenant_id=job.tenant_id,
            source_name=job.source_name,
            variant_count=variant_count,
            record_count=progress.records,
            samples=progress.samples,
            providers=job.providers,
            reason=reason,
            dead_lettered=progress.dead_lettered,
            timestamp=now,
        )
        payload, headers = encode(marker, tenant_id=job.tenant_id)
        await self._bus.publish(self._stream, [OutgoingMessage(payload, job.job_id.encode(), headers)])

    async def _notify(
        self,
        job: JobRecord,
        stage: events_pb2.Stage.ValueType,
        state: events_pb2.JobState.ValueType,
        done: int,
        message: str,
        progress: _Progress | None = None,
        total: int = 0,
    ) -> None:
        now = Timestamp()
        now.GetCurrentTime()
        note = events_pb2.Notification(
            job_id=job.job_id,
            tenant_id=job.tenant_id,
            stage=stage,
            state=state,
            done=done,
            total=total,
            message=message,
            timestamp=now,
            file_id=job.file_id,
            source_name=job.source_name,
            samples=len(progress.samples) if progress else 0,
            dead_lettered=progress.dead_lettered if progress else 0,
            providers=job.providers,
        )
        payload, headers = encode(note, tenant_id=job.tenant_id)
        await self._bus.publish(self._notifications, [OutgoingMessage(payload, job.job_id.encode(), headers)])


def _strict_errors(path: Path, job: JobRecord, region: str | None) -> str:
    """Strict mode's pre-pass: every error in the file, summarised; empty when there is none."""
    with VcfReader(
        path,
        file_id=job.file_id,
        job_id=job.job_id,
        tenant_id=job.tenant_id,
        source_name=job.source_name,
        region=region,
        keep_issues=True,
    ) as reader:
        for _ in reader.batches():
            pass
        errors = reader.header_issues + reader.record_issues
    errors = [issue for issue in errors if not issue.is_warning]
    if not errors:
        return ""
    quoted = "; ".join(
        f"line {i.line}, column {i.column}: {i.message} [{i.code}]" for i in errors[:_QUOTED_ERRORS]
    )
    more = f" (and {len(errors) - _QUOTED_ERRORS} more)" if len(errors) > _QUOTED_ERRORS else ""
    summary = f"strict validation found {len(errors)} error(s), nothing was ingested"
    return f"{job.source_name}: {summary}: {quoted}{more}"
