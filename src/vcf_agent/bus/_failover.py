"""Failover bus: `failover://?primary=URL&fallback=URL` (the design's Iggy primary, Kafka fallback).

Both URLs are percent-encoded bus URLs. Optional query parameters:
`probe_interval_ms` (200), `probe_timeout_ms` (min(interval, 500)), `recover_after`
(3 consecutive healthy probes before switching back) and `publish_timeout_ms` (1000).

Switching. A probe task calls `healthy()` on both backends every interval, each
bounded by the probe timeout. One failed probe of the active primary switches
publishing to the fallback, so a dead primary is left within interval + timeout
(~0.4 s by default). A publish that fails or times out switches at once and the
same batch is re-published on the other backend, so an acknowledged publish is
never lost. Publishing returns to the primary after `recover_after` consecutive
healthy probes (at once if the fallback fails too). Every stream ever ensured
is re-created on a backend that comes back (it may have restarted empty)
before it is published to again.

Ordering. Every message carries an id header, and each keyed message published
on backend X carries `x-bus-after: N`, where N is the next offset after the last
record this publisher had acknowledged on the *other* backend for the same
stream partition (keys map to the same partition on both, see `_base`). The
FailoverConsumer reads both backends and releases a record from X only once the
group is known to be at or past N on the other backend (records this consumer
handed out, or the group's committed offset, retention start, or start
position there). This is an exact happens-before edge, so per publisher and per
key the consumer sees messages in publish order across any number of switches
and in either direction, and the edges cannot form a cycle (no deadlock).
Guarantee: for messages of one key from one publisher process, where each
publish returned before the next began, delivery order equals publish order.
Concurrent publishes and unkeyed messages have no order, as on any backend.

The price is availability for lagging partitions only: if the primary dies
while a consumer still had unread records on a partition, that partition's
fallback records are held back until the primary returns and those records are
read (they are durable there, and reading past them would reorder the key).
Partitions whose consumers were caught up keep flowing without a pause. If the
primary comes back without those records (its log was lost), its end offset
shows they are gone and the held records are released: nothing is left to
order them against.

Delivery is at-least-once. A batch whose primary publish timed out may have
landed there as well; its fallback copy is marked `x-bus-retry`. If the primary
copy is read first, the retry copy follows it as a plain duplicate; if it is
read later, the consumer drops it by id, so a stale copy cannot overtake newer
values. The one exception: a consumer restarted before the primary returns has
forgotten those ids and delivers the primary copy once more, after newer values
(a stale duplicate, never a loss). Commits to a backend that is down are kept
and retried on the next commit(); its records may be redelivered meanwhile.

Offsets are per backend. Consumed records are `FailoverRecord`s whose
`backend` field names their source ("iggy"/"kafka"; "memory-primary" and
"memory-fallback" when both are the same kind). It is a field, not a header,
so headers round-trip exactly as published. `commit()` with no argument
commits exactly what was handed out, to the backend each record came from;
explicit offsets go to the backend whose handed-out, uncommitted range
contains them, else to the one that delivered that partition last. `seek()`
follows the same rule; `commit_backend`/`seek_backend` name the backend.
The bus's committed/end/earliest/timestamp offsets, `set_committed_offsets`
and a consumer's `assignment()` address the active backend; `lag()` adds up
both backends, so it counts every unread record.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from vcf_agent.bus._base import (
    Bus,
    BusError,
    BusUnavailableError,
    Consumer,
    OutgoingMessage,
    PartitionLag,
    PublishedPosition,
    Record,
    StartPosition,
    StreamSpec,
    TopicPartition,
    partition_for_key,
)
from vcf_agent.bus._url import open_bus
from vcf_agent.telemetry import bus_active_backend, platform_health_status

HEADER_AFTER = "x-bus-after"
HEADER_ID = "x-bus-id"
HEADER_RETRY = "x-bus-retry"
# Bookkeeping headers are set by the publisher only and hidden from consumers.
_INTERNAL_HEADERS = frozenset({HEADER_AFTER, HEADER_ID, HEADER_RETRY})

PRIMARY, FALLBACK = 0, 1
# Bounds an inner poll so a switch, commit or seek never waits long on the idle backend.
_FETCH_SLICE_S = 0.25
# Ids of re-published batches remembered per partition, to drop their late twins.
_RETRIED_IDS_PER_PARTITION = 10_000

_log = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class _BusSide:
    """One backend as the publisher sees it."""

    name: str
    bus: Bus
    started: bool = False
    up: bool = False
    healthy_streak: int = 0
    # Streams to create once the backend is reachable again.
    missing_specs: dict[str, StreamSpec] = field(default_factory=dict)
    # Next offset after this publisher's last acknowledged record, per partition.
    acked: dict[TopicPartition, int] = field(default_factory=dict)


class FailoverBus(Bus):
    """Publishes to the primary while it is healthy, else to the fallback; reads both."""

    backend = "failover"

    def __init__(
        self,
        primary: Bus,
        fallback: Bus,
        *,
        probe_interval_s: float = 0.2,
        probe_timeout_s: float | None = None,
        recover_after: int = 3,
        publish_timeout_s: float = 1.0,
    ) -> None:
        names = [primary.backend, fallback.backend]
        if names[0] == names[1]:
            names = [f"{names[0]}-primary", f"{names[1]}-fallback"]
        self._sides = (_BusSide(names[0], primary), _BusSide(names[1], fallback))
        self.probe_interval_s = probe_interval_s
        self.probe_timeout_s = probe_timeout_s or max(0.05, min(probe_interval_s, 0.5))
        self._recover_after = max(1, recover_after)
        self._publish_timeout_s = publish_timeout_s
        self._active = PRIMARY
        self._partition_counts: dict[str, int] = {}
        self._specs: dict[str, StreamSpec] = {}
        self._publisher_id = secrets.token_hex(6)
        self._sequence = itertools.count()
        self._probe_task: asyncio.Task[None] | None = None

    @property
    def primary(self) -> Bus:
        return self._sides[PRIMARY].bus

    @property
    def fallback(self) -> Bus:
        return self._sides[FALLBACK].bus

    @property
    def backend_names(self) -> tuple[str, str]:
        """(primary, fallback) names, as in metrics labels and `FailoverRecord.backend`."""
        return self._sides[PRIMARY].name, self._sides[FALLBACK].name

    @property
    def active_backend(self) -> str:
        """Name of the backend new messages are published to."""
        return self._sides[self._active].name

    @property
    def active_index(self) -> int:
        return self._active

    async def start(self) -> None:
        results = await asyncio.gather(
            *(asyncio.wait_for(side.bus.start(), self._publish_timeout_s * 5) for side in self._sides),
            return_exceptions=True,
        )
        for side, result in zip(self._sides, results, strict=True):
            side.started = not isinstance(result, BaseException)
            if not side.started:
                _log.warning(
                    "failover bus: %s did not start, retrying with the probes: %r", side.name, result
                )
        await self._probe()
        if not any(side.up for side in self._sides):
            raise BusUnavailableError(f"failover bus: neither {' nor '.join(self.backend_names)} is up")
        self._switch(PRIMARY if self._sides[PRIMARY].up else FALLBACK, "start")
        self._probe_task = asyncio.create_task(self._probe_forever(), name="failover-bus-probe")

    async def stop(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
            self._probe_task = None
        for side in self._sides:
            try:
                await asyncio.wait_for(side.bus.stop(), self._publish_timeout_s * 5)
            except Exception as exc:  # stopping must release the other backend regardless
                _log.warning("failover bus: stopping %s failed: %r", side.name, exc)

    async def _probe_one(self, side: _BusSide) -> bool:
        try:
            if not side.started:
                await asyncio.wait_for(side.bus.start(), self.probe_timeout_s)
                side.started = True
            return await asyncio.wait_for(side.bus.healthy(), self.probe_timeout_s)
        except Exception:  # any failure of a probe means "not healthy", never a crash
            return False

    async def _probe(self) -> None:
        results = await asyncio.gather(*(self._probe_one(side) for side in self._sides))
        for side, up in zip(self._sides, results, strict=True):
            if up and not side.up:
                # A backend that comes back may have lost its streams (an empty restart).
                side.missing_specs.update(self._specs)
            side.up = up
            side.healthy_streak = side.healthy_streak + 1 if up else 0
            platform_health_status.labels(backend=side.name).set(1 if up else 0)
            if up and side.missing_specs:
                await self._create_missing(side)

    async def _probe_forever(self) -> None:
        primary, fallback = self._sides
        while True:
            await asyncio.sleep(self.probe_interval_s)
            try:
                await self._probe()
                if self._active == PRIMARY and not primary.up and fallback.up:
                    self._switch(FALLBACK, "primary failed its health probe")
                elif (
                    self._active == FALLBACK
                    and primary.up
                    and not primary.missing_specs
                    and (primary.healthy_streak >= self._recover_after or not fallback.up)
                ):
                    self._switch(PRIMARY, f"primary healthy for {primary.healthy_streak} probes")
            except Exception:  # the prober must outlive any single bad round
                _log.exception("failover bus: probe round failed")

    def _switch(self, index: int, reason: str) -> None:
        if index != self._active:
            _log.warning(
                "failover bus: publishing to %s instead of %s (%s)",
                self._sides[index].name,
                self._sides[self._active].name,
                reason,
            )
        self._active = index
        for i, side in enumerate(self._sides):
            bus_active_backend.labels(backend=side.name).set(1 if i == index else 0)

    def _mark_failed(self, index: int) -> None:
        side = self._sides[index]
        side.up = False
        side.healthy_streak = 0
        platform_health_status.labels(backend=side.name).set(0)

    async def _create_missing(self, side: _BusSide) -> bool:
        if not side.missing_specs:
            return True
        try:
            await asyncio.wait_for(
                side.bus.ensure_streams(list(side.missing_specs.values())), self._publish_timeout_s
            )
        except Exception as exc:  # still down; the next probe retries
            _log.info("failover bus: cannot create streams on %s yet: %r", side.name, exc)
            return False
        side.missing_specs.clear()
        return True

    async def ensure_streams(self, specs: Sequence[StreamSpec]) -> None:
        self._specs.update((spec.name, spec) for spec in specs)
        results = await asyncio.gather(
            *(
                asyncio.wait_for(side.bus.ensure_streams(specs), self._publish_timeout_s * 5)
                for side in self._sides
            ),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if len(failures) == len(self._sides):
            raise BusError(f"failover bus: ensure_streams failed on both backends: {failures}") from failures[
                0
            ]
        for side, result in zip(self._sides, results, strict=True):
            if isinstance(result, BaseException):
                _log.warning("failover bus: ensure_streams on %s deferred: %r", side.name, result)
                side.missing_specs.update((spec.name, spec) for spec in specs)

    async def partitions(self, stream: str) -> int:
        return await self._partition_count(stream, self._active)

    async def _partition_count(self, stream: str, index: int) -> int:
        """Asked of the given backend first; counts match on both, so the first answer is cached."""
        count = self._partition_counts.get(stream)
        if count is not None:
            return count
        try:
            count = await asyncio.wait_for(self._sides[index].bus.partitions(stream), self._publish_timeout_s)
        except (BusUnavailableError, TimeoutError):
            count = await asyncio.wait_for(
                self._sides[1 - index].bus.partitions(stream), self._publish_timeout_s
            )
        self._partition_counts[stream] = count
        return count

    async def publish(self, stream: str, messages: Sequence[OutgoingMessage]) -> list[PublishedPosition]:
        if not messages:
            return []
        ids = [f"{self._publisher_id}-{next(self._sequence)}" for _ in messages]
        first = self._active
        try:
            return await self._publish_on(first, stream, messages, ids, retry=False)
        except Exception as first_error:  # any backend failure: try the other one before giving up
            second = 1 - first
            _log.warning(
                "failover bus: publish to %s on %s failed (%r); re-publishing on %s",
                stream,
                self._sides[first].name,
                first_error,
                self._sides[second].name,
            )
            try:
                positions = await self._publish_on(second, stream, messages, ids, retry=True)
            except Exception as second_error:
                raise BusUnavailableError(
                    f"failover bus: publish to {stream!r} failed on {self._sides[first].name} "
                    f"({first_error!r}) and on {self._sides[second].name} ({second_error!r})"
                ) from second_error
            self._mark_failed(first)
            self._switch(second, f"publish failed: {first_error!r}")
            return positions

    async def _publish_on(
        self,
        index: int,
        stream: str,
        messages: Sequence[OutgoingMessage],
        ids: list[str],
        *,
        retry: bool,
    ) -> list[PublishedPosition]:
        side, other = self._sides[index], self._sides[1 - index]
        if side.missing_specs and not await self._create_missing(side):
            raise BusUnavailableError(f"failover bus: streams not yet created on {side.name}")
        # Only keyed messages promise order, and only partitions the other backend saw need an edge.
        needs_edges = any(tp[0] == stream for tp in other.acked)
        count = await self._partition_count(stream, index) if needs_edges else 0
        stamped = []
        for message, message_id in zip(messages, ids, strict=True):
            headers = {k: v for k, v in message.headers.items() if k not in _INTERNAL_HEADERS}
            headers[HEADER_ID] = message_id
            if retry:
                headers[HEADER_RETRY] = "1"
            if needs_edges and message.key is not None:
                after = other.acked.get((stream, partition_for_key(message.key, count)))
                if after:
                    headers[HEADER_AFTER] = str(after)
            stamped.append(OutgoingMessage(message.value, message.key, headers))
        positions = await asyncio.wait_for(side.bus.publish(stream, stamped), self._publish_timeout_s)
        for position in positions:
            tp = (stream, position.partition)
            side.acked[tp] = max(side.acked.get(tp, 0), position.offset + 1)
        return positions

    def consumer(
        self,
        streams: Sequence[str],
        group: str,
        *,
        start: StartPosition = "earliest",
        max_in_flight: int = 1000,
    ) -> FailoverConsumer:
        return FailoverConsumer(self, list(streams), group, start=start, max_in_flight=max_in_flight)

    def _active_bus(self) -> Bus:
        return self._sides[self._active].bus

    async def committed_offsets(self, group: str, stream: str) -> dict[int, int]:
        return await self._active_bus().committed_offsets(group, stream)

    async def end_offsets(self, stream: str) -> dict[int, int]:
        return await self._active_bus().end_offsets(stream)

    async def set_committed_offsets(self, group: str, stream: str, offsets: Mapping[int, int]) -> None:
        await self._active_bus().set_committed_offsets(group, stream, offsets)

    async def offsets_for_timestamp(self, stream: str, timestamp_ms: int) -> dict[int, int]:
        return await self._active_bus().offsets_for_timestamp(stream, timestamp_ms)

    async def earliest_offsets(self, stream: str) -> dict[int, int]:
        return await self._active_bus().earliest_offsets(stream)

    async def healthy(self) -> bool:
        """Whether either backend passed its latest probe (the probe loop runs every probe_interval_s).

        Answered from the probes rather than by probing again, which would race
        the probe loop in starting a backend that is coming back.
        """
        return any(side.up for side in self._sides)

    async def lag(self, group: str, stream: str) -> list[PartitionLag]:
        """Both backends summed per partition: positions in the merged log, so lag counts all unread.

        An unreachable backend is left out (its unread records cannot be counted).
        """
        results = await asyncio.gather(
            *(
                asyncio.wait_for(side.bus.lag(group, stream), self.probe_timeout_s * 5)
                for side in self._sides
            ),
            return_exceptions=True,
        )
        reachable = [r for r in results if not isinstance(r, BaseException)]
        if not reachable:
            raise BusUnavailableError(f"failover bus: lag of {stream!r} unavailable on both backends")
        committed: dict[int, int] = {}
        end: dict[int, int] = {}
        for lags in reachable:
            for item in lags:
                committed[item.partition] = committed.get(item.partition, 0) + item.committed
                end[item.partition] = end.get(item.partition, 0) + item.end
        return [PartitionLag(stream, p, committed[p], end[p]) for p in sorted(end)]


@dataclass(frozen=True, slots=True)
class FailoverRecord(Record):
    """A record plus the backend it was read from (its offset is only meaningful there)."""

    backend: str = ""


@dataclass(slots=True, eq=False)
class _ConsumerSide:
    """One backend as a FailoverConsumer sees it."""

    name: str
    bus: Bus
    consumer: Consumer | None = None
    fetch: asyncio.Task[list[Record]] | None = None
    opening: asyncio.Task[bool] | None = None
    reopen_at: float = 0.0
    # Fetched but not yet handed out, in log order per partition.
    pending: dict[TopicPartition, deque[Record]] = field(default_factory=dict)
    # Next offset after the last record handed out.
    delivered: dict[TopicPartition, int] = field(default_factory=dict)
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    # Offsets the group is known to be past here without this member's help
    # (group commits, retention, a "latest" start).
    floor: dict[TopicPartition, int] = field(default_factory=dict)
    # End offsets read after the other backend's pending records were fetched.
    ends: dict[TopicPartition, int] = field(default_factory=dict)
    floor_read_at: dict[str, float] = field(default_factory=dict)

    def position(self, tp: TopicPartition) -> int:
        return max(self.delivered.get(tp, 0), self.floor.get(tp, 0))

    def must_wait(self, tp: TopicPartition, after: int) -> bool:
        """Whether records before `after` on this backend are still to be handed out.

        If the log ends before `after`, the backend lost them (it came back empty):
        waiting could never end, and there is nothing left to keep order with.
        """
        return self.position(tp) < after and self.ends.get(tp, after) >= after

    def pending_count(self) -> int:
        return sum(len(queue) for queue in self.pending.values())


class FailoverConsumer(Consumer):
    """One group member per backend, merged so per-key publish order survives switches."""

    def __init__(
        self,
        bus: FailoverBus,
        streams: list[str],
        group: str,
        *,
        start: StartPosition,
        max_in_flight: int,
    ) -> None:
        self._bus = bus
        self._streams = streams
        self._group = group
        self._start = start
        self._max_in_flight = max(1, max_in_flight)
        names = bus.backend_names
        self._sides = (
            _ConsumerSide(names[PRIMARY], bus.primary),
            _ConsumerSide(names[FALLBACK], bus.fallback),
        )
        self._last_side: dict[TopicPartition, int] = {}
        self._retried_ids: dict[TopicPartition, OrderedDict[str, None]] = {}
        # (side index, stream) whose progress a held-back record is waiting for.
        self._waiting_on: set[tuple[int, str]] = set()
        self._started = False

    @property
    def _timeout_s(self) -> float:
        return self._bus.probe_timeout_s * 5

    async def start(self) -> None:
        opened = await asyncio.gather(*(self._open(side) for side in self._sides))
        if not any(opened):
            raise BusUnavailableError(f"failover consumer {self._group}: no backend reachable")
        self._started = True

    async def _open(self, side: _ConsumerSide) -> bool:
        """Join the group on one backend; on failure retry at a later poll."""
        loop = asyncio.get_running_loop()
        # Read before joining: a floor at or below the real start position is always safe.
        await asyncio.gather(*(self._read_floor(side, s, with_start=True) for s in self._streams))
        try:
            consumer = side.bus.consumer(
                self._streams, self._group, start=self._start, max_in_flight=self._max_in_flight
            )
            await asyncio.wait_for(consumer.start(), self._timeout_s)
        except Exception as exc:  # a down backend; the other one keeps serving
            _log.warning("failover consumer %s: cannot join on %s: %r", self._group, side.name, exc)
            side.reopen_at = loop.time() + self._bus.probe_interval_s
            return False
        side.consumer = consumer
        return True

    async def _read_floor(self, side: _ConsumerSide, stream: str, *, with_start: bool) -> None:
        side.floor_read_at[stream] = asyncio.get_running_loop().time()
        try:
            committed, floor, ends = await asyncio.gather(
                asyncio.wait_for(side.bus.committed_offsets(self._group, stream), self._timeout_s),
                asyncio.wait_for(side.bus.earliest_offsets(stream), self._timeout_s),
                asyncio.wait_for(side.bus.end_offsets(stream), self._timeout_s),
            )
        except Exception:  # unknown for now; held records wait for the next read
            return
        if with_start and self._start == "latest":
            floor.update({p: end for p, end in ends.items() if p not in committed})
        for p in floor.keys() | committed.keys():
            tp = (stream, p)
            side.floor[tp] = max(side.floor.get(tp, 0), floor.get(p, 0), committed.get(p, 0))
        if not with_start:
            side.ends.update(((stream, p), end) for p, end in ends.items())

    async def stop(self) -> None:
        self._started = False
        for side in self._sides:
            for task in (side.opening, side.fetch):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
            side.opening = side.fetch = None
            if side.consumer is not None:
                try:
                    await asyncio.wait_for(side.consumer.stop(), self._timeout_s)
                except Exception as exc:  # leaving must finish on the other backend regardless
                    _log.warning("failover consumer %s: leaving %s failed: %r", self._group, side.name, exc)
                side.consumer = None
            side.pending.clear()

    async def poll(self, max_records: int = 500, timeout_s: float = 1.0) -> list[Record]:
        if not self._started:
            raise BusError("failover consumer: poll() before start()")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        limit = max(1, max_records)
        out = self._release(limit)
        while not out:
            remaining = deadline - loop.time()
            await self._fetch(max(0.0, remaining), limit)
            out = self._release(limit)
            if remaining <= 0:
                break
        return out

    async def _fetch(self, wait_s: float, limit: int) -> None:
        loop = asyncio.get_running_loop()
        for side in self._sides:
            if side.opening is not None and side.opening.done():
                side.opening = None
            # Rejoining runs aside, so a hanging backend never stalls delivery from the other.
            if side.consumer is None and side.opening is None and loop.time() >= side.reopen_at:
                side.opening = asyncio.create_task(self._open(side))
            if (
                side.consumer is not None
                and side.fetch is None
                and side.pending_count() < self._max_in_flight
            ):
                side.fetch = asyncio.create_task(
                    self._poll_inner(side.consumer, limit, min(wait_s, _FETCH_SLICE_S))
                )
        for index, stream in self._waiting_on:
            side = self._sides[index]
            if loop.time() - side.floor_read_at.get(stream, 0.0) >= self._bus.probe_interval_s:
                await self._read_floor(side, stream, with_start=False)
        tasks = [side.fetch for side in self._sides if side.fetch is not None]
        # A few ms even for timeout 0, so records already available are returned.
        wait = max(wait_s, 0.005)
        if tasks:
            await asyncio.wait(tasks, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        else:
            await asyncio.sleep(min(wait, self._bus.probe_interval_s))
        for side in self._sides:
            if side.fetch is not None and side.fetch.done():
                await self._harvest(side)

    async def _poll_inner(self, consumer: Consumer, limit: int, timeout_s: float) -> list[Record]:
        return await asyncio.wait_for(consumer.poll(limit, timeout_s), timeout_s + self._timeout_s)

    async def _harvest(self, side: _ConsumerSide) -> None:
        task, side.fetch = side.fetch, None
        if task is None:
            return
        if not task.done():
            with contextlib.suppress(BaseException):
                await task
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            _log.warning(
                "failover consumer %s: %s failed, rejoining later: %r", self._group, side.name, error
            )
            await self._drop(side)
            return
        other = self._sides[1 - self._sides.index(side)]
        for record in task.result():
            tp = (record.stream, record.partition)
            # Ends read before this record was fetched say nothing about its edge.
            other.ends.pop(tp, None)
            queue = side.pending.setdefault(tp, deque())
            last = queue[-1].offset if queue else side.delivered.get(tp, 0) - 1
            # A rejoined member re-reads from the committed offset; those records are already here.
            if record.offset > last:
                queue.append(record)

    async def _drop(self, side: _ConsumerSide) -> None:
        consumer, side.consumer = side.consumer, None
        side.reopen_at = asyncio.get_running_loop().time() + self._bus.probe_interval_s
        if consumer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), self._timeout_s)

    def _release(self, limit: int) -> list[Record]:
        """Hand out pending records whose happens-before edge to the other backend is satisfied."""
        out: list[Record] = []
        self._waiting_on.clear()
        progress = True
        while progress and len(out) < limit:
            progress = False
            for index, side in enumerate(self._sides):
                other = self._sides[1 - index]
                for tp, queue in side.pending.items():
                    while queue and len(out) < limit:
                        record = queue[0]
                        after = record.headers.get(HEADER_AFTER)
                        if after is not None and other.must_wait(tp, int(after)):
                            self._waiting_on.add((1 - index, tp[0]))
                            break
                        queue.popleft()
                        side.delivered[tp] = record.offset + 1
                        self._last_side[tp] = index
                        progress = True
                        if not self._is_late_twin(tp, record):
                            out.append(self._public(record, side.name))
        return out

    def _is_late_twin(self, tp: TopicPartition, record: Record) -> bool:
        """A copy of a re-published batch that arrives after its re-published twin."""
        message_id = record.headers.get(HEADER_ID)
        if message_id is None:
            return False
        seen = self._retried_ids.get(tp)
        if seen is not None and message_id in seen:
            del seen[message_id]
            return True
        if HEADER_RETRY in record.headers:
            seen = self._retried_ids.setdefault(tp, OrderedDict())
            seen[message_id] = None
            if len(seen) > _RETRIED_IDS_PER_PARTITION:
                seen.popitem(last=False)
        return False

    @staticmethod
    def _public(record: Record, backend: str) -> FailoverRecord:
        return FailoverRecord(
            stream=record.stream,
            partition=record.partition,
            offset=record.offset,
            value=record.value,
            key=record.key,
            headers={k: v for k, v in record.headers.items() if k not in _INTERNAL_HEADERS},
            timestamp_ms=record.timestamp_ms,
            backend=backend,
        )

    def _side_index(self, backend: str) -> int:
        for index, side in enumerate(self._sides):
            if side.name == backend:
                return index
        raise BusError(f"failover consumer: no backend named {backend!r}, only {self._bus.backend_names}")

    def _route(self, tp: TopicPartition, offset: int) -> int:
        owners = [
            index
            for index, side in enumerate(self._sides)
            if side.committed.get(tp, -1) < offset <= side.delivered.get(tp, -1)
        ]
        if len(owners) == 1:
            return owners[0]
        return self._last_side.get(tp, self._bus.active_index)

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Per backend, exactly what was handed out (None) or the routed explicit offsets.

        A backend that is down keeps its uncommitted offsets for the next commit; its
        records may be redelivered (at-least-once), so this does not raise for it.
        """
        for index, side in enumerate(self._sides):
            if offsets is None:
                wanted = {tp: off for tp, off in side.delivered.items() if side.committed.get(tp) != off}
            else:
                wanted = {tp: off for tp, off in offsets.items() if self._route(tp, off) == index}
            if wanted:
                await self._commit_side(side, wanted)

    async def commit_backend(self, backend: str, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit offsets on the named backend (as in `FailoverRecord.backend`)."""
        side = self._sides[self._side_index(backend)]
        if side.consumer is None:
            raise BusUnavailableError(f"failover consumer: {backend} is not reachable")
        await self._commit_side(side, offsets)

    async def _commit_side(self, side: _ConsumerSide, offsets: Mapping[TopicPartition, int]) -> None:
        if side.consumer is None:
            _log.warning("failover consumer %s: %s is down, commit deferred", self._group, side.name)
            return
        # The inner consumer is not shared between concurrent calls.
        if side.fetch is not None:
            await self._harvest(side)
        if side.consumer is None:
            return
        try:
            await asyncio.wait_for(side.consumer.commit(dict(offsets)), self._timeout_s)
        except Exception as exc:  # redelivery later is the at-least-once cost, not an error here
            _log.warning("failover consumer %s: commit on %s failed: %r", self._group, side.name, exc)
            return
        side.committed.update(offsets)

    async def seek(self, stream: str, partition: int, offset: int) -> None:
        """Seek on the backend that delivered this partition last (else the active one)."""
        index = self._last_side.get((stream, partition), self._bus.active_index)
        await self.seek_backend(self._sides[index].name, stream, partition, offset)

    async def seek_backend(self, backend: str, stream: str, partition: int, offset: int) -> None:
        side = self._sides[self._side_index(backend)]
        if side.fetch is not None:
            await self._harvest(side)
        if side.consumer is None:
            raise BusUnavailableError(f"failover consumer: {backend} is not reachable")
        tp = (stream, partition)
        await side.consumer.seek(stream, partition, offset)
        side.pending.pop(tp, None)
        side.delivered[tp] = offset
        # A replay must deliver re-published batches again.
        self._retried_ids.pop(tp, None)

    def assignment(self) -> set[TopicPartition]:
        """The active backend's assignment (the other backend's may differ while it rebalances)."""
        active = self._bus.active_index
        for index in (active, 1 - active):
            consumer = self._sides[index].consumer
            if consumer is None:
                continue
            try:
                return consumer.assignment()
            except BusError:
                continue
        return set()


def from_url(url: str) -> FailoverBus:
    """failover://?primary=URL&fallback=URL[&probe_interval_ms=..&probe_timeout_ms=..&...]."""
    parts = urlsplit(url)
    if parts.scheme != "failover":
        raise BusError(f"not a failover:// URL: {url!r}")
    query = parse_qs(parts.query)

    def text(name: str) -> str | None:
        values = query.get(name)
        return values[-1] if values else None

    def number(name: str, default: float) -> float:
        value = text(name)
        if value is None:
            return default
        try:
            return float(value)
        except ValueError:
            raise BusError(f"failover URL: {name}={value!r} is not a number") from None

    primary, fallback = text("primary"), text("fallback")
    if not primary or not fallback:
        raise BusError(f"failover URL needs primary= and fallback= bus URLs: {url!r}")
    interval_s = number("probe_interval_ms", 200) / 1000
    timeout_ms = text("probe_timeout_ms")
    return FailoverBus(
        open_bus(primary),
        open_bus(fallback),
        probe_interval_s=interval_s,
        probe_timeout_s=None if timeout_ms is None else number("probe_timeout_ms", 0) / 1000,
        recover_after=int(number("recover_after", 3)),
        publish_timeout_s=number("publish_timeout_ms", 1000) / 1000,
    )
