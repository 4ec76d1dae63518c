"""Jobs that stop moving: reported `stalled`, and published again when a failover stranded them.

Every second the watchdog compares each running job's counts with what they
were. A job whose counts have not moved for `job_stall_s` is marked
JOB_STATE_STALLED, with why in GetJob's `stall_detail` and a notification;
it leaves the state as soon as a count moves (see JobRegistry.apply).

On a failover bus, records published to the primary and not yet read when it
died are stranded there: delivered when it returns with its log, lost when it
returns empty. While jobs run the watchdog reads, every tick, the lag on both
backends of every group that reads a stream a job's records pass through
(`vcf-variants`, `ai-analysis-requests`, `ai-analysis-results`, `database-writes`,
`dead-letters`, `user-notifications`); the groups are the ones the backends list
(the stages as they run: the router, one group per provider worker, the
aggregator, the writer, ingest's tracker, the notifier), not a fixed list. A
dead backend's lag is its last known: what is stranded on it. A job idle for
`_STRANDED_STALL_S` while records are stranded is stalled at once, the detail
naming them (how many, on which stream, for which group, on which backend).
GetStatus reports, per backend, how many rounds of those lag reads all answered
and when the latest began (`watchdog_lag_reads`, `watchdog_lag_read_at`): records
published there before it are what a death of the backend would strand, and
GetJob would name them.

Once a job has been idle for `republish_grace_s` after a backend switch during
its run, ingest publishes again what the lost backend had taken of it (the
batches it acknowledged before it went down; see VariantPublisher.republish),
once per switch; if the job is still idle a grace period later (something
derived from a batch the live backend took was stranded), the whole file.
Stored effects are upserts by correlation id and completion is counted from
the store, so nothing is stored twice and the job completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping

from vcf_agent import telemetry
from vcf_agent.bus import BackendLag, Bus, FailoverBus
from vcf_agent.config import Settings
from vcf_agent.control import LagReadRounds
from vcf_agent.lifecycle import AsyncComponent
from vcf_agent.schema import TERMINAL_STATES
from vcf_agent.v1 import events_pb2

from ._jobs import JobRecord, JobRegistry
from ._publisher import VariantPublisher

__all__ = ["JobWatchdog"]

log = logging.getLogger(__name__)

_TICK_S = 1.0
# How often the groups reading each stream are listed again: often enough that the groups
# of a job that just started are known before a backend dies (a listing of a dead one is
# its last), seldom enough for Kafka (a request per group and stream).
_GROUPS_EVERY_S = 2.0
# A job idle this long while records are stranded on an unreachable backend waits for them.
_STRANDED_STALL_S = 5.0
# A lag read that does not answer within this keeps the last known lag. What a dead backend
# strands is its last lag read while it answered, so a read must succeed on a loaded machine:
# at load 58 on 2 cores, reads of a debug iggy-server's lags failed a 1 s limit for a whole
# job, and GetJob never named the records stranded there.
_LAG_READ_TIMEOUT_S = 5.0
# The streams a job's records pass through (topology fields): where a record stranded on a
# dead backend waits. Their readers are found on the backends (FailoverBus.consumer_groups).
_JOB_STREAMS = (
    "variants",
    "analysis_requests",
    "analysis_results",
    "database_writes",
    "dead_letters",
    "user_notifications",
)


class JobWatchdog(AsyncComponent):
    def __init__(
        self, registry: JobRegistry, publisher: VariantPublisher, bus: Bus, settings: Settings
    ) -> None:
        self._registry = registry
        self._publisher = publisher
        self._bus = bus
        self._settings = settings
        self._stall_s = settings.job_stall_s
        self._grace_s = settings.republish_grace_s
        # job -> (counts, monotonic time they last changed)
        self._progress: dict[str, tuple[tuple[int, ...], float]] = {}
        # job -> (the bus's switch count, monotonic time, whole file) when it was last published again
        self._republished: dict[str, tuple[int, float, bool]] = {}
        self._task: asyncio.Task[None] | None = None
        # (monotonic time, (group, stream) pairs) of the last listing of the streams' readers.
        self._readers: tuple[float, list[tuple[str, str]]] = (float("-inf"), [])
        # Per backend name: rounds of lag reads that all answered there, and when the latest began.
        self._rounds: dict[str, LagReadRounds] = {}

    def lag_read_rounds(self) -> Mapping[str, LagReadRounds]:
        return dict(self._rounds)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._watch_forever(), name="ingest:job-watchdog")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch_forever(self) -> None:
        while True:
            await asyncio.sleep(_TICK_S)
            try:
                await self.tick()
            except Exception:  # the watchdog must outlive one bad round
                log.exception("job watchdog round failed")

    async def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        active = {job.job_id: job for job in self._registry.active()}
        for job_id in list(self._progress):
            if job_id not in active:
                del self._progress[job_id]
                self._republished.pop(job_id, None)
                ended = self._registry.get(job_id)
                if ended is None or ended.state in TERMINAL_STATES:
                    self._publisher.forget(job_id)
        # Read while the backends answer, so a dead one's last known lag is fresh.
        stranded = await self._stranded(now) if active else ""
        stalled = 0
        for job in active.values():
            counts = (job.ingested, job.analysed, job.stored, job.total, job.dead_lettered)
            last = self._progress.get(job.job_id)
            if last is None or last[0] != counts:
                self._progress[job.job_id] = (counts, now)
                continue
            idle = now - last[1]
            waiting = bool(stranded) and idle >= min(self._stall_s or _STRANDED_STALL_S, _STRANDED_STALL_S)
            if waiting or (self._stall_s and idle >= self._stall_s):
                stalled += 1
                await self._stall(job, idle, stranded)
            if self._grace_s and idle >= self._grace_s:
                self._republish_if_stranded(job, idle, now)
        telemetry.jobs_stalled.set(stalled)

    async def _stall(self, job: JobRecord, idle: float, stranded: str) -> None:
        of = f" of {job.total}" if job.total else ""
        detail = (
            f"no progress for {idle:.0f} s (ingested {job.ingested}, analysed {job.analysed},"
            f" stored {job.stored}{of})" + (f"; {stranded}" if stranded else "")
        )
        entering = job.state != events_pb2.JOB_STATE_STALLED
        if not entering and detail.split(";")[1:] == job.stall_detail.split(";")[1:]:
            return  # already said; the idle time alone is not news
        if self._registry.stall(job.job_id, detail) is None:
            return
        if entering:
            log.warning("job %s stalled: %s", job.job_id, detail, extra={"job_id": job.job_id})
        await self._publisher.announce(job.job_id, events_pb2.JOB_STATE_STALLED, detail)

    async def _stranded(self, now: float) -> str:
        """Records unread on a backend not answering: "N on STREAM for GROUP (BACKEND, unreachable)"."""
        if not isinstance(self._bus, FailoverBus):
            return ""
        bus = self._bus
        listed_at, pairs = self._readers
        if now - listed_at >= _GROUPS_EVERY_S or now < listed_at:
            streams = [getattr(self._settings.topology, role) for role in _JOB_STREAMS]
            listed = await asyncio.gather(*(bus.consumer_groups(stream) for stream in streams))
            pairs = [
                (group, stream) for stream, groups in zip(streams, listed, strict=True) for group in groups
            ]
            self._readers = (now, pairs)
        began = time.time()
        lags = await asyncio.gather(
            *(bus.backend_lags(group, stream, timeout_s=_LAG_READ_TIMEOUT_S) for group, stream in pairs)
        )
        self._count_rounds(began, lags)
        # Only a backend declared down strands anything; a live one slow to answer a lag read or
        # a probe (a loaded broker) still delivers. (With "failed its latest probe", a CLI run at
        # load 60 named 18 records "on database-writes for writer (kafka, unreachable)" while
        # Kafka served every stage and Iggy was the one killed.)
        down = {
            state.name
            for state in bus.backend_states()
            if not state.healthy and state.failed_probes >= bus.failures_to_switch
        }
        found = [
            f"{backend.lag} on {stream} for {group} ({backend.backend}, unreachable)"
            for (group, stream), backends in zip(pairs, lags, strict=True)
            for backend in backends
            if backend.backend in down and backend.stale and backend.lag > 0
        ]
        return f"records stranded: {', '.join(found)}" if found else ""

    def _count_rounds(self, began: float, lags: list[list[BackendLag]]) -> None:
        """A backend whose every read of this round answered saw all published there before `began`."""
        if not lags:
            return  # no group reads a job's streams yet: a round of nothing says nothing
        for index, backend in enumerate(lags[0]):
            if all(not backends[index].stale for backends in lags):
                done = self._rounds.get(backend.backend)
                self._rounds[backend.backend] = LagReadRounds((done.count if done else 0) + 1, began)

    def _republish_if_stranded(self, job: JobRecord, idle: float, now: float) -> None:
        """After a backend switch during the job's run, an idle job's records may be stranded.

        First what the lost backend took; a grace period later, still idle, the whole file.
        """
        bus = self._bus
        if not isinstance(bus, FailoverBus) or bus.last_switch_at is None:
            return
        if bus.last_switch_at < job.started_at:
            return
        last = self._republished.get(job.job_id)
        whole = False
        if last is not None and last[0] == bus.switches:
            if last[2] or now - last[1] < self._grace_s:
                return
            whole = True
        why = (
            f"no progress for {idle:.0f} s since the bus switched to {bus.active_backend}"
            " (records published before may be stranded on the other backend)"
        )
        published = self._publisher.republish(job.job_id, why, whole=whole)
        if published is not None:
            self._republished[job.job_id] = (bus.switches, now, published == "whole")
