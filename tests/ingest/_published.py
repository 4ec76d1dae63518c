"""Reading back, decoded, what ingest published on a stream."""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import Message

from vcf_agent.bus import Bus
from vcf_agent.schema import decode

M = TypeVar("M", bound=Message)


async def published(bus: Bus, stream: str, message_class: type[M]) -> list[M]:
    """Everything on `stream` as `message_class`, read by the group "test-reader": polls until
    something came and a poll then comes back empty, or 20 polls of 0.2 s brought nothing."""
    found: list[M] = []
    async with bus.consumer([stream], "test-reader") as consumer:
        for _ in range(20):
            records = await consumer.poll(timeout_s=0.2)
            found += [decode(r.value, r.headers, message_class) for r in records]
            if not records and found:
                break
    return found
