"""Failover bus: `failover://?primary=URL&fallback=URL` (the design's Iggy primary, Kafka fallback).

Both URLs are percent-encoded bus URLs. Optional query parameters:
`probe_interval_ms` (500), `probe_timeout_ms` (min(3 x interval, 2000)),
`failures_to_switch` (3), `stable_period_ms` (10000), `publish_timeout_ms` (2000),
`silent_to_switch_ms` (10000: how long a backend that answers late, rather than refusing,
may stay silent before its failures count) and `both_down_wait_ms` (600000: how long a
publish waits for either backend when both are down).

Switching. A probe task calls `healthy()` on both backends every interval, each
bounded by the probe timeout. Publishing leaves the primary only after
`failures_to_switch` failed probes in a row (a failed publish counts as one),
so a slow answer on a loaded machine never switches by itself: a dead primary
is left within about failures x interval (1.5 s by default). A probe or publish
that fails by running out of time, rather than by being refused, counts only once
the backend has answered nothing (no probe passed, no publish acknowledged) for
`silent_to_switch_ms`: a killed server refuses at once, but a loaded one answers
late, and late answers are not a dead backend. Until then each
publish that fails on the primary is re-published at once on the fallback, so
publishing never waits for the decision and an acknowledged publish is never
lost. Publishing returns to the primary once it has answered every probe for
`stable_period_ms` (at once if the fallback is declared down too). Every
stream ever ensured is re-created on a backend that comes back (it may have
restarted empty) before it is published to again. Switches are counted in
`bus_backend_switches_total{source,target}`; `bus_active_backend{backend}` is 1
for the active one.

The defaults: with the probe interval at 200 ms and one failure switching, a
200,000-variant job on this project's 2-core machine switched to the fallback
and back twice within 4 s with a healthy primary (issue 18): probes of a busy
process's event loop are late, not failed backends. Three failures in a row at
500 ms, each allowed 1.5 s, need a stall of over 2.5 s before a switch; the
`vcf-agent chaos healthy` run through the five services on that machine
(shared, real iggy-server) made 0 switches at 200,000 variants and load 22-42,
once a late probe no longer re-created every stream (14 switches at 500,000
before), and a killed Iggy was left by every service within 1.2-4.5 s
(README, Failover). At 500,000 variants and load 7-65 the same code switched 41
times: pings to the live server ran out of time three in a row again and again.
Counting a late answer only after `silent_to_switch_ms` of silence left 5
switches at load 19-80, each after the server had answered nothing for over 10 s
(its logins were then swamped by consumers rejoining: see the README). With one joining
member per group and backend (`keep_for_next_join`), two such runs made 0 switches at load 6-45,
but so did main without it at load 11-22: no join failed at those loads (README, Failover).

Availability first. The FailoverConsumer reads both backends at once, so
whatever reaches a stage through the fallback is processed at once while the
primary is down. Records published on the primary and not yet read when it
died are stranded there: they are read when it returns (its log is durable),
and until then the bus reports them as the primary's last known lag
(`backend_lags`, GetStatus). A primary that returns without them (its log was
lost) is read from its new start, and the loss is logged with its size; ingest
then publishes again, from the file, the part of each affected job that the lost
backend had acknowledged (each PublishedPosition names its `backend`, and
`outages()` counts how often each was declared down).

Ordering. Every message carries an id header, and each keyed message published
on backend X carries `x-bus-after: N`, where N is the next offset after the last
record this publisher had acknowledged on the *other* backend for the same
stream partition (keys map to the same partition on both, see `_base`). While
the other backend can be read, the consumer releases a record from X only once
the group is known to be at or past N there (records it handed out, the
group's committed offset, retention start, or start position), so per publisher
and per key, delivery follows publish order across a planned or finished
switch. While the other backend cannot be read, nothing is held: availability
beats order there. The pipeline's stored effects do not depend on order
(writes are upserts keyed by variant, and completion is counted: stored
>= the FINISHED marker's count); the one place order matters is a job's markers
(a resubmission's STARTED resets the writer's count), so the writer ignores a
marker older than one it applied: a STARTED stranded on a dead primary and
delivered after its run's FINISHED is not a new run. Records stranded on a
primary that returns empty are published again from ingest's file, after a
grace period (see vcf_agent.services.ingest's job watchdog and publish ledger).

Delivery is at-least-once. A batch whose primary publish timed out may have
landed there as well; its fallback copy is marked `x-bus-retry`. If the primary
copy is read first, the retry copy follows it as a plain duplicate; if it is
read later, the consumer drops it by id. A consumer restarted before the
primary returns has forgotten those ids and delivers the primary copy once
more (a duplicate that the stages' upserts absorb, never a loss). Commits to a
backend that is down are kept and retried with the next commit().

Offsets belong to the backend that delivered the record. Consumed records are
`FailoverRecord`s: `backend` names their source ("iggy"/"kafka";
"memory-primary" and "memory-fallback" when both are the same kind) and
`source_offset` is the offset in that backend's log. `offset` is a merged
offset per partition, max(next merged, own offset): a partition read from one
backend keeps its own offsets, and one read from both still grows in hand-out
order, so a stage's "highest offset + 1" or watermark is meaningful. commit()
maps merged offsets back: committing M commits, on each backend, the offset
after its last record handed out below M. `seek()` takes a real offset on the
backend that delivered the partition last; `commit_backend`/`seek_backend`
name the backend. The bus's committed/end/earliest/timestamp offsets,
`set_committed_offsets` and a consumer's `assignment()` address the active
backend; `lag()` adds up both backends (a down one by its last known lag), so
it counts every unread record, and never raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from vcf_agent.bus._base import (
    Bus,
    BusError,
    BusUnavailableError,
    Consumer,
    OutgoingMessage,
    PartitionLag,
    PublishedPosition,
    Record,
    StartPosition,
    StreamSpec,
    TopicPartition,
    keep_for_next_join,
    partition_for_key,
)
from vcf_agent.bus._url import open_bus
from vcf_agent.telemetry import bus_active_backend, bus_backend_switches, platform_health_status

HEADER_AFTER = "x-bus-after"
HEADER_ID = "x-bus-id"
HEADER_RETRY = "x-bus-retry"
# Bookkeeping headers are set by the publisher only and hidden from consumers.
_INTERNAL_HEADERS = frozenset({HEADER_AFTER, HEADER_ID, HEADER_RETRY})

PRIMARY, FALLBACK = 0, 1
# Switching defaults; see the module docstring for how they were chosen.
DEFAULT_PROBE_INTERVAL_S = 0.5
DEFAULT_FAILURES_TO_SWITCH = 3
DEFAULT_STABLE_PERIOD_S = 10.0
DEFAULT_PUBLISH_TIMEOUT_S = 2.0
# Measured with a debug iggy-server under a 500,000-variant job on the 2-core machine at load
# 7-65 (chaos `healthy`): every service's pings ran out of time three times in a row, again
# and again (41 switches), while the server was alive and acknowledging; see the docstring.
# Chaos `primary-slow` (iggy-server SIGSTOPped 6 s every 15 s, 500,000 variants): 0 switches
# with this, all five services switching with it at 0 (README, Failover).
DEFAULT_SILENT_TO_SWITCH_S = 10.0
DEFAULT_BOTH_DOWN_WAIT_S = 600.0
# The longest a starting member waits for one backend to admit it, per attempt.
_JOIN_TIMEOUT_MAX_S = 60.0
# Bounds an inner poll so a switch, commit or seek never waits long on the idle backend.
_FETCH_SLICE_S = 0.25
# Ids of re-published batches remembered per partition, to drop their late twins.
_RETRIED_IDS_PER_PARTITION = 10_000

_log = logging.getLogger(__name__)


class _BothDownError(BusUnavailableError):
    """Neither backend took a publish because neither could be reached."""


@dataclass(slots=True, eq=False)
class _BusSide:
    """One backend as the publisher sees it."""

    name: str
    role: str
    bus: Bus
    started: bool = False
    # The latest probe passed (what status reports as this backend's health).
    up: bool = False
    healthy_since: float | None = None
    # Probes and publishes failed in a row; `failures_to_switch` of them declare it down.
    failed_streak: int = 0
    # Event-loop time it last passed a probe or acknowledged a publish.
    answered_at: float = 0.0
    # Streams to create once the backend is reachable again.
    missing_specs: dict[str, StreamSpec] = field(default_factory=dict)
    # Next offset after this publisher's last acknowledged record, per partition.
    acked: dict[TopicPartition, int] = field(default_factory=dict)
    # Times it was declared down: what it took before the latest may be stranded or lost.
    outages: int = 0
    # The groups that read each stream here, as last listed while it answered.
    groups: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BackendState:
    """One backend of a failover bus, as GetStatus reports it."""

    name: str
    role: str
    active: bool
    healthy: bool
    failed_probes: int


@dataclass(frozen=True, slots=True)
class BackendLag:
    """One backend's lag of a group on a stream: read now, or the last known when it did not answer."""

    backend: str
    partitions: tuple[PartitionLag, ...]
    # Wall-clock time of the read; 0 when it was never read.
    read_at: float
    stale: bool

    @property
    def lag(self) -> int:
        return sum(item.lag for item in self.partitions)


