"""Kafka backend (aiokafka): the reference implementation of the bus contract.

Partitions are chosen here with partition_for_key, never by Kafka's partitioner,
so a key lands on the same partition number on every backend. Every network
call runs under a deadline: a dead broker surfaces as BusUnavailableError
instead of a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka import TopicPartition as KafkaPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    ConsumerStoppedError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NoBrokersAvailable,
    NodeNotReadyError,
    ProducerClosed,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

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

log = logging.getLogger(__name__)

T = TypeVar("T")

# Variant batches reach ~2 MB; topics and the producer allow 10 MB so the limit is never near.
MAX_MESSAGE_BYTES = 10 * 1024 * 1024
DEFAULT_REQUEST_TIMEOUT_S = 10.0
# Consumers notice a dead member within seconds, so rebalances in tests and failovers are quick.
SESSION_TIMEOUT_MS = 8000
HEARTBEAT_INTERVAL_MS = 1000
# max_in_flight counts records, Kafka fetches bytes: records are budgeted at this size.
_BYTES_PER_RECORD_BUDGET = 4096
_MIN_FETCH_BYTES_BUDGET = 1024 * 1024
_MAX_FETCH_BYTES_BUDGET = 32 * 1024 * 1024

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    KafkaConnectionError,
    KafkaTimeoutError,
    NodeNotReadyError,
    NoBrokersAvailable,
    ProducerClosed,
    ConsumerStoppedError,
    ConnectionError,
)


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, UnknownTopicOrPartitionError):
        return False
    if isinstance(exc, _UNAVAILABLE):
        return True
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))


class KafkaBus(Bus):
    """One producer, one admin client and one offsets reader per process, shared by all callers."""

    backend = "kafka"

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        client_id: str = "vcf-agent",
        replication_factor: int = 1,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
        self.replication_factor = replication_factor
        self.request_timeout_s = request_timeout_s
        self.max_message_bytes = max_message_bytes
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        # Group-less consumer used only for ListOffsets (end, earliest, by timestamp).
        self._reader: AIOKafkaConsumer | None = None
        self._partition_counts: dict[str, int] = {}
        self._partitioner = Partitioner()
        self._consumers: weakref.WeakSet[KafkaConsumer] = weakref.WeakSet()

    def __repr__(self) -> str:
        return f"KafkaBus({self.bootstrap_servers!r})"

    @property
    def _request_timeout_ms(self) -> int:
        return int(self.request_timeout_s * 1000)

    @contextlib.asynccontextmanager
    async def _guard(self, what: str, timeout_s: float | None = None) -> AsyncIterator[None]:
        """Bound the call in time and turn aiokafka errors into BusError / BusUnavailableError."""
        limit = timeout_s if timeout_s is not None else self.request_timeout_s * 1.5
        try:
            async with asyncio.timeout(limit):
                yield
        except TimeoutError as exc:
            raise BusUnavailableError(
                f"kafka {self.bootstrap_servers}: {what} timed out after {limit:.1f}s"
            ) from exc
        except BusError:
            raise
        except (KafkaError, ConsumerStoppedError, OSError) as exc:
            detail = f"kafka {self.bootstrap_servers}: {what} failed: {type(exc).__name__}: {exc}"
            if _is_unavailable(exc):
                raise BusUnavailableError(detail) from exc
            raise BusError(detail) from exc

    async def _retrying(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Retry retriable broker errors (coordinator loading, leader election) until the deadline."""
        deadline = time.monotonic() + self.request_timeout_s * 1.5
        async with self._guard(what, self.request_timeout_s * 2):
            while True:
                try:
                    return await call()
                except KafkaError as exc:
                    if not _is_unavailable(exc) or time.monotonic() > deadline:
                        raise
                    log.debug("kafka %s: retrying %s after %r", self.bootstrap_servers, what, exc)
                    await asyncio.sleep(0.1)

    def _require_started(self) -> tuple[AIOKafkaProducer, AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._producer is None or self._admin is None or self._reader is None:
            raise BusUnavailableError(f"kafka {self.bootstrap_servers}: bus is not started")
        return self._producer, self._admin, self._reader

    def _new_admin(self, request_timeout_ms: int | None = None) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers,
            client_id=f"{self.client_id}-admin",
            request_timeout_ms=request_timeout_ms or self._request_timeout_ms,
        )

    async def start(self) -> None:
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            acks="all",
            enable_idempotence=True,
            # Payloads are zstd'ed by the codec already; compressing again only burns CPU.
            compression_type=None,
            # publish() awaits delivery, so lingering only adds latency; batching comes from
            # the messages passed to one publish() call.
            linger_ms=0,
            max_batch_size=1024 * 1024,
            max_request_size=self.max_message_bytes,
            request_timeout_ms=self._request_timeout_ms,
        )
        admin = self._new_admin()
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=f"{self.client_id}-offsets",
            group_id=None,
            enable_auto_commit=False,
            request_timeout_ms=self._request_timeout_ms,
        )
        try:
            async with self._guard("connect"):
                await producer.start()
                await admin.start()
                await reader.start()
        except BaseException:
            await _close_quietly(producer.stop(), admin.close(), _stop_consumer(reader))
            raise
        self._producer, self._admin, self._reader = producer, admin, reader

    async def stop(self) -> None:
        await asyncio.gather(*(consumer.stop() for consumer in list(self._consumers)), return_exceptions=True)
        producer, admin, reader = self._producer, self._admin, self._reader
        self._producer = self._admin = self._reader = None
        closers: list[Awaitable[object]] = []
        if producer is not None:
            # Its own bound drops undelivered records; this one only backs it up.
            closers.append(_stop_producer(producer, timeout_s=self.request_timeout_s))
        if admin is not None:
            closers.append(admin.close())
        if reader is not None:
            closers.append(_stop_consumer(reader))
        await _close_quietly(*closers, timeout_s=2 * self.request_timeout_s)

    async def ensure_streams(self, specs: Sequence[StreamSpec]) -> None:
        _, admin, _ = self._require_started()
        if not specs:
            return
        topics = [
            NewTopic(
                spec.name,
                spec.partitions,
                self.replication_factor,
                topic_configs={"max.message.bytes": str(self.max_message_bytes)},
            )
            for spec in specs
        ]
        async with self._guard(f"create topics {[s.name for s in specs]}"):
            response = await admin.create_topics(topics, timeout_ms=self._request_timeout_ms)
        for topic, code, *rest in response.topic_errors:
            if code not in (0, TopicAlreadyExistsError.errno):
                message = rest[0] if rest else ""
                raise BusError(f"kafka {self.bootstrap_servers}: cannot create topic {topic!r}: {message}")
        await self._wait_for_leaders([spec.name for spec in specs])

    async def _wait_for_leaders(self, streams: Sequence[str]) -> None:
        """Wait until every partition has a leader, so the first publish or fetch does not race creation."""
        _, admin, _ = self._require_started()
        pending = set(streams)
        async with self._guard(f"wait for leaders of {sorted(pending)}"):
            while pending:
                for topic in await admin.describe_topics(sorted(pending)):
                    partitions = topic["partitions"]
                    if (
                        topic["error_code"] == 0
                        and partitions
                        and all(p["error_code"] == 0 and p["leader"] >= 0 for p in partitions)
                    ):
                        self._partition_counts[topic["topic"]] = len(partitions)
                        pending.discard(topic["topic"])
                if pending:
                    await asyncio.sleep(0.05)

    async def partitions(self, stream: str) -> int:
        cached = self._partition_counts.get(stream)
        if cached is not None:
            return cached
        _, admin, _ = self._require_started()
        async with self._guard(f"describe topic {stream!r}"):
            (topic,) = await admin.describe_topics([stream])
        if topic["error_code"] == UnknownTopicOrPartitionError.errno:
            raise BusError(f"kafka {self.bootstrap_servers}: stream {stream!r} does not exist")
        if topic["error_code"] != 0 or not topic["partitions"]:
            raise BusUnavailableError(
                f"kafka {self.bootstrap_servers}: metadata for {stream!r} unavailable "
                f"(error code {topic['error_code']})"
            )
        count = len(topic["partitions"])
        self._partition_counts[stream] = count
        return count

    async def publish(self, stream: str, messages: Sequence[OutgoingMessage]) -> list[PublishedPosition]:
        producer, _, _ = self._require_started()
        if not messages:
            return []
        count = await self.partitions(stream)
        # aiokafka expires undelivered batches after its request timeout; this outer bound is a backstop.
        async with self._guard(f"publish {len(messages)} messages to {stream!r}", self.request_timeout_s * 3):
            futures = [
                await producer.send(
                    stream,
                    value=message.value,
                    key=message.key,
                    partition=self._partitioner.partition(stream, message.key, count),
                    headers=[(name, value.encode()) for name, value in message.headers.items()],
                )
                for message in messages
            ]
            metadata = await asyncio.gather(*futures)
        return [PublishedPosition(md.partition, md.offset) for md in metadata]

    def consumer(
        self,
        streams: Sequence[str],
        group: str,
        *,
        start: StartPosition = "earliest",
        max_in_flight: int = 1000,
    ) -> Consumer:
        consumer = KafkaConsumer(self, streams, group, start=start, max_in_flight=max_in_flight)
        self._consumers.add(consumer)
        return consumer

    async def _stream_partitions(self, stream: str) -> list[KafkaPartition]:
        return [KafkaPartition(stream, p) for p in range(await self.partitions(stream))]

    async def committed_offsets(self, group: str, stream: str) -> dict[int, int]:
        _, admin, _ = self._require_started()
        tps = await self._stream_partitions(stream)
        offsets = await self._retrying(
            f"fetch offsets of group {group!r} on {stream!r}",
            lambda: admin.list_consumer_group_offsets(group, partitions=tps),
        )
        return {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}

    async def consumer_groups(self, stream: str) -> list[str]:
        _, admin, _ = self._require_started()
        listed = await self._retrying("list consumer groups", admin.list_consumer_groups)
        tps = await self._stream_partitions(stream)
        found = []
        for group_id, *_ in listed:
            if await self._committed_any(str(group_id), tps):
                found.append(str(group_id))
        return sorted(found)

    async def _committed_any(self, group: str, tps: list[KafkaPartition]) -> bool:
        _, admin, _ = self._require_started()
        offsets = await self._retrying(
            f"fetch offsets of group {group!r}",
            lambda: admin.list_consumer_group_offsets(group, partitions=tps),
        )
        return any(meta.offset >= 0 for meta in offsets.values())

    async def end_offsets(self, stream: str) -> dict[int, int]:
        _, _, reader = self._require_started()
        tps = await self._stream_partitions(stream)
        ends = await self._retrying(f"end offsets of {stream!r}", lambda: reader.end_offsets(tps))
        return {tp.partition: offset for tp, offset in ends.items()}

    async def earliest_offsets(self, stream: str) -> dict[int, int]:
        _, _, reader = self._require_started()
        tps = await self._stream_partitions(stream)
        starts = await self._retrying(
            f"earliest offsets of {stream!r}", lambda: reader.beginning_offsets(tps)
        )
        return {tp.partition: offset for tp, offset in starts.items()}

    async def offsets_for_timestamp(self, stream: str, timestamp_ms: int) -> dict[int, int]:
        _, _, reader = self._require_started()
        tps = await self._stream_partitions(stream)
        found = await self._retrying(
            f"offsets of {stream!r} at {timestamp_ms}",
            lambda: reader.offsets_for_times(dict.fromkeys(tps, timestamp_ms)),
        )
        missing = [tp for tp, hit in found.items() if hit is None]
        ends: dict[KafkaPartition, int] = {}
        if missing:
            ends = await self._retrying(f"end offsets of {stream!r}", lambda: reader.end_offsets(missing))
        return {tp.partition: hit.offset if hit is not None else ends[tp] for tp, hit in found.items()}

    async def set_committed_offsets(self, group: str, stream: str, offsets: Mapping[int, int]) -> None:
        """Commit through a short-lived, unsubscribed member; Kafka accepts this while the group is empty."""
        self._require_started()
        if not offsets:
            return
        tps = {KafkaPartition(stream, p): offset for p, offset in offsets.items()}
        member = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=f"{self.client_id}-offset-reset",
            group_id=group,
            enable_auto_commit=False,
            request_timeout_ms=self._request_timeout_ms,
        )
        try:
            async with self._guard(f"reset offsets of group {group!r} on {stream!r}"):
                await member.start()
                member.assign(list(tps))
                await member.commit(tps)
        finally:
            await _close_quietly(_stop_consumer(member), timeout_s=self.request_timeout_s)

    async def healthy(self) -> bool:
        """Metadata round trip within 2 s, on the shared admin client or a throwaway one."""
        admin = self._admin
        probe = admin is None
        if admin is None:
            admin = self._new_admin(request_timeout_ms=2000)
        try:
            async with asyncio.timeout(2):
                if probe:
                    await admin.start()
                cluster = await admin.describe_cluster()
            return bool(cluster.get("brokers"))
        except (KafkaError, OSError, TimeoutError) as exc:
            log.debug("kafka %s unhealthy: %r", self.bootstrap_servers, exc)
            return False
        finally:
            if probe:
                await _close_quietly(admin.close(), timeout_s=2)


