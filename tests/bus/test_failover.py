"""Failover bus: switching on a dead primary, switching back, and no loss or reorder across switches.

The primary is a real memory bus that is either stopped or, through a small
subclass, made to fail its probe or publish on demand (fault injection into a
real backend); the fallback is a real embedded (SQLite) bus. A memory log is
freed when its last bus stops, so tests that stop the primary and expect its
records back keep a second bus open on the same log, as a broker's disk
outlives its process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from urllib.parse import quote

import pytest
from prometheus_client import REGISTRY

from vcf_agent.bus import (
    Bus,
    BusUnavailableError,
    OutgoingMessage,
    PartitionLag,
    PublishedPosition,
    Record,
    StreamSpec,
    open_bus,
    partition_for_key,
)
from vcf_agent.bus._failover import FailoverBus, FailoverConsumer, FailoverRecord
from vcf_agent.bus._memory import MemoryBus
from vcf_agent.processing import next_offsets

PROBE_INTERVAL_S = 0.1
FAILURES_TO_SWITCH = 3
STABLE_PERIOD_S = 0.5


class FaultyMemoryBus(MemoryBus):
    """A real memory bus with injectable faults.

    `broken`: the probe reports unhealthy and publish raises. `store_then_hang`:
    publish stores the messages, then never acknowledges (an ambiguous timeout).
    `hang`: the probe and lag reads never answer (a stalled server).
    `slow_ensure`: creating streams never answers (a loaded server's many metadata calls).
    `probe_script`: the answers of the next probes, one each, before `broken` decides again;
    `past_script` is set by the first probe after them (the last scripted one was then acted on).
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.broken = False
        self.store_then_hang = False
        self.hang = False
        self.slow_ensure = False
        self.probe_script: deque[bool] = deque()
        self.past_script = asyncio.Event()

    async def ensure_streams(self, specs: Sequence[StreamSpec]) -> None:
        if self.slow_ensure:
            await asyncio.Event().wait()
        await super().ensure_streams(specs)

    async def healthy(self) -> bool:
        if self.hang:
            await asyncio.Event().wait()
        if self.probe_script:
            return self.probe_script.popleft() and await super().healthy()
        self.past_script.set()
        return not self.broken and await super().healthy()

    async def answer_probes(self, answers: Sequence[bool], *, then_broken: bool) -> None:
        """The next probes get these answers; returns once the prober acted on the last of them."""
        self.past_script.clear()
        self.probe_script.extend(answers)
        self.broken = then_broken
        async with asyncio.timeout(30):
            await self.past_script.wait()

    async def lag(self, group: str, stream: str) -> list[PartitionLag]:
        if self.hang:
            await asyncio.Event().wait()
        return await super().lag(group, stream)

    async def publish(self, stream: str, messages: Sequence[OutgoingMessage]) -> list[PublishedPosition]:
        if self.broken:
            raise BusUnavailableError("injected: primary is down")
        positions = await super().publish(stream, messages)
        if self.store_then_hang:
            await asyncio.Event().wait()
        return positions


def embedded(tmp_path: Path) -> Bus:
    return open_bus(f"embedded://{tmp_path / 'fallback'}?session_timeout_ms=1500")


def memory_name() -> str:
    return f"failover-{uuid.uuid4().hex[:12]}"


def plain_failover(tmp_path: Path, name: str) -> tuple[FailoverBus, MemoryBus]:
    primary = MemoryBus(name)
    bus = FailoverBus(
        primary,
        embedded(tmp_path),
        probe_interval_s=PROBE_INTERVAL_S,
        failures_to_switch=FAILURES_TO_SWITCH,
        stable_period_s=STABLE_PERIOD_S,
    )
    return bus, primary


def faulty_failover(tmp_path: Path, name: str, **options: float) -> tuple[FailoverBus, FaultyMemoryBus]:
    primary = FaultyMemoryBus(name)
    bus = FailoverBus(
        primary,
        embedded(tmp_path),
        probe_interval_s=PROBE_INTERVAL_S,
        failures_to_switch=FAILURES_TO_SWITCH,
        stable_period_s=STABLE_PERIOD_S,
        publish_timeout_s=0.3,
        **options,
    )
    return bus, primary


@pytest.fixture
async def faulty(tmp_path: Path) -> AsyncIterator[tuple[FailoverBus, FaultyMemoryBus]]:
    name = memory_name()
    bus, primary = faulty_failover(tmp_path, name)
    async with MemoryBus(name), bus:
        yield bus, primary


def gauge(name: str, backend: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"backend": backend})


