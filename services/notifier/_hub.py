"""Fan-out of job progress to live subscribers, with the latest state for late joiners."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from google.protobuf.json_format import MessageToDict

from vcf_agent.bus import Record
from vcf_agent.processing import CommitOffsets
from vcf_agent.schema import TERMINAL_STATES, PayloadError, decode, state_name
from vcf_agent.v1 import events_pb2

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
    def __init__(self, job_id: str, tenant_id: str) -> None:
        self.job_id = job_id
        self.tenant_id = tenant_id
        self.queue: asyncio.Queue[events_pb2.Notification | None] = asyncio.Queue(_SUBSCRIBER_QUEUE)

    def wants(self, note: events_pb2.Notification) -> bool:
        if self.job_id:
            return note.job_id == self.job_id
        return not self.tenant_id or note.tenant_id == self.tenant_id


class ProgressHub:
    """Consumes `user-notifications` and delivers each event to matching subscribers."""

    def __init__(self) -> None:
        self._subscriptions: set[_Subscription] = set()
        # Latest event per (job, stage): what a late subscriber is shown first.
        self._latest: dict[str, dict[int, events_pb2.Notification]] = {}

    async def handle(self, records: list[Record]) -> CommitOffsets | None:
        for record in records:
            try:
                note = decode(record.value, record.headers, events_pb2.Notification)
            except PayloadError:
                continue
            self.publish(note)
        return None

    def publish(self, note: events_pb2.Notification) -> None:
        self._latest.setdefault(note.job_id, {})[note.stage] = note
        for subscription in list(self._subscriptions):
            if subscription.wants(note):
                try:
                    subscription.queue.put_nowait(note)
                except asyncio.QueueFull:
                    self._subscriptions.discard(subscription)
                    with contextlib.suppress(asyncio.QueueFull):
                        subscription.queue.put_nowait(None)

    def latest(self, job_id: str) -> list[events_pb2.Notification]:
        return [n for _, n in sorted(self._latest.get(job_id, {}).items())]

    async def subscribe(
        self,
        job_id: str = "",
        tenant_id: str = "",
        *,
        include_latest: bool = True,
        until_terminal: bool = False,
    ) -> AsyncIterator[events_pb2.Notification]:
        """Events for one job (or one tenant's jobs), live; ends when the subscriber is dropped."""
        subscription = _Subscription(job_id, tenant_id)
        self._subscriptions.add(subscription)
        try:
            if include_latest and job_id:
                for note in self.latest(job_id):
                    yield note
                    if until_terminal and note.state in TERMINAL_STATES:
                        return
            while (live := await subscription.queue.get()) is not None:
                yield live
                if until_terminal and job_id and live.state in TERMINAL_STATES:
                    return
        finally:
            self._subscriptions.discard(subscription)

    async def close(self) -> None:
        for subscription in list(self._subscriptions):
            with contextlib.suppress(asyncio.QueueFull):
                subscription.queue.put_nowait(None)
        self._subscriptions.clear()
