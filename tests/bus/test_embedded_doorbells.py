"""The embedded log's doorbells: a publish in one process wakes an idle consumer in another."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest

from vcf_agent.bus import OutgoingMessage, StreamSpec, open_bus
from vcf_agent.bus._embedded import DOORBELLS_DIR, EmbeddedConsumer

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="doorbells use Linux's abstract sockets")

STREAM = "orders"
# What a child process runs: open the same log and publish one record.
PUBLISH = """
import asyncio, sys
from vcf_agent.bus import OutgoingMessage, open_bus
async def main():
    async with open_bus(sys.argv[1]) as bus:
        await bus.publish(sys.argv[2], [OutgoingMessage(b"from another process")])
asyncio.run(main())
"""


async def _publish_from_another_process(url: str) -> None:
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", PUBLISH, url, STREAM)
    assert await asyncio.wait_for(child.wait(), 60) == 0


async def test_a_publish_in_another_process_wakes_an_idle_consumer(tmp_path: Path) -> None:
    url = f"embedded://{tmp_path / 'bus'}"
    async with open_bus(url) as bus:
        await bus.ensure_streams([StreamSpec(STREAM, 1)])
        consumer = bus.consumer([STREAM], "readers")
        assert isinstance(consumer, EmbeddedConsumer)
        await consumer.start()
        try:
            assert await consumer.poll(max_records=1, timeout_s=0) == []
            await _publish_from_another_process(url)
            # Woken by the publisher, not by its own next poll (none is running): a hang guard only.
            await asyncio.wait_for(consumer._wakeup.wait(), 30)
            assert [r.value for r in await consumer.poll(max_records=1, timeout_s=5)] == [
                b"from another process"
            ]
        finally:
            await consumer.stop()


async def test_a_consumer_registers_its_doorbell_per_stream_while_it_runs(tmp_path: Path) -> None:
    async with open_bus(f"embedded://{tmp_path / 'bus'}") as bus:
        await bus.ensure_streams([StreamSpec(STREAM, 1), StreamSpec("refunds", 1)])
        consumer = bus.consumer([STREAM, "refunds"], "readers")
        await consumer.start()
        doorbells = tmp_path / "bus" / DOORBELLS_DIR
        registered = {path.parent.name for path in doorbells.glob("*/*")}
        await consumer.stop()
        assert registered == {STREAM, "refunds"}
        assert list(doorbells.glob("*/*")) == []


async def test_the_doorbell_of_a_process_that_was_killed_is_forgotten(tmp_path: Path) -> None:
    async with open_bus(f"embedded://{tmp_path / 'bus'}") as bus:
        await bus.ensure_streams([StreamSpec(STREAM, 1)])
        # A process that ended without unregistering: its pid is free now.
        gone = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
        await gone.wait()
        leftover = tmp_path / "bus" / DOORBELLS_DIR / STREAM / f"{socket.gethostname()}-{gone.pid}-0123abcd"
        leftover.parent.mkdir(parents=True)
        leftover.touch()
        await bus.publish(STREAM, [OutgoingMessage(b"x")])
        assert not leftover.exists()
