"""A job whose counts stop moving is reported `stalled` (GetJob, notification, metric) and leaves
that state when a count moves again; jobs ended are forgotten, and their checkpoints deleted."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import REGISTRY

from vcf_agent.bus import Bus, open_bus
from vcf_agent.config import Settings
from vcf_agent.v1 import events_pb2

from ._published import published
from ._vcf_text import GOOD, record, write_vcf
from ._watched_ingest import watched_ingest


async def _notifications(bus: Bus, stream: str, job_id: str) -> list[events_pb2.Notification]:
    return [note for note in await published(bus, stream, events_pb2.Notification) if note.job_id == job_id]


async def test_a_job_without_progress_is_stalled_until_a_count_moves(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", bus_url=f"memory://watchdog-{tmp_path.name}", job_stall_s=30.0
    )
    bus = open_bus(settings.bus_url)
    async with watched_ingest(bus, settings, tmp_path) as (registry, checkpoints, publisher, watchdog):
        path = write_vcf(tmp_path / "two.vcf", [GOOD, record(pos="200")])
        job = await publisher.submit(path)
        await publisher.wait(job.job_id)
        # Ingest read it all (nothing downstream runs here): the total is known, the checkpoint
        # stays (finished) so the job could be published again.
        read = registry.get(job.job_id)
        assert read is not None and read.total == 2
        kept = checkpoints.get(job.job_id)
        assert kept is not None and kept.finished and kept.at.variants == 2

        await watchdog.tick(now=1000.0)
        await watchdog.tick(now=1029.0)
        assert registry.get(job.job_id).state == events_pb2.JOB_STATE_ANALYSING  # type: ignore[union-attr]
        await watchdog.tick(now=1030.0)
        stalled = registry.get(job.job_id)
        assert stalled is not None and stalled.state == events_pb2.JOB_STATE_STALLED
        shown = stalled.to_proto()
        assert shown.stall_detail == "no progress for 30 s (ingested 2, analysed 0, stored 0 of 2)"
        assert REGISTRY.get_sample_value("jobs_stalled") == 1
        notes = await _notifications(bus, settings.topology.user_notifications, job.job_id)
        assert [n.message for n in notes if n.state == events_pb2.JOB_STATE_STALLED] == [shown.stall_detail]

        # Its own notice (or any note that moves nothing) keeps it stalled; progress ends it.
        for note in notes:
            registry.apply(note)
        assert registry.get(job.job_id).state == events_pb2.JOB_STATE_STALLED  # type: ignore[union-attr]
        registry.apply(
            events_pb2.Notification(
                job_id=job.job_id,
                stage=events_pb2.STAGE_ANALYSIS,
                state=events_pb2.JOB_STATE_ANALYSING,
                done=1,
            )
        )
        moving = registry.get(job.job_id)
        assert moving is not None and moving.state == events_pb2.JOB_STATE_ANALYSING
        assert (moving.analysed, moving.to_proto().stall_detail) == (1, "")
        await watchdog.tick(now=1031.0)
        assert REGISTRY.get_sample_value("jobs_stalled") == 0

        # Once the job ends the watchdog forgets it, and ingest its checkpoint.
        registry.apply(
            events_pb2.Notification(
                job_id=job.job_id,
                stage=events_pb2.STAGE_STORAGE,
                state=events_pb2.JOB_STATE_COMPLETE,
                done=2,
                total=2,
            )
        )
        await watchdog.tick(now=1032.0)
        assert checkpoints.get(job.job_id) is None