class _ForgetRevoked(ConsumerRebalanceListener):  # type: ignore[misc]
    """Drops poll progress of partitions handed to another member, so commit() never touches them."""

    def __init__(self, polled: dict[KafkaPartition, int]) -> None:
        self._polled = polled

    async def on_partitions_revoked(self, revoked: Any) -> None:
        for tp in revoked:
            self._polled.pop(tp, None)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None


class KafkaConsumer(Consumer):
    """A group member with manual commits; memory stays bounded via fetch byte limits."""

    def __init__(
        self,
        bus: KafkaBus,
        streams: Sequence[str],
        group: str,
        *,
        start: StartPosition,
        max_in_flight: int,
    ) -> None:
        self._bus = bus
        self.streams = list(streams)
        self.group = group
        self._start = start
        self._max_in_flight = max(1, max_in_flight)
        self._consumer: AIOKafkaConsumer | None = None
        # Next offset after the last record poll() returned, per partition (for commit(None)).
        self._polled: dict[KafkaPartition, int] = {}

    def __repr__(self) -> str:
        return f"KafkaConsumer(group={self.group!r}, streams={self.streams!r})"

    def _require_started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise BusUnavailableError(f"kafka consumer {self.group!r} is not started")
        return self._consumer

    async def start(self) -> None:
        if self._consumer is not None:
            return
        bus = self._bus
        # aiokafka buffers at most one fetch response per partition, so bytes bound memory.
        budget = min(
            max(self._max_in_flight * _BYTES_PER_RECORD_BUDGET, _MIN_FETCH_BYTES_BUDGET),
            _MAX_FETCH_BYTES_BUDGET,
        )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bus.bootstrap_servers,
            client_id=f"{bus.client_id}-{self.group}",
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset=self._start,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
            fetch_max_wait_ms=100,
            fetch_max_bytes=budget,
            max_partition_fetch_bytes=min(budget, _MIN_FETCH_BYTES_BUDGET),
            max_poll_records=self._max_in_flight,
            request_timeout_ms=max(bus._request_timeout_ms, SESSION_TIMEOUT_MS + 5000),
        )
        consumer.subscribe(self.streams, listener=_ForgetRevoked(self._polled))
        try:
            # start() returns once the group has assigned partitions (a full join).
            async with bus._guard(f"join group {self.group!r} on {self.streams}", bus.request_timeout_s * 3):
                await consumer.start()
                # Resolve positions now, so "latest" means latest as of start(), not of the first poll.
                for tp in consumer.assignment():
                    await consumer.position(tp)
        except BaseException:
            await _close_quietly(_stop_consumer(consumer), timeout_s=bus.request_timeout_s)
            raise
        self._consumer = consumer

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        self._polled.clear()
        if consumer is not None:
            # aiokafka sends LeaveGroup: the group rebalances now, not after a session timeout.
            await _close_quietly(_stop_consumer(consumer), timeout_s=self._bus.request_timeout_s)

    async def poll(self, max_records: int = 500, timeout_s: float = 1.0) -> list[Record]:
        consumer = self._require_started()
        async with self._bus._guard(f"poll {self.streams}", timeout_s + self._bus.request_timeout_s):
            batches = await consumer.getmany(
                timeout_ms=int(timeout_s * 1000), max_records=max(1, max_records)
            )
        records: list[Record] = []
        for tp, messages in batches.items():
            if not messages:
                continue
            records.extend(
                Record(
                    stream=m.topic,
                    partition=m.partition,
                    offset=m.offset,
                    value=m.value if m.value is not None else b"",
                    key=m.key,
                    headers={name: (value or b"").decode("utf-8", "replace") for name, value in m.headers},
                    timestamp_ms=m.timestamp,
                )
                for m in messages
            )
            self._polled[tp] = messages[-1].offset + 1
        return records

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        consumer = self._require_started()
        if offsets is None:
            assigned = consumer.assignment()
            to_commit = {tp: offset for tp, offset in self._polled.items() if tp in assigned}
        else:
            to_commit = {
                KafkaPartition(stream, partition): offset for (stream, partition), offset in offsets.items()
            }
        if not to_commit:
            return
        async with self._bus._guard(f"commit group {self.group!r}"):
            await consumer.commit(to_commit)

    async def seek(self, stream: str, partition: int, offset: int) -> None:
        consumer = self._require_started()
        tp = KafkaPartition(stream, partition)
        try:
            consumer.seek(tp, offset)
        except (IllegalStateError, ValueError) as exc:
            raise BusError(
                f"kafka consumer {self.group!r}: cannot seek {stream}[{partition}]: {exc}"
            ) from exc
        # Like Kafka's position: a commit(None) right after a seek records the seek target.
        self._polled[tp] = offset

    def assignment(self) -> set[TopicPartition]:
        if self._consumer is None:
            return set()
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}


