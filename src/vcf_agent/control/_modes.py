"""The streaming-versus-batch comparison behind ControlService.CompareModes.

Only the ingest service knows jobs, so it offers its completed runs as its
ServiceParts.job_runs; other services answer that they cannot compare. Per
mode: how many jobs and variants, job latency (mean, p50, p95, from the run's
start to its completion), throughput as variants over the summed job
latencies (what one job at a time would achieve), and the mean seconds each
stage added to a job's latency. The proto has no field for the mean latency,
so it is reported as stage_seconds["total"] (also the sum of the stage means).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from vcf_agent.v1 import control_pb2

MODES = ("streaming", "batch")


@dataclass(frozen=True, slots=True)
class JobRun:
    """One completed run of a job: its mode, stored variants, latency and per-stage seconds."""

    mode: str
    variants: int
    latency_s: float
    stage_seconds: Mapping[str, float]


class JobRunSource(Protocol):
    def job_runs(self, since: float = 0.0, tenant_id: str = "") -> list[JobRun]: ...


def percentile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); 0 for no values."""
    if not ordered:
        return 0.0
    rank = (len(ordered) - 1) * q
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def compare_modes(runs: Sequence[JobRun]) -> control_pb2.CompareModesResponse:
    """Both modes side by side, streaming first, even when one has no runs (all zeros)."""
    response = control_pb2.CompareModesResponse()
    for mode in MODES:
        mine = [run for run in runs if run.mode == mode]
        latencies = sorted(run.latency_s for run in mine)
        variants = sum(run.variants for run in mine)
        busy = sum(latencies)
        stats = control_pb2.ModeStats(
            mode=mode,
            jobs=len(mine),
            variants=variants,
            variants_per_second=variants / busy if busy > 0 else 0.0,
            latency_p50_seconds=percentile(latencies, 0.5),
            latency_p95_seconds=percentile(latencies, 0.95),
        )
        if mine:
            stages = sorted({stage for run in mine for stage in run.stage_seconds})
            for stage in stages:
                stats.stage_seconds[stage] = sum(run.stage_seconds.get(stage, 0.0) for run in mine) / len(
                    mine
                )
            stats.stage_seconds["total"] = busy / len(mine)
        response.modes.append(stats)
    return response
