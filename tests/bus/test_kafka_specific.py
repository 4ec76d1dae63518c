"""Kafka-only behaviour of KafkaBus; the shared contract is in test_conformance.py."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import time
import uuid

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.fixtures.aiokafka_leaks import running_aiokafka_tasks
from vcf_agent.bus import (
    BusError,
    BusUnavailableError,
    Consumer,
    OutgoingMessage,
    Record,
    StreamSpec,
    open_bus,
)
from vcf_agent.bus._kafka import MAX_MESSAGE_BYTES, KafkaBus, from_url
from vcf_agent.localdev._kafka_broker import KafkaToolMissingError, LocalKafkaBroker, _cluster_id
from vcf_agent.processing import StreamProcessor


def test_cluster_ids_never_start_with_a_dash() -> None:
    """One random id in 64 would; the storage tool then reads it as an option and formatting fails."""
    ids = [_cluster_id() for _ in range(3000)]
    assert [cluster_id for cluster_id in ids if cluster_id.startswith("-")] == []
    assert all(len(base64.urlsafe_b64decode(cluster_id + "==")) == 16 for cluster_id in ids)


# Long enough for any loaded machine; a call still running after it hangs.
_HANG_GUARD_S = 120


def _name(kind: str) -> str:
    return f"kafka-specific-{kind}-{uuid.uuid4().hex[:10]}"


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _drain(consumer: Consumer, count: int, timeout_s: float = 30.0) -> list[Record]:
    got: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        got.extend(await consumer.poll(timeout_s=0.5))
    return got


def test_url_parsing() -> None:
    bus = from_url("kafka://h1:9092,h2:9093?client_id=router&replication_factor=3&request_timeout_s=2.5")
    assert (bus.bootstrap_servers, bus.client_id, bus.replication_factor, bus.request_timeout_s) == (
        "h1:9092,h2:9093",
        "router",
        3,
        2.5,
    )
    assert isinstance(open_bus("kafka://127.0.0.1:1"), KafkaBus)
    with pytest.raises(BusError, match="unknown kafka URL parameters"):
        from_url("kafka://h:1?acks=0")
    with pytest.raises(BusError, match="bad kafka URL"):
        from_url("kafka://h:1?replication_factor=three")


@pytest.mark.kafka
async def test_topics_get_partitions_and_message_limit(kafka_bootstrap: str) -> None:
    stream = _name("topic")
    async with open_bus(f"kafka://{kafka_bootstrap}") as bus:
        await bus.ensure_streams([StreamSpec(stream, 5)])
        # Existing topics are left alone, even when asked for another partition count.
        await bus.ensure_streams([StreamSpec(stream, 2)])
        assert await bus.partitions(stream) == 5

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        (topic,) = await admin.describe_topics([stream])
        configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, stream)])
    finally:
        await admin.close()
    assert sorted(p["partition"] for p in topic["partitions"]) == [0, 1, 2, 3, 4]
    entries = {entry[0]: entry[1] for entry in configs[0].resources[0][4]}
    assert entries["max.message.bytes"] == str(MAX_MESSAGE_BYTES)


@pytest.mark.kafka
async def test_restarted_member_resumes_from_commit(kafka_bootstrap: str) -> None:
    stream, group = _name("resume"), _name("group")
    async with open_bus(f"kafka://{kafka_bootstrap}") as bus:
        await bus.ensure_streams([StreamSpec(stream, 1)])
        await bus.publish(stream, [OutgoingMessage(b"v%d" % i) for i in range(10)])
        async with bus.consumer([stream], group) as consumer:
            assert len(await _drain(consumer, 10)) == 10
            # Processed only the first four: the commit, not the poll, decides where a restart resumes.
            await consumer.commit({(stream, 0): 4})

        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=5000)
        await admin.start()
        try:
            broker_view = await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()
        assert broker_view[TopicPartition(stream, 0)].offset == 4
        assert await bus.committed_offsets(group, stream) == {0: 4}

        async with bus.consumer([stream], group, start="latest") as restarted:
            rest = await _drain(restarted, 6)
            assert await restarted.poll(timeout_s=0.3) == []
        assert [r.offset for r in rest] == [4, 5, 6, 7, 8, 9]
        assert [r.value for r in rest] == [b"v%d" % i for i in range(4, 10)]


@pytest.mark.kafka
async def test_five_megabyte_message_with_small_fetch_budget(kafka_bootstrap: str) -> None:
    stream = _name("big")
    value = os.urandom(5 * 1024 * 1024)
    async with open_bus(f"kafka://{kafka_bootstrap}") as bus:
        await bus.ensure_streams([StreamSpec(stream, 2)])
        (position,) = await bus.publish(stream, [OutgoingMessage(value, key=b"big")])
        # A 1 MiB fetch budget: Kafka still hands over a record larger than the budget.
        async with bus.consumer([stream], _name("group"), max_in_flight=1) as consumer:
            (record,) = await _drain(consumer, 1)
    assert (record.partition, record.offset) == (position.partition, position.offset)
    assert hashlib.sha256(record.value).digest() == hashlib.sha256(value).digest()


@pytest.mark.kafka
async def test_missing_stream_is_a_bus_error_not_unavailable(kafka_bootstrap: str) -> None:
    async with open_bus(f"kafka://{kafka_bootstrap}") as bus:
        with pytest.raises(BusError, match="does not exist") as caught:
            await bus.publish(_name("absent"), [OutgoingMessage(b"x")])
    assert not isinstance(caught.value, BusUnavailableError)


async def test_nothing_listening_is_unhealthy_and_start_names_the_address() -> None:
    bus = open_bus(f"kafka://127.0.0.1:{_unused_port()}?request_timeout_s=2")
    # Hang guards only (how long it takes is not what is tested): each call must end by itself.
    async with asyncio.timeout(_HANG_GUARD_S):
        assert await bus.healthy() is False
    with pytest.raises(BusUnavailableError, match=r"127\.0\.0\.1"):
        async with asyncio.timeout(_HANG_GUARD_S):
            await bus.start()


@pytest.mark.kafka
async def test_broker_death_under_a_started_bus() -> None:
    """A private broker, so stopping it does not disturb the session's."""
    broker = LocalKafkaBroker(heap="256m")
    try:
        await broker.start()
    except KafkaToolMissingError as exc:
        pytest.skip(f"local Kafka broker unavailable: {exc}")
    try:
        bus = open_bus(f"kafka://{broker.bootstrap_servers}?request_timeout_s=1")
        await bus.start()
        stream = _name("dying")
        await bus.ensure_streams([StreamSpec(stream, 1)])
        await bus.publish(stream, [OutgoingMessage(b"before")])
        assert await bus.healthy() is True
        await broker.stop()

        # What is tested is the outcome: unhealthy, an unavailable error, a stop that returns.
        # The timeouts are hang guards, not measurements (a dead broker must never hang a call).
        async with asyncio.timeout(_HANG_GUARD_S):
            assert await bus.healthy() is False
        with pytest.raises(BusUnavailableError):
            async with asyncio.timeout(_HANG_GUARD_S):
                await bus.publish(stream, [OutgoingMessage(b"after")])
        async with asyncio.timeout(_HANG_GUARD_S):
            await bus.stop()
    finally:
        await broker.stop()