def switches(source: str, target: str) -> float:
    labels = {"source": source, "target": target}
    return REGISTRY.get_sample_value("bus_backend_switches_total", labels) or 0.0


async def wait_until_active(bus: FailoverBus, backend: str, timeout_s: float = 5.0) -> float:
    """Seconds until `backend` is the one published to."""
    started = time.monotonic()
    while bus.active_backend != backend:
        assert time.monotonic() - started < timeout_s, f"{backend} never became active"
        await asyncio.sleep(0.005)
    return time.monotonic() - started


async def wait_for_probe(bus: FailoverBus, *, healthy: bool, timeout_s: float = 5.0) -> None:
    """Until the primary's latest probe passed (or failed)."""
    started = time.monotonic()
    while bus.backend_states()[0].healthy != healthy:
        assert time.monotonic() - started < timeout_s, f"no probe with healthy={healthy}"
        await asyncio.sleep(0.005)


async def drain(consumer: FailoverConsumer, count: int, timeout_s: float = 10.0) -> list[Record]:
    got: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        got.extend(await consumer.poll(timeout_s=0.2))
    return got


def values(records: Sequence[Record]) -> list[str]:
    return [r.value.decode() for r in records]


def source(record: Record) -> str:
    assert isinstance(record, FailoverRecord)
    return record.backend


async def test_url_builds_both_backends_and_sets_gauges(tmp_path: Path) -> None:
    primary = quote(f"memory://url-{uuid.uuid4().hex[:12]}", safe="")
    fallback = quote(f"embedded://{tmp_path / 'fb'}", safe="")
    bus = open_bus(
        f"failover://?primary={primary}&fallback={fallback}"
        "&probe_interval_ms=150&failures_to_switch=5&stable_period_ms=2500"
    )
    assert isinstance(bus, FailoverBus)
    assert bus.probe_interval_s == pytest.approx(0.15)
    assert bus.failures_to_switch == 5
    assert bus.stable_period_s == pytest.approx(2.5)
    async with bus:
        assert bus.backend_names == ("memory", "embedded")
        assert bus.active_backend == "memory"
        assert await bus.healthy()
        assert gauge("bus_active_backend", "memory") == 1
        assert gauge("bus_active_backend", "embedded") == 0
        assert gauge("platform_health_status", "memory") == 1
        assert gauge("platform_health_status", "embedded") == 1
        await bus.ensure_streams([StreamSpec("s", 2)])
        assert await bus.primary.partitions("s") == 2
        assert await bus.fallback.partitions("s") == 2


async def test_probe_switches_after_consecutive_failures_and_back_after_a_stable_period(
    faulty: tuple[FailoverBus, FaultyMemoryBus],
) -> None:
    bus, primary = faulty
    primary_name, fallback_name = bus.backend_names
    assert bus.active_backend == primary_name
    switches_before = switches(primary_name, fallback_name)

    # No publishes: only the health probe can notice.
    primary.broken = True
    switch_s = await wait_until_active(bus, fallback_name)
    # Not on the first failed probe: FAILURES_TO_SWITCH of them in a row (counted exactly by the
    # scripted tests below; how fast a switch comes is measured by `vcf-agent chaos`, not here).
    assert switch_s >= 0.9 * (FAILURES_TO_SWITCH - 1) * PROBE_INTERVAL_S
    assert bus.switches == 1 and bus.last_switch_at is not None
    assert switches(primary_name, fallback_name) == switches_before + 1
    assert gauge("platform_health_status", primary_name) == 0
    assert gauge("bus_active_backend", primary_name) == 0
    assert gauge("bus_active_backend", fallback_name) == 1
    assert await bus.healthy(), "healthy while the fallback is"

    primary.broken = False
    recover_s = await wait_until_active(bus, primary_name)
    # It waits for a stable period of good probes, not the first one.
    assert recover_s >= STABLE_PERIOD_S
    assert bus.switches == 2
    assert gauge("platform_health_status", primary_name) == 1
    assert gauge("bus_active_backend", primary_name) == 1
    assert gauge("bus_active_backend", fallback_name) == 0