async def _stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """aiokafka's stop(), and when that fails or is cut short, the parts of it never reached.

    stop() leaves the group first (a round trip to the coordinator). When that step raised
    (after a commit failed on a dead broker, its own cancelled coordination task) or ran
    out of time, the heartbeat, fetcher and client stayed open and a second stop() was a
    no-op: their tasks went on reconnecting to the dead broker for the life of the process.
    """
    try:
        await consumer.stop()
    except BaseException:
        # No public API closes these; each call is one aiokafka's stop() makes.
        coordinator = consumer._coordinator
        parts: list[Callable[[], Awaitable[object]]] = [
            getattr(coordinator, name)
            for name in ("_stop_heartbeat_task", "_stop_commit_offsets_refresh_task")
            if hasattr(coordinator, name)
        ]
        if consumer._fetcher is not None:
            parts.append(consumer._fetcher.close)
        parts.append(consumer._client.close)
        for part in parts:
            try:
                await part()
            except (Exception, asyncio.CancelledError) as exc:
                log.debug("kafka consumer: closing %s after a failed stop: %r", part.__name__, exc)
        raise


async def _stop_producer(producer: AIOKafkaProducer, *, timeout_s: float) -> None:
    """Deliver what the broker takes within `timeout_s`, then give up the rest and close anyway.

    aiokafka's stop() waits for every undelivered batch, or for its sender task to end, and
    with the broker dead the sender retries them for ever. Cut short there, stop() had
    already marked the producer closed, so its sender and metadata tasks went on
    reconnecting to the dead broker for the life of the process (and a second stop() was a
    no-op): a leak per stopped bus.
    """
    stopping = asyncio.ensure_future(producer.stop())
    try:
        async with asyncio.timeout(timeout_s):
            await asyncio.shield(stopping)
    except TimeoutError:
        log.warning("kafka producer: records undelivered after %.1fs are dropped at stop", timeout_s)
    finally:
        if not stopping.done():
            _give_up_undelivered(producer, stopping)
    await stopping


