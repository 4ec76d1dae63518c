"""Streaming versus batch per job: the flags choose, fallback rescues, both paths store the same."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from google.protobuf import json_format

from vcf_agent.app.pipeline import LocalPipeline
from vcf_agent.bus import (
    Bus,
    BusUnavailableError,
    Consumer,
    OutgoingMessage,
    PublishedPosition,
    StartPosition,
    StreamSpec,
    open_bus,
)
from vcf_agent.config import Settings
from vcf_agent.control import FlagStore
from vcf_agent.services.ingest import JobRecord, JobRegistry, choose_mode
from vcf_agent.services.writer import VariantQuery
from vcf_agent.synthetic_vcf import SyntheticVcfSpec, write_synthetic_vcf
from vcf_agent.v1 import analysis_pb2, control_pb2, events_pb2, jobs_pb2, query_pb2


class RefusingBus(Bus):
    """A real bus whose publishes to one stream fail, or that reports itself unhealthy.

    Stands in for a streaming broker that is down while the writes path still works.
    """

    def __init__(self, inner: Bus, refused_stream: str, *, unhealthy: bool = False) -> None:
        self.inner = inner
        self.backend = f"refusing-{inner.backend}"
        self._refused = refused_stream
        self._unhealthy = unhealthy

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def ensure_streams(self, specs: Sequence[StreamSpec]) -> None:
        await self.inner.ensure_streams(specs)

    async def partitions(self, stream: str) -> int:
        return await self.inner.partitions(stream)

    async def publish(self, stream: str, messages: Sequence[OutgoingMessage]) -> list[PublishedPosition]:
        if stream == self._refused:
            raise BusUnavailableError(f"{stream}: connection refused")
        return await self.inner.publish(stream, messages)

    def consumer(
        self,
        streams: Sequence[str],
        group: str,
        *,
        start: StartPosition = "earliest",
        max_in_flight: int = 1000,
    ) -> Consumer:
        return self.inner.consumer(streams, group, start=start, max_in_flight=max_in_flight)

    async def committed_offsets(self, group: str, stream: str) -> dict[int, int]:
        return await self.inner.committed_offsets(group, stream)

    async def end_offsets(self, stream: str) -> dict[int, int]:
        return await self.inner.end_offsets(stream)

    async def set_committed_offsets(self, group: str, stream: str, offsets: Mapping[int, int]) -> None:
        await self.inner.set_committed_offsets(group, stream, offsets)

    async def offsets_for_timestamp(self, stream: str, timestamp_ms: int) -> dict[int, int]:
        return await self.inner.offsets_for_timestamp(stream, timestamp_ms)

    async def healthy(self) -> bool:
        return not self._unhealthy and await self.inner.healthy()


def _settings(tmp_path: Path, name: str) -> Settings:
    # Small ingest batches, so the batch path really runs several batches at once.
    return Settings(
        data_dir=tmp_path / name, bus_url=f"memory://modes-{tmp_path.name}-{name}", batch_size=500
    )


def _flag(key: str, value: bool) -> control_pb2.Flag:
    return control_pb2.Flag(
        key=key, type=control_pb2.FLAG_TYPE_BOOLEAN, value=control_pb2.FlagValue(bool_value=value)
    )


def _rollout(percentage: float, bucket_by: str = "") -> control_pb2.Flag:
    return control_pb2.Flag(
        key="IGGY_PERCENTAGE_ROLLOUT",
        type=control_pb2.FLAG_TYPE_PERCENTAGE_ROLLOUT,
        percentage=percentage,
        bucket_by=bucket_by,
    )


def _job(i: int, tenant: str = "lab") -> JobRecord:
    return JobRecord(f"job-{i}", tenant, f"file-{i}", f"f{i}.vcf")


async def test_flags_choose_the_mode_per_job_stickily(tmp_path: Path) -> None:
    bus = open_bus(f"memory://choose-{tmp_path.name}")
    await bus.start()
    await bus.ensure_streams([StreamSpec("control-events", 1)])
    flags = FlagStore(tmp_path / "flags.sqlite", bus, "control-events", "test", group="choose")
    await flags.start()
    try:
        jobs = [_job(i) for i in range(2000)]
        assert {choose_mode(flags, j).mode for j in jobs} == {"streaming"}, "no flags: today's behaviour"
        assert choose_mode(flags, jobs[0]).fallback

        await flags.set(_rollout(30), None, "test")
        first = {j.job_id for j in jobs if choose_mode(flags, j).mode == "streaming"}
        assert 0.25 < len(first) / len(jobs) < 0.35
        assert first == {j.job_id for j in jobs if choose_mode(flags, j).mode == "streaming"}, "sticky"
        await flags.set(_rollout(60), None, "test")
        second = {j.job_id for j in jobs if choose_mode(flags, j).mode == "streaming"}
        assert 0.55 < len(second) / len(jobs) < 0.65
        assert first < second, "raising the rollout only moves jobs from batch to streaming"

        # Bucketed by tenant: every job of one tenant gets the same mode.
        await flags.set(_rollout(50, "tenant_id"), None, "test")
        for tenant in ("lab-a", "lab-b", "lab-c", "lab-d"):
            modes = {choose_mode(flags, _job(i, tenant)).mode for i in range(50)}
            assert len(modes) == 1
        await flags.set(_rollout(0), None, "test")
        assert {choose_mode(flags, j).mode for j in jobs[:200]} == {"batch"}
        await flags.set(_rollout(100), None, "test")
        assert {choose_mode(flags, j).mode for j in jobs[:200]} == {"streaming"}

        await flags.set(_flag("ENABLE_IGGY_STREAMING", False), None, "test")
        assert {choose_mode(flags, j).mode for j in jobs[:200]} == {"batch"}, "disabled beats the rollout"
        await flags.set(_flag("FALLBACK_TO_BATCH", False), None, "test")
        assert not choose_mode(flags, jobs[0]).fallback
    finally:
        await flags.stop()
        await bus.stop()


async def _run(pipeline: LocalPipeline, path: Path) -> jobs_pb2.Job:
    job_id = await pipeline.submit(path)
    return await pipeline.wait(job_id, timeout_s=120)


def _normalised(variants: list[query_pb2.StoredVariant]) -> list[bytes]:
    """Stored variants with what differs between any two runs (provider timing) removed."""
    out = []
    for variant in sorted(variants, key=lambda v: v.correlation_id):
        for analysis in variant.analyses:
            detail = analysis_pb2.AnalysisResult()
            json_format.Parse(analysis.detail_json, detail)
            detail.ClearField("latency_ms")
            detail.ClearField("completed_at")
            analysis.detail_json = json_format.MessageToJson(detail, indent=None, sort_keys=True)
        out.append(variant.SerializeToString(deterministic=True))
    return out


async def _stored(pipeline: LocalPipeline, job_id: str) -> tuple[list[bytes], int, object]:
    lance, graph = pipeline.writer.lance, pipeline.writer.graph
    variants, total = await asyncio.to_thread(lance.query, VariantQuery(job_id=job_id, limit=1_000_000))
    assert total == len(variants)
    analyses = await asyncio.to_thread(lance.count_analyses, job_id)
    return _normalised(variants), analyses, await asyncio.to_thread(graph.counts)


async def test_both_paths_store_identical_results(tmp_path: Path) -> None:
    path = write_synthetic_vcf(
        tmp_path / "same.vcf",
        SyntheticVcfSpec(records=3000, samples=3, seed=5, multi_allelic_fraction=0.1, indel_fraction=0.1),
    )
    stored = {}
    for mode in ("streaming", "batch"):
        async with LocalPipeline(_settings(tmp_path, mode)) as pipeline:
            if mode == "batch":
                await pipeline.flags.set(_flag("ENABLE_IGGY_STREAMING", False), None, "test")
            job = await _run(pipeline, path)
            assert events_pb2.JobState.Name(job.state) == "JOB_STATE_COMPLETE", job.error
            assert job.mode == mode
            assert job.counts.stored == job.counts.total > 3000
            stored[mode] = await _stored(pipeline, job.job_id)
    streaming, batch = stored["streaming"], stored["batch"]
    assert len(batch[0]) == len(streaming[0])
    assert batch[0] == streaming[0], "same variants with the same analyses"
    assert batch[1] == streaming[1] > 0
    assert batch[2] == streaming[2], "same graph"


@pytest.mark.parametrize("fault", ["refused", "unhealthy"])
async def test_streaming_that_cannot_start_falls_back_to_batch(tmp_path: Path, fault: str) -> None:
    settings = _settings(tmp_path, fault)
    bus = RefusingBus(open_bus(settings.bus_url), settings.topology.variants, unhealthy=fault == "unhealthy")
    path = write_synthetic_vcf(tmp_path / "f.vcf", SyntheticVcfSpec(records=800, samples=2, seed=2))
    async with LocalPipeline(settings, bus=bus) as pipeline:
        job = await _run(pipeline, path)
        assert events_pb2.JobState.Name(job.state) == "JOB_STATE_COMPLETE", job.error
        assert job.mode == "batch"
        lance = pipeline.writer.lance
        assert await asyncio.to_thread(lance.count, job.job_id) == job.counts.total > 0


async def test_without_fallback_a_job_whose_stream_cannot_start_fails_clearly(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "nofallback")
    bus = RefusingBus(open_bus(settings.bus_url), settings.topology.variants)
    path = write_synthetic_vcf(tmp_path / "f.vcf", SyntheticVcfSpec(records=100, samples=1, seed=3))
    async with LocalPipeline(settings, bus=bus) as pipeline:
        await pipeline.flags.set(_flag("FALLBACK_TO_BATCH", False), None, "test")
        job = await _run(pipeline, path)
        lance = pipeline.writer.lance
        stored = await asyncio.to_thread(lance.count, job.job_id)
    assert events_pb2.JobState.Name(job.state) == "JOB_STATE_FAILED"
    assert "streaming could not start" in job.error
    assert "vcf-variants refused the job's first message" in job.error
    assert "FALLBACK_TO_BATCH is off" in job.error
    assert stored == 0


def test_an_older_job_table_gains_the_stage_columns(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    with sqlite3.connect(path) as db:
        # The table as registries created it before stage marks existed.
        db.execute(
            "CREATE TABLE jobs (job_id TEXT PRIMARY KEY, tenant_id TEXT, file_id TEXT,"
            " source_name TEXT, state INTEGER, ingested INTEGER, analysed INTEGER, stored INTEGER,"
            " dead_lettered INTEGER, total INTEGER, samples INTEGER, providers TEXT, error TEXT, mode TEXT,"
            " submissions INTEGER, created_at REAL, updated_at REAL)"
        )
        db.execute(
            "INSERT INTO jobs VALUES ('job-old', 't', 'f', 'old.vcf', 5, 9, 9, 9, 0, 9, 1, 'local', '',"
            " 'streaming', 1, 1.0, 2.0)"
        )
    registry = JobRegistry(path)
    try:
        old = registry.get("job-old")
        assert old is not None and old.total == 9 and old.started_at == 0.0
        assert (old.file_issues, old.more_file_issues) == ([], False)
        assert registry.job_runs() == [], "a run without stage marks is not compared"
        registry.mark(old, "started_at", 10.0)
        registry.mark(old, "finished_at", 13.0)
        registry.save(old)  # a full save keeps the marks
        again = registry.get("job-old")
        assert again is not None and (again.started_at, again.finished_at) == (10.0, 13.0)
        (run,) = registry.job_runs()
        assert (run.mode, run.variants, run.latency_s) == ("streaming", 9, 3.0)
        assert sum(run.stage_seconds.values()) == pytest.approx(3.0)
    finally:
        registry.close()
    reopened = JobRegistry(path)
    try:
        again = reopened.get("job-old")
        assert again is not None and again.finished_at == 13.0
    finally:
        reopened.close()
