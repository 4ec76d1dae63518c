"""Per job, streaming or batch: the design's three flags, read at the moment a job starts.

- `ENABLE_IGGY_STREAMING` (boolean, default true): false sends every job to batch.
- `IGGY_PERCENTAGE_ROLLOUT` (default 100): the share of jobs streamed. Either a
  percentage-rollout flag (bucketed by its `bucket_by` attribute, one of tenant_id,
  file_id or job_id, else by the job id; variant "on" streams) or a number flag
  (the percentage, bucketed by the job id). Buckets are sticky: a job id is
  derived from tenant and file content, so a resubmitted file keeps its mode
  while the percentage stays, and raising the percentage only moves jobs from
  batch to streaming.
- `FALLBACK_TO_BATCH` (boolean, default true): when streaming cannot start, the
  job runs in batch mode instead of failing.

Flags that are absent keep today's behaviour (everything streams, with fallback).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, Protocol

from vcf_agent.control import in_rollout
from vcf_agent.v1 import control_pb2

from ._jobs import JobRecord

log = logging.getLogger(__name__)

ENABLE_STREAMING = "ENABLE_IGGY_STREAMING"
STREAMING_ROLLOUT = "IGGY_PERCENTAGE_ROLLOUT"
FALLBACK_TO_BATCH = "FALLBACK_TO_BATCH"

JobMode = Literal["streaming", "batch"]


class FlagSource(Protocol):
    """What mode choice needs of a FlagStore."""

    def get(self, key: str) -> control_pb2.Flag | None: ...


@dataclass(frozen=True, slots=True)
class ModeChoice:
    mode: JobMode
    reason: str
    fallback: bool


def choose_mode(flags: FlagSource | None, job: JobRecord) -> ModeChoice:
    """The mode a job starts in and whether it may fall back to batch."""
    fallback = _boolean(flags, FALLBACK_TO_BATCH, default=True)
    if not _boolean(flags, ENABLE_STREAMING, default=True):
        return ModeChoice("batch", f"{ENABLE_STREAMING} is off", fallback)
    rollout = flags.get(STREAMING_ROLLOUT) if flags is not None else None
    if rollout is None:
        return ModeChoice("streaming", f"{STREAMING_ROLLOUT} is not set", fallback)
    if rollout.type == control_pb2.FLAG_TYPE_PERCENTAGE_ROLLOUT:
        percentage, unit = rollout.percentage, _unit(rollout.bucket_by, job)
    elif rollout.type == control_pb2.FLAG_TYPE_NUMBER:
        percentage, unit = rollout.value.number_value, job.job_id
    else:
        log.warning(
            "%s must be a percentage rollout or a number flag; streaming every job", STREAMING_ROLLOUT
        )
        return ModeChoice("streaming", f"{STREAMING_ROLLOUT} has an unusable type", fallback)
    inside = in_rollout(STREAMING_ROLLOUT, unit, percentage)
    return ModeChoice(
        "streaming" if inside else "batch",
        f"{STREAMING_ROLLOUT} at {percentage:g}% puts {unit} {'inside' if inside else 'outside'}",
        fallback,
    )


def _boolean(flags: FlagSource | None, key: str, *, default: bool) -> bool:
    flag = flags.get(key) if flags is not None else None
    if flag is None:
        return default
    if flag.type != control_pb2.FLAG_TYPE_BOOLEAN:
        log.warning("%s is not a boolean flag; using its default %s", key, default)
        return default
    return flag.value.bool_value


def _unit(bucket_by: str, job: JobRecord) -> str:
    """The job's value of the attribute the rollout buckets by (the job id for any other)."""
    units = {"tenant_id": job.tenant_id, "file_id": job.file_id, "job_id": job.job_id}
    return units.get(bucket_by) or job.job_id
