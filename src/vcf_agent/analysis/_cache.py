"""The answer cache: a prompt answered before is not sent to a paid model again.

Keys are (prompt version, provider, model, tenant, digest of the exact prompt
sent). The prompt carries one submission's evidence (its samples' zygosity,
its file's annotation), so keying by the variant alone would serve one
tenant an answer derived from another tenant's data, and a variant seen
again with other genotypes or annotation an answer to a different question.
Keying by the tenant keeps tenants apart even when their prompts are equal
(nothing is shared across tenants); keying by the prompt's digest means an
answer is reused only for the very question it answered; and a new prompt
version or model never reuses an old answer. Entries are msgpack, bounded by
total bytes with least-recently-used eviction. Every put, invalidation and clear is also
published on `cache-events`; each replica applies the others' events (and,
starting from the earliest retained event, warms up on start), so all
replicas converge on the same contents.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import msgpack

from vcf_agent.bus import Bus, OutgoingMessage, Record
from vcf_agent.processing import CommitOffsets, StreamProcessor
from vcf_agent.schema import PayloadError, decode, encode
from vcf_agent.v1 import events_pb2

from ._metrics import cache_bytes, cache_hit_ratio, cache_lookups
from ._prompt import Prompt

log = logging.getLogger(__name__)

_SEP = "|"


def cache_key(tenant_id: str, prompt: Prompt, provider: str, model: str) -> str:
    """The entry for `prompt` sent by `tenant_id` to `provider`'s `model`.

    The provider stays the second field, which `clear(provider)` and the
    `cache-events` stream's provider field read back.
    """
    return _SEP.join((prompt.version, provider, model, tenant_id, prompt_digest(prompt)))


def prompt_digest(prompt: Prompt) -> str:
    """SHA-256 of the exact prompt sent (version, system and user message), each part
    length-prefixed so no other split of the same characters gives the same digest."""
    digest = hashlib.sha256()
    for part in (prompt.version, prompt.system, prompt.user):
        data = part.encode()
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def _provider_of(key: str) -> str:
    return key.split(_SEP, 2)[1] if key.count(_SEP) >= 2 else ""


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    classification: str
    confidence: float
    criteria: tuple[str, ...]
    rationale: str
    model: str

    def pack(self) -> bytes:
        packed: bytes = msgpack.packb(
            [self.classification, self.confidence, list(self.criteria), self.rationale, self.model]
        )
        return packed

    @classmethod
    def unpack(cls, data: bytes) -> CachedAnswer:
        classification, confidence, criteria, rationale, model = msgpack.unpackb(data)
        return cls(
            str(classification), float(confidence), tuple(map(str, criteria)), str(rationale), str(model)
        )


class AnswerCache:
    """LRU over packed entries, bounded by the bytes of keys plus values."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def hit_ratio(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    def get(self, key: str) -> CachedAnswer | None:
        hit = self.lookup([key])
        return hit[1] if hit is not None else None

    def lookup(self, keys: Sequence[str]) -> tuple[int, CachedAnswer] | None:
        """The first of `keys` present (its index and entry); one lookup for the hit ratio."""
        found: tuple[int, CachedAnswer] | None = None
        for index, key in enumerate(keys):
            packed = self._entries.get(key)
            if packed is None:
                continue
            try:
                found = index, CachedAnswer.unpack(packed)
            except (ValueError, TypeError, msgpack.UnpackException):
                # A corrupt entry (from another build, say) is a miss, not an error.
                self._remove(key)
                continue
            self._entries.move_to_end(key)
            break
        if found is None:
            self.misses += 1
            cache_lookups.labels("miss").inc()
        else:
            self.hits += 1
            cache_lookups.labels("hit").inc()
        cache_hit_ratio.set(self.hit_ratio)
        return found

    def put(self, key: str, packed: bytes) -> None:
        size = len(key) + len(packed)
        if size > self.max_bytes:
            return
        self._remove(key)
        self._entries[key] = packed
        self._bytes += size
        while self._bytes > self.max_bytes:
            oldest, value = self._entries.popitem(last=False)
            self._bytes -= len(oldest) + len(value)
        cache_bytes.set(self._bytes)

    def invalidate(self, key: str) -> None:
        self._remove(key)
        cache_bytes.set(self._bytes)

    def clear(self, provider: str = "") -> None:
        """Drop every entry, or only those of one provider."""
        for key in [k for k in self._entries if not provider or _provider_of(k) == provider]:
            self._remove(key)
        cache_bytes.set(self._bytes)

    def _remove(self, key: str) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= len(key) + len(old)


class CacheSync:
    """Keeps one replica's AnswerCache in step with the others through `cache-events`."""

    def __init__(self, bus: Bus, stream: str, cache: AnswerCache, *, origin: str = "") -> None:
        self.cache = cache
        self.origin = origin or uuid.uuid4().hex
        self._bus = bus
        self._stream = stream
        # One group per replica: every replica must see every event.
        self._processor = StreamProcessor(
            bus, [stream], f"router-cache-{self.origin}", self._apply, service="router", start="earliest"
        )

    async def start(self) -> None:
        await self._processor.start()

    async def stop(self) -> None:
        await self._processor.stop()

    async def put(self, entries: Sequence[tuple[str, bytes]]) -> None:
        """Store locally and tell the other replicas."""
        for key, packed in entries:
            self.cache.put(key, packed)
        await self._send(
            [
                events_pb2.CacheEvent(
                    kind=events_pb2.CacheEvent.KIND_PUT,
                    cache_key=key,
                    entry=packed,
                    provider=_provider_of(key),
                    origin=self.origin,
                )
                for key, packed in entries
            ]
        )

    async def invalidate(self, key: str) -> None:
        self.cache.invalidate(key)
        await self._send(
            [
                events_pb2.CacheEvent(
                    kind=events_pb2.CacheEvent.KIND_INVALIDATE,
                    cache_key=key,
                    provider=_provider_of(key),
                    origin=self.origin,
                )
            ]
        )

    async def clear(self, provider: str = "") -> None:
        self.cache.clear(provider)
        await self._send(
            [
                events_pb2.CacheEvent(
                    kind=events_pb2.CacheEvent.KIND_CLEAR, provider=provider, origin=self.origin
                )
            ]
        )

    async def _send(self, events: Sequence[events_pb2.CacheEvent]) -> None:
        if not events:
            return
        messages = []
        for event in events:
            payload, headers = encode(event)
            messages.append(OutgoingMessage(payload, (event.cache_key or event.provider).encode(), headers))
        await self._bus.publish(self._stream, messages)

    async def _apply(self, records: list[Record]) -> CommitOffsets | None:
        for record in records:
            try:
                event = decode(record.value, record.headers, events_pb2.CacheEvent)
            except PayloadError as exc:
                log.warning(
                    "ignoring unreadable cache event at %s[%d]@%d: %s",
                    record.stream,
                    record.partition,
                    record.offset,
                    exc,
                )
                continue
            if event.origin == self.origin:
                continue
            if event.kind == events_pb2.CacheEvent.KIND_PUT:
                self.cache.put(event.cache_key, event.entry)
            elif event.kind == events_pb2.CacheEvent.KIND_INVALIDATE:
                self.cache.invalidate(event.cache_key)
            elif event.kind == events_pb2.CacheEvent.KIND_CLEAR:
                self.cache.clear(event.provider)
        return None