class FailoverBus(Bus):
    """Publishes to the primary while it is healthy, else to the fallback; reads both."""

    backend = "failover"

    def __init__(
        self,
        primary: Bus,
        fallback: Bus,
        *,
        probe_interval_s: float = DEFAULT_PROBE_INTERVAL_S,
        probe_timeout_s: float | None = None,
        failures_to_switch: int = DEFAULT_FAILURES_TO_SWITCH,
        stable_period_s: float = DEFAULT_STABLE_PERIOD_S,
        publish_timeout_s: float = DEFAULT_PUBLISH_TIMEOUT_S,
        both_down_wait_s: float = DEFAULT_BOTH_DOWN_WAIT_S,
        silent_to_switch_s: float = DEFAULT_SILENT_TO_SWITCH_S,
    ) -> None:
        names = [primary.backend, fallback.backend]
        if names[0] == names[1]:
            names = [f"{names[0]}-primary", f"{names[1]}-fallback"]
        self._sides = (_BusSide(names[0], "primary", primary), _BusSide(names[1], "fallback", fallback))
        self.probe_interval_s = probe_interval_s
        self.probe_timeout_s = probe_timeout_s or max(0.05, min(3 * probe_interval_s, 2.0))
        self.failures_to_switch = max(1, failures_to_switch)
        self.stable_period_s = max(0.0, stable_period_s)
        self._publish_timeout_s = publish_timeout_s
        self.both_down_wait_s = both_down_wait_s
        self.silent_to_switch_s = max(0.0, silent_to_switch_s)
        self._active = PRIMARY
        self._switches = 0
        self._last_switch_at: float | None = None
        self._partition_counts: dict[str, int] = {}
        self._specs: dict[str, StreamSpec] = {}
        self._publisher_id = secrets.token_hex(6)
        self._sequence = itertools.count()
        self._probe_task: asyncio.Task[None] | None = None
        # Last lag read per (backend, group, stream): what a backend that stopped answering left unread.
        self._known_lag: dict[tuple[int, str, str], BackendLag] = {}

    @property
    def primary(self) -> Bus:
        return self._sides[PRIMARY].bus

    @property
    def fallback(self) -> Bus:
        return self._sides[FALLBACK].bus

    @property
    def backend_names(self) -> tuple[str, str]:
        """(primary, fallback) names, as in metrics labels and `FailoverRecord.backend`."""
        return self._sides[PRIMARY].name, self._sides[FALLBACK].name

    @property
    def active_backend(self) -> str:
        """Name of the backend new messages are published to."""
        return self._sides[self._active].name

    @property
    def active_index(self) -> int:
        return self._active

    @property
    def switches(self) -> int:
        """Switches of the active backend since start (the first choice at start is not one)."""
        return self._switches

    @property
    def last_switch_at(self) -> float | None:
        """Wall-clock time of the last switch, None before the first."""
        return self._last_switch_at

    def backend_states(self) -> list[BackendState]:
        return [
            BackendState(side.name, side.role, index == self._active, side.up, side.failed_streak)
            for index, side in enumerate(self._sides)
        ]

    def answering(self, index: int) -> bool:
        """Passed its latest probe."""
        return self._sides[index].up

    def declared_down(self, index: int) -> bool:
        """Failed `failures_to_switch` probes or publishes in a row."""
        return self._sides[index].failed_streak >= self.failures_to_switch

    def outages(self, backend: str) -> int:
        """Times the named backend was declared down since start.

        A record it acknowledged (`PublishedPosition.backend`) while this was lower
        was on it when it went away: stranded until it returns, lost if it returns empty.
        """
        for side in self._sides:
            if side.name == backend:
                return side.outages
        raise BusError(f"failover bus: no backend named {backend!r}, only {self.backend_names}")

    def _failed_once_more(self, side: _BusSide, *, late: bool = False) -> None:
        """One more failure in a row; a late one (out of time, not refused) only once silent long enough."""
        if late and asyncio.get_running_loop().time() - side.answered_at < self.silent_to_switch_s:
            return
        side.failed_streak += 1
        if side.failed_streak == self.failures_to_switch:
            side.outages += 1

    async def start(self) -> None:
        for side in self._sides:
            side.answered_at = asyncio.get_running_loop().time()
        results = await asyncio.gather(
            *(asyncio.wait_for(side.bus.start(), self._publish_timeout_s * 5) for side in self._sides),
            return_exceptions=True,
        )
        for side, result in zip(self._sides, results, strict=True):
            side.started = not isinstance(result, BaseException)
            if not side.started:
                _log.warning(
                    "failover bus: %s did not start, retrying with the probes: %r", side.name, result
                )
        await self._probe()
        if not any(side.up for side in self._sides):
            raise BusUnavailableError(f"failover bus: neither {' nor '.join(self.backend_names)} is up")
        self._set_active(PRIMARY if self._sides[PRIMARY].up else FALLBACK)
        self._probe_task = asyncio.create_task(self._probe_forever(), name="failover-bus-probe")

    async def stop(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
            self._probe_task = None
        for side in self._sides:
            try:
                await asyncio.wait_for(side.bus.stop(), self._publish_timeout_s * 5)
            except Exception as exc:  # stopping must release the other backend regardless
                _log.warning("failover bus: stopping %s failed: %r", side.name, exc)

    async def _probe_one(self, side: _BusSide) -> bool | None:
        """True: healthy; False: refused or unhealthy; None: no answer within the probe timeout."""
        try:
            if not side.started:
                await asyncio.wait_for(side.bus.start(), self.probe_timeout_s)
                side.started = True
            return await asyncio.wait_for(side.bus.healthy(), self.probe_timeout_s)
        except TimeoutError:
            return None
        except Exception:  # any failure of a probe means "not healthy", never a crash
            return False

    async def _probe(self) -> None:
        results = await asyncio.gather(*(self._probe_one(side) for side in self._sides))
        now = asyncio.get_running_loop().time()
        for side, answer in zip(self._sides, results, strict=True):
            up = answer is True
            if up and now - side.answered_at > 2 * (self.probe_interval_s + self.probe_timeout_s):
                _log.info(
                    "failover bus: %s answered after %.1fs of silence", side.name, now - side.answered_at
                )
            if up and not side.up:
                side.healthy_since = now
                if self.declared_down(self._sides.index(side)):
                    # A backend that comes back from an outage may have lost its streams (an
                    # empty restart). Not after a late probe or two: re-creating every stream on
                    # a loaded server timed out, and those failed publishes switched a healthy
                    # primary (measured with iggy-server under a 500,000-variant job).
                    side.missing_specs.update(self._specs)
            side.up = up
            if up:
                side.failed_streak = 0
                side.answered_at = now
            else:
                self._failed_once_more(side, late=answer is None)
                side.healthy_since = None
            platform_health_status.labels(backend=side.name).set(1 if up else 0)
            if up and side.missing_specs:
                await self._create_missing(side)

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self.probe_interval_s)
            try:
                await self._probe()
                self._decide()
            except Exception:  # the prober must outlive any single bad round
                _log.exception("failover bus: probe round failed")

    def _decide(self) -> None:
        """Leave a backend declared down; return to the primary once it was healthy a stable period."""
        primary, fallback = self._sides
        if self._active == PRIMARY:
            if self.declared_down(PRIMARY) and fallback.up:
                self._switch(FALLBACK, f"primary failed {primary.failed_streak} probes in a row")
            return
        if not primary.up or primary.missing_specs or primary.healthy_since is None:
            return
        stable_s = asyncio.get_running_loop().time() - primary.healthy_since
        if stable_s >= self.stable_period_s:
            self._switch(PRIMARY, f"primary healthy for {stable_s:.1f}s")
        elif self.declared_down(FALLBACK):
            self._switch(PRIMARY, "the fallback is down too")

    def _set_active(self, index: int) -> None:
        self._active = index
        for i, side in enumerate(self._sides):
            bus_active_backend.labels(backend=side.name).set(1 if i == index else 0)

    def _switch(self, index: int, reason: str) -> None:
        if index == self._active:
            return
        previous = self._sides[self._active].name
        _log.warning(
            "failover bus: publishing to %s instead of %s (%s)", self._sides[index].name, previous, reason
        )
        self._switches += 1
        self._last_switch_at = time.time()
        bus_backend_switches.labels(source=previous, target=self._sides[index].name).inc()
        self._set_active(index)

    def _count_failure(self, index: int, *, other_took_it: bool, late: bool) -> None:
        """A failed publish counts as a failed probe: a dead backend is left without waiting for probes.

        Only for a backend that just took the batch: with both down, switching
        on every failed publish would flap between two dead backends. A publish
        that ran out of time (`late`) counts as a late probe does.
        """
        side = self._sides[index]
        self._failed_once_more(side, late=late)
        if other_took_it and index == self._active and self.declared_down(index):
            side.up = False
            side.healthy_since = None
            platform_health_status.labels(backend=side.name).set(0)
            self._switch(1 - index, f"{side.failed_streak} failures in a row, the last a publish")

    async def _create_missing(self, side: _BusSide) -> bool:
        if not side.missing_specs:
            return True
        try:
            await asyncio.wait_for(
                side.bus.ensure_streams(list(side.missing_specs.values())), self._publish_timeout_s
            )
        except Exception as exc:  # still down; the next probe retries
            _log.info("failover bus: cannot create streams on %s yet: %r", side.name, exc)
            return False
        side.missing_specs.clear()
        return True

    async def ensure_streams(self, specs: Sequence[StreamSpec]) -> None:
        self._specs.update((spec.name, spec) for spec in specs)
        results = await asyncio.gather(
            *(
                asyncio.wait_for(side.bus.ensure_streams(specs), self._publish_timeout_s * 5)
                for side in self._sides
            ),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if len(failures) == len(self._sides):
            raise BusError(f"failover bus: ensure_streams failed on both backends: {failures}") from failures[
                0
            ]
        for side, result in zip(self._sides, results, strict=True):
            if isinstance(result, BaseException):
                _log.warning("failover bus: ensure_streams on %s deferred: %r", side.name, result)
                side.missing_specs.update((spec.name, spec) for spec in specs)

    async def partitions(self, stream: str) -> int:
        return await self._partition_count(stream, self._active)

    async def _partition_count(self, stream: str, index: int) -> int:
        """Asked of the given backend first; counts match on both, so the first answer is cached."""
        count = self._partition_counts.get(stream)
        if count is not None:
            return count
        try:
            count = await asyncio.wait_for(self._sides[index].bus.partitions(stream), self._publish_timeout_s)
        except (BusUnavailableError, TimeoutError):
            count = await asyncio.wait_for(
                self._sides[1 - index].bus.partitions(stream), self._publish_timeout_s
            )
        self._partition_counts[stream] = count
        return count

    async def publish(self, stream: str, messages: Sequence[OutgoingMessage]) -> list[PublishedPosition]:
        """On the active backend, else at once on the other one; with both down, again until one returns.

        Waiting (up to `both_down_wait_s`) rather than raising is what lets every
        stage resume by itself after an outage of both: a stage whose publish
        raised would stop consuming for good.
        """
        if not messages:
            return []
        ids = [f"{self._publisher_id}-{next(self._sequence)}" for _ in messages]
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.both_down_wait_s
        while True:
            try:
                return await self._publish_either(stream, messages, ids)
            except _BothDownError as exc:
                if loop.time() >= give_up_at:
                    raise BusUnavailableError(
                        f"{exc} (still, after waiting {self.both_down_wait_s:.0f}s for either to return)"
                    ) from exc
                _log.warning("failover bus: %s; publishing again when either returns", exc)
                await asyncio.sleep(self.probe_interval_s)

    async def _publish_either(
        self, stream: str, messages: Sequence[OutgoingMessage], ids: list[str]
    ) -> list[PublishedPosition]:
        first = self._active
        try:
            return await self._publish_on(first, stream, messages, ids, retry=False)
        except Exception as first_error:  # any backend failure: try the other one before giving up
            second = 1 - first
            _log.warning(
                "failover bus: publish to %s on %s failed (%r); re-publishing on %s",
                stream,
                self._sides[first].name,
                first_error,
                self._sides[second].name,
            )
            try:
                positions = await self._publish_on(second, stream, messages, ids, retry=True)
            except Exception as second_error:
                message = (
                    f"failover bus: publish to {stream!r} failed on {self._sides[first].name} "
                    f"({first_error!r}) and on {self._sides[second].name} ({second_error!r})"
                )
                if isinstance(second_error, BusUnavailableError | TimeoutError):
                    self._count_failure(
                        first, other_took_it=False, late=isinstance(first_error, TimeoutError)
                    )
                    raise _BothDownError(message) from second_error
                raise BusError(message) from second_error
            self._count_failure(first, other_took_it=True, late=isinstance(first_error, TimeoutError))
            return positions

    async def _publish_on(
        self,
        index: int,
        stream: str,
        messages: Sequence[OutgoingMessage],
        ids: list[str],
        *,
        retry: bool,
    ) -> list[PublishedPosition]:
        side, other = self._sides[index], self._sides[1 - index]
        if side.missing_specs and not await self._create_missing(side):
            raise BusUnavailableError(f"failover bus: streams not yet created on {side.name}")
        # Only keyed messages promise order, and only partitions the other backend saw need an edge.
        needs_edges = any(tp[0] == stream for tp in other.acked)
        count = await self._partition_count(stream, index) if needs_edges else 0
        stamped = []
        for message, message_id in zip(messages, ids, strict=True):
            headers = {k: v for k, v in message.headers.items() if k not in _INTERNAL_HEADERS}
            headers[HEADER_ID] = message_id
            if retry:
                headers[HEADER_RETRY] = "1"
            if needs_edges and message.key is not None:
                after = other.acked.get((stream, partition_for_key(message.key, count)))
                if after:
                    headers[HEADER_AFTER] = str(after)
            stamped.append(OutgoingMessage(message.value, message.key, headers))
        positions = await asyncio.wait_for(side.bus.publish(stream, stamped), self._publish_timeout_s)
        side.answered_at = asyncio.get_running_loop().time()
        for position in positions:
            tp = (stream, position.partition)
            side.acked[tp] = max(side.acked.get(tp, 0), position.offset + 1)
        return [PublishedPosition(p.partition, p.offset, side.name) for p in positions]

    def consumer(
        self,
        streams: Sequence[str],
        group: str,
        *,
        start: StartPosition = "earliest",
        max_in_flight: int = 1000,
    ) -> FailoverConsumer:
        return FailoverConsumer(self, list(streams), group, start=start, max_in_flight=max_in_flight)

    def _active_bus(self) -> Bus:
        return self._sides[self._active].bus

    async def committed_offsets(self, group: str, stream: str) -> dict[int, int]:
        return await self._active_bus().committed_offsets(group, stream)

    async def end_offsets(self, stream: str) -> dict[int, int]:
        return await self._active_bus().end_offsets(stream)

    async def set_committed_offsets(self, group: str, stream: str, offsets: Mapping[int, int]) -> None:
        await self._active_bus().set_committed_offsets(group, stream, offsets)

    async def offsets_for_timestamp(self, stream: str, timestamp_ms: int) -> dict[int, int]:
        return await self._active_bus().offsets_for_timestamp(stream, timestamp_ms)

    async def earliest_offsets(self, stream: str) -> dict[int, int]:
        return await self._active_bus().earliest_offsets(stream)

    async def healthy(self) -> bool:
        """Whether either backend passed its latest probe (the probe loop runs every probe_interval_s).

        Answered from the probes rather than by probing again, which would race
        the probe loop in starting a backend that is coming back.
        """
        return any(side.up for side in self._sides)

    async def consumer_groups(self, stream: str) -> list[str]:
        """Groups reading the stream on either backend; a backend that does not answer, as last listed.

        Listing costs a request per group on some backends: callers asking often keep the
        answer a while. Never raises.
        """

        async def listed(side: _BusSide) -> list[str]:
            if side.up:
                try:
                    side.groups[stream] = await asyncio.wait_for(
                        side.bus.consumer_groups(stream), self._publish_timeout_s
                    )
                except Exception as exc:  # a dead or slow backend: what it last said
                    _log.info("failover bus: groups of %s on %s unavailable: %r", stream, side.name, exc)
            return side.groups.get(stream, [])

        found = await asyncio.gather(*(listed(side) for side in self._sides))
        return sorted({group for groups in found for group in groups})

    async def backend_lags(self, group: str, stream: str, timeout_s: float | None = None) -> list[BackendLag]:
        """Each backend's lag, read at once; within timeout_s (default the probe timeout) or the last known.

        A backend that failed its latest probe is not asked: its last known lag is
        what it holds unread (stranded) until it returns. Never raises.
        """
        timeout = self.probe_timeout_s if timeout_s is None else timeout_s

        async def read(index: int) -> BackendLag:
            side = self._sides[index]
            known = self._known_lag.get((index, group, stream))
            if side.up:
                try:
                    lags = await asyncio.wait_for(side.bus.lag(group, stream), timeout)
                except Exception as exc:  # a slow or dead backend gives a partial answer, not an error
                    _log.info("failover bus: lag of %s on %s unavailable: %r", stream, side.name, exc)
                else:
                    fresh = BackendLag(side.name, tuple(lags), time.time(), stale=False)
                    self._known_lag[index, group, stream] = fresh
                    return fresh
            if known is None:
                return BackendLag(side.name, (), 0.0, stale=True)
            return BackendLag(side.name, known.partitions, known.read_at, stale=True)

        return list(await asyncio.gather(*(read(index) for index in range(len(self._sides)))))

    async def lag(self, group: str, stream: str) -> list[PartitionLag]:
        """Both backends summed per partition: positions in the merged log, so lag counts all unread.

        A backend that does not answer contributes its last known lag (what is
        stranded on it); one never read is left out. Never raises.
        """
        committed: dict[int, int] = {}
        end: dict[int, int] = {}
        for backend in await self.backend_lags(group, stream):
            for item in backend.partitions:
                committed[item.partition] = committed.get(item.partition, 0) + item.committed
                end[item.partition] = end.get(item.partition, 0) + item.end
        return [PartitionLag(stream, p, committed[p], end[p]) for p in sorted(end)]


@dataclass(frozen=True, slots=True)
class FailoverRecord(Record):
    """A record plus the backend it was read from (its offset is only meaningful there)."""

    backend: str = ""
    # The offset in that backend's log (`offset` is the consumer's merged offset).
    source_offset: int = -1


@dataclass(slots=True, eq=False)
class _ConsumerSide:
    """One backend as a FailoverConsumer sees it."""

    name: str
    bus: Bus
    consumer: Consumer | None = None
    # A member whose join failed because the backend did not answer: the next attempt goes on
    # with it (its connection, its login under way) rather than opening another.
    joining: Consumer | None = None
    fetch: asyncio.Task[list[Record]] | None = None
    opening: asyncio.Task[bool] | None = None
    reopen_at: float = 0.0
    # Fetched but not yet handed out, in log order per partition.
    pending: dict[TopicPartition, deque[Record]] = field(default_factory=dict)
    # Next offset after the last record handed out.
    delivered: dict[TopicPartition, int] = field(default_factory=dict)
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    # Offsets the group is known to be past here without this member's help
    # (group commits, retention, a "latest" start).
    floor: dict[TopicPartition, int] = field(default_factory=dict)
    # End offsets read after the other backend's pending records were fetched.
    ends: dict[TopicPartition, int] = field(default_factory=dict)
    floor_read_at: dict[str, float] = field(default_factory=dict)
    # Commits this backend could not take yet (it was down); retried with the next commit.
    owed: dict[TopicPartition, int] = field(default_factory=dict)

    def position(self, tp: TopicPartition) -> int:
        return max(self.delivered.get(tp, 0), self.floor.get(tp, 0))

    def must_wait(self, tp: TopicPartition, after: int) -> bool:
        """Whether records before `after` on this backend are still to be handed out.

        If the log ends before `after`, the backend lost them (it came back empty):
        waiting could never end, and there is nothing left to keep order with.
        """
        return self.position(tp) < after and self.ends.get(tp, after) >= after

    def pending_count(self) -> int:
        return sum(len(queue) for queue in self.pending.values())


class FailoverConsumer(Consumer):
    """One group member per backend, merged so per-key publish order survives switches."""

    # A failed start keeps each backend's joining member (see `_open`).
    starts_again_in_place = True

    def __init__(
        self,
        bus: FailoverBus,
        streams: list[str],
        group: str,
        *,
        start: StartPosition,
        max_in_flight: int,
    ) -> None:
        self._bus = bus
        self._streams = streams
        self._group = group
        self._start = start
        self._max_in_flight = max(1, max_in_flight)
        names = bus.backend_names
        self._sides = (
            _ConsumerSide(names[PRIMARY], bus.primary),
            _ConsumerSide(names[FALLBACK], bus.fallback),
        )
        self._last_side: dict[TopicPartition, int] = {}
        # Handed-out records not yet committed, per partition: (merged offset, side, next real offset).
        self._handed: dict[TopicPartition, deque[tuple[int, int, int]]] = {}
        # Next merged offset per partition (see `_public`).
        self._merged_next: dict[TopicPartition, int] = {}
        self._retried_ids: dict[TopicPartition, OrderedDict[str, None]] = {}
        # (side index, stream) whose progress a held-back record is waiting for.
        self._waiting_on: set[tuple[int, str]] = set()
        self._leaving: set[asyncio.Task[None]] = set()
        self._started = False

    @property
    def _timeout_s(self) -> float:
        return self._bus.probe_timeout_s * 5

    async def start(self) -> None:
        """Join on both backends; until one admits the member, again, each time allowed twice as long.

        A stage starting while both are down (or while a loaded broker takes longer than the
        usual bound to admit a member) waits for either, up to `both_down_wait_ms`, rather
        than ending its process.
        """
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._bus.both_down_wait_s
        timeout = self._timeout_s
        while not any(await asyncio.gather(*(self._open(side, timeout) for side in self._sides))):
            if loop.time() >= give_up_at:
                raise BusUnavailableError(f"failover consumer {self._group}: no backend reachable")
            _log.warning(
                "failover consumer %s: neither backend admitted the member within %.1fs; trying again",
                self._group,
                timeout,
            )
            await asyncio.sleep(self._bus.probe_interval_s)
            timeout = min(2 * timeout, _JOIN_TIMEOUT_MAX_S)
        self._started = True

    async def _open(self, side: _ConsumerSide, timeout_s: float | None = None) -> bool:
        """Join the group on one backend; on failure retry at a later poll.

        One joining member per backend: a backend too slow to admit it in time is asked again
        with the same member (`keep_for_next_join`), any other failure stops it.
        """
        loop = asyncio.get_running_loop()
        # Read before joining: a floor at or below the real start position is always safe.
        await asyncio.gather(*(self._read_floor(side, s, with_start=True) for s in self._streams))
        consumer = side.joining or side.bus.consumer(
            self._streams, self._group, start=self._start, max_in_flight=self._max_in_flight
        )
        side.joining = consumer
        try:
            await asyncio.wait_for(consumer.start(), timeout_s or self._timeout_s)
        except Exception as exc:  # a down backend; the other one keeps serving
            _log.warning("failover consumer %s: cannot join on %s: %r", self._group, side.name, exc)
            side.reopen_at = loop.time() + self._bus.probe_interval_s
            if not keep_for_next_join(consumer, exc):
                side.joining = None
                await self._leave_quietly(consumer)
            return False
        side.joining = None
        side.consumer = consumer
        await self._forget_lost(side)
        return True

    async def _forget_lost(self, side: _ConsumerSide) -> None:
        """After a rejoin: partitions whose log now ends before what this member read came back empty.

        Their records are gone from this backend (they are counted as lost in
        the log); remembering positions past the new end would skip the records
        published there from now on, and committing them would leave the log's range.
        """
        for stream in self._streams:
            try:
                ends = await asyncio.wait_for(side.bus.end_offsets(stream), self._timeout_s)
            except Exception:  # unknown now; the positions stay until the next rejoin
                continue
            for partition, end in ends.items():
                tp = (stream, partition)
                known = max(side.delivered.get(tp, 0), side.committed.get(tp, 0), side.owed.get(tp, 0))
                if known <= end:
                    continue
                _log.warning(
                    "failover consumer %s: %s[%d] on %s ends at %d, but %d were read there: "
                    "the backend came back without %d records",
                    self._group, stream, partition, side.name, end, known, known - end,
                )  # fmt: skip
                for offsets in (side.delivered, side.committed, side.owed, side.floor):
                    offsets.pop(tp, None)
                side.pending.pop(tp, None)
                handed = self._handed.get(tp)
                if handed:
                    self._handed[tp] = deque(entry for entry in handed if entry[1] != self._sides.index(side))

    async def _read_floor(self, side: _ConsumerSide, stream: str, *, with_start: bool) -> None:
        side.floor_read_at[stream] = asyncio.get_running_loop().time()
        try:
            committed, floor, ends = await asyncio.gather(
                asyncio.wait_for(side.bus.committed_offsets(self._group, stream), self._timeout_s),
                asyncio.wait_for(side.bus.earliest_offsets(stream), self._timeout_s),
                asyncio.wait_for(side.bus.end_offsets(stream), self._timeout_s),
            )
        except Exception:  # unknown for now; held records wait for the next read
            return
        if with_start and self._start == "latest":
            floor.update({p: end for p, end in ends.items() if p not in committed})
        for p in floor.keys() | committed.keys():
            tp = (stream, p)
            side.floor[tp] = max(side.floor.get(tp, 0), floor.get(p, 0), committed.get(p, 0))
        if not with_start:
            side.ends.update(((stream, p), end) for p, end in ends.items())

    async def stop(self) -> None:
        self._started = False
        for side in self._sides:
            for task in (side.opening, side.fetch):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
            side.opening = side.fetch = None
            if side.joining is not None:
                joining, side.joining = side.joining, None
                await self._leave_quietly(joining)
            if side.consumer is not None:
                try:
                    await asyncio.wait_for(side.consumer.stop(), self._timeout_s)
                except Exception as exc:  # leaving must finish on the other backend regardless
                    _log.warning("failover consumer %s: leaving %s failed: %r", self._group, side.name, exc)
                side.consumer = None
            side.pending.clear()
        if self._leaving:
            await asyncio.gather(*self._leaving, return_exceptions=True)

    async def poll(self, max_records: int = 500, timeout_s: float = 1.0) -> list[Record]:
        if not self._started:
            raise BusError("failover consumer: poll() before start()")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        limit = max(1, max_records)
        out = self._release(limit)
        while not out:
            remaining = deadline - loop.time()
            await self._fetch(max(0.0, remaining), limit)
            out = self._release(limit)
            if remaining <= 0:
                break
        return out

    async def _fetch(self, wait_s: float, limit: int) -> None:
        loop = asyncio.get_running_loop()
        for side in self._sides:
            if side.opening is not None and side.opening.done():
                side.opening = None
            # Rejoining runs aside, so a hanging backend never stalls delivery from the other.
            if side.consumer is None and side.opening is None and loop.time() >= side.reopen_at:
                side.opening = asyncio.create_task(self._open(side))
            if (
                side.consumer is not None
                and side.fetch is None
                and side.pending_count() < self._max_in_flight
            ):
                side.fetch = asyncio.create_task(
                    self._poll_inner(side.consumer, limit, min(wait_s, _FETCH_SLICE_S))
                )
        for index, stream in self._waiting_on:
            side = self._sides[index]
            if loop.time() - side.floor_read_at.get(stream, 0.0) >= self._bus.probe_interval_s:
                await self._read_floor(side, stream, with_start=False)
        tasks = [side.fetch for side in self._sides if side.fetch is not None]
        # A few ms even for timeout 0, so records already available are returned.
        wait = max(wait_s, 0.005)
        if tasks:
            await asyncio.wait(tasks, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        else:
            await asyncio.sleep(min(wait, self._bus.probe_interval_s))
        for side in self._sides:
            if side.fetch is not None and side.fetch.done():
                await self._harvest(side)

    async def _poll_inner(self, consumer: Consumer, limit: int, timeout_s: float) -> list[Record]:
        return await asyncio.wait_for(consumer.poll(limit, timeout_s), timeout_s + self._timeout_s)

    async def _harvest(self, side: _ConsumerSide) -> None:
        task, side.fetch = side.fetch, None
        if task is None:
            return
        if not task.done():
            with contextlib.suppress(BaseException):
                await task
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            _log.warning(
                "failover consumer %s: %s failed, rejoining later: %r", self._group, side.name, error
            )
            await self._drop(side)
            return
        other = self._sides[1 - self._sides.index(side)]
        for record in task.result():
            tp = (record.stream, record.partition)
            # Ends read before this record was fetched say nothing about its edge.
            other.ends.pop(tp, None)
            queue = side.pending.setdefault(tp, deque())
            last = queue[-1].offset if queue else side.delivered.get(tp, 0) - 1
            # A rejoined member re-reads from the committed offset; those records are already here.
            if record.offset > last:
                queue.append(record)

    async def _drop(self, side: _ConsumerSide) -> None:
        consumer, side.consumer = side.consumer, None
        side.reopen_at = asyncio.get_running_loop().time() + self._bus.probe_interval_s
        if consumer is not None:
            # Aside: leaving a backend that hangs must not hold up delivery from the other one.
            task = asyncio.create_task(self._leave_quietly(consumer))
            self._leaving.add(task)
            task.add_done_callback(self._leaving.discard)

    async def _leave_quietly(self, consumer: Consumer) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), self._timeout_s)

    def _release(self, limit: int) -> list[Record]:
        """Hand out pending records whose happens-before edge to the other backend is satisfied."""
        out: list[Record] = []
        self._waiting_on.clear()
        progress = True
        while progress and len(out) < limit:
            progress = False
            for index, side in enumerate(self._sides):
                other = self._sides[1 - index]
                # Availability first: order is kept only against a backend that can be read now.
                other_readable = other.consumer is not None and not self._bus.declared_down(1 - index)
                for tp, queue in side.pending.items():
                    while queue and len(out) < limit:
                        record = queue[0]
                        after = record.headers.get(HEADER_AFTER)
                        if after is not None and other_readable and other.must_wait(tp, int(after)):
                            self._waiting_on.add((1 - index, tp[0]))
                            break
                        queue.popleft()
                        side.delivered[tp] = record.offset + 1
                        self._last_side[tp] = index
                        progress = True
                        if not self._is_late_twin(tp, record):
                            out.append(self._public(record, index))
        return out

    def _is_late_twin(self, tp: TopicPartition, record: Record) -> bool:
        """A copy of a re-published batch that arrives after its re-published twin."""
        message_id = record.headers.get(HEADER_ID)
        if message_id is None:
            return False
        seen = self._retried_ids.get(tp)
        if seen is not None and message_id in seen:
            del seen[message_id]
            return True
        if HEADER_RETRY in record.headers:
            seen = self._retried_ids.setdefault(tp, OrderedDict())
            seen[message_id] = None
            if len(seen) > _RETRIED_IDS_PER_PARTITION:
                seen.popitem(last=False)
        return False

    def _public(self, record: Record, index: int) -> FailoverRecord:
        """The record at its merged offset: max(next merged, own offset), so one backend alone keeps its own.

        Stages compare and commit offsets per partition (watermarks, "highest
        seen + 1"); in the merged space those comparisons follow hand-out order
        whichever backend a record came from, and `commit` maps them back.
        """
        tp = (record.stream, record.partition)
        merged = max(self._merged_next.get(tp, 0), record.offset)
        self._merged_next[tp] = merged + 1
        self._handed.setdefault(tp, deque()).append((merged, index, record.offset + 1))
        return FailoverRecord(
            stream=record.stream,
            partition=record.partition,
            offset=merged,
            value=record.value,
            key=record.key,
            headers={k: v for k, v in record.headers.items() if k not in _INTERNAL_HEADERS},
            timestamp_ms=record.timestamp_ms,
            backend=self._sides[index].name,
            source_offset=record.offset,
        )

    def _side_index(self, backend: str) -> int:
        for index, side in enumerate(self._sides):
            if side.name == backend:
                return index
        raise BusError(f"failover consumer: no backend named {backend!r}, only {self._bus.backend_names}")

    def _real_offsets(self, offsets: Mapping[TopicPartition, int]) -> list[dict[TopicPartition, int]]:
        """Merged commit offsets mapped to next real offsets, per side.

        Committing merged offset M means every record handed out below M is
        done; per side, that is up to its last such record (each side's records
        are handed out in its log order). An offset beyond anything handed out
        was chosen by the caller, not read: it is taken as real, for the side
        that delivered the partition last.
        """
        per_side: list[dict[TopicPartition, int]] = [{} for _ in self._sides]
        for tp, merged in offsets.items():
            handed = self._handed.get(tp)
            if handed and handed[0][0] < merged:
                while handed and handed[0][0] < merged:
                    _, index, real_next = handed.popleft()
                    per_side[index][tp] = real_next
            elif merged > self._merged_next.get(tp, 0):
                per_side[self._last_side.get(tp, self._bus.active_index)][tp] = merged
        return per_side

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Per backend, exactly what was handed out (None) or the routed explicit offsets.

        A backend that is down keeps its uncommitted offsets for the next commit; its
        records may be redelivered (at-least-once), so this does not raise for it.
        """
        if offsets is None:
            self._handed.clear()
            per_side = [
                {tp: off for tp, off in side.delivered.items() if side.committed.get(tp) != off}
                for side in self._sides
            ]
        else:
            per_side = self._real_offsets(offsets)
        for side, wanted in zip(self._sides, per_side, strict=True):
            if side.owed:
                wanted = {**side.owed, **wanted}
            if wanted:
                await self._commit_side(side, wanted)

    async def commit_backend(self, backend: str, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit offsets on the named backend (as in `FailoverRecord.backend`)."""
        side = self._sides[self._side_index(backend)]
        if side.consumer is None:
            raise BusUnavailableError(f"failover consumer: {backend} is not reachable")
        await self._commit_side(side, offsets)

    async def _commit_side(self, side: _ConsumerSide, offsets: Mapping[TopicPartition, int]) -> None:
        # A backend failing its probes is not waited on: the stage's commit must stay prompt.
        if not self._bus.answering(self._sides.index(side)):
            side.owed.update(offsets)
            return
        # The inner consumer is not shared between concurrent calls.
        if side.consumer is not None and side.fetch is not None:
            await self._harvest(side)
        if side.consumer is None:
            side.owed.update(offsets)
            _log.info("failover consumer %s: %s is down, commit deferred", self._group, side.name)
            return
        try:
            await asyncio.wait_for(side.consumer.commit(dict(offsets)), self._timeout_s)
        except Exception as exc:  # redelivery later is the at-least-once cost, not an error here
            side.owed.update(offsets)
            _log.warning("failover consumer %s: commit on %s failed: %r", self._group, side.name, exc)
            return
        for tp in offsets:
            side.owed.pop(tp, None)
        side.committed.update(offsets)

    async def seek(self, stream: str, partition: int, offset: int) -> None:
        """Seek on the backend that delivered this partition last (else the active one)."""
        index = self._last_side.get((stream, partition), self._bus.active_index)
        await self.seek_backend(self._sides[index].name, stream, partition, offset)

    async def seek_backend(self, backend: str, stream: str, partition: int, offset: int) -> None:
        side = self._sides[self._side_index(backend)]
        if side.fetch is not None:
            await self._harvest(side)
        if side.consumer is None:
            raise BusUnavailableError(f"failover consumer: {backend} is not reachable")
        tp = (stream, partition)
        await side.consumer.seek(stream, partition, offset)
        side.pending.pop(tp, None)
        side.delivered[tp] = offset
        # A replay starts the merged offsets afresh, as a seek does on one backend.
        self._handed.pop(tp, None)
        self._merged_next.pop(tp, None)
        # A replay must deliver re-published batches again.
        self._retried_ids.pop(tp, None)

    def assignment(self) -> set[TopicPartition]:
        """The active backend's assignment (the other backend's may differ while it rebalances)."""
        active = self._bus.active_index
        for index in (active, 1 - active):
            consumer = self._sides[index].consumer
            if consumer is None:
                continue
            try:
                return consumer.assignment()
            except BusError:
                continue
        return set()