async def test_a_failed_publish_is_republished_at_once_and_consecutive_failures_switch(
    faulty: tuple[FailoverBus, FaultyMemoryBus],
) -> None:
    bus, primary = faulty
    stream = "orders"
    await bus.ensure_streams([StreamSpec(stream, 2)])
    await bus.publish(stream, [OutgoingMessage(b"before", key=b"k")])
    primary.broken = True
    # The publish that failed on the primary returns positions on the fallback: it was published
    # again by that call, not raised to the stage nor held until a switch.
    positions = await bus.publish(
        stream, [OutgoingMessage(b"during-1", key=b"k"), OutgoingMessage(b"during-2", key=b"k")]
    )
    assert [p.offset for p in positions] == [0, 1], "the batch landed on the fresh fallback log"
    assert sum((await bus.fallback.end_offsets(stream)).values()) == 2
    # Each failed publish counts as a failed probe; the switch waits for enough in a row.
    for n in range(3, 3 + FAILURES_TO_SWITCH):
        await bus.publish(stream, [OutgoingMessage(b"during-%d" % n, key=b"k")])
    assert bus.active_backend == bus.backend_names[1]

    async with bus.consumer([stream], "g") as consumer:
        records = await drain(consumer, 3 + FAILURES_TO_SWITCH)
    assert values(records) == ["before"] + [f"during-{n}" for n in range(1, 3 + FAILURES_TO_SWITCH)]
    assert [source(r) for r in records] == [bus.backend_names[0]] + [bus.backend_names[1]] * (
        2 + FAILURES_TO_SWITCH
    )


async def test_stop_primary_mid_stream_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    name = memory_name()
    bus, primary = plain_failover(tmp_path, name)
    stream, keys = "variants", 8
    published: dict[bytes, list[int]] = defaultdict(list)
    received: dict[bytes, list[int]] = defaultdict(list)
    received_from: dict[tuple[str, bytes], list[int]] = defaultdict(list)
    sources: Counter[str] = Counter()
    publishing = True
    target: int | None = None

    async def publish_continuously() -> None:
        seq = 0
        while publishing:
            batch = [OutgoingMessage(b"%d" % n, key=b"k%d" % (n % keys)) for n in range(seq, seq + 4)]
            await bus.publish(stream, batch)
            for message in batch:
                assert message.key is not None
                published[message.key].append(int(message.value))
            seq += 4
            await asyncio.sleep(0.002)

    async def consume(consumer: FailoverConsumer) -> None:
        count = 0
        while target is None or count < target:
            for record in await consumer.poll(timeout_s=0.1):
                assert record.key is not None
                received[record.key].append(int(record.value))
                received_from[source(record), record.key].append(int(record.value))
                sources[source(record)] += 1
                count += 1
            await consumer.commit()

    async with MemoryBus(name), bus:
        await bus.ensure_streams([StreamSpec(stream, 4)])
        primary_name, fallback_name = bus.backend_names
        async with bus.consumer([stream], "readers") as consumer:
            reader = asyncio.create_task(consume(consumer))
            writer = asyncio.create_task(publish_continuously())
            await asyncio.sleep(0.3)

            await primary.stop()
            switch_s = await wait_until_active(bus, fallback_name)
            await asyncio.sleep(0.3)
            await primary.start()
            recover_s = await wait_until_active(bus, primary_name)
            await asyncio.sleep(0.3)

            publishing = False
            await writer
            total = target = sum(len(v) for v in published.values())
            # On a timeout the comparison below shows what is missing.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader, 10)

        print(
            f"\nfailover: {total} messages, switch {switch_s * 1000:.0f} ms, back {recover_s * 1000:.0f} ms"
        )
        # Back only after a stable period of good probes (how soon after is load, not logic).
        assert recover_s >= STABLE_PERIOD_S
        assert sources[primary_name] > 0 and sources[fallback_name] > 0, sources
        # Every message exactly once across both switches.
        assert {k: sorted(v) for k, v in received.items()} == dict(published)
        # Per backend, per key, in publish order (across backends only while both are readable).
        assert all(v == sorted(v) for v in received_from.values())
        # Each record was committed on the backend it came from.
        lags = await bus.lag("readers", stream)
        assert sum(lag.lag for lag in lags) == 0
        assert sum(lag.end for lag in lags) == total


