"""The bus contract, checked identically against every backend (see conftest.bus_env)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.bus.conftest import BusEnv
from vcf_agent.bus import (
    BusError,
    Consumer,
    OutgoingMessage,
    Record,
    StreamSpec,
    TopicPartition,
    partition_for_key,
)
from vcf_agent.schema import ENCODING_ZSTD, HEADER_CONTENT_ENCODING, PayloadError, decode, encode
from vcf_agent.v1 import variant_pb2

CHILD = Path(__file__).with_name("_consumer_child.py")


def bound_s(env: BusEnv) -> float:
    """Upper bound for waits; networked brokers need a group rebalance (seconds) first."""
    return 45.0 if env.backend in {"kafka", "iggy"} else 10.0


async def drain(consumer: Consumer, count: int, timeout_s: float, max_records: int = 500) -> list[Record]:
    """Poll until count records arrived or timeout_s passed."""
    got: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and (remaining := deadline - time.monotonic()) > 0:
        got.extend(await consumer.poll(max_records=max_records, timeout_s=min(0.5, remaining)))
    return got


async def assert_nothing_more(consumer: Consumer) -> None:
    extra = await consumer.poll(timeout_s=0.3)
    assert extra == [], f"unexpected extra records {[(r.partition, r.offset) for r in extra]}"


async def wait_for_split(consumers: Sequence[Consumer], every: set[TopicPartition], timeout_s: float) -> None:
    """Poll all members until their assignments are non-empty, disjoint and cover every partition."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await asyncio.gather(*(c.poll(timeout_s=0.1) for c in consumers))
        sets = [c.assignment() for c in consumers]
        if all(sets) and sum(len(s) for s in sets) == len(every) and set().union(*sets) == every:
            return
    raise AssertionError(f"group never settled: {[c.assignment() for c in consumers]}")


def keyed(count: int, keys: int = 8, prefix: str = "m") -> list[OutgoingMessage]:
    return [OutgoingMessage(f"{prefix}{i}".encode(), key=f"key-{i % keys}".encode()) for i in range(count)]


async def test_per_key_order_and_partitioning(bus_env: BusEnv) -> None:
    bus = await bus_env.open()
    stream = bus_env.stream()
    await bus.ensure_streams([StreamSpec(stream, 4)])
    published: dict[tuple[int, int], bytes] = {}
    for round_ in range(5):
        batch = [
            OutgoingMessage(f"k{k}:{round_ * 8 + i}".encode(), key=f"k{k}".encode())
            for i in range(8)
            for k in range(5)
        ]
        positions = await bus.publish(stream, batch)
        assert len(positions) == len(batch)
        for message, position in zip(batch, positions, strict=True):
            assert message.key is not None
            assert position.partition == partition_for_key(message.key, 4)
            published[(position.partition, position.offset)] = message.value

    async with bus.consumer([stream], bus_env.group()) as consumer:
        records = await drain(consumer, 200, bound_s(bus_env))
        await assert_nothing_more(consumer)
    assert len(records) == 200
    assert {(r.partition, r.offset): r.value for r in records} == published
    sequences: dict[bytes, list[int]] = defaultdict(list)
    for record in records:
        assert record.stream == stream
        assert record.key is not None
        assert record.partition == partition_for_key(record.key, 4)
        key, seq = record.value.decode().split(":")
        assert key.encode() == record.key
        sequences[record.key].append(int(seq))
    assert {k: v for k, v in sequences.items()} == {f"k{k}".encode(): list(range(40)) for k in range(5)}


async def test_unkeyed_messages_round_robin(bus_env: BusEnv) -> None:
    bus = await bus_env.open()
    stream = bus_env.stream()
    await bus.ensure_streams([StreamSpec(stream, 4)])
    positions = await bus.publish(stream, [OutgoingMessage(b"x%d" % i) for i in range(8)])
    assert Counter(p.partition for p in positions) == {0: 2, 1: 2, 2: 2, 3: 2}
    assert await bus.end_offsets(stream) == {0: 2, 1: 2, 2: 2, 3: 2}


