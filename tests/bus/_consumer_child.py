"""A group member in its own OS process, for the crash-redelivery test.

Usage: _consumer_child.py URL STREAM GROUP COUNT TIMEOUT_S

Polls until it holds COUNT records (never committing), prints one
`partition offset` line per record and then READY, and waits to be killed.
"""

from __future__ import annotations

import asyncio
import sys
import time

from vcf_agent.bus import Record, open_bus


async def main(url: str, stream: str, group: str, count: int, timeout_s: float) -> int:
    bus = open_bus(url)
    await bus.start()
    consumer = bus.consumer([stream], group, start="earliest")
    await consumer.start()
    got: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        got.extend(await consumer.poll(max_records=count, timeout_s=0.5))
    for record in got:
        print(record.partition, record.offset)
    print("READY" if len(got) >= count else f"TIMEOUT {len(got)}", flush=True)
    # Hold the partitions without committing until the parent sends SIGKILL.
    await asyncio.sleep(3600)
    return 0


if __name__ == "__main__":
    url, stream, group, count, timeout_s = sys.argv[1:6]
    sys.exit(asyncio.run(main(url, stream, group, int(count), float(timeout_s))))