async def test_fallback_records_flow_while_primary_records_are_stranded_then_both_commit_home(
    tmp_path: Path,
) -> None:
    name = memory_name()
    bus, primary = plain_failover(tmp_path, name)
    stream, key = "calls", b"sample-1"
    async with MemoryBus(name), bus:
        await bus.ensure_streams([StreamSpec(stream, 3), StreamSpec("other", 1)])
        primary_name, fallback_name = bus.backend_names
        await bus.publish(stream, [OutgoingMessage(b"p%d" % i, key=key) for i in range(5)])
        await primary.stop()
        await wait_until_active(bus, fallback_name)
        await bus.publish(stream, [OutgoingMessage(b"f%d" % i, key=key) for i in range(5)])

        async with bus.consumer([stream], "late") as consumer:
            # p0..p4 sit unread on the dead primary; availability first: f0.. are not held for them.
            fallback_records = await drain(consumer, 5, timeout_s=30)
            assert values(fallback_records) == [f"f{i}" for i in range(5)]
            # What a stage does: commit the next offsets of the records it handled.
            await consumer.commit(next_offsets(fallback_records))
            # The primary's records are stranded there, and status says so.
            primary_lag, fallback_lag = await bus.backend_lags("late", stream)
            assert (primary_lag.backend, primary_lag.stale) == (primary_name, True)
            assert (fallback_lag.lag, fallback_lag.stale) == (0, False)

            await primary.start()
            stranded = await drain(consumer, 5)
            assert values(stranded) == [f"p{i}" for i in range(5)]
            assert [source(r) for r in stranded] == [primary_name] * 5
            # Merged offsets keep growing across backends, so "highest + 1" commits still work.
            merged = [r.offset for r in fallback_records + stranded]
            assert merged == sorted(set(merged))
            await consumer.commit(next_offsets(stranded))

        partition = partition_for_key(key, 3)
        # Each backend holds the offset of what it delivered, inside its own log.
        assert (await bus.primary.committed_offsets("late", stream))[partition] == 5
        assert (await bus.fallback.committed_offsets("late", stream))[partition] == 5
        assert (await bus.primary.end_offsets(stream))[partition] == 5
        assert (await bus.fallback.end_offsets(stream))[partition] == 5


async def test_switch_back_orders_new_primary_records_after_the_fallback_ones(
    faulty: tuple[FailoverBus, FaultyMemoryBus],
) -> None:
    bus, primary = faulty
    stream, key = "jobs", b"job-7"
    await bus.ensure_streams([StreamSpec(stream, 2)])
    primary.broken = True
    await bus.publish(stream, [OutgoingMessage(b"f%d" % i, key=key) for i in range(3)])
    primary.broken = False
    await wait_until_active(bus, bus.backend_names[0])
    await bus.publish(stream, [OutgoingMessage(b"p%d" % i, key=key) for i in range(3)])

    # The consumer prefers neither backend; only the publisher's edge puts f0..f2 first.
    async with bus.consumer([stream], "ordered") as consumer:
        records = await drain(consumer, 6)
    assert values(records) == ["f0", "f1", "f2", "p0", "p1", "p2"]


