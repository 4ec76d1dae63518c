"""Gauges read from elsewhere on a timer: consumer lag and bus health, jobs by state.

Reading lag is a network call on Kafka and Iggy, so it is sampled here every
few seconds in the service's event loop rather than at scrape time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from vcf_agent import telemetry
from vcf_agent.bus import Bus, FailoverBus
from vcf_agent.lifecycle import AsyncComponent
from vcf_agent.processing import StreamProcessor

log = logging.getLogger(__name__)

# Longer than a lag read's own bound, shorter than Prometheus' usual 15 s scrape.
SAMPLE_INTERVAL_S = 5.0
_READ_TIMEOUT_S = 2.0


class PeriodicSampler(AsyncComponent):
    """Calls `sample` now and then every `interval_s` until stopped; a failed sample is logged."""

    def __init__(self, name: str, sample: Callable[[], Awaitable[None]], interval_s: float) -> None:
        self._name = name
        self._sample = sample
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"sampler:{self._name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self._sample()
            except Exception:
                log.warning("%s: sampling failed", self._name, exc_info=True)
            await asyncio.sleep(self._interval_s)


class BusSampler(PeriodicSampler):
    """vcf_consumer_lag_messages per stream and group of the service's consumers, and
    platform_health_status of its bus (a failover bus reports each backend itself)."""

    def __init__(
        self,
        bus: Bus,
        processors: Callable[[], Sequence[StreamProcessor]],
        interval_s: float = SAMPLE_INTERVAL_S,
    ) -> None:
        super().__init__("bus", self._sample_bus, interval_s)
        self._bus = bus
        self._processors = processors

    async def _sample_bus(self) -> None:
        if not isinstance(self._bus, FailoverBus):
            try:
                healthy = await asyncio.wait_for(self._bus.healthy(), _READ_TIMEOUT_S)
            except Exception:
                healthy = False
            telemetry.platform_health_status.labels(self._bus.backend).set(1 if healthy else 0)
        for processor in self._processors():
            for stream in processor.streams:
                try:
                    lags = await asyncio.wait_for(self._bus.lag(processor.group, stream), _READ_TIMEOUT_S)
                except Exception as exc:  # unreadable now: keep the last value, the health gauge says why
                    log.debug("lag of %s/%s unavailable: %r", processor.group, stream, exc)
                    continue
                telemetry.consumer_lag.labels(stream, processor.group).set(sum(lag.lag for lag in lags))
