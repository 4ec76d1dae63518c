"""From a VCF file to `vcf-variants`: read in a thread, publish with bounded memory.

The reader thread parses and encodes batches and blocks when
`max_pending_batches` wait to be published, so memory stays bounded whatever
the file size. Job boundaries are published as JobMarkers carrying the exact
variant count, which is how the writer knows a job is complete.

Each job runs in streaming or batch mode, chosen when it starts from the
flags (see `_job_mode`); streaming "starts" when the bus is healthy and takes
the job's STARTED marker. If it does not and FALLBACK_TO_BATCH is on, the job
runs in batch mode (see `_batch_path`) instead; off, it fails saying why.
Without a batch path (the ingest-only benchmark) every job streams.

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
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from vcf_agent import telemetry, tracing
from vcf_agent.bus import Bus, BusError, FailoverBus, OutgoingMessage, PublishedPosition
from vcf_agent.config import Settings
from vcf_agent.lifecycle import AsyncComponent
from vcf_agent.observability import current_job_id, log_context
from vcf_agent.processing import DeadLetterSink, publish_patiently
from vcf_agent.progress import progress_notification
from vcf_agent.schema import HEADER_JOB, HEADER_VARIANT_COUNT, TERMINAL_STATES, encode, encode_serialized
from vcf_agent.v1 import events_pb2, variant_pb2

from ._annotation_context import DEFAULT_POPULATION_PATTERN, annotation_context
from ._batch_path import BatchPath
from ._checkpoints import Checkpoint, CheckpointBook
from ._input_limits import InputLimits
from ._job_mode import FALLBACK_TO_BATCH, FlagSource, JobMode, ModeChoice, choose_mode
from ._jobs import JobRecord, JobRegistry
from ._publish_ledger import JobLedger, LedgerSpan, Taker
from ._validation_report import read_report
from ._vcf_reader import EncodedBatch, ReadPosition, VcfFileError, VcfReader, file_digest

__all__ = ["VALIDATION_MODES", "ValidationMode", "VariantPublisher", "file_digest"]

log = logging.getLogger(__name__)

# Loci closer than this share a partition key, so one locus always stays ordered.
_KEY_BIN = 100_000
_PROGRESS_INTERVAL_S = 0.25
_BATCH_TYPE = variant_pb2.VariantBatch.DESCRIPTOR.full_name
# How many errors a strict-mode failure reason quotes.
_QUOTED_ERRORS = 3

# How long a notice about a job (it stalled) may wait for the bus; GetJob says it anyway.
_ANNOUNCE_TIMEOUT_S = 10.0

# How long the bus may take to show it is healthy before streaming counts as not starting.
_STREAM_START_TIMEOUT_S = 5.0

# A job in one of these states is past cancelling (a cancelled one may be cancelled again).
_ENDED = frozenset(
    {events_pb2.JOB_STATE_COMPLETE, events_pb2.JOB_STATE_COMPLETE_WITH_ERRORS, events_pb2.JOB_STATE_FAILED}
)

ValidationMode = Literal["strict", "lenient"]
# How a job was published again: only what a lost backend took of it, or the whole file.
Republished = Literal["part", "whole"]
VALIDATION_MODES: tuple[ValidationMode, ...] = ("strict", "lenient")

T = TypeVar("T")


class StreamingUnavailableError(BusError):
    """Streaming could not start for a job: the bus is unhealthy or refused its first message."""


@dataclass(slots=True)
class _Encoded:
    key: bytes
    payload: bytes
    headers: dict[str, str]
    variants: int
    resume_at: ReadPosition | None
    first_record: int
    last_record: int


@dataclass(slots=True)
class _Progress:
    records: int = 0
    variants: int = 0
    samples: list[str] = field(default_factory=list)
    dead_letters: list[events_pb2.DeadLetter] = field(default_factory=list)
    dead_lettered: int = 0
    # The LIMS priority of this run, stamped on every batch.
    priority: int = 0
    reference_blocks: int = 0
    placeholder_alleles: int = 0
    # How many of the reader's file issues the job's row holds (`_record_file_issues`).
    issues_recorded: int = 0


class VariantPublisher(AsyncComponent):
    """Runs ingest jobs; one asyncio task per job."""

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        registry: JobRegistry,
        *,
        validation: ValidationMode = "lenient",
        flags: FlagSource | None = None,
        batch: BatchPath | None = None,
        checkpoints: CheckpointBook | None = None,
    ) -> None:
        if validation not in VALIDATION_MODES:
            raise ValueError(f"validation must be one of {VALIDATION_MODES}, got {validation!r}")
        self._validation: ValidationMode = validation
        self._flags = flags
        self._batch = batch
        self._bus = bus
        self._settings = settings
        self._registry = registry
        # Without a book (the ingest-only benchmark) nothing is resumed after a crash.
        self._checkpoints = checkpoints
        self._limits = InputLimits.from_settings(settings)
        self._stream = settings.topology.variants
        self._notifications = settings.topology.user_notifications
        self._dead_letters = DeadLetterSink(bus, settings.topology.dead_letters, "ingest")
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # The file each job's latest run reads.
        self._paths: dict[str, Path] = {}
        self._records: dict[str, int] = {}
        # Which backend took which records of each streaming job, on a failover bus.
        self._ledgers: dict[str, JobLedger] = {}

    async def start(self) -> None:
        """Resume every job whose reading a crash or a stop interrupted."""
        if self._checkpoints is None:
            return
        for checkpoint in self._checkpoints.all():
            job = self._registry.get(checkpoint.job_id)
            if job is None or job.state in TERMINAL_STATES:
                self._checkpoints.drop(checkpoint.job_id)
            elif not checkpoint.finished:
                self._start_task(job, checkpoint.path, self._resume(job, checkpoint))

    def republish(self, job_id: str, why: str, *, whole: bool = False) -> Republished | None:
        """Publish again, from its file, what of a finished reading may be stranded; None when it cannot.

        For records stranded on a failover bus's dead (or emptied) backend. Unless `whole`,
        only the records the lost backend had acknowledged (see `_publish_ledger`) when
        this process published the whole job; else the whole file. Every stored effect is
        an upsert and completion is counted from the store, so what reaches the stages
        twice changes nothing, and what was lost arrives. No STARTED marker is sent (it
        would reset the writer's tally); the FINISHED marker is, with the same count.
        """
        checkpoint = self._checkpoints.get(job_id) if self._checkpoints is not None else None
        job = self._registry.get(job_id)
        if checkpoint is None or not checkpoint.finished or job is None or self.running(job_id):
            return None
        if checkpoint.mode != "streaming" or job.state in TERMINAL_STATES:
            return None
        ledger = self._ledgers.get(job_id)
        if not whole and ledger is not None and ledger.complete and isinstance(self._bus, FailoverBus):
            lost = ledger.lost(self._bus.outages)
            if lost:
                log.warning(
                    "job %s: publishing it again from %s, the %d variants in %d spans a lost backend"
                    " had taken: %s",
                    job_id, checkpoint.path, sum(span.variants for span in lost), len(lost), why,
                )  # fmt: skip
                self._start_task(
                    job, checkpoint.path, self._republish_spans(job, checkpoint, ledger, lost, why)
                )
                return "part"
        log.warning("job %s: publishing it again from %s, the whole file: %s", job_id, checkpoint.path, why)
        again = replace(checkpoint, at=ReadPosition(), finished=False)
        self._start_task(job, checkpoint.path, self._resume(job, again, why=why))
        return "whole"

    async def _republish_spans(
        self, job: JobRecord, checkpoint: Checkpoint, ledger: JobLedger, lost: list[LedgerSpan], why: str
    ) -> None:
        """Read the file from the first lost span to the last; publish the batches inside lost spans.

        Batches are cut afresh (by size and linger), so one that overlaps a lost span is
        published whole: a few variants again are harmless, a missing one is not.
        """
        current_job_id.set(job.job_id)
        telemetry.job_republishes.inc()
        ranges = [(span.first_record, span.last_record) for span in lost]
        variants = sum(span.variants for span in lost)
        progress = _Progress(priority=checkpoint.priority)
        takers: set[Taker] = set()
        sent = 0
        try:
            reader = await self._open_reader(job, checkpoint.path, checkpoint.region or None, lost[0].start)
        except Exception:  # the watchdog publishes the whole file later if the job stays idle
            log.exception("job %s: opening %s to publish it again failed", job.job_id, checkpoint.path)
            return
        try:
            await self._notify(
                job,
                events_pb2.STAGE_INGEST,
                events_pb2.JOB_STATE_INGESTING,
                job.total,
                f"ingest publishes again the {variants} variants a lost backend had taken: {why}",
            )
            at = 0
            prepare = self._batch_preparer(job, progress.priority, reader)
            async with contextlib.aclosing(self._read(reader, progress, prepare)) as items:
                async for item in items:
                    while at < len(ranges) and ranges[at][1] < item.first_record:
                        at += 1
                    if at == len(ranges):
                        break
                    if ranges[at][0] > item.last_record:
                        continue
                    positions = await publish_patiently(
                        self._bus,
                        self._stream,
                        [OutgoingMessage(item.payload, item.key, item.headers)],
                        who="ingest",
                    )
                    takers.update(self._takers(positions))
                    sent += item.variants
            # Dead letters of the file were sent in its first reading; they count no variant.
            progress.dead_letters.clear()
            ledger.retaken(lost, takers)
            progress.samples = list(reader.samples)
            progress.records = self._records.get(job.job_id, 0)
            progress.dead_lettered = job.dead_lettered
            progress.reference_blocks, progress.placeholder_alleles = (
                job.reference_blocks,
                job.placeholder_alleles,
            )
            finished = self._job_marker(job, variant_pb2.JobMarker.KIND_FINISHED, progress, job.total)
            await self._send_marker(finished, "streaming")
        except Exception:  # the watchdog publishes the whole file later if the job stays idle
            log.exception("job %s: publishing the lost spans again failed", job.job_id)
            return
        finally:
            reader.close()
        log.warning("job %s: published %d variants again (%d in the lost spans)", job.job_id, sent, variants)

    def _takers(self, positions: list[PublishedPosition]) -> set[Taker]:
        bus = self._bus
        if not isinstance(bus, FailoverBus):
            return set()
        return {(p.backend, bus.outages(p.backend)) for p in positions if p.backend}

    async def announce(self, job_id: str, state: events_pb2.JobState.ValueType, message: str) -> None:
        """Tell `user-notifications` something about a job that no stage reports (it stalled)."""
        job = self._registry.get(job_id)
        if job is None:
            return
        try:
            # Bounded: with the bus down a publish waits for it, and the caller has other jobs.
            await asyncio.wait_for(
                self._notify(job, events_pb2.STAGE_UNSPECIFIED, state, 0, message), _ANNOUNCE_TIMEOUT_S
            )
        except (BusError, TimeoutError) as exc:
            log.warning("job %s: could not announce %r: %r", job_id, message, exc)

    def forget(self, job_id: str) -> None:
        """The job has ended: its checkpoint is no longer needed."""
        self._ledgers.pop(job_id, None)
        if self._checkpoints is not None:
            self._checkpoints.drop(job_id)

    def _start_task(self, job: JobRecord, path: Path, run: Coroutine[object, object, None]) -> None:
        self._paths[job.job_id] = path
        task = asyncio.create_task(run, name=f"ingest:{job.job_id}")
        self._tasks[job.job_id] = task
        task.add_done_callback(lambda _: self._paths.pop(job.job_id, None))

    async def _resume(self, job: JobRecord, checkpoint: Checkpoint, why: str = "") -> None:
        """Carry on an interrupted job: from its checkpoint when it streamed, else from the start.

        A file that is gone or whose content changed fails the job, saying so.
        """
        path = checkpoint.path
        try:
            digest = await asyncio.to_thread(file_digest, path)
        except FileNotFoundError:
            reason = f"{job.source_name}: the file {path} disappeared before ingest finished reading it"
        except OSError as exc:
            reason = f"{job.source_name}: the file {path} cannot be read to resume the job ({exc})"
        else:
            reason = ""
            if digest != checkpoint.file_id:
                reason = (
                    f"{job.source_name}: the file {path} changed since the job started (its SHA-256"
                    f" is now {digest[:16]}..., was {checkpoint.file_id[:16]}...)"
                )
        if reason:
            via: JobMode | None = "streaming" if checkpoint.mode == "streaming" else None
            await self._fail(job, reason, marker_via=via)
            return
        validation: ValidationMode = "strict" if checkpoint.validation == "strict" else "lenient"
        region = checkpoint.region or None
        if checkpoint.mode != "streaming":
            # Not yet streaming, or in batch mode (whose analyses live in this process): run again.
            log.warning("job %s: ingest was interrupted; running it again from the start", job.job_id)
            await self._run(job, path, region, validation, checkpoint.priority)
            return
        if why:
            telemetry.job_republishes.inc()
        log.warning(
            "job %s: %s; resuming after %d variants (%d data lines)",
            job.job_id,
            why or "ingest was interrupted",
            checkpoint.at.variants,
            checkpoint.at.lines,
        )
        await self._run(job, path, region, validation, checkpoint.priority, resume=checkpoint, why=why)

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

    def reads(self, job_id: str, path: Path) -> bool:
        """Whether the job's running run reads this file (a submission may join a run already going)."""
        return self._paths.get(job_id) == path

    async def submit(
        self,
        path: Path,
        *,
        tenant_id: str = "default",
        source_name: str = "",
        providers: list[str] | None = None,
        region: str | None = None,
        validation: ValidationMode | None = None,
        priority: int = 0,
    ) -> JobRecord:
        """Register the job and start publishing; returns at once with the queued job.

        `validation` overrides the publisher's mode for this job; `priority` (higher first)
        travels on every batch to the provider queues.
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
        telemetry.jobs_submitted.labels(telemetry.tenant_label(tenant_id)).inc()
        self._start_task(job, path, self._run(job, path, region, mode, priority))
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
        if self._checkpoints is not None:
            self._checkpoints.drop(job_id)
        if job is not None and job.state not in _ENDED:
            job.state = events_pb2.JOB_STATE_CANCELLED
            self._registry.save(job, stamp="finished_at")
            await self._notify(job, events_pb2.STAGE_INGEST, events_pb2.JOB_STATE_CANCELLED, 0, "cancelled")
        return job

    async def _run(
        self,
        job: JobRecord,
        path: Path,
        region: str | None,
        mode: ValidationMode,
        priority: int,
        *,
        resume: Checkpoint | None = None,
        why: str = "",
    ) -> None:
        """One run of a job; `resume` carries on a streaming run from its checkpoint (`why` says
        why when it is published again from the start)."""
        # The root of the job's trace (under the SubmitVcf call's span when the client traces):
        # every message the job sends, at every stage, descends from it.
        # Every log line of the run names the job.
        with (
            log_context(job_id=job.job_id),
            tracing.current_span("ingest.job", "ingest", job_id=job.job_id, tenant_id=job.tenant_id),
        ):
            await self._run_job(job, path, region, mode, priority, resume=resume, why=why)

    async def _run_job(
        self,
        job: JobRecord,
        path: Path,
        region: str | None,
        mode: ValidationMode,
        priority: int,
        *,
        resume: Checkpoint | None,
        why: str,
    ) -> None:
        progress = _Progress(priority=priority)
        job.state = events_pb2.JOB_STATE_INGESTING
        # A resumed run keeps the start it had.
        self._registry.save(job, stamp="started_at" if resume is None else None)
        checkpoint = resume or Checkpoint(job.job_id, path, job.file_id, "", mode, priority, region or "")
        if resume is None:
            self._save_checkpoint(checkpoint)
        try:
            if mode == "strict" and resume is None:
                errors = await asyncio.to_thread(_strict_errors, path, job, region)
                if errors:
                    await self._fail(job, errors)
                    return
            reader = await self._open_reader(job, path, region, resume.at if resume is not None else None)
        except VcfFileError as exc:
            await self._fail(job, str(exc))
            return
        except Exception as exc:
            # Whatever went wrong opening the file, the job must end, not stay `ingesting`.
            log.exception("job %s: opening %s failed", job.job_id, path)
            await self._fail(job, f"{job.source_name}: the file could not be opened: {exc}")
            return
        for issue in reader.header_issues:
            log.warning("job %s: %s line %d: %s", job.job_id, job.source_name, issue.line, issue.message)
        progress.samples = list(reader.samples)
        job_mode: JobMode | None = None
        try:
            if resume is None:
                job_mode = await self._start_mode(job, progress)
                if job_mode is None:
                    return
                checkpoint.mode = job_mode
                self._save_checkpoint(checkpoint)
            else:
                job_mode = "streaming"
                await self._notify(
                    job,
                    events_pb2.STAGE_INGEST,
                    events_pb2.JOB_STATE_INGESTING,
                    resume.at.variants,
                    f"ingest publishes the job again from its file: {why}"
                    if why
                    else f"ingest resumed after {resume.at.variants} variants ({resume.at.lines} data lines)",
                )
            if job_mode == "batch":
                published = await self._run_batch(job, reader, progress)
            else:
                published = await self._run_streaming(job, reader, progress, checkpoint)
        except VcfFileError as exc:
            # What the file broke before the fault that stopped it, listed beside the reason.
            self._record_file_issues(job, reader, progress)
            await self._fail(job, str(exc), marker_via=job_mode)
            return
        except Exception as exc:
            # The bus or a stage failed mid-job; the job must not stay "ingesting" forever.
            log.exception("job %s: %s run failed", job.job_id, job_mode or "starting its")
            await self._fail(job, f"{job_mode or 'the'} run failed: {exc}", marker_via=None)
            return
        finally:
            reader.close()
        await self._flush_dead_letters(progress)
        job.ingested = published
        job.total = published
        job.samples = len(progress.samples)
        job.dead_lettered = progress.dead_lettered = reader.dead_lettered
        self._records[job.job_id] = progress.records = reader.records
        for issue in [*reader.file_issues, *reader.warnings]:
            log.warning("job %s: %s line %d: %s", job.job_id, job.source_name, issue.line, issue.message)
        self._record_file_issues(job, reader, progress)
        progress.reference_blocks = reader.counters.reference_blocks
        progress.placeholder_alleles = reader.counters.placeholder_alleles
        self._registry.record_gvcf(job, progress.reference_blocks, progress.placeholder_alleles)
        job.state = events_pb2.JOB_STATE_ANALYSING
        self._registry.save(job)
        finished = self._job_marker(job, variant_pb2.JobMarker.KIND_FINISHED, progress, published)
        await self._send_marker(finished, job_mode)
        checkpoint.finished = True
        self._save_checkpoint(checkpoint)
        await self._notify(
            job,
            events_pb2.STAGE_INGEST,
            events_pb2.JOB_STATE_ANALYSING,
            published,
            _finished_message(progress),
            progress,
            total=published,
        )

    async def _start_mode(self, job: JobRecord, progress: _Progress) -> JobMode | None:
        """The mode the job runs in, with its STARTED marker sent; None when the job failed to start."""
        if self._batch is None:
            choice = ModeChoice("streaming", "no batch path in this process", fallback=False)
        else:
            choice = choose_mode(self._flags, job)
        mode, reason = choice.mode, choice.reason
        started = self._job_marker(job, variant_pb2.JobMarker.KIND_STARTED, progress)
        if mode == "streaming":
            try:
                await self._open_stream(started)
            except StreamingUnavailableError as exc:
                if not choice.fallback:
                    await self._fail(
                        job,
                        f"streaming could not start ({exc}) and {FALLBACK_TO_BATCH} is off",
                        marker_via=None,
                    )
                    return None
                log.warning(
                    "job %s: streaming could not start (%s); running it in batch mode", job.job_id, exc
                )
                mode, reason = "batch", f"streaming could not start ({exc}); fell back to batch"
        job.mode = mode
        self._registry.save(job)
        if mode == "batch":
            await self._send_marker(started, "batch")
        log.info("job %s runs in %s mode: %s", job.job_id, mode, reason)
        await self._notify(
            job,
            events_pb2.STAGE_INGEST,
            events_pb2.JOB_STATE_INGESTING,
            0,
            f"ingest started ({mode}: {reason})",
        )
        return mode

    async def _open_stream(self, started: variant_pb2.JobMarker) -> None:
        """Streaming starts when the bus says it is healthy and takes the job's first message."""
        try:
            healthy = await asyncio.wait_for(self._bus.healthy(), _STREAM_START_TIMEOUT_S)
        except TimeoutError:
            healthy = False
        if not healthy:
            raise StreamingUnavailableError(f"the {self._bus.backend} bus is not healthy")
        try:
            await self._publish_marker(started, patient=False)
        except BusError as exc:
            raise StreamingUnavailableError(f"{self._stream} refused the job's first message: {exc}") from exc

    async def _open_reader(
        self, job: JobRecord, path: Path, region: str | None, resume_at: ReadPosition | None
    ) -> VcfReader:
        """The job's file opened (on a thread: it reads the header) at `resume_at`, or at the start."""
        return await asyncio.to_thread(
            VcfReader,
            path,
            file_id=job.file_id,
            job_id=job.job_id,
            tenant_id=job.tenant_id,
            source_name=job.source_name,
            batch_size=self._settings.batch_size,
            linger_ms=self._settings.batch_linger_ms,
            region=region,
            limits=self._limits,
            resume_at=resume_at,
        )

    def _batch_fields(self, job: JobRecord, priority: int, reader: VcfReader) -> bytes:
        """The job-level VariantBatch fields, serialized once and appended to every batch: the
        providers, the priority and the job's annotation context, built from its own header."""
        context = annotation_context(
            reader.header_lines, self._settings.population_af_pattern or DEFAULT_POPULATION_PATTERN
        )
        return variant_pb2.VariantBatch(
            providers=job.providers, priority=priority, annotation_context=context
        ).SerializeToString()

    def _record_file_issues(self, job: JobRecord, reader: VcfReader, progress: _Progress) -> None:
        """The faults of the file read past so far, on the job's row before the checkpoint that
        skips their lines: a lenient job's GetJob lists them, as `vcf-agent validate` would."""
        header, found, warnings = reader.header_issues, reader.file_issues, reader.warnings
        count = len(header) + len(found) + len(warnings)
        if count == progress.issues_recorded:
            return
        progress.issues_recorded = count
        more = header.dropped or found.dropped or warnings.dropped
        self._registry.record_file_issues(job, [*header, *found, *warnings], more)

    def _save_checkpoint(self, checkpoint: Checkpoint) -> None:
        if self._checkpoints is not None:
            self._checkpoints.save(checkpoint)

    async def _run_streaming(
        self, job: JobRecord, reader: VcfReader, progress: _Progress, checkpoint: Checkpoint
    ) -> int:
        """Publish every batch to `vcf-variants`; returns the variants in the file.

        After a resume that counts the variants before the checkpoint too: the file's total.
        """
        prepare = self._batch_preparer(job, progress.priority, reader)
        ledger = JobLedger(checkpoint.at) if isinstance(self._bus, FailoverBus) else None
        if ledger is not None:
            self._ledgers[job.job_id] = ledger
        published = checkpoint.at.variants
        last_note = time.monotonic()
        async with contextlib.aclosing(self._read(reader, progress, prepare)) as items:
            async for item in items:
                positions = await publish_patiently(
                    self._bus,
                    self._stream,
                    [OutgoingMessage(item.payload, item.key, item.headers)],
                    who="ingest",
                )
                published += item.variants
                telemetry.variants_processed.labels("ingest", "published").inc(item.variants)
                if ledger is not None:
                    ledger.took(self._takers(positions))
                if item.resume_at is not None:
                    checkpoint.at = item.resume_at
                    if ledger is not None:
                        ledger.close_span(item.resume_at)
                if time.monotonic() - last_note >= _PROGRESS_INTERVAL_S:
                    last_note = time.monotonic()
                    # Records before the checkpoint are never read again: their dead letters go first.
                    await self._flush_dead_letters(progress)
                    self._record_file_issues(job, reader, progress)
                    self._save_checkpoint(checkpoint)
                    await self._notify(
                        job, events_pb2.STAGE_INGEST, events_pb2.JOB_STATE_INGESTING, published, "", progress
                    )
        self._registry.mark(job, "ingested_at")
        return published

    def _batch_preparer(
        self, job: JobRecord, priority: int, reader: VcfReader
    ) -> Callable[[EncodedBatch], _Encoded]:
        """Encodes a batch for `vcf-variants` (in the reader's thread): key, payload and headers."""
        threshold = self._settings.compression_threshold
        # Appending an encoded field to a serialized message merges it in: the job's
        # providers ride on every batch without re-encoding the variants.
        providers = self._batch_fields(job, priority, reader)
        tenant_id = job.tenant_id
        job_trace = tracing.current_headers()

        def prepare(batch: EncodedBatch) -> _Encoded:
            key = f"{batch.chromosome}:{batch.position // _KEY_BIN}".encode()
            trace_headers = tracing.ingested_now()
            if job_trace:
                trace_headers.update(
                    tracing.stage_headers(
                        "ingest.publish_batch", "ingest", job_trace, variants=batch.variant_count
                    )
                )
            payload, headers = encode_serialized(
                batch.payload + providers,
                _BATCH_TYPE,
                tenant_id=tenant_id,
                trace_headers=trace_headers,
                compression_threshold=threshold,
            )
            headers[HEADER_JOB] = job.job_id
            headers[HEADER_VARIANT_COUNT] = str(batch.variant_count)
            return _Encoded(
                key,
                payload,
                headers,
                batch.variant_count,
                batch.resume_at,
                batch.first_record_index,
                batch.last_record_index,
            )

        return prepare

    async def _run_batch(self, job: JobRecord, reader: VcfReader, progress: _Progress) -> int:
        """Route, analyse and aggregate in this process; returns the variants read (and stored)."""
        assert self._batch is not None
        providers = self._batch_fields(job, progress.priority, reader)
        read = 0

        def prepare(batch: EncodedBatch) -> variant_pb2.VariantBatch:
            return variant_pb2.VariantBatch.FromString(batch.payload + providers)

        async def counted() -> AsyncGenerator[variant_pb2.VariantBatch]:
            nonlocal read
            async with contextlib.aclosing(self._read(reader, progress, prepare)) as items:
                async for item in items:
                    read += len(item.variants)
                    telemetry.variants_processed.labels("ingest", "read").inc(len(item.variants))
                    yield item
            self._registry.mark(job, "ingested_at")

        async def analysed(done: int, classifications: Counter[str]) -> None:
            await self._flush_dead_letters(progress)
            await self._notify(
                job, events_pb2.STAGE_INGEST, events_pb2.JOB_STATE_INGESTING, read, "", progress
            )
            await self._notify(
                job,
                events_pb2.STAGE_ANALYSIS,
                events_pb2.JOB_STATE_ANALYSING,
                done,
                "",
                classifications=classifications,
            )

        async with contextlib.aclosing(counted()) as batches:
            outcome = await self._batch.run(batches, analysed)
        return outcome.analysed

    async def _read(
        self, reader: VcfReader, progress: _Progress, prepare: Callable[[EncodedBatch], T]
    ) -> AsyncGenerator[T]:
        """The reader's batches, prepared in its thread; at most max_pending_batches wait.

        Closing the iterator early stops the reader thread and waits for it.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[T | None] = asyncio.Queue(self._settings.max_pending_batches)

        def put(item: T | None) -> None:
            asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()

        producer = loop.run_in_executor(None, self._produce, reader, put, progress, prepare)
        try:
            while (item := await queue.get()) is not None:
                yield item
            await producer
        finally:
            if not producer.done():
                reader.close()
                # Unblock the reader thread so it can observe close().
                while not producer.done():
                    with contextlib.suppress(asyncio.QueueEmpty):
                        queue.get_nowait()
                    await asyncio.sleep(0.01)
                with contextlib.suppress(Exception):
                    producer.result()

    def _produce(
        self,
        reader: VcfReader,
        put: Callable[[T | None], None],
        progress: _Progress,
        prepare: Callable[[EncodedBatch], T],
    ) -> None:
        """Reader thread: parse, prepare, hand over; blocks when the consumer is behind."""
        try:
            for batch in reader.batches():
                # Before the batch is handed over: a checkpoint past it finds its dead letters queued.
                progress.dead_letters.extend(reader.take_dead_letters())
                progress.dead_lettered = reader.dead_lettered
                put(prepare(batch))
                progress.records = reader.records
                progress.variants += batch.variant_count
            progress.dead_letters.extend(reader.take_dead_letters())
            progress.dead_lettered = reader.dead_lettered
        finally:
            reader.close()
            put(None)

    async def _flush_dead_letters(self, progress: _Progress) -> None:
        letters, progress.dead_letters = progress.dead_letters, []
        await self._dead_letters.send(letters)

    async def _fail(self, job: JobRecord, reason: str, *, marker_via: JobMode | None = "streaming") -> None:
        """Fail the job here first, then tell the streams.

        The FAILED JobMarker goes where the job's other markers went (none when the bus broke).
        """
        log.warning("job %s failed: %s", job.job_id, reason)
        job.state = events_pb2.JOB_STATE_FAILED
        job.error = reason
        self._registry.save(job, stamp="finished_at")
        if self._checkpoints is not None:
            self._checkpoints.drop(job.job_id)
        failed = self._job_marker(job, variant_pb2.JobMarker.KIND_FAILED, _Progress(), reason=reason)
        try:
            if marker_via == "streaming" or (marker_via == "batch" and self._batch is not None):
                await self._send_marker(failed, marker_via)
            await self._notify(job, events_pb2.STAGE_INGEST, events_pb2.JOB_STATE_FAILED, 0, reason)
        except BusError as exc:
            log.warning("job %s: could not publish its failure: %s", job.job_id, exc)

    async def _send_marker(self, marker: variant_pb2.JobMarker, via: JobMode) -> None:
        """A job boundary goes where the job's variants go: `vcf-variants`, or the batch path."""
        if via == "batch":
            assert self._batch is not None
            await self._batch.send_markers([marker])
        else:
            await self._publish_marker(marker)

    async def _publish_marker(self, marker: variant_pb2.JobMarker, *, patient: bool = True) -> None:
        """Mid-job a failing bus is waited out; `patient=False` lets the first marker tell streaming
        cannot start (so the job falls back to batch or fails saying why)."""
        payload, headers = encode(marker, tenant_id=marker.tenant_id)
        headers[HEADER_JOB] = marker.job_id
        message = OutgoingMessage(payload, marker.job_id.encode(), headers)
        if patient:
            await publish_patiently(self._bus, self._stream, [message], who="ingest")
        else:
            await self._bus.publish(self._stream, [message])

    def _job_marker(
        self,
        job: JobRecord,
        kind: variant_pb2.JobMarker.Kind.ValueType,
        progress: _Progress,
        variant_count: int = 0,
        reason: str = "",
    ) -> variant_pb2.JobMarker:
        now = Timestamp()
        now.GetCurrentTime()
        return variant_pb2.JobMarker(
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
            reference_blocks=progress.reference_blocks,
            placeholder_alleles=progress.placeholder_alleles,
        )

    async def _notify(
        self,
        job: JobRecord,
        stage: events_pb2.Stage.ValueType,
        state: events_pb2.JobState.ValueType,
        done: int,
        message: str,
        progress: _Progress | None = None,
        total: int = 0,
        classifications: Counter[str] | None = None,
    ) -> None:
        note = progress_notification(
            job.job_id,
            job.tenant_id,
            stage,
            state,
            done=done,
            total=total,
            message=message,
            file_id=job.file_id,
            source_name=job.source_name,
            samples=len(progress.samples) if progress else 0,
            dead_lettered=progress.dead_lettered if progress else 0,
            providers=job.providers,
            classifications=classifications,
        )
        await publish_patiently(self._bus, self._notifications, [note], who="ingest")


def _finished_message(progress: _Progress) -> str:
    skipped = []
    if progress.reference_blocks:
        skipped.append(f"{progress.reference_blocks} gVCF reference block(s)")
    if progress.placeholder_alleles:
        skipped.append(f"{progress.placeholder_alleles} <*>/<NON_REF> allele(s)")
    return "ingest finished" + (f" ({' and '.join(skipped)} read, not variants)" if skipped else "")


def _strict_errors(path: Path, job: JobRecord, region: str | None) -> str:
    """Strict mode's pre-pass: every error in the file, summarised; empty when there is none."""
    report = read_report(
        VcfReader(
            path,
            file_id=job.file_id,
            job_id=job.job_id,
            tenant_id=job.tenant_id,
            source_name=job.source_name,
            region=region,
            keep_issues=True,
        )
    )
    if report.valid:
        return ""
    quoted = "; ".join(
        f"line {i.line}, column {i.column}: {i.message} [{i.code}]" for i in report.errors[:_QUOTED_ERRORS]
    )
    count = report.error_count
    more = f" (and {count - _QUOTED_ERRORS} more)" if count > _QUOTED_ERRORS else ""
    summary = f"strict validation found {count} error(s), nothing was ingested"
    return f"{job.source_name}: {summary}: {quoted}{more}"