def _give_up_undelivered(producer: AIOKafkaProducer, stopping: asyncio.Future[None]) -> None:
    """End the sender, so stop() goes on to close the client; then fail what it left.

    aiokafka has no public call for this. Failing the batches while the sender still runs
    races its in-flight requests (a retried batch is re-queued after it was failed, and
    the sender dies on a KeyError), so the batches are failed only once stop() is done.
    """
    sender_task = producer._sender.sender_task
    if sender_task is not None:
        sender_task.cancel()
    stopping.add_done_callback(lambda _: _fail_undelivered(producer._message_accumulator))
    # A caller cancelled meanwhile does not wait: keep the stop referenced until it is done.
    _finishing.add(stopping)
    stopping.add_done_callback(_finishing.discard)


def _fail_undelivered(accumulator: Any) -> None:
    """Fail the batches left in aiokafka's accumulator, so nothing waits on them any more."""
    batches = [batch for queue in accumulator._batches.values() for batch in queue]
    batches.extend(accumulator._pending_batches)
    accumulator.fail_all(KafkaConnectionError("the bus stopped before the broker acknowledged these records"))
    for batch in batches:
        # Only the sender waits on a batch's drain; read its error, or asyncio logs it as never retrieved.
        drained = batch._drain_waiter
        if drained.done() and not drained.cancelled():
            drained.exception()


