"""The fault-injection suite's CI share: five processes over the embedded log, faults while a job runs.

`vcf-agent chaos` runs the same scenarios (vcf_agent.app.fault_chaos) on 200,000
variants over the embedded log, Kafka and Iggy; here a small multi-sample file keeps
them within CI time. The verdict reads the writer's LanceDB table after the services
stopped: every variant of the file (counted by pysam) stored once, the job complete.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vcf_agent.app.fault_chaos import (
    FULL_DISK_LOG,
    SIGKILL_EACH,
    SIGTERM_EACH,
    FaultResult,
    run_fault_scenario,
)
from vcf_agent.config import SERVICES


async def _run(scenario: str, tmp_path: Path, variants: int) -> FaultResult:
    result = await run_fault_scenario(scenario, "embedded", tmp_path, variants=variants, samples=2, kills=1)
    if result.not_run:
        pytest.skip(result.not_run)
    return result


async def test_sigkill_each_service_in_turn_loses_and_doubles_nothing(tmp_path: Path) -> None:
    result = await _run(SIGKILL_EACH, tmp_path, 40_000)
    assert result.faults == len(SERVICES), result.notes
    assert (result.problems, result.state) == ([], "complete")
    assert (result.stored, result.duplicates, result.lost) == (result.expected, 0, 0)


async def test_sigterm_each_service_during_work_drains_within_its_grace(tmp_path: Path) -> None:
    # Enough variants that the job outlasts five drains and restarts on a quiet machine too.
    result = await _run(SIGTERM_EACH, tmp_path, 120_000)
    assert result.faults == len(SERVICES), result.notes
    # Each exit code 0 within the grace period is checked by the scenario, as problems.
    assert (result.problems, result.state) == ([], "complete")
    assert (result.stored, result.duplicates, result.lost) == (result.expected, 0, 0)


async def test_a_full_embedded_log_pauses_the_job_until_space_returns(tmp_path: Path) -> None:
    result = await _run(FULL_DISK_LOG, tmp_path, 40_000)
    assert (result.problems, result.state) == ([], "complete")
    assert (result.stored, result.duplicates, result.lost) == (result.expected, 0, 0)