@pytest.mark.kafka
async def test_stopping_a_bus_whose_broker_was_killed_leaves_no_client_running() -> None:
    """A record the dead broker never acknowledged made the producer's stop() wait for it.

    Cut short by the bus's bound, aiokafka's stop() had already marked the producer closed:
    its sender and metadata tasks went on reconnecting to the dead broker for the rest of
    the process (in CI, hundreds of "Unable connect to node" lines in later tests' logs).
    Killed, not stopped: a broker shut down cleanly first drops its partitions' leaders,
    and aiokafka expires batches without a leader on its own.
    """
    broker = LocalKafkaBroker(heap="256m")
    try:
        await broker.start()
    except KafkaToolMissingError as exc:
        pytest.skip(f"local Kafka broker unavailable: {exc}")
    loop = asyncio.get_running_loop()
    already_running = running_aiokafka_tasks(loop)
    try:
        bus = open_bus(f"kafka://{broker.bootstrap_servers}?request_timeout_s=1")
        await bus.start()
        stream = _name("killed")
        await bus.ensure_streams([StreamSpec(stream, 1)])
        await bus.publish(stream, [OutgoingMessage(b"before")])
        await asyncio.to_thread(broker.kill_sync)
        with pytest.raises(BusUnavailableError):
            await bus.publish(stream, [OutgoingMessage(b"never acknowledged")])
        await bus.stop()
        assert running_aiokafka_tasks(loop) - already_running == set()
    finally:
        await broker.stop()


@pytest.mark.kafka
async def test_stage_heals_after_its_broker_is_killed_and_restarted() -> None:
    """Stop the broker mid-job and start it again: the stage consumes on.

    With the broker dead, a failed commit sends the stage to rejoin, and aiokafka's
    stop() of the old member re-raised its own cancelled coordination task as
    CancelledError; that escaped the retry loop and ended the consumer for good
    (the `broker-restart` chaos stalled at 726 stored, the stage `retrying` forever).
    """
    broker = LocalKafkaBroker(heap="256m")
    try:
        await broker.start()
    except KafkaToolMissingError as exc:
        pytest.skip(f"local Kafka broker unavailable: {exc}")
    stream, group = _name("restart"), _name("group")
    seen: list[bytes] = []
    first_held = asyncio.Event()
    broker_dead = asyncio.Event()

    async def handler(records: list[Record]) -> None:
        seen.extend(record.value for record in records)
        if records and not broker_dead.is_set():
            # Hold the first batch until the broker is gone, so its commit fails.
            first_held.set()
            await broker_dead.wait()

    try:
        bus = open_bus(f"kafka://{broker.bootstrap_servers}?request_timeout_s=1")
        await bus.start()
        await bus.ensure_streams([StreamSpec(stream, 1)])
        processor = StreamProcessor(bus, [stream], group, handler, service="test", retry_max_s=1)
        await processor.start()
        try:
            await bus.publish(stream, [OutgoingMessage(b"before")])
            await asyncio.wait_for(first_held.wait(), 30)
            await asyncio.to_thread(broker.kill_sync)
            broker_dead.set()
            deadline = time.monotonic() + 30
            while processor.retrying is None:
                assert time.monotonic() < deadline, "the commit on a dead broker did not fail"
                await asyncio.sleep(0.1)
            await broker.start()
            await bus.publish(stream, [OutgoingMessage(b"after")])
            deadline = time.monotonic() + 60
            while b"after" not in seen or processor.retrying is not None:
                assert time.monotonic() < deadline, f"stage stuck {processor.state}: {processor.retrying!r}"
                await asyncio.sleep(0.1)
            # The uncommitted record came again (at least once), nothing after it was skipped.
            assert seen.count(b"before") >= 2
        finally:
            await processor.stop()
            await bus.stop()
    finally:
        await broker.stop()
