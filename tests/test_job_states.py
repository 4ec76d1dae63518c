"""The exit code of `vcf-agent run FILE...` and `submit --watch` is the worst job's."""

from __future__ import annotations

from vcf_agent.schema import TERMINAL_STATES, exit_code
from vcf_agent.v1 import events_pb2

COMPLETE = events_pb2.JOB_STATE_COMPLETE
WITH_ERRORS = events_pb2.JOB_STATE_COMPLETE_WITH_ERRORS
FAILED = events_pb2.JOB_STATE_FAILED
CANCELLED = events_pb2.JOB_STATE_CANCELLED


def test_each_ending_has_its_code_and_several_jobs_exit_with_the_worst() -> None:
    assert [exit_code([s]) for s in (COMPLETE, WITH_ERRORS, FAILED, CANCELLED)] == [0, 4, 1, 1]
    assert exit_code([COMPLETE, WITH_ERRORS, COMPLETE]) == 4
    # A failed job outweighs one with errors, whatever the order.
    assert exit_code([FAILED, WITH_ERRORS]) == exit_code([WITH_ERRORS, FAILED]) == 1
    # A job that never ended (a watch cut short) is not a success.
    assert exit_code([events_pb2.JOB_STATE_STORING]) == 1


def test_complete_with_errors_is_final() -> None:
    assert WITH_ERRORS in TERMINAL_STATES
