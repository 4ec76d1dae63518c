"""Jobs that stop moving: reported `stalled`, and published again when a failover stranded them.

Every second the watchdog compares each running job's counts with what they
were. A job whose counts have not moved for `job_stall_s` is marked
JOB_STATE_STALLED, with why in GetJob's `stall_detail` and a notification;
it leaves the state as soon as a count moves (see JobRegistry.apply).

On a failover bus, records published to the primary and not yet read when it
died are stranded there: delivered when it returns with its log, lost when it
returns empty. While jobs run the watchdog reads each stage's lag on both
backends every tick (a dead backend's is its last known: what is stranded on
it), and a job idle for `_STRANDED_STALL_S` while records are stranded is
stalled at once, the detail naming them (how many, on which stream and
backend). Once a job has been idle for
`republish_grace_s` after a backend switch during its run, it has ingest
publish the job again from its file onto the active backend (once per
switch). Stored effects are upserts by correlation id and completion is
counted from the store, so nothing is stored twice and the job completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from vcf_agent import telemetry
from vcf_agent.bus import Bus, FailoverBus
from vcf_agent.config import Settings
from vcf_agent.lifecycle import AsyncComponent
from vcf_agent.schema import TERMINAL_STATES
from vcf_agent.v1 import events_pb2

from ._jobs import JobRecord, JobRegistry
from ._publisher import VariantPublisher

__all__ = ["JobWatchdog"]

log = logging.getLogger(__name__)

_TICK_S = 1.0
# A job idle this long while records are stranded on an unreachable backend waits for them.
_STRANDED_STALL_S = 5.0
# The consumer group that reads each stream a job's records pass through, as each
# stage names its group: where a record stranded on a dead backend waits.
_STAGE_GROUPS = (("router", "variants"), ("aggregator", "analysis_results"), ("writer", "database_writes"))


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
        # job -> the bus's switch count when it was last published again
        self._republished: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

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
        stranded = await self._stranded() if active else ""
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
                self._republish_if_stranded(job, idle)
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
            log.warning("job %s stalled: %s", job.job_id, detail)
        await self._publisher.announce(job.job_id, events_pb2.JOB_STATE_STALLED, detail)

    async def _stranded(self) -> str:
        """Records unread on a backend that does not answer, per stream: "N on STREAM (BACKEND, down)"."""
        if not isinstance(self._bus, FailoverBus):
            return ""
        found = []
        for group, role in _STAGE_GROUPS:
            stream = getattr(self._settings.topology, role)
            for backend in await self._bus.backend_lags(group, stream, timeout_s=1.0):
                if backend.stale and backend.lag > 0:
                    found.append(f"{backend.lag} on {stream} ({backend.backend}, unreachable)")
        return f"records stranded: {', '.join(found)}" if found else ""

    def _republish_if_stranded(self, job: JobRecord, idle: float) -> None:
        """After a backend switch during the job's run, an idle job's records may be stranded."""
        bus = self._bus
        if not isinstance(bus, FailoverBus) or bus.last_switch_at is None:
            return
        if bus.last_switch_at < job.started_at or self._republished.get(job.job_id) == bus.switches:
            return
        why = (
            f"no progress for {idle:.0f} s since the bus switched to {bus.active_backend}"
            " (records published before may be stranded on the other backend)"
        )
        if self._publisher.republish(job.job_id, why):
            self._republished[job.job_id] = bus.switches
