"""The consume-process-commit loop every stream-consuming service runs.

Offsets are committed only after the handler returns, so a crash redelivers
whatever was not fully processed (at-least-once); every stage downstream is
idempotent on deterministic ids, which turns that into exactly-once effects.

A handler that raises (a full disk, a store or broker that went away) gets the
same treatment in-process: its stage forgets what it buffered, the consumer
rejoins its group at the last commit, and the records come again after a
backoff that doubles up to a bound. So a stage heals by itself once the cause
clears, and nothing is lost or doubled on the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from vcf_agent import telemetry
from vcf_agent.bus import (
    Bus,
    BusError,
    Consumer,
    OutgoingMessage,
    PublishedPosition,
    Record,
    StartPosition,
    keep_for_next_join,
)
from vcf_agent.lifecycle import AsyncComponent
from vcf_agent.schema import (
    HEADER_JOB,
    HEADER_TENANT,
    HEADER_VARIANT_COUNT,
    PayloadError,
    decode_serialized,
    encode,
)
from vcf_agent.v1 import events_pb2

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)
T = TypeVar("T")

CommitOffsets = dict[tuple[str, int], int]
# Returns the offsets that are safe to commit now (None: everything handed over).
# A stage that buffers across polls or waits for more input returns less.
RecordsHandler = Callable[[list[Record]], Awaitable[CommitOffsets | None]]
# Called before records are redelivered after a handler error: the stage drops what it
# buffered from them, as a restarted process would have.
ResetHandler = Callable[[], Awaitable[None]]
# Called when a drain ends a stage's input: it finishes what it buffered now and returns the
# offsets that became safe to commit (what it cannot finish stays uncommitted, to come again).
FlushHandler = Callable[[], Awaitable[CommitOffsets]]

# First wait after a handler error, doubled per consecutive error up to the bound.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
# How long stop() lets a stage finish and commit what it holds when no drain was begun with a
# budget of its own (ServiceHost gives every stage `shutdown_drain_s`).
DRAIN_AT_STOP_S = 30.0
# Leaving the group at stop: a broker that does not answer in this time drops the member by
# itself (session timeout, or the closed connection), and a stopping process must not wait on it.
LEAVE_TIMEOUT_S = 3.0


async def publish_patiently(
    bus: Bus, stream: str, messages: Sequence[OutgoingMessage], *, who: str
) -> list[PublishedPosition]:
    """Publish, retrying a failing bus (down, or its log's disk full) with the stages' bounded backoff.

    For producers outside a consumer loop (ingest reading a file): their work cannot be handed
    back for redelivery, so they wait here until the bus takes it. Cancelling the caller ends it.
    """
    delay = RETRY_FIRST_S
    while True:
        try:
            return await bus.publish(stream, messages)
        except BusError as exc:
            log.warning("%s: publishing to %s failed (%s); retrying in %.1fs", who, stream, exc, delay)
            telemetry.stage_retries.labels(who, type(exc).__name__).inc()
            await asyncio.sleep(delay)
            delay = min(RETRY_MAX_S, delay * 2)


class DeadLetterSink:
    """Publishes what a stage could not process, whole, with the reason."""

    def __init__(self, bus: Bus, stream: str, service: str) -> None:
        self._bus = bus
        self._stream = stream
        self._service = service

    async def send(self, letters: Sequence[events_pb2.DeadLetter]) -> None:
        if not letters:
            return
        now = Timestamp()
        now.GetCurrentTime()
        messages = []
        for letter in letters:
            letter.service = letter.service or self._service
            if not letter.HasField("timestamp"):
                letter.timestamp.CopyFrom(now)
            payload, headers = encode(letter, tenant_id=letter.tenant_id)
            messages.append(
                OutgoingMessage(payload, (letter.job_id or letter.source_stream).encode(), headers)
            )
            telemetry.dead_letters.labels(
                self._service, letter.source_stream or "input", letter.error_code or "unknown"
            ).inc()
            # One line per letter, naming its job and variant (reasons never hold personal data).
            log.info(
                "dead letter from %s (%s): %s",
                letter.source_stream or "input",
                letter.error_code or "unknown",
                letter.reason,
                extra={"job_id": letter.job_id, "correlation_id": letter.correlation_id},
            )
        await self._bus.publish(self._stream, messages)

    async def send_record(self, record: Record, reason: str, code: str) -> None:
        """Dead-letter a whole record; its headers say whose variants, and how many, it held."""
        await self.send(
            [
                events_pb2.DeadLetter(
                    original_payload=record.value,
                    original_headers=dict(record.headers),
                    source_stream=record.stream,
                    source_partition=record.partition,
                    source_offset=record.offset,
                    reason=reason,
                    error_code=code,
                    attempt_count=1,
                    job_id=record.headers.get(HEADER_JOB, ""),
                    tenant_id=record.headers.get(HEADER_TENANT, ""),
                    variant_count=header_count(record.headers.get(HEADER_VARIANT_COUNT, "")),
                )
            ]
        )


def header_count(value: str) -> int:
    """A count header, or 0 when absent or not a count (a poison record's headers are anything)."""
    return int(value) if value.isascii() and value.isdigit() and len(value) < 19 else 0


async def decode_or_dead_letter(record: Record, message_class: type[M], sink: DeadLetterSink) -> M | None:
    """The decoded message, or None after dead-lettering a corrupt payload."""
    decoded = await decode_serialized_or_dead_letter(record, message_class, sink)
    return None if decoded is None else decoded[0]


async def decode_serialized_or_dead_letter(
    record: Record, message_class: type[M], sink: DeadLetterSink
) -> tuple[M, bytes] | None:
    """The decoded message and its serialized (decompressed) form, or None after dead-lettering."""
    return await parse_or_dead_letter(
        record, lambda r: decode_serialized(r.value, r.headers, message_class), sink
    )


async def parse_or_dead_letter(
    record: Record, parse: Callable[[Record], T], sink: DeadLetterSink
) -> T | None:
    """parse(record), or None after dead-lettering a record it rejects with PayloadError."""
    try:
        return parse(record)
    except PayloadError as exc:
        log.warning(
            "dead-lettering %s[%d]@%d: %s",
            record.stream,
            record.partition,
            record.offset,
            exc,
            extra={"job_id": record.headers.get(HEADER_JOB, "")},
        )
        await sink.send_record(record, str(exc), "corrupt_payload")
        return None


class StreamProcessor(AsyncComponent):
    """Runs one consumer: poll, hand records to the handler, commit.

    Pausing stops polling but keeps group membership, so checkpoints can be
    reset safely; draining finishes the in-flight batch, has the stage flush what
    it buffered, commits and stops. Stopping drains first, within a deadline, and
    only then leaves the group: what the stage stored is committed by then, so a
    restart does not deliver it again.
    """

    def __init__(
        self,
        bus: Bus,
        streams: Sequence[str],
        group: str,
        handler: RecordsHandler,
        *,
        service: str,
        max_records: int = 64,
        start: StartPosition = "earliest",
        max_in_flight: int = 256,
        poll_timeout_s: float = 0.2,
        idle_calls: bool = False,
        reset: ResetHandler | None = None,
        retry_max_s: float = RETRY_MAX_S,
        flush: FlushHandler | None = None,
        drain_s: float = DRAIN_AT_STOP_S,
    ) -> None:
        self.streams = list(streams)
        self.group = group
        self._bus = bus
        self._handler = handler
        self._service = service
        self._max_records = max_records
        self._start = start
        self._max_in_flight = max_in_flight
        self._poll_timeout_s = poll_timeout_s
        # Buffering stages get called with [] on idle polls so they can flush on time.
        self._idle_calls = idle_calls
        self._reset = reset
        self._retry_max_s = retry_max_s
        self._flush = flush
        self._drain_s = drain_s
        self._consumer: Consumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._running = asyncio.Event()
        self._running.set()
        # Set whenever the loop holds no records: paused, not started or exited.
        self._parked = asyncio.Event()
        self._parked.set()
        self._stopping = False
        self._draining = False
        self._drained = False
        self._drain_deadline = 0.0
        # First offset seen, next offset handed over and next committed, per partition:
        # what a drain left behind is the gap between the last two.
        self._first: CommitOffsets = {}
        self._handed: CommitOffsets = {}
        self._committed: CommitOffsets = {}
        self.in_flight = 0
        # The handler's last error while its records wait to be redelivered; None once a
        # batch went through again. Readiness is NOT_SERVING meanwhile.
        self.retrying: BaseException | None = None
        self._errors_in_a_row = 0
        self._wake = asyncio.Event()
        # Present at 0 from the start, so rates and alerts see the series before the first failure.
        for reason in ("handler", "poll"):
            telemetry.stage_failures.labels(service, reason)

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def state(self) -> str:
        """running, paused, draining, drained or retrying (what the control plane reports)."""
        if self.retrying is not None:
            return "retrying"
        if self._draining:
            return "draining"
        if self._drained:
            return "drained"
        return "paused" if self.paused else "running"

    def uncommitted(self) -> int:
        """Records handed to the handler whose offsets are not committed yet."""
        return sum(max(0, off - self._committed.get(tp, self._first[tp])) for tp, off in self._handed.items())

    async def start(self) -> None:
        """Join the group and start consuming; a bus not answering yet is waited for.

        A broker still starting, or a first login slower than its timeout on a loaded
        machine (an Iggy login unanswered for 5 s at load 80), made the service exit at
        start; now the stage retries with backoff, NOT_SERVING meanwhile, as it does when
        the bus fails later.
        """
        try:
            await self._join()
        except Exception as exc:
            self._waiting_for_bus(exc, RETRY_FIRST_S)
            self._task = asyncio.create_task(self._join_then_run(), name=f"{self._service}:{self.group}")
            return
        self._task = asyncio.create_task(self._run(), name=f"{self._service}:{self.group}")

    def _new_consumer(self) -> Consumer:
        return self._bus.consumer(
            self.streams, self.group, start=self._start, max_in_flight=self._max_in_flight
        )

    def _waiting_for_bus(self, exc: Exception, delay: float) -> None:
        self.retrying = exc
        log.warning(
            "%s: cannot join %s on %s yet (%r); retrying in %.1f s",
            self._service,
            self.group,
            self.streams,
            exc,
            delay,
        )

    async def _join_then_run(self) -> None:
        if not await self._join_with_backoff(RETRY_FIRST_S):
            return
        log.info("%s: joined %s on %s", self._service, self.group, self.streams)
        self.retrying = None
        await self._run()

    async def _join_with_backoff(self, delay: float, before_each: ResetHandler | None = None) -> bool:
        """Join again and again, after `delay`, doubling it (bounded) per failure; False once stopped."""
        while True:
            await self._sleep(delay)
            if self._stopping:
                return False
            try:
                if before_each is not None:
                    await before_each()
                await self._join()
                return True
            except Exception as exc:
                delay = min(self._retry_max_s, delay * 2)
                self._waiting_for_bus(exc, delay)

    async def _join(self) -> None:
        """One join attempt, by the consumer a failed attempt kept (`keep_for_next_join`) or a new one.

        The joining consumer is self._consumer, so stop() ends it too; one that cannot go on
        is stopped here, so a failed attempt never leaves a connection behind.
        """
        consumer = self._consumer or self._new_consumer()
        self._consumer = consumer
        try:
            await consumer.start()
        except Exception as exc:
            if not keep_for_next_join(consumer, exc):
                self._consumer = None
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(consumer.stop(), LEAVE_TIMEOUT_S)
            raise
        for offsets in (self._first, self._handed, self._committed):
            offsets.clear()

    def pause(self) -> None:
        """Stop polling after the current batch; see wait_parked() to know when that happened."""
        self._running.clear()

    def resume(self) -> None:
        self._draining = False
        self._drained = False
        self._running.set()

    async def wait_parked(self, timeout_s: float) -> bool:
        """True once the loop holds no records (so offsets can be reset safely)."""
        try:
            await asyncio.wait_for(self._parked.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def begin_drain(self, timeout_s: float) -> None:
        """Report draining and stop polling after the current batch; drain() waits for the rest."""
        self._draining = True
        self._drain_deadline = asyncio.get_running_loop().time() + timeout_s
        self.pause()

    async def drain(self, timeout_s: float) -> int:
        """Finish in-flight work, commit, stop consuming; returns records left uncommitted.

        A stage with a flush handler is asked to finish what it buffered; other buffering
        stages (idle_calls) are called with [] until they release every offset or timeout_s
        passes, since their buffered records count as in flight.
        """
        self.begin_drain(timeout_s)
        if self._task is None or self._task.done():
            self._draining = False
            self._drained = True
        else:
            await self.wait_parked(timeout_s + 1)
        return self.uncommitted()

    def _drain_time_left(self) -> float:
        return max(0.0, self._drain_deadline - asyncio.get_running_loop().time())

    async def seek(self, stream: str, partition: int, offset: int) -> bool:
        """Move this member's position on a partition it holds; False when it holds none."""
        if self._consumer is None or (stream, partition) not in self._consumer.assignment():
            return False
        await self._consumer.seek(stream, partition, offset)
        for offsets in (self._first, self._handed, self._committed):
            offsets.pop((stream, partition), None)
        return True

    async def stop(self) -> None:
        """Drain, then leave the group: what the stage finished is committed before it leaves.

        Within the drain's deadline (begin_drain's, else `drain_s` from now): a batch still in
        the handler then is cancelled and stays uncommitted, so the group delivers it again;
        nothing is lost and, downstream being idempotent, nothing is doubled. Leaving takes at
        most LEAVE_TIMEOUT_S: a broker slower than that drops the member by itself.
        """
        if not self._draining and not self._drained:
            self.begin_drain(self._drain_s)
        if self._task is not None and not self._task.done():
            await self.wait_parked(self._drain_time_left())
        parked = self._parked.is_set()
        self._stopping = True
        self._running.set()
        self._wake.set()
        if self._task is not None:
            # A parked loop is at its top and ends at once; one still in its handler is cut short.
            if not parked:
                log.warning(
                    "%s: %s still busy at the end of its drain; its batch stays uncommitted",
                    self._service,
                    self.group,
                )
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        if parked and not self._drained and self._flush is not None and self.retrying is None:
            # A processor paused before the drain never ran its loop's drain step.
            await self._commit_flushed(consumer)
        try:
            await asyncio.wait_for(consumer.stop(), LEAVE_TIMEOUT_S)
        except TimeoutError:
            log.warning(
                "%s: %s did not leave its group within %.0fs; the broker drops it by itself",
                self._service,
                self.group,
                LEAVE_TIMEOUT_S,
            )

    async def _commit_flushed(self, consumer: Consumer) -> bool:
        """Have the stage finish what it buffered and commit what that released.

        False when that failed: the records stay uncommitted and come again.
        """
        assert self._flush is not None
        try:
            released = await asyncio.wait_for(self._flush(), max(self._drain_time_left(), 0.1))
            if released:
                await consumer.commit(released)
                self._committed.update(released)
        except Exception as exc:  # TimeoutError included: the deadline passed
            log.warning(
                "%s: %s could not finish what it buffered (%r); left uncommitted",
                self._service,
                self.group,
                exc,
            )
            return False
        return True

    async def _run(self) -> None:
        try:
            await self._loop()
        except BaseException as exc:
            if not self._stopping:
                # Nobody awaits this task until stop(): without this line a dead loop is silent.
                log.error("%s: %s consumer loop ended: %r", self._service, self.group, exc)
            raise
        finally:
            self._parked.set()

    async def _loop(self) -> None:
        consumed = telemetry.messages_consumed
        latency = telemetry.processing_latency.labels(self._service).observe
        while not self._stopping:
            consumer = self._consumer
            if consumer is None:
                return
            if not self._running.is_set():
                if self._draining:
                    await self._finish_drain(consumer)
                self._parked.set()
                await self._running.wait()
                continue
            self._parked.clear()
            try:
                records = await consumer.poll(self._max_records, self._poll_timeout_s)
            except Exception:
                telemetry.stage_failures.labels(self._service, "poll").inc()
                log.exception("%s: poll on %s failed; retrying", self._service, self.streams)
                await asyncio.sleep(0.5)
                continue
            if not records and not self._idle_calls:
                continue
            self.in_flight = len(records)
            if not await self._handle(consumer, records):
                # Handed back: the rejoined consumer delivers them again.
                continue
            now_ms = time.time_ns() // 1_000_000
            for record in records:
                consumed.labels(self._service, record.stream, self.group).inc()
                # Publication to handled: the stage's latency (queueing included).
                latency(max(0, now_ms - record.timestamp_ms) / 1000)
            self.in_flight = 0

    async def _handle(self, consumer: Consumer, records: list[Record]) -> bool:
        """Hand records over and commit what the handler releases.

        False when the handler or the commit failed: everything uncommitted has been
        handed back to the group by then, to come again after a backoff.
        """
        for record in records:
            self._first.setdefault((record.stream, record.partition), record.offset)
        handed = next_offsets(records)
        for tp, off in handed.items():
            self._handed[tp] = max(off, self._handed.get(tp, 0))
        try:
            to_commit = await self._handler(records)
            if to_commit is None:
                to_commit = handed
            if to_commit:
                await consumer.commit(to_commit)
                self._committed.update(to_commit)
        except Exception as exc:
            telemetry.stage_failures.labels(self._service, "handler").inc()
            self.in_flight = 0
            await self._recover(exc)
            return False
        if self.retrying is not None and (to_commit or not self.uncommitted()):
            log.warning("%s: %s healed; consuming again", self._service, self.group)
            self.retrying = None
            self._errors_in_a_row = 0
        return True

    async def _recover(self, error: Exception) -> None:
        """Wait (bounded, doubling), have the stage forget its buffers, rejoin at the last commit.

        Rejoining rather than seeking: the consumer may be as broken as the store (a broker
        that went away), and a fresh member reads exactly the committed offsets, as a
        restarted process would. Until the consumer is back this keeps retrying.
        """
        self.retrying = error
        self._errors_in_a_row += 1
        # Everything uncommitted is handed back: the loop holds no records while it waits, and
        # a drain or stop need not wait for the retry.
        self._parked.set()
        telemetry.stage_retries.labels(self._service, type(error).__name__).inc()
        delay = min(self._retry_max_s, RETRY_FIRST_S * 2 ** min(self._errors_in_a_row - 1, 16))
        log.warning(
            "%s: %s failed (%s: %s); readiness NOT_SERVING, retrying from the last commit in %.1fs",
            self._service,
            self.group,
            type(error).__name__,
            error,
            delay,
            exc_info=self._errors_in_a_row == 1,
        )
        old, self._consumer = self._consumer, None
        if old is not None:
            # Bounded as at stop(): a stop() meanwhile waits for this leave, not for the broker.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(old.stop(), LEAVE_TIMEOUT_S)
        await self._join_with_backoff(delay, self._reset)

    async def _sleep(self, delay_s: float) -> None:
        """Sleep, but wake at once when the processor is stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay_s)

    async def _finish_drain(self, consumer: Consumer) -> None:
        loop = asyncio.get_running_loop()
        if self._flush is not None and self.retrying is None:
            await self._commit_flushed(consumer)
        while (
            self._flush is None
            and self._idle_calls
            and self.uncommitted()
            and loop.time() < self._drain_deadline
        ):
            if not await self._handle(consumer, []):
                break
            if self.uncommitted():
                await asyncio.sleep(0.02)
        self._draining = False
        self._drained = True


def next_offsets(records: Sequence[Record]) -> CommitOffsets:
    """Next offset to read per partition, after all of records."""
    offsets: CommitOffsets = {}
    for record in records:
        key = (record.stream, record.partition)
        if record.offset + 1 > offsets.get(key, -1):
            offsets[key] = record.offset + 1
    return offsets
