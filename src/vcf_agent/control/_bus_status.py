"""GetStatus's view of the bus: the active backend, each backend's health and lag, switches.

Every lag read is bounded: a backend that is dead or slow contributes its last
known lag (marked stale) or nothing, so the answer is partial, never an error,
and never slower than one status deadline (all reads run at once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from vcf_agent.bus import BackendLag, Bus, FailoverBus, PartitionLag
from vcf_agent.processing import StreamProcessor
from vcf_agent.v1 import control_pb2

from ._checkpoints import group_state

log = logging.getLogger(__name__)

# How long a single-backend lag read may take before GetStatus answers without it.
STATUS_READ_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class LagReadRounds:
    """One backend's complete rounds of a watcher's lag reads: how many, and when the latest began.

    A round that began at `latest_at` (wall clock) saw every record published on the backend
    before then: what a harness waits for before it kills the backend with records on it.
    """

    count: int
    latest_at: float


class LagReadSource(Protocol):
    """Something that reads lags on its own schedule (ingest's job watchdog), per backend name."""

    def lag_read_rounds(self) -> Mapping[str, LagReadRounds]: ...


@dataclass(frozen=True, slots=True)
class _Read:
    group: str
    stream: str
    backends: list[BackendLag]


def _lag_messages(group: str, lags: Sequence[PartitionLag]) -> list[control_pb2.PartitionLag]:
    return [
        control_pb2.PartitionLag(
            stream=lag.stream,
            group=group,
            partition=lag.partition,
            committed=lag.committed,
            end=lag.end,
            lag=lag.lag,
        )
        for lag in lags
    ]


def _merged(stream: str, backends: Sequence[BackendLag]) -> list[PartitionLag]:
    """Per partition, both backends added up: positions in the merged log."""
    committed: dict[int, int] = {}
    end: dict[int, int] = {}
    for backend in backends:
        for item in backend.partitions:
            committed[item.partition] = committed.get(item.partition, 0) + item.committed
            end[item.partition] = end.get(item.partition, 0) + item.end
    return [PartitionLag(stream, p, committed[p], end[p]) for p in sorted(end)]


async def _read_single(bus: Bus, group: str, stream: str) -> list[BackendLag]:
    try:
        lags = await asyncio.wait_for(bus.lag(group, stream), STATUS_READ_TIMEOUT_S)
    except Exception as exc:  # a dead or slow backend: a partial answer, not an error
        log.info("status: lag of %s/%s unavailable: %r", group, stream, exc)
        return [BackendLag(bus.backend, (), 0.0, stale=True)]
    return [BackendLag(bus.backend, tuple(lags), time.time(), stale=False)]


async def _read(bus: Bus, group: str, stream: str) -> _Read:
    if isinstance(bus, FailoverBus):
        return _Read(group, stream, await bus.backend_lags(group, stream))
    return _Read(group, stream, await _read_single(bus, group, stream))


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


async def fill_bus_status(
    response: control_pb2.GetStatusResponse,
    bus: Bus,
    processors: Sequence[StreamProcessor],
    *,
    bus_healthy: bool,
    watched: Mapping[str, LagReadRounds] | None = None,
) -> None:
    """Groups (with merged lags), the flat lag list, and the per-backend fields of GetStatus.

    `watched`: the service's own watcher's lag-read rounds per backend name (ingest's watchdog).
    """
    pairs = [(p, stream) for p in processors for stream in p.streams]
    reads = await asyncio.gather(*(_read(bus, p.group, stream) for p, stream in pairs))
    by_pair = {(r.group, r.stream): r for r in reads}
    for processor in processors:
        state = group_state(processor)
        for stream in processor.streams:
            read = by_pair[processor.group, stream]
            state.partitions.extend(_lag_messages(processor.group, _merged(stream, read.backends)))
        response.groups.append(state)
    # The same per-partition lags, flat, as earlier clients read them.
    response.lag.extend(lag for group in response.groups for lag in group.partitions)

    if isinstance(bus, FailoverBus):
        states = bus.backend_states()
        response.active_backend = bus.active_backend
        response.backend_switches = bus.switches
        if bus.last_switch_at is not None:
            response.last_switch_at.CopyFrom(_timestamp(bus.last_switch_at))
    else:
        response.active_backend = bus.backend
        states = []
    stranded = 0
    for index in range(len(states) or 1):
        backend = response.backends.add()
        if states:
            state_of = states[index]
            backend.name, backend.role = state_of.name, state_of.role
            backend.active, backend.healthy = state_of.active, state_of.healthy
            backend.consecutive_failures = state_of.failed_probes
        else:
            backend.name, backend.active, backend.healthy = bus.backend, True, bus_healthy
        read_times = []
        for read in reads:
            lag = read.backends[index]
            backend.partitions.extend(_lag_messages(read.group, lag.partitions))
            backend.lag += lag.lag
            backend.lag_stale |= lag.stale
            if lag.read_at:
                read_times.append(lag.read_at)
        if read_times:
            # The oldest part of the sum: how out of date a stale lag can be.
            backend.lag_read_at.CopyFrom(_timestamp(min(read_times)))
        if backend.lag_stale and not backend.healthy:
            stranded += backend.lag
        rounds = (watched or {}).get(backend.name)
        if rounds is not None:
            backend.watchdog_lag_reads = rounds.count
            backend.watchdog_lag_read_at.CopyFrom(_timestamp(rounds.latest_at))
    response.stranded_records = stranded
