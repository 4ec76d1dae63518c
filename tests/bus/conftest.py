"""One fixture, `bus_env`, parametrized over every bus backend.

Kafka and Iggy servers come from session fixtures requested lazily, so the
in-process and embedded backends run even where those servers are absent.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest

from vcf_agent.bus import Bus, open_bus

# Short, so a consumer killed without leaving is expired quickly in the redelivery test.
EMBEDDED_SESSION_TIMEOUT_MS = 1500


@dataclass
class BusEnv:
    """A fresh log for one test: every bus it opens shares that log."""

    backend: str
    url: str
    # Whether another OS process opening `url` reaches the same log.
    shared_across_processes: bool
    _opened: list[Bus] = field(default_factory=list)

    async def open(self) -> Bus:
        """A started bus on this test's log; stopped when the test ends."""
        bus = open_bus(self.url)
        await bus.start()
        self._opened.append(bus)
        return bus

    @staticmethod
    def stream() -> str:
        return f"test-stream-{uuid.uuid4().hex[:12]}"

    @staticmethod
    def group() -> str:
        return f"test-group-{uuid.uuid4().hex[:12]}"

    async def close(self) -> None:
        for bus in reversed(self._opened):
            await bus.stop()


def _embedded_url(directory: Path) -> str:
    return f"embedded://{directory}?session_timeout_ms={EMBEDDED_SESSION_TIMEOUT_MS}"


def _env(request: pytest.FixtureRequest, tmp_path: Path) -> BusEnv:
    backend: str = request.param
    name = uuid.uuid4().hex[:12]
    if backend == "memory":
        return BusEnv(backend, f"memory://test-{name}", shared_across_processes=False)
    if backend == "embedded":
        return BusEnv(backend, _embedded_url(tmp_path / "bus"), shared_across_processes=True)
    if backend == "kafka":
        bootstrap: str = request.getfixturevalue("kafka_bootstrap")
        return BusEnv(backend, f"kafka://{bootstrap}", shared_across_processes=True)
    if backend == "iggy":
        iggy_url: str = request.getfixturevalue("iggy_url")
        return BusEnv(backend, iggy_url, shared_across_processes=True)
    if backend == "failover":
        primary = quote(f"memory://test-{name}", safe="")
        fallback = quote(_embedded_url(tmp_path / "fallback"), safe="")
        # The memory primary is private to this process.
        return BusEnv(
            backend, f"failover://?primary={primary}&fallback={fallback}", shared_across_processes=False
        )
    raise AssertionError(f"unknown backend {backend}")


@pytest.fixture(
    params=[
        "memory",
        "embedded",
        pytest.param("kafka", marks=pytest.mark.kafka),
        pytest.param("iggy", marks=pytest.mark.iggy),
        "failover",
    ]
)
def bus_target(request: pytest.FixtureRequest, tmp_path: Path) -> BusEnv:
    """Synchronous on purpose: server fixtures (some async) cannot be requested from inside the loop."""
    return _env(request, tmp_path)


@pytest.fixture
async def bus_env(bus_target: BusEnv) -> AsyncIterator[BusEnv]:
    try:
        yield bus_target
    finally:
        await bus_target.close()
