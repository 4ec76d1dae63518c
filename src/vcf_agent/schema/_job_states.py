"""Job states as every service and client names and tests them."""

from __future__ import annotations

from vcf_agent.v1 import events_pb2

TERMINAL_STATES = frozenset(
    {events_pb2.JOB_STATE_COMPLETE, events_pb2.JOB_STATE_FAILED, events_pb2.JOB_STATE_CANCELLED}
)


def state_name(state: int) -> str:
    """`JOB_STATE_COMPLETE` -> `complete`: the short form in JSON, logs and the CLI."""
    return events_pb2.JobState.Name(state).removeprefix("JOB_STATE_").lower()  # type: ignore[arg-type]
