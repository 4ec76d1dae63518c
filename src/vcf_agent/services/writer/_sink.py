"""Buffered, idempotent writes of completed variants into LanceDB and the graph.

Records are buffered across polls into large batches; offsets are committed
only after both stores hold the batch. Job completion is exact: the FINISHED
marker carries the number of variants, and the stored count comes from the
store itself (distinct correlation ids), so replays never inflate it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from google.protobuf.timestamp_pb2 import Timestamp

from vcf_agent import telemetry, tracing
from vcf_agent.bus import Bus, Record
from vcf_agent.config import Settings
from vcf_agent.lifecycle import AsyncComponent
from vcf_agent.processing import (
    CommitOffsets,
    DeadLetterSink,
    header_count,
    next_offsets,
    parse_or_dead_letter,
)
from vcf_agent.progress import progress_notification
from vcf_agent.schema import HEADER_JOB, HEADER_VARIANT_COUNT, PayloadError, decode, serialized_message
from vcf_agent.v1 import events_pb2, variant_pb2

from ._graph_store import GraphCapacityError, GraphStore
from ._job_outcome import job_outcome
from ._lance_store import LanceStore
from ._native_memory import PacedTrim, return_freed_memory
from ._rows import RowCollector, WriteRows, answer_counts, warming_rows

T = TypeVar("T")

log = logging.getLogger(__name__)

# Flushes in flight at once: one in LanceDB, one in the graph, one building rows.
_FLUSH_DEPTH = 3
# How long stop() lets an idle compaction finish. Compacting a large table can outlast the
# grace period (SIGTERM after large jobs found the writer still running after 30 s); one cut
# short changes nothing, as a compaction commits atomically and the next idle period redoes it.
_COMPACTION_WAIT_AT_STOP_S = 5.0


@dataclass(frozen=True, slots=True)
class _Flush:
    """A batch on its way into the stores.

    `in_graph` resolves True once the graph holds the batch, `finished` once LanceDB holds it
    too and its progress is reported; either resolves False when the flush ends any other way
    (an error, a failed predecessor, cancellation), so every later batch stops as well.
    """

    done: asyncio.Task[CommitOffsets]
    in_graph: asyncio.Future[bool]
    finished: asyncio.Future[bool]

    def settle(self, _: object = None) -> None:
        for step in (self.in_graph, self.finished):
            if not step.done():
                step.set_result(False)


@dataclass(slots=True)
class _JobTally:
    tenant_id: str
    total: int = 0
    finished: bool = False
    # Every variant is stored and the final state below is decided.
    complete: bool = False
    classifications: Counter[str] = field(default_factory=Counter)
    # provider -> [ok, failed, missing]: counted per batch while the job runs, then
    # replaced by the store's exact counts when it ends.
    providers: dict[str, list[int]] = field(default_factory=dict)
    state: int = events_pb2.JOB_STATE_STORING
    error: str = ""
    # Time (ns) of the newest job marker applied: an older STARTED is a stale one, not a new run.
    marker_ns: int = 0
    # Records of the file that ingest dead-lettered for a MUST they break (its FINISHED marker).
    rejected: int = 0

    def provider_counts(self) -> dict[str, events_pb2.ProviderCounts]:
        return {
            name: events_pb2.ProviderCounts(ok=ok, failed=failed, missing=missing)
            for name, (ok, failed, missing) in self.providers.items()
        }


_BOOK_COLUMNS = (
    "job_id, tenant_id, total, finished, complete, classifications, providers, state, error, marker_ns,"
    " rejected"
)


class _JobBook:
    """Per-job totals and completion, durable so a restarted writer still knows them."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS jobs (job_id TEXT PRIMARY KEY, tenant_id TEXT, total INTEGER,"
            " finished INTEGER, complete INTEGER, classifications TEXT)"
        )
        # Books written before final states were decided here gain the columns in place; a job
        # they hold as complete keeps `complete` (its answers were never counted).
        present = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for column, kind in (
            ("providers", "TEXT NOT NULL DEFAULT '{}'"),
            ("state", f"INTEGER NOT NULL DEFAULT {events_pb2.JOB_STATE_COMPLETE}"),
            ("error", "TEXT NOT NULL DEFAULT ''"),
            ("marker_ns", "INTEGER NOT NULL DEFAULT 0"),
            ("rejected", "INTEGER NOT NULL DEFAULT 0"),
        ):
            if column not in present:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
        # Variants some stage dead-lettered, once per source record however often it was
        # dead-lettered (a stage that restarts reads a poison record again).
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS lost (job_id TEXT NOT NULL, source TEXT NOT NULL,"
            " variants INTEGER NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (job_id, source))"
        )

    def load(self, job_id: str) -> _JobTally | None:
        row = self._db.execute(f"SELECT {_BOOK_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        tally = _JobTally(row[1], row[2], bool(row[3]), bool(row[4]), Counter(json.loads(row[5] or "{}")))
        tally.providers = json.loads(row[6] or "{}")
        tally.state = row[7] if tally.complete else events_pb2.JOB_STATE_STORING
        tally.error = row[8]
        tally.marker_ns = row[9]
        tally.rejected = row[10]
        return tally

    def save(self, job_id: str, tally: _JobTally) -> None:
        self._db.execute(
            f"INSERT OR REPLACE INTO jobs ({_BOOK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job_id,
                tally.tenant_id,
                tally.total,
                int(tally.finished),
                int(tally.complete),
                json.dumps(dict(tally.classifications)),
                json.dumps(tally.providers),
                tally.state,
                tally.error,
                tally.marker_ns,
                tally.rejected,
            ),
        )

    def add_lost(self, letter: events_pb2.DeadLetter) -> None:
        source = f"{letter.source_stream}/{letter.source_partition}/{letter.source_offset}"
        self._db.execute(
            "INSERT OR IGNORE INTO lost (job_id, source, variants, reason) VALUES (?, ?, ?, ?)",
            (letter.job_id, source, letter.variant_count, letter.reason),
        )

    def lost(self, job_id: str) -> tuple[int, list[tuple[str, int]]]:
        """Variants of the job dead-lettered, and (reason, variants) for the three main reasons."""
        reasons = self._db.execute(
            "SELECT reason, SUM(variants) FROM lost WHERE job_id = ? GROUP BY reason ORDER BY 2 DESC",
            (job_id,),
        ).fetchall()
        return sum(count for _, count in reasons), [(reason, count) for reason, count in reasons[:3]]

    def forget_lost(self, job_id: str) -> None:
        self._db.execute("DELETE FROM lost WHERE job_id = ?", (job_id,))

    def knows(self, job_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM jobs WHERE job_id = ?", (job_id,)).fetchone() is not None

    def close(self) -> None:
        self._db.close()


class StoreSink(AsyncComponent):
    """The writer's consumer handler: buffer, write both stores, then report progress."""

    def __init__(self, bus: Bus, settings: Settings, lance: LanceStore, graph: GraphStore) -> None:
        self._bus = bus
        self._settings = settings
        self.lance = lance
        self.graph = graph
        self._sink = DeadLetterSink(bus, settings.topology.dead_letters, "writer")
        self._trim = PacedTrim()
        self._book = _JobBook(settings.data_dir / "writer" / "jobs.sqlite")
        self._tallies: dict[str, _JobTally] = {}
        self._buffer = RowCollector()
        self._markers: list[variant_pb2.JobMarker] = []
        # Dead letters of jobs' variants, from `dead-letters`: counted when they apply.
        self._letters: list[events_pb2.DeadLetter] = []
        self._buffered_records: list[Record] = []
        self._first_buffered = 0.0
        # Flushes in flight, oldest first: one batch goes into LanceDB while the next goes
        # into the graph and a third has its rows built. The row builder and the store
        # engines release the GIL, so they overlap; each store takes the batches in order.
        self._flushing: deque[_Flush] = deque()
        # Compaction started when the input went idle, off the write path.
        self._idle_compaction: asyncio.Future[bool] | None = None
        # When records last arrived: idle means quiet for writer_idle_compaction_after_ms.
        self._last_input = time.monotonic()
        self._stopping = False
        # A lingering batch leaves as soon as the stores are idle, not at the consumer's next
        # poll (up to its poll timeout later): this task waits for that while polls go on.
        self._linger: asyncio.Task[None] | None = None
        # Offsets the linger task's waits released, handed to the consumer by the next call.
        self._released: CommitOffsets = {}
        # handle(), flush() and the linger task's flush change the buffer one at a time.
        self._buffer_lock = asyncio.Lock()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    async def handle(self, records: list[Record]) -> CommitOffsets | None:
        async with self._buffer_lock:
            stored = await self._handle(records)
        if self._buffered_records:
            self._linger_until_stores_free()
        return stored

    async def _handle(self, records: list[Record]) -> CommitOffsets:
        now = time.monotonic()
        quiet_s = self._settings.writer_idle_compaction_after_ms / 1000
        if records:
            self._last_input = now
        elif not self._buffered_records and not self._flushing and now - self._last_input >= quiet_s:
            self._compact_when_idle()
        stored, self._released = self._released, {}
        for record in records:
            if not self._buffered_records:
                self._first_buffered = time.monotonic()
            if record.stream == self._settings.topology.dead_letters:
                self._letters.extend(_lost_variants(record))
            else:
                markers = await parse_or_dead_letter(record, self._collect, self._sink)
                self._markers.extend(markers or ())
            self._buffered_records.append(record)
            if self._batch_full():
                # Full batches leave one by one, so a poll of many large records still keeps
                # batches near their target size and the last one of a job short.
                stored |= await self._flush_buffer()
        # Offsets are released only once both stores hold their batch.
        stored |= await self._stored(wait=False)
        if not self._buffered_records:
            return stored
        linger_s = self._settings.writer_linger_ms / 1000
        # With the graph idle, lingering only adds latency: what is buffered goes now (into the
        # graph, while LanceDB may still take the batch before), and batches grow by themselves
        # while the graph is busy (group commit).
        due = (
            time.monotonic() - self._first_buffered >= linger_s or not self._buffer or not self._graph_busy()
        )
        if due or self._markers or self._letters:
            stored |= await self._flush_buffer()
        return stored

    def _linger_until_stores_free(self) -> None:
        """Have what is buffered leave as soon as the graph, the first store, is idle.

        handle() is called again only when the consumer's poll returns: with no new input that
        is the poll's timeout later, and the batch would wait that long after the stores freed
        up. The linger's time limit is still handle()'s to apply.
        """
        if self._linger is None or self._linger.done():
            self._linger = asyncio.create_task(self._leave_when_stores_free(), name="writer-linger")

    async def _leave_when_stores_free(self) -> None:
        while self._buffered_records and not self._stopping:
            busy = self._graph_busy()
            if len(self._flushing) >= _FLUSH_DEPTH and not self._flushing[0].done.done():
                busy.append(self._flushing[0].done)
            if busy:
                await asyncio.wait(busy)
                continue
            # handle() running decides about the buffer itself (and starts this again if need be);
            # a failed flush is for the consumer's next call to raise, the buffer to be handed back.
            failed = any(
                flush.done.done() and (flush.done.cancelled() or flush.done.exception())
                for flush in self._flushing
            )
            if failed or self._buffer_lock.locked():
                return
            async with self._buffer_lock:
                # No flush that is done failed, and one is in flight below _FLUSH_DEPTH or the
                # oldest is done: the flush does not wait for one that could raise.
                self._released |= await self._flush_buffer()
            return

    def _graph_busy(self) -> list[asyncio.Future[Any]]:
        """The flushes still going into the graph. A batch leaves once there are none: it enters
        the graph while the one before it goes into LanceDB, as it would have waited for the graph
        anyway (measured on a 10,000-variant job: its last batch waited 60 ms for LanceDB)."""
        return [flush.in_graph for flush in self._flushing if not flush.in_graph.done()]

    async def _stop_lingering(self) -> None:
        linger, self._linger = self._linger, None
        if linger is not None:
            linger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await linger

    def _batch_full(self) -> bool:
        """A batch leaves at `writer_batch_rows` variants or `writer_batch_bytes` of payload.

        The byte bound is what keeps a batch of many samples (each variant carrying every call)
        as small in memory as a single-sample one: at most _FLUSH_DEPTH batches are in flight
        plus the one filling, so the writer's batch memory is bounded by this setting whatever
        the input's shape.
        """
        settings = self._settings
        return (
            len(self._buffer) >= settings.writer_batch_rows
            or self._buffer.payload_bytes >= settings.writer_batch_bytes
        )

    async def flush(self) -> CommitOffsets:
        """Store everything buffered now; returns the offsets that became safe to commit."""
        async with self._buffer_lock:
            stored, self._released = self._released, {}
            if self._buffered_records:
                stored |= await self._flush_buffer()
            while self._flushing:
                stored |= await self._stored(wait=True)
        return stored

    async def _flush_buffer(self) -> CommitOffsets:
        """Start storing the buffer, after the oldest flush if too many are in flight.

        Returns the offsets that waiting released.
        """
        stored: CommitOffsets = {}
        if len(self._flushing) >= _FLUSH_DEPTH:
            stored = await self._stored(wait=True)
        writes, self._buffer = self._buffer, RowCollector()
        markers, self._markers = self._markers, []
        letters, self._letters = self._letters, []
        records, self._buffered_records = self._buffered_records, []
        previous = self._flushing[-1] if self._flushing else None
        loop = asyncio.get_running_loop()
        in_graph: asyncio.Future[bool] = loop.create_future()
        finished: asyncio.Future[bool] = loop.create_future()
        done = asyncio.create_task(
            _failure_logged_per_job(
                self._store(writes, markers, letters, records, previous, in_graph, finished),
                records,
                markers,
                letters,
            ),
            name="writer-flush",
        )
        flush = _Flush(done, in_graph, finished)
        done.add_done_callback(flush.settle)
        self._flushing.append(flush)
        return stored

    async def _stored(self, *, wait: bool) -> CommitOffsets:
        """Offsets of the flushes that are done (waiting for the oldest if asked); raises their error.

        Later batches hold later offsets of a partition, so merging keeps the newest.
        """
        stored: CommitOffsets = {}
        while self._flushing and (wait or self._flushing[0].done.done()):
            flush = self._flushing[0]
            try:
                # Shielded: a caller cut short (a drain's deadline) leaves the batch going into
                # the stores, where stop() still waits for it; a store write cannot be interrupted.
                stored |= await asyncio.shield(flush.done)
            finally:
                if flush.done.done() and self._flushing and self._flushing[0] is flush:
                    self._flushing.popleft()
            wait = False
        return stored

    async def reset(self) -> None:
        """Forget what is buffered or in flight after an error; those records come again.

        Flushes behind a failed one stop by themselves, and the one a store thread is
        running cannot be interrupted, so each is awaited, not cancelled. Tallies are read
        again from the book: a batch that counted into them before failing is counted anew.
        """
        await self._stop_lingering()
        self._released = {}
        flushing, self._flushing = list(self._flushing), deque()
        await asyncio.gather(*(flush.done for flush in flushing), return_exceptions=True)
        self._buffer = RowCollector()
        self._markers = []
        self._letters = []
        self._buffered_records = []
        self._tallies.clear()

    def _compact_when_idle(self) -> None:
        """Fold what was written into the stores' files and indexes while nothing arrives.

        A write arriving meanwhile waits for the store's lock, as it would for compaction
        on the write path; stop() waits a few seconds for a running compaction.
        """
        running = self._idle_compaction
        if self._stopping or (running is not None and not running.done()):
            return
        if running is not None and not running.cancelled() and running.exception() is not None:
            # A failed compaction leaves the data as it was; the next idle poll tries again.
            log.warning("idle compaction failed: %s", running.exception())
        self._idle_compaction = _on_daemon_thread(self._idle_upkeep, "writer-idle-compaction")

    def _idle_upkeep(self) -> bool:
        """Checkpoint the graph, then compact LanceDB; True if either had anything to do.

        The graph first: closing the graph checkpoints whatever log is left, and the
        writer's stop waits for that, while a compaction cut short by stopping costs nothing.
        One after the other, not at once, so their working memory does not add up.
        """
        checkpointed = self.graph.checkpoint_if_written()
        return self.lance.compact_if_written() or checkpointed

    def _collect(self, record: Record) -> list[variant_pb2.JobMarker]:
        """Hand a record's writes to the row builder; returns its job markers."""
        payload = serialized_message(record.value, record.headers, events_pb2.DatabaseWriteBatch)
        return [variant_pb2.JobMarker.FromString(marker) for marker in self._buffer.add(payload)]

    async def _store(
        self,
        writes: RowCollector,
        markers: list[variant_pb2.JobMarker],
        letters: list[events_pb2.DeadLetter],
        records: list[Record],
        previous: _Flush | None,
        in_graph: asyncio.Future[bool],
        finished: asyncio.Future[bool],
    ) -> CommitOffsets:
        """Store one batch: the graph in turn, then LanceDB in turn, then markers and progress.

        A predecessor that did not get as far stops this batch too; its own task reports why.
        Waits are shielded, so cancelling this flush never cancels a predecessor's step.
        """
        touched: dict[str, str] = {}
        started_ns = time.time_ns()
        # The builder releases the GIL, so the earlier batches' stores keep running meanwhile.
        collected = len(writes)
        rows = await asyncio.to_thread(writes.take) if collected else None
        if previous is not None and not await asyncio.shield(previous.in_graph):
            return {}
        # The graph first: LanceDB then appends the variants the graph did not have. This
        # batch enters the graph while the previous one may still be going into LanceDB.
        try:
            maybe_stored = await _timed("graph", self.graph.write, rows) if rows is not None else None
        except GraphCapacityError as exc:
            # Not an error that clears by itself: the jobs fail with the reason, instead of the
            # consumer retrying this batch forever.
            in_graph.set_result(True)
            assert rows is not None
            return await self._reject(rows, markers, records, previous, finished, str(exc))
        in_graph.set_result(True)
        # LanceDB takes batches in order too (a variant in two batches is appended by the first
        # and merged by the second), and markers apply after the writes they close.
        if previous is not None and not await asyncio.shield(previous.finished):
            return {}
        if rows is not None:
            await _timed("lancedb", self.lance.write, rows, maybe_stored=maybe_stored)
            # The batch's buffers are freed in both stores by now; glibc would keep the pages.
            if self._trim.due():
                await asyncio.to_thread(return_freed_memory)
            telemetry.variants_processed.labels("writer", "stored").inc(collected)
            for job_id, tenant_id, classification, count in _classification_counts(rows):
                touched[job_id] = tenant_id
                self._tally(job_id, tenant_id).classifications[classification] += count
            for job_id, provider, slot, count in answer_counts(rows.variants, rows.analyses):
                tally = self._tallies[job_id]
                if not tally.complete:
                    tally.providers.setdefault(provider, [0, 0, 0])[slot] += count
        rewritten = frozenset(touched)
        for marker in markers:
            self._apply_marker(marker)
            touched.setdefault(marker.job_id, marker.tenant_id)
        for letter in letters:
            self._book.add_lost(letter)
            # A letter may overtake its job's first batch; the job's markers report it then.
            if letter.job_id in self._tallies or self._book.knows(letter.job_id):
                touched.setdefault(letter.job_id, letter.tenant_id)
        # Only what was stored continues a job's trace: a dead letter read for accounting carries
        # the trace of the stage that gave the record up.
        writes_stream = self._settings.topology.database_writes
        stored_records = [record for record in records if record.stream == writes_stream]
        await self._report(touched, _stored_traces(stored_records, started_ns), rewritten)
        finished.set_result(True)
        return next_offsets(records)

    async def _reject(
        self,
        rows: WriteRows,
        markers: list[variant_pb2.JobMarker],
        records: list[Record],
        previous: _Flush | None,
        finished: asyncio.Future[bool],
        reason: str,
    ) -> CommitOffsets:
        """A batch the stores cannot take: its jobs fail with the reason, its records are dead-lettered.

        The records keep their payload, so a redrive after the cause is fixed (a larger buffer
        pool) stores them; resubmitting the job decides its state afresh.
        """
        if previous is not None and not await asyncio.shield(previous.finished):
            return {}
        # One line per job the batch held, naming it: an operator searches the logs by job.
        for job_id, variants in _variants_per_job(rows).items():
            log.error(
                "writer: the stores rejected %d variants of this job (a batch of %d): %s",
                variants,
                len(rows),
                reason,
                extra={"job_id": job_id},
            )
        for record in records:
            await self._sink.send_record(record, reason, "store_rejected")
        for marker in markers:
            self._apply_marker(marker)
        rejected = {job_id: tenant_id for job_id, tenant_id, _, _ in _classification_counts(rows)}
        for job_id, tenant_id in rejected.items():
            tally = self._tally(job_id, tenant_id)
            tally.complete = True
            tally.state = events_pb2.JOB_STATE_FAILED
            tally.error = f"the store rejected variants of this job: {reason}"
        touched = dict(rejected)
        for marker in markers:
            touched.setdefault(marker.job_id, marker.tenant_id)
        await self._report(touched)
        finished.set_result(True)
        return next_offsets(records)

    def _tally(self, job_id: str, tenant_id: str) -> _JobTally:
        tally = self._tallies.get(job_id)
        if tally is None:
            tally = self._book.load(job_id) or _JobTally(tenant_id)
            self._tallies[job_id] = tally
        return tally

    def _apply_marker(self, marker: variant_pb2.JobMarker) -> None:
        tally = self._tally(marker.job_id, marker.tenant_id)
        stamped = marker.timestamp.ToNanoseconds()
        if stamped and stamped <= tally.marker_ns:
            # Older than a marker already applied: a STARTED held back on a failover bus's dead
            # backend and delivered late is not a new run, and must not reset the count.
            return
        tally.marker_ns = max(tally.marker_ns, stamped)
        if marker.kind == variant_pb2.JobMarker.KIND_STARTED:
            # A resubmission: completion is decided afresh (the stores already hold its rows).
            # Only then are the last run's losses forgotten: a first run's STARTED marker may
            # come after a letter about its own records.
            if tally.finished:
                self._book.forget_lost(marker.job_id)
            tally.finished = tally.complete = False
            tally.total = tally.rejected = 0
            tally.classifications.clear()
            tally.providers.clear()
            tally.state, tally.error = events_pb2.JOB_STATE_STORING, ""
        elif marker.kind == variant_pb2.JobMarker.KIND_FINISHED:
            tally.finished = True
            tally.total = marker.variant_count
            tally.rejected = marker.dead_lettered
        # Saved by _report, which every flush with a marker reaches for the marker's job.

    async def _report(
        self,
        touched: dict[str, str],
        traces: Mapping[str, dict[str, str]] | None = None,
        rewritten: frozenset[str] = frozenset(),
    ) -> None:
        """Progress of the touched jobs; `rewritten` are those whose variants this batch wrote."""
        if not touched:
            return
        stamp = Timestamp()
        stamp.GetCurrentTime()
        messages = []
        for job_id, tenant_id in touched.items():
            tally = self._tally(job_id, tenant_id)
            stored = await asyncio.to_thread(self.lance.count, job_id)
            lost, reasons = self._book.lost(job_id)
            # Every variant is stored or dead-lettered. A job that ended with errors is decided
            # again when its variants are written again: a redrive may have mended them.
            settled = tally.finished and stored + lost >= tally.total
            mended = tally.complete and tally.state != events_pb2.JOB_STATE_COMPLETE and job_id in rewritten
            if settled and (not tally.complete or mended):
                await asyncio.to_thread(self._decide, job_id, tally, stored, lost, reasons)
            self._book.save(job_id, tally)
            messages.append(
                progress_notification(
                    job_id,
                    tenant_id or tally.tenant_id,
                    events_pb2.STAGE_STORAGE,
                    cast(events_pb2.JobState.ValueType, tally.state),
                    done=stored,
                    total=tally.total,
                    timestamp=stamp,
                    classifications=tally.classifications,
                    message=_state_message(tally),
                    provider_counts=tally.provider_counts(),
                    trace_headers=(traces or {}).get(job_id),
                )
            )
        await self._bus.publish(self._settings.topology.user_notifications, messages)

    def _decide(
        self, job_id: str, tally: _JobTally, stored: int, lost: int, lost_reasons: list[tuple[str, int]]
    ) -> None:
        """Every variant is stored or dead-lettered: the final state, from the store's exact counts."""
        counts = self.lance.provider_counts(job_id, tally.providers)
        missing = max(0, tally.total - stored) if lost else 0
        outcome = job_outcome(
            stored,
            counts,
            lambda provider: self.lance.failure_reasons(job_id, provider),
            lost=missing,
            lost_reasons=lost_reasons,
            rejected=tally.rejected,
        )
        tally.providers = {name: [c.ok, c.failed, c.missing] for name, c in counts.items()}
        tally.complete = True
        tally.state, tally.error = outcome

    async def start(self) -> None:
        # The stores are open (they start first); a failed warm-up costs the first batch its time.
        try:
            await asyncio.to_thread(self._warm)
        except Exception as exc:
            log.warning("warming the stores' write path failed (the first batch pays for it): %s", exc)

    def _warm(self) -> None:
        """Run a made-up batch through what a first batch would load on first use, storing nothing."""
        rows = warming_rows()
        self.graph.warm(rows)
        self.lance.warm(rows)

    async def stop(self) -> None:
        """Store what is buffered or in flight; an idle compaction gets a few seconds, not more."""
        self._stopping = True
        await self.flush()
        await self._stop_lingering()
        running = self._idle_compaction
        if running is not None and not running.done():
            await asyncio.wait([running], timeout=_COMPACTION_WAIT_AT_STOP_S)
            if not running.done():
                log.warning(
                    "stopping with an idle compaction still running: left to end with the process "
                    "(its commit is atomic; the next idle period compacts again)"
                )
        self._book.close()


def _on_daemon_thread(call: Callable[[], T], name: str) -> asyncio.Future[T]:
    """call() on a thread of its own, as a future of the running loop.

    A daemon thread, unlike asyncio.to_thread's pool (which the interpreter joins at
    exit), lets the process exit while it still runs: for work that is safe to cut short.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(cast(T, result))

    def run() -> None:
        try:
            result, error = call(), None
        except Exception as exc:  # handed to the future's awaiter
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


async def _timed(store: str, write: Callable[..., T], rows: WriteRows, **kwargs: Any) -> T:
    """One store transaction on a worker thread, measured."""
    started = time.perf_counter()
    try:
        return await asyncio.to_thread(write, rows, **kwargs)
    except Exception:
        telemetry.stage_failures.labels("writer", f"{store}_write").inc()
        raise
    finally:
        telemetry.store_write_latency.labels(store).observe(time.perf_counter() - started)
        telemetry.store_write_rows.labels(store).observe(len(rows))


def _stored_traces(records: list[Record], started_ns: int) -> dict[str, dict[str, str]]:
    """Ingest-to-stored latency of each stored message; with tracing on, one span per job stored
    (under its first message's context, linking the rest) and the headers continuing its trace."""
    now_ms = time.time_ns() // 1_000_000
    observe = telemetry.processing_latency.labels("end_to_end").observe
    by_job: dict[str, list[Mapping[str, str]]] = {}
    on = tracing.enabled()
    for record in records:
        ingested = record.headers.get(tracing.HEADER_INGESTED_AT)
        if ingested is not None and ingested.isdigit():
            observe(max(0, now_ms - int(ingested)) / 1000)
        if on and record.key and "traceparent" in record.headers:
            by_job.setdefault(record.key.decode(errors="replace"), []).append(record.headers)
    return {
        job_id: tracing.stage_headers(
            "writer.store",
            "writer",
            parents[0],
            start_ns=started_ns,
            links=parents[1:33],
            messages=len(parents),
        )
        for job_id, parents in by_job.items()
    }


def _lost_variants(record: Record) -> list[events_pb2.DeadLetter]:
    """The letter in a `dead-letters` record if it names variants of a job that were lost.

    Letters about answers (a provider that failed) lose no variant: the aggregator stores it
    with the failed or missing answer. An unreadable letter is skipped, never dead-lettered
    again (that would loop).
    """
    try:
        letter = decode(record.value, record.headers, events_pb2.DeadLetter)
    except PayloadError:
        return []
    return [letter] if letter.job_id and letter.variant_count > 0 else []


def _state_message(tally: _JobTally) -> str:
    if tally.state == events_pb2.JOB_STATE_COMPLETE:
        return "complete"
    return tally.error


async def _failure_logged_per_job(
    store: Coroutine[Any, Any, CommitOffsets],
    records: list[Record],
    markers: list[variant_pb2.JobMarker],
    letters: list[events_pb2.DeadLetter],
) -> CommitOffsets:
    """Store one batch; a failure is logged once per job the batch held, naming it."""
    try:
        return await store
    except Exception as exc:
        # The consumer hands the batch back and it comes again; an operator searches by job.
        for job_id, variants in _jobs_held(records, markers, letters).items():
            log.error(
                "writer: storing a batch failed (%s: %s); this job's %d variants in it come again "
                "from the last commit",
                type(exc).__name__,
                exc,
                variants,
                extra={"job_id": job_id},
            )
        raise


def _jobs_held(
    records: list[Record], markers: list[variant_pb2.JobMarker], letters: list[events_pb2.DeadLetter]
) -> dict[str, int]:
    """The jobs a batch concerns, with the variants it held of each, from the records' headers
    (the rows may not have been built when it failed)."""
    held: Counter[str] = Counter()
    for record in records:
        job_id = record.headers.get(HEADER_JOB, "")
        if job_id:
            held[job_id] += header_count(record.headers.get(HEADER_VARIANT_COUNT, ""))
    for job_id in [marker.job_id for marker in markers] + [letter.job_id for letter in letters]:
        held[job_id] += 0
    return {job_id: count for job_id, count in held.items() if job_id}


def _variants_per_job(rows: WriteRows) -> dict[str, int]:
    """Variants of each job in a batch."""
    per_job: Counter[str] = Counter()
    for job_id, _, _, count in _classification_counts(rows):
        per_job[job_id] += count
    return dict(per_job)


def _classification_counts(rows: WriteRows) -> list[tuple[str, str, str, int]]:
    """(job, tenant, classification, variants) of a batch, counted in Arrow, not per proto."""
    keys = ["job_id", "tenant_id", "classification"]
    counted = rows.variants.group_by(keys).aggregate([("correlation_id", "count")])
    columns = [counted.column(name).to_pylist() for name in [*keys, "correlation_id_count"]]
    return list(zip(*columns, strict=True))
