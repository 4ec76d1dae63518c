"""The bus contract every backend implements.

Semantics are Kafka's, because every backend must be swappable under the
services: streams have a fixed number of partitions, a key always maps to the
same partition (computed here, not by the backend, so a failover between
backends keeps per-key order), consumers in one group split the partitions,
and offsets are committed explicitly after processing (at-least-once).
"""

from __future__ import annotations

import abc
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import mmh3

from vcf_agent.lifecycle import AsyncComponent

StartPosition = Literal["earliest", "latest"]


class BusError(Exception):
    """A bus operation failed; the message says which backend and why."""


class BusUnavailableError(BusError):
    """The backend cannot be reached (server down, timeout, closed)."""


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """A stream (topic) and its partition count."""

    name: str
    partitions: int


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A message to publish. `key` picks the partition; None spreads round-robin."""

    value: bytes
    key: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Record:
    """A consumed message and where it came from."""

    stream: str
    partition: int
    offset: int
    value: bytes
    key: bytes | None
    headers: Mapping[str, str]
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class PublishedPosition:
    partition: int
    offset: int
    # The backend that took it, where a bus has several (failover); empty otherwise.
    backend: str = ""


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """Committed offset (next to read), end offset (next to be written) and their gap."""

    stream: str
    partition: int
    committed: int
    end: int

    @property
    def lag(self) -> int:
        return max(0, self.end - self.committed)


TopicPartition = tuple[str, int]


def partition_for_key(key: bytes, partitions: int) -> int:
    """Stable key-to-partition map shared by all backends (MurmurHash3, unsigned)."""
    return mmh3.hash(key, signed=False) % partitions


class Partitioner:
    """Where each published message goes: its key's partition, or round-robin per stream when unkeyed."""

    def __init__(self) -> None:
        self._round_robin: dict[str, itertools.count[int]] = {}

    def partition(self, stream: str, key: bytes | None, partitions: int) -> int:
        if key is not None:
            return partition_for_key(key, partitions)
        return next(self._round_robin.setdefault(stream, itertools.count())) % partitions


class Consumer(AsyncComponent):
    """A member of a consumer group reading one or more streams.

    Offsets are never committed implicitly: callers commit after processing.
    """

    # Whether start() may be called again after it failed because the backend did not answer
    # (BusUnavailableError, or the caller's timeout): the retry goes on with this member's
    # connection, and with a login still under way, instead of opening another. See
    # `keep_for_next_join`.
    starts_again_in_place: bool = False

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None:
        """Leave the group. Uncommitted records will be redelivered to the group."""

    @abc.abstractmethod
    async def poll(self, max_records: int = 500, timeout_s: float = 1.0) -> list[Record]:
        """Up to max_records from assigned partitions; empty after timeout_s with nothing new."""

    @abc.abstractmethod
    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Commit next-offset-to-read per partition; None commits everything polled so far."""

    @abc.abstractmethod
    async def seek(self, stream: str, partition: int, offset: int) -> None:
        """Next poll on this partition starts at offset (replay or skip)."""

    @abc.abstractmethod
    def assignment(self) -> set[TopicPartition]: ...


def keep_for_next_join(consumer: Consumer, error: BaseException) -> bool:
    """Whether a consumer whose start() raised `error` should be started again rather than stopped.

    A new consumer per join attempt piled logins up on a loaded debug iggy-server (355 failed
    joins in 12 minutes of a 500,000-variant job, sockets in CLOSE-WAIT, pings unanswered for
    over 10 s and every service switched to Kafka): the server answers logins one at a time,
    those of abandoned attempts too. Keeping the one joining consumer until it is in means one
    connection and one login per group and backend at a time; any other failure stops it.
    """
    return consumer.starts_again_in_place and isinstance(error, (BusUnavailableError, TimeoutError))


class Bus(AsyncComponent):
    """A connection to one message log. One instance per process is enough; it is reused."""

    backend: str = "abstract"

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    async def ensure_streams(self, specs: Sequence[StreamSpec]) -> None:
        """Create missing streams; existing ones are left as they are (idempotent)."""

    @abc.abstractmethod
    async def partitions(self, stream: str) -> int: ...

    @abc.abstractmethod
    async def publish(self, stream: str, messages: Sequence[OutgoingMessage]) -> list[PublishedPosition]:
        """Append messages; returns once they are durable on the backend.

        Messages with the same key land on partition_for_key(key) in the order given.
        """

    @abc.abstractmethod
    def consumer(
        self,
        streams: Sequence[str],
        group: str,
        *,
        start: StartPosition = "earliest",
        max_in_flight: int = 1000,
    ) -> Consumer:
        """A group member; `start` applies only where the group has no committed offset.

        max_in_flight bounds records fetched but not yet returned by poll (backpressure).
        """

    @abc.abstractmethod
    async def committed_offsets(self, group: str, stream: str) -> dict[int, int]:
        """Committed next-offset per partition; partitions never committed are absent."""

    @abc.abstractmethod
    async def end_offsets(self, stream: str) -> dict[int, int]:
        """Next offset to be written, per partition."""

    @abc.abstractmethod
    async def set_committed_offsets(self, group: str, stream: str, offsets: Mapping[int, int]) -> None:
        """Overwrite a group's committed offsets (checkpoint reset); the group should be paused."""

    @abc.abstractmethod
    async def offsets_for_timestamp(self, stream: str, timestamp_ms: int) -> dict[int, int]:
        """Per partition, the first offset whose timestamp is >= timestamp_ms (end if none)."""

    @abc.abstractmethod
    async def healthy(self) -> bool:
        """A cheap live probe of the backend."""

    async def lag(self, group: str, stream: str) -> list[PartitionLag]:
        committed = await self.committed_offsets(group, stream)
        ends = await self.end_offsets(stream)
        return [PartitionLag(stream, p, committed.get(p, 0), end) for p, end in sorted(ends.items())]

    async def consumer_groups(self, stream: str) -> list[str]:
        """Groups that committed an offset on the stream: the stages that read it.

        Throw-away readers (replay and dead-letter scans) never commit, so they are not listed.
        """
        return []

    async def earliest_offsets(self, stream: str) -> dict[int, int]:
        """First retained offset per partition; backends without retention start at 0."""
        return dict.fromkeys(range(await self.partitions(stream)), 0)
