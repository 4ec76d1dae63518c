"""The embedded log wakes a consumer when another process publishes to its stream.

Idle sleeps are stretched to 30 s here, so a record that arrives within seconds can only have
come through the publish signal, not a consumer's next fetch after its sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from vcf_agent.bus import OutgoingMessage, StreamSpec, _embedded, _publish_signals, open_bus

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the publish signals use Linux inotify")

_PUBLISH = """
import asyncio, sys
from vcf_agent.bus import OutgoingMessage, open_bus

async def main(url, stream):
    bus = open_bus(url)
    await bus.start()
    await bus.publish(stream, [OutgoingMessage(key=b"k", value=b"from another process")])
    await bus.stop()

asyncio.run(main(*sys.argv[1:3]))
"""


def _publish_from_another_process(url: str, stream: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", _PUBLISH, url, stream])


@pytest.fixture
def long_idle_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_embedded, "MIN_IDLE_SLEEP_S", 30.0)
    monkeypatch.setattr(_embedded, "MAX_IDLE_SLEEP_S", 30.0)
    monkeypatch.setattr(_embedded, "MAX_SIGNALLED_IDLE_SLEEP_S", 30.0)


def _counting_fetches(consumer: Any) -> list[int]:
    fetches: list[int] = []
    fetch = consumer._fetch_sync

    def counted(*args: Any) -> Any:
        fetches.append(1)
        return fetch(*args)

    consumer._fetch_sync = counted
    return fetches


@contextlib.asynccontextmanager
async def _settled_consumer(url: str, watched_partitions: int) -> AsyncIterator[tuple[Any, Any, list[int]]]:
    """A bus with streams `watched` and `other`, a consumer of `watched` settled in its group (the
    first poll may rebalance), and the count of that consumer's fetches from then on."""
    bus = open_bus(url)
    await bus.start()
    await bus.ensure_streams([StreamSpec("watched", watched_partitions), StreamSpec("other", 1)])
    consumer = bus.consumer(["watched"], "group")
    await consumer.start()
    try:
        assert await consumer.poll(timeout_s=0.5) == []
        yield bus, consumer, _counting_fetches(consumer)
    finally:
        await consumer.stop()
        await bus.stop()


@pytest.mark.usefixtures("long_idle_sleeps")
async def test_a_publish_in_another_process_wakes_a_sleeping_consumer_of_its_stream(tmp_path: Path) -> None:
    url = f"embedded://{tmp_path / 'bus'}"
    async with _settled_consumer(url, watched_partitions=2) as (_, consumer, fetches):
        # A publish to another stream does not wake it: the poll's whole timeout asleep, and not
        # one read of the log (its last fetch found nothing and nothing came for it since).
        child = _publish_from_another_process(url, "other")
        assert await consumer.poll(timeout_s=4.0) == []
        assert await asyncio.to_thread(child.wait, 60) == 0
        assert fetches == []
        # A publish to its stream does, long before its 30 s sleep would end.
        polled = asyncio.create_task(consumer.poll(timeout_s=25.0))
        await asyncio.sleep(0.2)
        began = time.monotonic()
        child = _publish_from_another_process(url, "watched")
        records = await polled
        woken_after = time.monotonic() - began
        assert await asyncio.to_thread(child.wait, 60) == 0
        assert [record.value for record in records] == [b"from another process"]
        assert woken_after < 15.0


async def test_without_inotify_a_consumer_still_finds_the_records_by_polling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_publish_signals, "_LIBC", None)
    url = f"embedded://{tmp_path / 'bus'}"
    consuming, publishing = open_bus(url), open_bus(url)
    await consuming.start()
    await publishing.start()
    await consuming.ensure_streams([StreamSpec("watched", 1)])
    consumer = consuming.consumer(["watched"], "group")
    await consumer.start()
    try:
        assert await consumer.poll(timeout_s=0.3) == []
        # Another bus object stands for another process: its publish wakes no consumer here.
        await publishing.publish("watched", [OutgoingMessage(key=b"k", value=b"v")])
        records = await consumer.poll(timeout_s=5.0)
        assert [record.value for record in records] == [b"v"]
    finally:
        await consumer.stop()
        await publishing.stop()
        await consuming.stop()


@pytest.mark.usefixtures("long_idle_sleeps")
async def test_a_local_publish_wakes_only_the_consumers_of_its_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without inotify, so only the direct wake of a publish on the same bus object is at work.
    monkeypatch.setattr(_publish_signals, "_LIBC", None)
    url = f"embedded://{tmp_path / 'bus'}"
    async with _settled_consumer(url, watched_partitions=1) as (bus, consumer, fetches):
        polled = asyncio.create_task(consumer.poll(timeout_s=2.0))
        await asyncio.sleep(0.2)
        await bus.publish("other", [OutgoingMessage(key=b"k", value=b"elsewhere")])
        assert await polled == []
        assert fetches == []
        polled = asyncio.create_task(consumer.poll(timeout_s=25.0))
        await asyncio.sleep(0.2)
        began = time.monotonic()
        await bus.publish("watched", [OutgoingMessage(key=b"k", value=b"here")])
        assert [record.value for record in await polled] == [b"here"]
        assert time.monotonic() - began < 15.0


async def _fetches_while_polled_idle(url: str, seconds: float) -> int:
    """How often an idle consumer, settled and polled every 0.1 s (as the flags are), reads the log."""
    async with _settled_consumer(url, watched_partitions=1) as (_, consumer, fetches):
        loop = asyncio.get_running_loop()
        # Long enough for the back-off to reach its longest sleep (1 + 2 + ... + 512 ms).
        settle_until = loop.time() + 1.5
        while loop.time() < settle_until:
            assert await consumer.poll(timeout_s=0.1) == []
        fetches.clear()
        until = loop.time() + seconds
        while loop.time() < until:
            assert await consumer.poll(timeout_s=0.1) == []
        return len(fetches)


async def test_with_publish_signals_an_idle_consumer_reads_the_log_about_once_a_second(
    tmp_path: Path,
) -> None:
    # 3 s at the signalled back-off of 1 s: three or four fetches, where every poll call (30 of
    # them) and the 50 ms back-off would read the log 60 times.
    assert await _fetches_while_polled_idle(f"embedded://{tmp_path / 'bus'}", 3.0) <= 4


async def test_without_publish_signals_an_idle_consumer_still_reads_the_log_every_50_ms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing would wake it for another process's publish: it must keep looking (3 s / 50 ms = 60;
    # a loaded machine stretches the sleeps, hence the margin).
    monkeypatch.setattr(_publish_signals, "_LIBC", None)
    assert await _fetches_while_polled_idle(f"embedded://{tmp_path / 'bus'}", 3.0) >= 30


@pytest.mark.usefixtures("long_idle_sleeps")
async def test_a_seek_is_read_at_the_next_poll_however_long_the_idle_sleep(tmp_path: Path) -> None:
    url = f"embedded://{tmp_path / 'bus'}"
    async with _settled_consumer(url, watched_partitions=1) as (bus, consumer, _):
        await bus.publish("watched", [OutgoingMessage(key=b"k", value=b"once")])
        assert [record.value for record in await consumer.poll(timeout_s=5.0)] == [b"once"]
        await consumer.commit()
        # Idle now, with 30 s before it would read the log again unsignalled.
        assert await consumer.poll(timeout_s=0.3) == []
        await consumer.seek("watched", 0, 0)
        assert [record.value for record in await consumer.poll(timeout_s=2.0)] == [b"once"]