async def test_a_timed_out_batch_that_landed_is_not_redelivered_stale(
    faulty: tuple[FailoverBus, FaultyMemoryBus],
) -> None:
    bus, primary = faulty
    stream, key = "results", b"variant-1"
    await bus.ensure_streams([StreamSpec(stream, 1)])
    primary.store_then_hang = True
    await bus.publish(stream, [OutgoingMessage(b"a%d" % i, key=key) for i in range(3)])
    # The primary stored a0..a2 but never acknowledged, then died.
    primary.store_then_hang = False
    await primary.stop()
    await wait_until_active(bus, bus.backend_names[1])
    await bus.publish(stream, [OutgoingMessage(b"b0", key=key)])

    async with bus.consumer([stream], "dedupe") as consumer:
        first = await drain(consumer, 4)
        assert values(first) == ["a0", "a1", "a2", "b0"]
        await primary.start()
        await wait_until_active(bus, bus.backend_names[0])
        await bus.publish(stream, [OutgoingMessage(b"c0", key=key)])
        rest = await drain(consumer, 1)
        # The primary's copies of a0..a2 come back with the primary and are dropped.
        assert await primary.end_offsets(stream) == {0: 4}
        rest += await consumer.poll(timeout_s=0.5)
    assert values(rest) == ["c0"]


async def test_streams_missing_on_a_down_backend_are_created_when_it_returns(
    faulty: tuple[FailoverBus, FaultyMemoryBus],
) -> None:
    bus, primary = faulty
    await primary.stop()
    await wait_until_active(bus, bus.backend_names[1])
    await bus.ensure_streams([StreamSpec("late-stream", 2)])
    await bus.publish("late-stream", [OutgoingMessage(b"x", key=b"k")])
    await primary.start()
    await wait_until_active(bus, bus.backend_names[0])
    assert await primary.partitions("late-stream") == 2
    positions = await bus.publish("late-stream", [OutgoingMessage(b"y", key=b"k")])
    assert (await primary.end_offsets("late-stream"))[positions[0].partition] == 1


async def test_a_primary_that_returns_empty_is_read_from_its_new_start(tmp_path: Path) -> None:
    bus, primary = plain_failover(tmp_path, memory_name())
    stream, key = "calls", b"sample-2"
    partition = partition_for_key(key, 2)
    async with bus:
        await bus.ensure_streams([StreamSpec(stream, 2)])
        await bus.publish(stream, [OutgoingMessage(b"p%d" % i, key=key) for i in range(4)])
        async with bus.consumer([stream], "survivors") as consumer:
            assert values(await drain(consumer, 4)) == [f"p{i}" for i in range(4)]
            await consumer.commit()
            await bus.publish(stream, [OutgoingMessage(b"lost", key=key)])
            # The only bus on its memory log: stopping it discards the log, as a broker losing its disk.
            await primary.stop()
            await wait_until_active(bus, bus.backend_names[1])
            await bus.publish(stream, [OutgoingMessage(b"f%d" % i, key=key) for i in range(3)])
            assert values(await drain(consumer, 3, timeout_s=2)) == ["f0", "f1", "f2"]
            await consumer.commit()

            await primary.start()
            await wait_until_active(bus, bus.backend_names[0])
            await bus.publish(stream, [OutgoingMessage(b"n%d" % i, key=key) for i in range(2)])
            # The new log starts at 0 again: the member forgets offsets 0..4 of the old one.
            assert values(await drain(consumer, 2)) == ["n0", "n1"]
            await consumer.commit()
        assert (await bus.primary.committed_offsets("survivors", stream))[partition] == 2
        assert (await bus.primary.end_offsets(stream))[partition] == 2


