"""Fan-out of job progress to live subscribers, with the latest state for late joiners."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from google.protobuf.json_format import MessageToDict

from vcf_agent import telemetry, tracing
from vcf_agent.bus import Record
from vcf_agent.processing import CommitOffsets, DeadLetterSink
from vcf_agent.schema import TERMINAL_STATES, PayloadError, decode, state_name
from vcf_agent.v1 import events_pb2

log = logging.getLogger(__name__)

# A subscriber that falls this far behind is dropped rather than slowing everyone.
_SUBSCRIBER_QUEUE = 1000


def notification_json(note: events_pb2.Notification) -> dict[str, object]:
    """The WebSocket wire form: the proto's JSON mapping, short enum names, numbers as numbers."""
    body = MessageToDict(note, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    # proto3 JSON renders int64 as strings; browsers and scripts want numbers.
    for key in ("done", "total", "dead_lettered", "samples"):
        body[key] = getattr(note, key)
    body["classifications"] = dict(note.classifications)
    body["provider_counts"] = {
        name: {"ok": answers.ok, "failed": answers.failed, "missing": answers.missing}
        for name, answers in note.provider_counts.items()
    }
    body["stage"] = events_pb2.Stage.Name(note.stage).removeprefix("STAGE_").lower()
    body["state"] = state_name(note.state)
    return body


class _Subscription:
    def __init__(self, job_id: str, tenant_id: str, kind: str) -> None:
        self.job_id = job_id
        self.tenant_id = tenant_id
        # websocket or watch: the label of the connection and delivery series.
        self.kind = kind
        self.queue: asyncio.Queue[events_pb2.Notification | None] = asyncio.Queue(_SUBSCRIBER_QUEUE)

    def drop(self) -> None:
        """End the subscriber now: what it had not taken is discarded (its queue is full, so the
        end could not queue behind it), and it is told to reconnect, which shows it the latest."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)

    def wants(self, note: events_pb2.Notification) -> bool:
        if self.job_id and note.job_id != self.job_id:
            return False
        # A tenant's subscriber never gets another tenant's event, whatever job id it names.
        return not self.tenant_id or note.tenant_id == self.tenant_id


class ProgressHub:
    """Consumes `user-notifications` and delivers each event to matching subscribers."""

    def __init__(self, dead_letters: DeadLetterSink | None = None) -> None:
        # Where unreadable notifications go, with the reason (None: only skipped, in tests).
        self._dead_letters = dead_letters
        self._subscriptions: set[_Subscription] = set()
        # Latest event per (job, stage): what a late subscriber is shown first.
        self._latest: dict[str, dict[int, events_pb2.Notification]] = {}
        # Each job's tenant, from its first event; and an event set whenever a new job appears.
        self._tenants: dict[str, str] = {}
        self._new_job = asyncio.Event()
        # Set when the service stops: subscribers then end because of shutdown, not for falling behind.
        self.closed = False

    async def handle(self, records: list[Record]) -> CommitOffsets | None:
        for record in records:
            started_ns = time.time_ns()
            try:
                note = decode(record.value, record.headers, events_pb2.Notification)
            except PayloadError as exc:
                if self._dead_letters is not None:
                    await self._dead_letters.send_record(record, str(exc), "corrupt_payload")
                continue
            delivered = self.publish(note)
            if tracing.enabled():
                tracing.stage_headers(
                    "notifier.deliver",
                    "notifier",
                    record.headers,
                    start_ns=started_ns,
                    job_id=note.job_id,
                    stage=events_pb2.Stage.Name(note.stage),
                    state=state_name(note.state),
                    subscribers=delivered,
                )
        return None

    def publish(self, note: events_pb2.Notification) -> int:
        """Hands the event to every subscriber that wants it; returns how many did."""
        delivered = 0
        self._latest.setdefault(note.job_id, {})[note.stage] = note
        if note.job_id not in self._tenants:
            self._tenants[note.job_id] = note.tenant_id
            self._new_job.set()
            self._new_job = asyncio.Event()
        for subscription in list(self._subscriptions):
            if subscription.wants(note):
                try:
                    subscription.queue.put_nowait(note)
                    delivered += 1
                    telemetry.notifications_delivered.labels(subscription.kind).inc()
                except asyncio.QueueFull:
                    self._subscriptions.discard(subscription)
                    # Named by the event's job (a tenant channel's subscriber watches many).
                    log.warning(
                        "dropped a %s subscriber%s: %d events behind; it may reconnect",
                        subscription.kind,
                        f" of tenant {subscription.tenant_id}" if subscription.tenant_id else "",
                        _SUBSCRIBER_QUEUE,
                        extra={"job_id": note.job_id},
                    )
                    subscription.drop()
        return delivered

    async def job_visible(self, job_id: str, tenant_id: str, wait_s: float) -> bool:
        """Whether the job is tenant_id's, waiting up to wait_s for a job not seen yet (just submitted).

        Another tenant's job and an unknown one take the same full wait before False,
        so the answer's timing tells nothing about other tenants' jobs.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while self._tenants.get(job_id) != tenant_id:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_job.wait(), remaining)
        return True

    def latest(self, job_id: str) -> list[events_pb2.Notification]:
        return [n for _, n in sorted(self._latest.get(job_id, {}).items())]

    async def subscribe(
        self,
        job_id: str = "",
        tenant_id: str = "",
        *,
        include_latest: bool = True,
        until_terminal: bool = False,
        kind: str = "watch",
    ) -> AsyncIterator[events_pb2.Notification]:
        """Events for one job (or one tenant's jobs, or both), live; ends when the subscriber is dropped."""
        subscription = _Subscription(job_id, tenant_id, kind)
        self._subscriptions.add(subscription)
        connections = telemetry.notifier_connections.labels(kind)
        connections.inc()
        try:
            if include_latest and job_id:
                for note in filter(subscription.wants, self.latest(job_id)):
                    yield note
                    if until_terminal and note.state in TERMINAL_STATES:
                        return
            while (live := await subscription.queue.get()) is not None:
                yield live
                if until_terminal and job_id and live.state in TERMINAL_STATES:
                    return
        finally:
            connections.dec()
            self._subscriptions.discard(subscription)

    async def close(self) -> None:
        self.closed = True
        for subscription in list(self._subscriptions):
            with contextlib.suppress(asyncio.QueueFull):
                subscription.queue.put_nowait(None)
        self._subscriptions.clear()