async def test_group_members_split_partitions_exactly_once(bus_env: BusEnv) -> None:
    bus = await bus_env.open()
    stream, group = bus_env.stream(), bus_env.group()
    await bus.ensure_streams([StreamSpec(stream, 4)])
    every = {(stream, p) for p in range(4)}
    async with bus.consumer([stream], group) as first, bus.consumer([stream], group) as second:
        await wait_for_split([first, second], every, bound_s(bus_env))
        await bus.publish(stream, keyed(100, keys=16))
        seen: dict[int, list[Record]] = {0: [], 1: []}
        deadline = time.monotonic() + bound_s(bus_env)
        while len(seen[0]) + len(seen[1]) < 100 and time.monotonic() < deadline:
            batches = await asyncio.gather(first.poll(timeout_s=0.2), second.poll(timeout_s=0.2))
            for index, batch in enumerate(batches):
                seen[index].extend(batch)
        await assert_nothing_more(first)
        await assert_nothing_more(second)
        for index, member in enumerate([first, second]):
            assert seen[index], "both members must receive a share"
            assert {(r.stream, r.partition) for r in seen[index]} <= member.assignment()
    values = [r.value for r in seen[0] + seen[1]]
    assert sorted(values) == sorted(f"m{i}".encode() for i in range(100))


async def test_commit_then_restart_resumes_after_commit(bus_env: BusEnv) -> None:
    bus = await bus_env.open()
    stream, group = bus_env.stream(), bus_env.group()
    await bus.ensure_streams([StreamSpec(stream, 3)])
    await bus.publish(stream, keyed(30))
    async with bus.consumer([stream], group) as consumer:
        first = await drain(consumer, 1, bound_s(bus_env), max_records=10)
        assert 1 <= len(first) <= 10
        await consumer.commit()
    committed = await bus.committed_offsets(group, stream)
    for record in first:
        assert committed[record.partition] > record.offset

    # A new bus instance too, as after a process restart.
    restarted = await bus_env.open()
    async with restarted.consumer([stream], group) as consumer:
        rest = await drain(consumer, 30 - len(first), bound_s(bus_env))
        await assert_nothing_more(consumer)
        await consumer.commit()
    assert not {r.value for r in first} & {r.value for r in rest}
    assert sorted(r.value for r in first + rest) == sorted(m.value for m in keyed(30))
    assert await restarted.committed_offsets(group, stream) == await restarted.end_offsets(stream)


async def test_killed_consumer_messages_are_redelivered(bus_env: BusEnv) -> None:
    if not bus_env.shared_across_processes:
        pytest.skip(f"{bus_env.backend} bus keeps its log in this process (memory://); no other can join")
    bus = await bus_env.open()
    stream, group = bus_env.stream(), bus_env.group()
    await bus.ensure_streams([StreamSpec(stream, 2)])
    published = {(p.partition, p.offset) for p in await bus.publish(stream, keyed(20))}

    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILD),
        bus_env.url,
        stream,
        group,
        "20",
        str(bound_s(bus_env)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    try:
        child_got: set[tuple[int, int]] = set()
        async with asyncio.timeout(bound_s(bus_env) + 15):
            while (line := (await child.stdout.readline()).decode().strip()) != "READY":
                if not line or line.startswith("TIMEOUT"):
                    assert child.stderr is not None
                    stderr = (await child.stderr.read()).decode()
                    raise AssertionError(f"child consumer failed ({line!r}): {stderr}")
                partition, offset = line.split()
                child_got.add((int(partition), int(offset)))
        assert child_got == published
        assert await bus.committed_offsets(group, stream) == {}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)
        await child.wait()
    assert child.returncode == -signal.SIGKILL

    async with bus.consumer([stream], group) as survivor:
        redelivered = await drain(survivor, 20, bound_s(bus_env))
        await assert_nothing_more(survivor)
    assert {(r.partition, r.offset) for r in redelivered} == published