async def test_probe_failures_short_of_the_threshold_never_switch(
    faulty: tuple[FailoverBus, FaultyMemoryBus],
) -> None:
    # A loaded machine: probes fail, but never FAILURES_TO_SWITCH in a row. Scripted answers, one
    # per probe: timed flips of `broken` let a late round see three failures under load.
    bus, primary = faulty
    short = [False] * (FAILURES_TO_SWITCH - 1) + [True]
    await primary.answer_probes(short * 10, then_broken=False)
    assert bus.switches == 0
    assert bus.active_backend == bus.backend_names[0]


async def test_probe_failures_reaching_the_threshold_switch_once(
    faulty: tuple[FailoverBus, FaultyMemoryBus],
) -> None:
    # The counterpart: the same probes, then FAILURES_TO_SWITCH failures in a row, and down since.
    bus, primary = faulty
    short = [False] * (FAILURES_TO_SWITCH - 1) + [True]
    await primary.answer_probes(short * 3 + [False] * FAILURES_TO_SWITCH, then_broken=True)
    assert bus.switches == 1
    assert bus.active_backend == bus.backend_names[1]


async def test_one_late_probe_does_not_recreate_streams_nor_switch(
    faulty: tuple[FailoverBus, FaultyMemoryBus],
) -> None:
    # Measured with a real iggy-server under load (chaos `healthy`, 500,000 variants): one
    # late probe marked Iggy as returned, so every publish first re-created all streams, which
    # timed out on the loaded server, and those failures switched a healthy primary to Kafka.
    bus, primary = faulty
    stream = "late-probe"
    await bus.ensure_streams([StreamSpec(stream, 2)])
    primary.broken = True
    await wait_for_probe(bus, healthy=False)
    primary.broken = False
    primary.slow_ensure = True
    # A probe passes again before the publishes (as between a busy stage's publishes).
    await wait_for_probe(bus, healthy=True)
    for i in range(FAILURES_TO_SWITCH + 2):
        positions = await bus.publish(stream, [OutgoingMessage(b"v%d" % i, key=b"k")])
        assert [p.backend for p in positions] == [bus.backend_names[0]]
    assert bus.switches == 0
    primary.slow_ensure = False


async def test_a_primary_answering_late_is_left_only_after_answering_nothing_for_the_silent_period(
    tmp_path: Path,
) -> None:
    # Measured with a real debug iggy-server under a 500,000-variant chaos `healthy` job at
    # load 7-65: its pings ran out of time three times in a row again and again while it was
    # alive (41 switches in five services). A late answer is not a refusal: it counts only once
    # the backend has been silent for silent_to_switch_s (a refusing one is left at once, as the
    # other tests show with the default period).
    name = memory_name()
    silent_s = 4.0
    bus, primary = faulty_failover(tmp_path, name, silent_to_switch_s=silent_s)
    async with MemoryBus(name), bus:
        await bus.ensure_streams([StreamSpec("late", 1)])
        primary.hang = True
        await wait_for_probe(bus, healthy=False)
        # Many more late probes than FAILURES_TO_SWITCH (each at most probe timeout + interval).
        await asyncio.sleep(FAILURES_TO_SWITCH * 2 * (bus.probe_timeout_s + PROBE_INTERVAL_S))
        assert bus.switches == 0
        assert bus.active_backend == bus.backend_names[0]
        primary.hang = False
        await wait_for_probe(bus, healthy=True)
        # Silent for good (a hung server): left once silent for the period.
        primary.hang = True
        await wait_until_active(bus, bus.backend_names[1], timeout_s=silent_s + 10)
        primary.hang = False


