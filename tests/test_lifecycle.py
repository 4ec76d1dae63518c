"""ComponentStack, the one owner that starts and stops components for `serve` and `run`."""

from __future__ import annotations

import logging

import pytest

from vcf_agent.lifecycle import AsyncComponent, ComponentStack


class Recorded(AsyncComponent):
    def __init__(self, name: str, journal: list[str], *, fail_start: bool = False, fail_stop: bool = False):
        self.name = name
        self._journal = journal
        self._fail_start = fail_start
        self._fail_stop = fail_stop

    async def start(self) -> None:
        if self._fail_start:
            raise RuntimeError(f"{self.name} cannot start")
        self._journal.append(f"start {self.name}")

    async def stop(self) -> None:
        self._journal.append(f"stop {self.name}")
        if self._fail_stop:
            raise RuntimeError(f"{self.name} cannot stop")

    def __repr__(self) -> str:
        return self.name


async def test_starts_in_order_and_stops_in_reverse() -> None:
    journal: list[str] = []
    async with ComponentStack("test", [Recorded(n, journal) for n in "abc"]):
        assert journal == ["start a", "start b", "start c"]
    assert journal[3:] == ["stop c", "stop b", "stop a"]


async def test_a_failure_to_start_stops_what_started_and_propagates() -> None:
    journal: list[str] = []
    stack = ComponentStack(
        "test", [Recorded("a", journal), Recorded("b", journal), Recorded("c", journal, fail_start=True)]
    )
    with pytest.raises(RuntimeError, match="c cannot start"):
        await stack.start()
    assert journal == ["start a", "start b", "stop b", "stop a"]
    await stack.stop()  # Nothing is left to stop twice.
    assert journal == ["start a", "start b", "stop b", "stop a"]


async def test_a_failing_step_between_components_stops_what_started() -> None:
    journal: list[str] = []
    stack = ComponentStack("test")
    with pytest.raises(ValueError, match="topology"):
        async with stack.starting():
            await stack.enter(Recorded("bus", journal))
            raise ValueError("cannot create the topology")
    assert journal == ["start bus", "stop bus"]


async def test_a_failure_to_stop_is_logged_and_the_rest_still_stop(caplog: pytest.LogCaptureFixture) -> None:
    journal: list[str] = []
    stack = ComponentStack(
        "svc", [Recorded("a", journal), Recorded("b", journal, fail_stop=True), Recorded("c", journal)]
    )
    await stack.start()
    with caplog.at_level(logging.ERROR, logger="vcf_agent.lifecycle"):
        await stack.stop()
    assert journal[3:] == ["stop c", "stop b", "stop a"]
    # Only this logger's records: a background task an earlier test left may log meanwhile.
    (failure,) = [r for r in caplog.records if r.name == "vcf_agent.lifecycle"]
    assert failure.getMessage() == "svc: stopping b failed"
    assert failure.exc_info is not None and "b cannot stop" in str(failure.exc_info[1])