async def test_seek_and_timestamp_replay(bus_env: BusEnv) -> None:
    bus = await bus_env.open()
    stream = bus_env.stream()
    await bus.ensure_streams([StreamSpec(stream, 2)])
    await bus.publish(stream, keyed(10, prefix="a"))
    ends_before = await bus.end_offsets(stream)
    await asyncio.sleep(0.05)
    boundary_ms = time.time_ns() // 1_000_000
    await asyncio.sleep(0.05)
    await bus.publish(stream, keyed(10, prefix="b"))
    ends = await bus.end_offsets(stream)

    assert await bus.offsets_for_timestamp(stream, boundary_ms) == ends_before
    assert await bus.offsets_for_timestamp(stream, boundary_ms + 3_600_000) == ends
    assert await bus.offsets_for_timestamp(stream, 0) == {0: 0, 1: 0}

    async with bus.consumer([stream], bus_env.group()) as consumer:
        everything = await drain(consumer, 20, bound_s(bus_env))
        assert len(everything) == 20
        by_position = {(r.partition, r.offset): r.value for r in everything}

        for partition, offset in (await bus.offsets_for_timestamp(stream, boundary_ms)).items():
            await consumer.seek(stream, partition, offset)
        replayed = await drain(consumer, 10, bound_s(bus_env))
        await assert_nothing_more(consumer)
        assert sorted(r.value for r in replayed) == sorted(m.value for m in keyed(10, prefix="b"))

        busy = max(ends, key=lambda p: ends[p])
        await consumer.seek(stream, busy, 1)
        again = await drain(consumer, ends[busy] - 1, bound_s(bus_env))
        await assert_nothing_more(consumer)
        assert [(r.partition, r.offset) for r in again] == [(busy, o) for o in range(1, ends[busy])]
        assert all(r.value == by_position[(r.partition, r.offset)] for r in again)


async def test_headers_and_keys_round_trip(bus_env: BusEnv) -> None:
    bus = await bus_env.open()
    stream = bus_env.stream()
    await bus.ensure_streams([StreamSpec(stream, 2)])
    headers = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "note": "ünï ✓"}
    sent = [
        OutgoingMessage(b"\x00with-headers\xff", key=b"\x00\xffbinary", headers=headers),
        OutgoingMessage(b"no-headers", key=b"k"),
        OutgoingMessage(b"no-key", headers={"only": "one"}),
    ]
    before_ms = time.time_ns() // 1_000_000
    await bus.publish(stream, sent)
    after_ms = time.time_ns() // 1_000_000
    async with bus.consumer([stream], bus_env.group()) as consumer:
        records = await drain(consumer, 3, bound_s(bus_env))
    by_value = {r.value: r for r in records}
    assert set(by_value) == {m.value for m in sent}
    for message in sent:
        record = by_value[message.value]
        assert record.key == message.key
        assert dict(record.headers) == dict(message.headers)
        assert before_ms - 1000 <= record.timestamp_ms <= after_ms + 1000


async def test_fifty_megabytes_flow_through(bus_env: BusEnv) -> None:
    bus = await bus_env.open()
    stream = bus_env.stream()
    await bus.ensure_streams([StreamSpec(stream, 4)])
    digests: dict[str, bytes] = {}
    for chunk in range(10):
        messages = []
        for i in range(chunk * 5, chunk * 5 + 5):
            # Just under 1 MiB so brokers with default message limits accept it.
            value = os.urandom(1_000_000)
            digests[str(i)] = hashlib.blake2b(value).digest()
            messages.append(OutgoingMessage(value, key=b"%d" % (i % 4), headers={"i": str(i)}))
        await bus.publish(stream, messages)
    async with bus.consumer([stream], bus_env.group()) as consumer:
        records = await drain(consumer, 50, bound_s(bus_env) * 2, max_records=10)
        await consumer.commit()
    assert len(records) == 50
    assert {r.headers["i"]: hashlib.blake2b(r.value).digest() for r in records} == digests
    assert sum((await bus.end_offsets(stream)).values()) == 50


async def test_corrupt_payload_is_a_clear_error_and_the_loop_continues(bus_env: BusEnv) -> None:
    bus = await bus_env.open()
    stream = bus_env.stream()
    await bus.ensure_streams([StreamSpec(stream, 1)])
    batches = [
        variant_pb2.VariantBatch(
            variants=[variant_pb2.VariantMessage(correlation_id=f"c{n}-{i}", position=i) for i in range(3)]
        )
        for n in range(2)
    ]
    good = [encode(batch) for batch in batches]
    # A zstd frame magic followed by garbage: looks compressed, cannot be decompressed.
    corrupt = (
        b"\x28\xb5\x2f\xfd" + b"\x00garbage" * 8,
        {**good[0][1], HEADER_CONTENT_ENCODING: ENCODING_ZSTD},
    )
    await bus.publish(
        stream, [OutgoingMessage(value, key=b"same", headers=h) for value, h in (good[0], corrupt, good[1])]
    )
    decoded: list[variant_pb2.VariantBatch] = []
    errors: list[tuple[int, PayloadError]] = []
    async with bus.consumer([stream], bus_env.group()) as consumer:
        for record in await drain(consumer, 3, bound_s(bus_env)):
            try:
                decoded.append(decode(record.value, record.headers, variant_pb2.VariantBatch))
            except PayloadError as exc:
                errors.append((record.offset, exc))
    assert decoded == batches
    assert [offset for offset, _ in errors] == [1]
    assert "corrupt zstd payload" in str(errors[0][1])