# Closes that outlived a cancelled caller; referenced until they finish.
_finishing: set[asyncio.Future[None]] = set()


async def _close_quietly(*closers: Awaitable[object], timeout_s: float = 10.0) -> None:
    """Close clients at once, without letting one failure (or a dead broker) block the others.

    The closes run as tasks of their own that a cancelled caller does not stop: the
    failover bus bounds a backend's stop(), and a close cut short there left the clients
    not yet reached with their background tasks running for the life of the process.
    """
    tasks = [asyncio.ensure_future(_close_one(closer, timeout_s)) for closer in closers]
    for task in tasks:
        _finishing.add(task)
        task.add_done_callback(_finishing.discard)
    if tasks:
        await asyncio.shield(asyncio.gather(*tasks))


async def _close_one(closer: Awaitable[object], timeout_s: float) -> None:
    """One close, bounded in time; only a cancellation of this task itself propagates.

    After a commit failed on a dead broker, aiokafka's consumer stop() awaits its own
    coordination task, which it had cancelled, and so raises CancelledError although
    nobody cancelled the caller. Let through, that ended a stage's consumer loop for
    good (it escapes `except Exception`).
    """
    try:
        async with asyncio.timeout(timeout_s):
            await closer
    except (KafkaError, OSError, TimeoutError) as exc:
        log.debug("kafka client close failed: %r", exc)
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
        log.debug("kafka client close ended by a cancelled aiokafka task")


def from_url(url: str) -> KafkaBus:
    """kafka://host:port[,host2:port]?client_id=..&replication_factor=..&request_timeout_s=.."""
    parts = urlsplit(url)
    if parts.scheme != "kafka" or not parts.netloc:
        raise BusError(f"not a kafka URL: {url!r} (expected kafka://host:port[,host:port])")
    query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    unknown = set(query) - {"client_id", "replication_factor", "request_timeout_s"}
    if unknown:
        raise BusError(f"unknown kafka URL parameters {sorted(unknown)} in {url!r}")
    try:
        return KafkaBus(
            parts.netloc,
            client_id=query.get("client_id", "vcf-agent"),
            replication_factor=int(query.get("replication_factor", "1")),
            request_timeout_s=float(query.get("request_timeout_s", DEFAULT_REQUEST_TIMEOUT_S)),
        )
    except ValueError as exc:
        raise BusError(f"bad kafka URL {url!r}: {exc}") from exc
