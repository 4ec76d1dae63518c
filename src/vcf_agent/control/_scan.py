"""Reading a retained stream from its start to its current end, without joining any real group.

Replay and dead-letter listing need every record, not a share of them and not
a committed position, so they read with a throw-away group that never commits.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

from vcf_agent.bus import Bus, Record


async def scan_stream(bus: Bus, stream: str, *, timeout_s: float = 60.0) -> AsyncIterator[list[Record]]:
    """Batches of records up to the end offsets seen at the start; raises TimeoutError past timeout_s."""
    ends = await bus.end_offsets(stream)
    starts = await bus.earliest_offsets(stream)
    # Per partition, the last offset still to be read.
    remaining = {p: end - 1 for p, end in ends.items() if end > starts.get(p, 0)}
    if not remaining:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    consumer = bus.consumer([stream], f"control-scan-{uuid.uuid4().hex}", start="earliest")
    await consumer.start()
    try:
        while remaining:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"reading {stream} did not reach its end within {timeout_s}s")
            records = await consumer.poll(500, min(left, 0.5))
            wanted = [r for r in records if r.offset <= remaining.get(r.partition, -1)]
            for record in wanted:
                if record.offset >= remaining[record.partition]:
                    del remaining[record.partition]
            if wanted:
                yield wanted
    finally:
        await consumer.stop()