async def test_lag_is_end_minus_committed(bus_env: BusEnv) -> None:
    bus = await bus_env.open()
    stream, group = bus_env.stream(), bus_env.group()
    await bus.ensure_streams([StreamSpec(stream, 2)])
    await bus.publish(stream, keyed(20, keys=4))
    ends = await bus.end_offsets(stream)
    assert sum(ends.values()) == 20
    assert [(lag.partition, lag.committed, lag.end, lag.lag) for lag in await bus.lag(group, stream)] == [
        (p, 0, ends[p], ends[p]) for p in sorted(ends)
    ]
    async with bus.consumer([stream], group) as consumer:
        await drain(consumer, 20, bound_s(bus_env))
        # A reader that never committed (a replay scan) is not one of the stream's stages.
        assert group not in await bus.consumer_groups(stream)
        partial = {(stream, p): end // 2 for p, end in ends.items()}
        await consumer.commit(partial)
    assert group in await bus.consumer_groups(stream)
    other = bus_env.stream()
    await bus.ensure_streams([StreamSpec(other, 1)])
    assert group not in await bus.consumer_groups(other)
    lags = await bus.lag(group, stream)
    assert [(lag.partition, lag.committed, lag.end) for lag in lags] == [
        (p, ends[p] // 2, ends[p]) for p in sorted(ends)
    ]
    assert sum(lag.lag for lag in lags) == sum(end - end // 2 for end in ends.values())


async def test_ensure_streams_is_idempotent(bus_env: BusEnv) -> None:
    bus = await bus_env.open()
    stream = bus_env.stream()
    await bus.ensure_streams([StreamSpec(stream, 3)])
    await bus.publish(stream, keyed(9))
    ends = await bus.end_offsets(stream)
    await bus.ensure_streams([StreamSpec(stream, 3)])
    other = await bus_env.open()
    await other.ensure_streams([StreamSpec(stream, 3), StreamSpec(bus_env.stream(), 1)])
    assert await bus.partitions(stream) == 3
    assert await other.partitions(stream) == 3
    assert await bus.end_offsets(stream) == ends
    assert sum(ends.values()) == 9


async def test_set_committed_offsets_then_new_consumer_resumes_there(bus_env: BusEnv) -> None:
    bus = await bus_env.open()
    stream, group = bus_env.stream(), bus_env.group()
    await bus.ensure_streams([StreamSpec(stream, 2)])
    await bus.publish(stream, keyed(20, keys=4))
    ends = await bus.end_offsets(stream)
    reset = {p: min(2, end) for p, end in ends.items()}
    await bus.set_committed_offsets(group, stream, reset)
    assert await bus.committed_offsets(group, stream) == reset
    expected = {(p, o) for p, end in ends.items() for o in range(reset[p], end)}
    async with bus.consumer([stream], group) as consumer:
        records = await drain(consumer, len(expected), bound_s(bus_env))
        await assert_nothing_more(consumer)
    assert {(r.partition, r.offset) for r in records} == expected


async def test_member_that_lost_a_partition_cannot_commit_it(bus_env: BusEnv) -> None:
    bus = await bus_env.open()
    stream, group = bus_env.stream(), bus_env.group()
    await bus.ensure_streams([StreamSpec(stream, 2)])
    await bus.publish(stream, keyed(10, keys=4))
    async with bus.consumer([stream], group) as first:
        await drain(first, 10, bound_s(bus_env))
        async with bus.consumer([stream], group) as second:
            deadline = time.monotonic() + bound_s(bus_env)
            while not second.assignment() and time.monotonic() < deadline:
                await second.poll(timeout_s=0.1)
            taken = second.assignment()
            assert taken, "the second member never got a partition"
            # `first` has not polled since the rebalance; its commit must not land.
            with contextlib.suppress(BusError):
                await first.commit({tp: 999 for tp in taken})
            committed = await bus.committed_offsets(group, stream)
            assert all(committed.get(p) != 999 for _, p in taken)
