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
    # As many variants as the SIGTERM round: at 40,000 the faster writer (graph cache, rarer
    # compactions) finished a job after its first fault in one CI run of three.
    result = await _run(SIGKILL_EACH, tmp_path, 240_000)
    assert result.faults == len(SERVICES), result.notes
    assert (result.problems, result.state) == ([], "complete")
    assert (result.stored, result.duplicates, result.lost) == (result.expected, 0, 0)


async def test_sigterm_each_service_during_work_drains_within_its_grace(tmp_path: Path) -> None:
    # Enough variants that the job outlasts five drains and restarts on a quiet machine too: at
    # 120,000 the faster two-sample pipeline (packed genotype columns) finished before ingest's turn.
    result = await _run(SIGTERM_EACH, tmp_path, 240_000)
    assert result.faults == len(SERVICES), result.notes
    # Each exit code 0 within the grace period is checked by the scenario, as problems.
    assert (result.problems, result.state) == ([], "complete")
    assert (result.stored, result.duplicates, result.lost) == (result.expected, 0, 0)


async def test_a_full_embedded_log_pauses_the_job_until_space_returns(tmp_path: Path) -> None:
    result = await _run(FULL_DISK_LOG, tmp_path, 40_000)
    assert (result.problems, result.state) == ([], "complete")
    assert (result.stored, result.duplicates, result.lost) == (result.expected, 0, 0)


async def test_a_service_that_ignores_sigterm_is_a_finding_and_the_round_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over Iggy the router outlived the 30 s grace (load 47): the scenario ended there, called
    it "stopped after the job", and the restarts in flight ran on after the pipeline stopped.

    Real child processes stand in for the services: only the signalling round is under test.
    """
    import random
    import signal
    import subprocess
    import sys

    from vcf_agent.app import fault_chaos
    from vcf_agent.localdev import ServiceProcess, stop_service

    monkeypatch.setattr(fault_chaos, "GRACE_S", 1.0)

    def child(name: str, ignores_sigterm: bool) -> ServiceProcess:
        # A service exits 0 on SIGTERM; the router here does not exit at all.
        handler = "signal.SIG_IGN" if ignores_sigterm else "lambda *_: sys.exit(0)"
        code = f"import signal, sys, time\nsignal.signal(signal.SIGTERM, {handler})\n"
        code += "print('ready', flush=True)\ntime.sleep(60)\n"
        process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
        return ServiceProcess(name, process, "", tmp_path / f"{name}.log")

    services = {name: child(name, ignores_sigterm=name == "router") for name in SERVICES}
    result = FaultResult(SIGTERM_EACH, "embedded", 1)
    progress = fault_chaos._Progress(services, "job")
    # Each restart counts as progress at once: no job runs here.
    progress.grew_at = float("inf")

    async def restart(name: str) -> None:
        services[name] = child(name, ignores_sigterm=False)

    try:
        await fault_chaos._signal_each(
            signal.SIGTERM, 1, services, progress, result, restart, random.Random(0), lambda _text: None
        )
    finally:
        for service in services.values():
            stop_service(service, signal.SIGKILL, 5)
    assert result.faults == len(SERVICES)
    assert result.problems == ["router ignored SIGTERM for 1s and was SIGKILLed"]


async def test_a_service_that_cannot_start_is_a_problem_of_the_row_not_the_end_of_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over Iggy at load ~80 ingest's first login took over the bus's 5 s and it exited 1 at start:
    the error escaped the scenario and `vcf-agent chaos` lost every row still to run.

    A tokens file that does not exist makes every service exit at start (2, a settings error).
    """
    monkeypatch.setenv("VCF_AGENT_TOKENS_FILE", str(tmp_path / "missing-tokens.json"))
    result = await run_fault_scenario(SIGKILL_EACH, "embedded", tmp_path, variants=100, samples=1, kills=1)
    assert result.state == "" and result.stored == 0
    assert any("exited with 2 before it was ready" in problem for problem in result.problems), result.problems
    assert any("VCF_AGENT_TOKENS_FILE" in problem for problem in result.problems), result.problems
