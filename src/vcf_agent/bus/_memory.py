"""In-process bus: `memory://NAME`.

Buses opened with the same NAME in one process share one log, so components
running together (tests, a single-process deployment) talk through it with
the same Kafka semantics as the durable backends. The log lives while at least
one bus on its NAME is started; nothing survives the process.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from vcf_agent.bus._base import (
    Bus,
    BusError,
    BusUnavailableError,
    Consumer,
    OutgoingMessage,
    Partitioner,
    PublishedPosition,
    Record,
    StartPosition,
    StreamSpec,
    TopicPartition,
)

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Partition:
    records: list[Record] = field(default_factory=list)
    # Kept non-decreasing so offsets_for_timestamp can bisect.
    timestamps: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _Member:
    member_id: str
    streams: frozenset[str]


@dataclass(slots=True)
class _Group:
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    # Join order; assignment is a pure function of this list and the streams.
    members: list[_Member] = field(default_factory=list)


class _Log:
    """The shared state behind every bus opened on one NAME."""

    def __init__(self) -> None:
        self.streams: dict[str, list[_Partition]] = {}
        self.groups: dict[str, _Group] = {}
        # Consumers may live on different event loops (threads); each registers its own wakeup.
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self.open_buses = 0

    def partitions_of(self, stream: str) -> list[_Partition]:
        try:
            return self.streams[stream]
        except KeyError:
            raise BusError(f"memory bus: stream {stream!r} does not exist (call ensure_streams)") from None

    def assignment(self, group: str, member_id: str) -> set[TopicPartition]:
        """Range assignment per stream over the members subscribed to it."""
        members = self.groups[group].members
        mine: set[TopicPartition] = set()
        subscribed = next((m.streams for m in members if m.member_id == member_id), frozenset())
        for stream in subscribed:
            if stream not in self.streams:
                continue
            readers = [m.member_id for m in members if stream in m.streams]
            index = readers.index(member_id)
            mine.update((stream, p) for p in range(len(self.streams[stream])) if p % len(readers) == index)
        return mine

    def add_waiter(self, waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        self._waiters.add(waiter)

    def remove_waiter(self, waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        self._waiters.discard(waiter)

    def wake(self) -> None:
        for loop, event in list(self._waiters):
            if loop.is_closed():
                self._waiters.discard((loop, event))
            else:
                loop.call_soon_threadsafe(event.set)


_LOGS: dict[str, _Log] = {}


class MemoryBus(Bus):
    """Kafka-like log held in process memory, shared by NAME."""

    backend = "memory"

    def __init__(self, name: str) -> None:
        self.name = name
        self._log = _Log()
        self._started = False
        self._partitioner = Partitioner()

    async def start(self) -> None:
        if self._started:
            return
        self._log = _LOGS.setdefault(self.name, _Log())
        self._log.open_buses += 1
        self._started = True

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        self._log.open_buses -= 1
        if self._log.open_buses == 0:
            # Nobody can reach the log any more; free its records.
            _LOGS.pop(self.name, None)

    def _check(self) -> _Log:
        if not self._started:
            raise BusUnavailableError(f"memory bus {self.name!r} is not started")
        return self._log

    async def ensure_streams(self, specs: Sequence[StreamSpec]) -> None:
        log = self._check()
        for spec in specs:
            if spec.partitions < 1:
                raise BusError(f"memory bus: stream {spec.name!r} needs at least one partition")
            log.streams.setdefault(spec.name, [_Partition() for _ in range(spec.partitions)])
        # Consumers waiting on a stream that did not exist yet now have partitions to read.
        log.wake()

    async def partitions(self, stream: str) -> int:
        return len(self._check().partitions_of(stream))

    async def publish(self, stream: str, messages: Sequence[OutgoingMessage]) -> list[PublishedPosition]:
        log = self._check()
        parts = log.partitions_of(stream)
        now = time.time_ns() // 1_000_000
        positions = []
        for message in messages:
            p = self._partitioner.partition(stream, message.key, len(parts))
            part = parts[p]
            ts = max(now, part.timestamps[-1]) if part.timestamps else now
            offset = len(part.records)
            part.records.append(
                Record(stream, p, offset, message.value, message.key, dict(message.headers), ts)
            )
            part.timestamps.append(ts)
            positions.append(PublishedPosition(p, offset))
        if positions:
            log.wake()
        return positions

    def consumer(
        self,
        streams: Sequence[str],
        group: str,
        *,
        start: StartPosition = "earliest",
        max_in_flight: int = 1000,
    ) -> Consumer:
        return MemoryConsumer(self, list(streams), group, start=start, max_in_flight=max_in_flight)

    async def committed_offsets(self, group: str, stream: str) -> dict[int, int]:
        log = self._check()
        state = log.groups.get(group)
        if state is None:
            return {}
        return {p: off for (s, p), off in state.committed.items() if s == stream}

    async def consumer_groups(self, stream: str) -> list[str]:
        log = self._check()
        return sorted(
            name for name, state in log.groups.items() if any(s == stream for s, _ in state.committed)
        )

    async def end_offsets(self, stream: str) -> dict[int, int]:
        return {p: len(part.records) for p, part in enumerate(self._check().partitions_of(stream))}

    async def set_committed_offsets(self, group: str, stream: str, offsets: Mapping[int, int]) -> None:
        log = self._check()
        count = len(log.partitions_of(stream))
        state = log.groups.setdefault(group, _Group())
        for p, off in offsets.items():
            if not 0 <= p < count:
                raise BusError(f"memory bus: stream {stream!r} has no partition {p}")
            state.committed[(stream, p)] = off

    async def offsets_for_timestamp(self, stream: str, timestamp_ms: int) -> dict[int, int]:
        return {
            p: bisect.bisect_left(part.timestamps, timestamp_ms)
            for p, part in enumerate(self._check().partitions_of(stream))
        }

    async def healthy(self) -> bool:
        return self._started


class MemoryConsumer(Consumer):
    """A group member; it reads straight from the shared lists, so nothing is prefetched."""

    def __init__(
        self,
        bus: MemoryBus,
        streams: list[str],
        group: str,
        *,
        start: StartPosition,
        max_in_flight: int,
    ) -> None:
        self._bus = bus
        self._streams = frozenset(streams)
        self._group = group
        self._start = start
        self._max_records_cap = max(1, max_in_flight)
        self._member_id = f"{group}-{uuid.uuid4().hex[:12]}"
        self._positions: dict[TopicPartition, int] = {}
        self._joined = False
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        # Rotated every poll so a busy partition cannot starve the others.
        self._rotation = 0

    async def start(self) -> None:
        log = self._bus._check()
        state = log.groups.setdefault(self._group, _Group())
        state.members.append(_Member(self._member_id, self._streams))
        self._joined = True
        self._waiter = (asyncio.get_running_loop(), asyncio.Event())
        log.add_waiter(self._waiter)
        self._sync_assignment()

    async def stop(self) -> None:
        if not self._joined:
            return
        self._joined = False
        log = self._bus._log
        state = log.groups[self._group]
        state.members = [m for m in state.members if m.member_id != self._member_id]
        if self._waiter is not None:
            log.remove_waiter(self._waiter)
        self._positions.clear()
        # Remaining members pick up the partitions on their next poll.
        log.wake()

    def _sync_assignment(self) -> None:
        """Adopt the group's current assignment; new partitions resume from the committed offset."""
        log = self._bus._check()
        current = log.assignment(self._group, self._member_id)
        committed = log.groups[self._group].committed
        for tp in list(self._positions):
            if tp not in current:
                del self._positions[tp]
        for tp in current - self._positions.keys():
            if tp in committed:
                self._positions[tp] = committed[tp]
            elif self._start == "earliest":
                self._positions[tp] = 0
            else:
                self._positions[tp] = len(log.streams[tp[0]][tp[1]].records)

    def _take(self, limit: int) -> list[Record]:
        log = self._bus._log
        tps = sorted(self._positions)
        if not tps:
            return []
        self._rotation = (self._rotation + 1) % len(tps)
        out: list[Record] = []
        for tp in tps[self._rotation :] + tps[: self._rotation]:
            records = log.streams[tp[0]][tp[1]].records
            position = self._positions[tp]
            chunk = records[position : position + limit - len(out)]
            if chunk:
                out.extend(chunk)
                self._positions[tp] = position + len(chunk)
            if len(out) >= limit:
                break
        return out

    async def poll(self, max_records: int = 500, timeout_s: float = 1.0) -> list[Record]:
        if not self._joined or self._waiter is None:
            raise BusError("memory consumer: poll() before start()")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        event = self._waiter[1]
        limit = max(1, min(max_records, self._max_records_cap))
        while True:
            # Clear before reading so a publish racing with the read still wakes the wait below.
            event.clear()
            self._sync_assignment()
            records = self._take(limit)
            remaining = deadline - loop.time()
            if records or remaining <= 0:
                return records
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                return []

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        log = self._bus._check()
        self._sync_assignment()
        state = log.groups[self._group]
        wanted = dict(self._positions) if offsets is None else dict(offsets)
        for tp, off in wanted.items():
            if tp not in self._positions:
                # Fencing: the partition moved to another member, whose progress wins.
                _log.warning("memory consumer %s: not committing %s, no longer assigned", self._member_id, tp)
                continue
            state.committed[tp] = off

    async def seek(self, stream: str, partition: int, offset: int) -> None:
        self._sync_assignment()
        if (stream, partition) not in self._positions:
            raise BusError(f"memory consumer: cannot seek {stream}[{partition}], it is not assigned to me")
        self._positions[(stream, partition)] = offset

    def assignment(self) -> set[TopicPartition]:
        if self._joined:
            self._sync_assignment()
        return set(self._positions)


def from_url(url: str) -> MemoryBus:
    """memory://NAME; an empty NAME is a valid shared default log."""
    parts = urlsplit(url)
    if parts.scheme != "memory":
        raise BusError(f"not a memory:// URL: {url!r}")
    return MemoryBus(parts.netloc + parts.path)