def from_url(url: str) -> FailoverBus:
    """failover://?primary=URL&fallback=URL[&probe_interval_ms=..&probe_timeout_ms=..&...]."""
    parts = urlsplit(url)
    if parts.scheme != "failover":
        raise BusError(f"not a failover:// URL: {url!r}")
    query = parse_qs(parts.query)

    def text(name: str) -> str | None:
        values = query.get(name)
        return values[-1] if values else None

    def number(name: str, default: float) -> float:
        value = text(name)
        if value is None:
            return default
        try:
            return float(value)
        except ValueError:
            raise BusError(f"failover URL: {name}={value!r} is not a number") from None

    primary, fallback = text("primary"), text("fallback")
    if not primary or not fallback:
        raise BusError(f"failover URL needs primary= and fallback= bus URLs: {url!r}")
    timeout_ms = text("probe_timeout_ms")
    return FailoverBus(
        open_bus(primary),
        open_bus(fallback),
        probe_interval_s=number("probe_interval_ms", DEFAULT_PROBE_INTERVAL_S * 1000) / 1000,
        probe_timeout_s=None if timeout_ms is None else number("probe_timeout_ms", 0) / 1000,
        failures_to_switch=int(number("failures_to_switch", DEFAULT_FAILURES_TO_SWITCH)),
        stable_period_s=number("stable_period_ms", DEFAULT_STABLE_PERIOD_S * 1000) / 1000,
        publish_timeout_s=number("publish_timeout_ms", DEFAULT_PUBLISH_TIMEOUT_S * 1000) / 1000,
        both_down_wait_s=number("both_down_wait_ms", DEFAULT_BOTH_DOWN_WAIT_S * 1000) / 1000,
        silent_to_switch_s=number("silent_to_switch_ms", DEFAULT_SILENT_TO_SWITCH_S * 1000) / 1000,
    )
