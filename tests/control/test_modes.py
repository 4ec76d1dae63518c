"""CompareModes: streaming and batch side by side, from the ingest service's job registry."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from vcf_agent.analysis import RouterSettings
from vcf_agent.bus import Bus
from vcf_agent.config import Settings
from vcf_agent.control import FlagStore, JobRun, compare_modes
from vcf_agent.runner import ServiceHost
from vcf_agent.services import aggregator, ingest, router, writer
from vcf_agent.services.ingest import JobRegistry
from vcf_agent.synthetic_vcf import SyntheticVcfSpec, write_synthetic_vcf
from vcf_agent.v1 import control_pb2, events_pb2

from .conftest import HostFactory, control_stub

GRPCURL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "grpcurl"


def test_figures_per_mode() -> None:
    runs = [
        JobRun("batch", 100, 1.0, {"ingest": 0.5, "analysis": 0.25, "storage": 0.25}),
        JobRun("batch", 300, 3.0, {"ingest": 1.5, "analysis": 1.0, "storage": 0.5}),
        JobRun("batch", 200, 2.0, {"ingest": 1.0, "analysis": 0.5, "storage": 0.5}),
        JobRun("batch", 400, 4.0, {"ingest": 2.0, "analysis": 1.0, "storage": 1.0}),
    ]
    streaming, batch = compare_modes(runs).modes
    assert (streaming.mode, streaming.jobs, streaming.variants, streaming.latency_p50_seconds) == (
        "streaming",
        0,
        0,
        0.0,
    )
    assert not streaming.stage_seconds
    assert (batch.mode, batch.jobs, batch.variants) == ("batch", 4, 1000)
    assert batch.variants_per_second == pytest.approx(100.0)
    assert batch.latency_p50_seconds == pytest.approx(2.5)
    assert batch.latency_p95_seconds == pytest.approx(3.85)
    assert dict(batch.stage_seconds) == pytest.approx(
        {"ingest": 1.25, "analysis": 0.6875, "storage": 0.5625, "total": 2.5}
    )


async def _finished(registry: JobRegistry, job_id: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        job = registry.get(job_id)
        if job is not None and job.state in (events_pb2.JOB_STATE_COMPLETE, events_pb2.JOB_STATE_FAILED):
            assert job.state == events_pb2.JOB_STATE_COMPLETE, job.error
            return
        assert time.monotonic() < deadline, f"job {job_id} did not finish"
        await asyncio.sleep(0.05)


async def _has_version(flags: FlagStore, key: str, version: int) -> None:
    deadline = time.monotonic() + 5
    while (flag := flags.get(key)) is None or flag.version < version:
        assert time.monotonic() < deadline, f"{key} v{version} did not reach the ingest service"
        await asyncio.sleep(0.02)


async def test_compare_modes_after_one_job_each(bus: Bus, run_host: HostFactory, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", bus_url=f"embedded://{tmp_path / 'bus'}", batch_size=400)
    offline = RouterSettings()
    ingest_parts = ingest.build(settings, bus, router_settings=offline)
    async with AsyncExitStack() as stack:
        hosts: dict[str, ServiceHost] = {}
        for parts in (
            writer.build(settings, bus),
            aggregator.build(settings, bus),
            router.build(settings, bus, offline),
            ingest_parts,
        ):
            hosts[parts.name] = await stack.enter_async_context(run_host(parts))
        stub = await stack.enter_async_context(control_stub(hosts["ingest"].control.address))
        publisher = ingest_parts.publisher
        registry = ingest_parts.registry
        totals = {}
        for mode, seed in (("streaming", 1), ("batch", 2)):
            if mode == "batch":
                # Set on the control plane; it reaches the publisher's copy through control-events.
                await stub.SetFlag(
                    control_pb2.SetFlagRequest(
                        flag=control_pb2.Flag(
                            key="ENABLE_IGGY_STREAMING",
                            type=control_pb2.FLAG_TYPE_BOOLEAN,
                            value=control_pb2.FlagValue(bool_value=False),
                        )
                    )
                )
                await _has_version(ingest_parts.flags, "ENABLE_IGGY_STREAMING", 1)
            path = write_synthetic_vcf(tmp_path / f"{mode}.vcf", SyntheticVcfSpec(records=1500, seed=seed))
            job = await publisher.submit(path)
            await _finished(registry, job.job_id)
            done = registry.get(job.job_id)
            assert done is not None and done.mode == mode
            totals[mode] = done.total

        response = await stub.CompareModes(control_pb2.CompareModesRequest())
        assert [m.mode for m in response.modes] == ["streaming", "batch"]
        for stats in response.modes:
            assert (stats.jobs, stats.variants) == (1, totals[stats.mode])
            assert stats.latency_p50_seconds == stats.latency_p95_seconds > 0
            assert stats.variants_per_second == pytest.approx(stats.variants / stats.latency_p50_seconds)
            assert set(stats.stage_seconds) == {"ingest", "analysis", "storage", "total"}
            assert all(seconds >= 0 for seconds in stats.stage_seconds.values())
            assert stats.stage_seconds["total"] == pytest.approx(stats.latency_p50_seconds)
            assert sum(v for k, v in stats.stage_seconds.items() if k != "total") == pytest.approx(
                stats.latency_p50_seconds
            )
        later = await stub.CompareModes(
            control_pb2.CompareModesRequest(since=Timestamp(seconds=int(time.time()) + 60))
        )
        assert [(m.mode, m.jobs) for m in later.modes] == [("streaming", 0), ("batch", 0)]

        if GRPCURL.exists():
            shown = await asyncio.to_thread(
                subprocess.run,
                [
                    str(GRPCURL),
                    "-plaintext",
                    "-d",
                    "{}",
                    hosts["ingest"].control.address,
                    "vcf_agent.v1.ControlService/CompareModes",
                ],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert shown.returncode == 0, shown.stderr
            modes = {m["mode"]: m for m in json.loads(shown.stdout)["modes"]}
            assert {mode: int(m["jobs"]) for mode, m in modes.items()} == {"streaming": 1, "batch": 1}
            assert {mode: int(m["variants"]) for mode, m in modes.items()} == totals
            # grpcurl prints the proto's own field names.
            assert all(m["latency_p95_seconds"] > 0 and m["variants_per_second"] > 0 for m in modes.values())
            assert all(
                set(m["stage_seconds"]) == {"ingest", "analysis", "storage", "total"} for m in modes.values()
            )

        async with control_stub(hosts["writer"].control.address) as other:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await other.CompareModes(control_pb2.CompareModesRequest())
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "call CompareModes on ingest" in (refused.value.details() or "")
    if not GRPCURL.exists():
        pytest.skip(f"grpcurl binary missing at {GRPCURL}; the Python stub checks passed")
