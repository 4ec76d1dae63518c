"""Job states as every service and client names and tests them."""

from __future__ import annotations

from collections.abc import Iterable

from vcf_agent.v1 import events_pb2, jobs_pb2

TERMINAL_STATES = frozenset(
    {
        events_pb2.JOB_STATE_COMPLETE,
        events_pb2.JOB_STATE_COMPLETE_WITH_ERRORS,
        events_pb2.JOB_STATE_FAILED,
        events_pb2.JOB_STATE_CANCELLED,
    }
)


def state_name(state: int) -> str:
    """`JOB_STATE_COMPLETE` -> `complete`: the short form in JSON, logs and the CLI."""
    return events_pb2.JobState.Name(state).removeprefix("JOB_STATE_").lower()  # type: ignore[arg-type]


def exit_code(states: Iterable[int]) -> int:
    """What `vcf-agent run` and `submit --watch` exit with for jobs that ended in `states`: the worst.

    0 complete; 4 complete_with_errors (variants stored, but some analyses failed or records of
    the file were dead-lettered: the results exist but are not whole); 1 anything else (failed,
    cancelled, or not ended).
    2 stays the command-line error and 3 the Java client's "a call failed".
    """
    worst = max((_SEVERITY.get(state, len(_EXIT_CODES) - 1) for state in states), default=0)
    return _EXIT_CODES[worst]


# Severity of an ending (anything not listed is the worst) and the exit code of each severity.
_SEVERITY: dict[int, int] = {events_pb2.JOB_STATE_COMPLETE: 0, events_pb2.JOB_STATE_COMPLETE_WITH_ERRORS: 1}
_EXIT_CODES = (0, 4, 1)


def ended_badly(job: jobs_pb2.Job) -> str:
    """The line a client prints on stderr for a job that did not end complete: its state and why."""
    return f"job {job.job_id} ended {state_name(job.state)}: {job.error or 'no reason was recorded'}"


# File issues a command's summary shows; `run --json` and GetJob give all the job lists.
_FILE_ISSUES_SHOWN = 5


def file_issues_summary(job: jobs_pb2.Job) -> tuple[str, list[tuple[str, str]]]:
    """What `run` and `submit --watch` print of the faults of its file a job read past: a
    headline with their counts, and the first few as (where, what) pairs, e.g. `line 199` and
    `error INFO_NUMBER: ...`."""
    errors = sum(not issue.warning for issue in job.file_issues)
    more = " and more (vcf-agent validate lists every one)" if job.more_file_issues else ""
    headline = f"{errors} error(s), {len(job.file_issues) - errors} warning(s) read past{more}; first:"
    rows = [
        (f"line {issue.line}", f"{'warning' if issue.warning else 'error'} {issue.code}: {issue.message}")
        for issue in job.file_issues[:_FILE_ISSUES_SHOWN]
    ]
    return headline, rows