async def test_status_reads_of_a_stalled_backend_return_the_last_known_lag_in_bounded_time(
    faulty: tuple[FailoverBus, FaultyMemoryBus],
) -> None:
    bus, primary = faulty
    stream = "status"
    await bus.ensure_streams([StreamSpec(stream, 2)])
    await bus.publish(stream, [OutgoingMessage(b"x%d" % i, key=b"k%d" % i) for i in range(6)])
    first = await bus.backend_lags("nobody", stream)
    assert [(lag.backend, lag.lag, lag.stale) for lag in first] == [
        (bus.backend_names[0], 6, False),
        (bus.backend_names[1], 0, False),
    ]
    primary.hang = True
    # A hanging backend never answers: the partial answer (stale, its last reading) comes from
    # the probe timeout; the outer 30 s only guards a hang.
    second = await asyncio.wait_for(bus.backend_lags("nobody", stream), 30)
    assert [(lag.lag, lag.stale) for lag in second] == [(6, True), (0, False)]
    assert second[0].read_at == first[0].read_at
    # The merged lag keeps counting what the stalled backend holds.
    assert sum(item.lag for item in await bus.lag("nobody", stream)) == 6
    primary.hang = False


async def test_both_down_is_unhealthy_and_publishing_resumes_when_one_returns(tmp_path: Path) -> None:
    name = memory_name()
    primary = FaultyMemoryBus(name)
    fallback = FaultyMemoryBus(memory_name())
    bus = FailoverBus(
        primary,
        fallback,
        probe_interval_s=PROBE_INTERVAL_S,
        failures_to_switch=FAILURES_TO_SWITCH,
        stable_period_s=STABLE_PERIOD_S,
        publish_timeout_s=0.3,
        both_down_wait_s=3.0,
    )
    async with MemoryBus(name), bus:
        await bus.ensure_streams([StreamSpec("s", 1)])
        primary.broken = fallback.broken = True
        await asyncio.sleep(PROBE_INTERVAL_S * (FAILURES_TO_SWITCH + 2))
        assert not await bus.healthy()
        # Lag is a partial answer, never an error.
        assert [lag.stale for lag in await bus.backend_lags("g", "s")] == [True, True]
        # A publish waits for either backend (a stage that raised would stop for good)...
        waiting = asyncio.create_task(bus.publish("s", [OutgoingMessage(b"resumed")]))
        await asyncio.sleep(1.0)
        assert not waiting.done()
        # Failed publishes on two dead backends do not move publishing back and forth.
        assert bus.switches == 0

        fallback.broken = False
        await asyncio.wait_for(waiting, 2.0)
        assert await fallback.end_offsets("s") == {0: 1}
        await wait_until_active(bus, bus.backend_names[1])
        # healthy() answers from the probes: the next one sees the fallback back.
        await asyncio.sleep(PROBE_INTERVAL_S * 2)
        assert await bus.healthy()

        # ...for a bounded time only.
        fallback.broken = True
        started = time.monotonic()
        with pytest.raises(BusUnavailableError):
            # both_down_wait_s (3 s) ends it; the outer 30 s only guards a hang.
            await asyncio.wait_for(bus.publish("s", [OutgoingMessage(b"nowhere")]), 30)
        assert time.monotonic() - started >= 2.5, "it gave up before waiting both_down_wait_s"


async def test_a_member_starting_while_neither_backend_admits_it_joins_when_one_does(tmp_path: Path) -> None:
    """A stage that starts during an outage of both (or while a loaded broker is slow to admit
    members) waits for either instead of ending its process: seen under load as services that
    exited at start with "no backend reachable"."""
    name = memory_name()
    primary, fallback = MemoryBus(name), MemoryBus(memory_name())
    bus = FailoverBus(
        primary, fallback, probe_interval_s=PROBE_INTERVAL_S, failures_to_switch=FAILURES_TO_SWITCH
    )
    async with MemoryBus(name), bus:
        await bus.ensure_streams([StreamSpec("s", 1)])
        await bus.publish("s", [OutgoingMessage(b"waiting", key=b"k")])
        await primary.stop()
        await fallback.stop()
        consumer = bus.consumer(["s"], "patient")
        joining = asyncio.create_task(consumer.start())
        await asyncio.sleep(0.5)
        assert not joining.done()
        await primary.start()
        await asyncio.wait_for(joining, 5.0)
        try:
            assert values(await drain(consumer, 1)) == ["waiting"]
        finally:
            await consumer.stop()
