"""How a job whose every variant is stored ends: complete, complete_with_errors or failed.

Storing every variant is not the same as analysing it: a provider that failed
(after its last retry) or never answered still leaves a stored variant with a
failed or missing answer. The writer decides the final state from the counts in
the store, so a job never reads `complete` while its analyses say otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from vcf_agent.v1 import events_pb2

# (error, how many answers carried it), most frequent first.
FailureReasons = Callable[[str], list[tuple[str, int]]]


class JobOutcome(NamedTuple):
    state: events_pb2.JobState.ValueType
    # Why the job did not end `complete`; empty when it did.
    reason: str


def job_outcome(
    stored: int,
    counts: Mapping[str, events_pb2.ProviderCounts],
    reasons: FailureReasons,
    *,
    lost: int = 0,
    lost_reasons: Sequence[tuple[str, int]] = (),
    rejected: int = 0,
) -> JobOutcome:
    """The final state of a job with `stored` variants and these per-provider answer counts.

    `lost` variants were dead-lettered by some stage (a record it could not read, a batch
    the store rejected) with `lost_reasons` as (reason, variants), most first. `rejected`
    records of the file were dead-lettered by ingest for a MUST of the VCF specification
    they break (each named, with its line, in the dead-letters stream).

    complete: every record of the file read, every variant stored and every answer of every
    requested provider succeeded (or there was nothing to analyse). failed: not one variant
    was stored while records were lost or rejected, or variants were stored but not one
    analysis succeeded. Otherwise complete_with_errors, naming what was rejected or lost and
    each provider that failed or missed answers.
    """
    problems = [
        _problem(provider, answers, reasons)
        for provider, answers in sorted(counts.items())
        if answers.failed or answers.missing
    ]
    if lost:
        quoted = ", ".join(f"{count} x {reason!r}" for reason, count in lost_reasons)
        problems.insert(
            0, f"{lost} of {stored + lost} variants were dead-lettered" + (f" ({quoted})" if quoted else "")
        )
    if rejected:
        problems.insert(
            0,
            f"{rejected} record{'s' if rejected > 1 else ''} of the file broke the VCF specification and"
            f" went to the dead-letters stream{', each' if rejected > 1 else ''} with its line and reason",
        )
    if not problems:
        return JobOutcome(events_pb2.JOB_STATE_COMPLETE, "")
    if (lost or rejected) and not stored:
        return JobOutcome(events_pb2.JOB_STATE_FAILED, f"no variant was stored: {'; '.join(problems)}")
    if stored and counts and not any(answers.ok for answers in counts.values()):
        return JobOutcome(events_pb2.JOB_STATE_FAILED, f"no variant was analysed: {'; '.join(problems)}")
    return JobOutcome(events_pb2.JOB_STATE_COMPLETE_WITH_ERRORS, "; ".join(problems))


def _problem(provider: str, answers: events_pb2.ProviderCounts, reasons: FailureReasons) -> str:
    asked = answers.ok + answers.failed + answers.missing
    parts = []
    if answers.failed:
        quoted = ", ".join(f"{count} x {error!r}" for error, count in reasons(provider))
        parts.append(f"{answers.failed} of {asked} analyses failed" + (f" ({quoted})" if quoted else ""))
    if answers.missing:
        parts.append(f"{answers.missing} of {asked} got no answer before the deadline")
    return f"{provider}: {' and '.join(parts)}"
