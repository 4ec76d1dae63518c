"""No silent failures: a job whose analyses failed says so in its state, its counts, its exit code.

The provider is a loopback server speaking OpenAI's chat-completions wire format
(vcf_agent.localdev.SimulatedVendor); everything else is real: `vcf-agent run` and
`vcf-agent submit --watch` as subprocesses, the five services on an embedded log,
LanceDB, the notifier's WebSocket and gRPC streams. The input is PyVCF3's
`gatk.vcf` (real GATK output, 37 records, one ALT allele each, 29 with an rsID:
counted again with htslib below, so the expectations come from the file).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import grpc
import pysam
import vcf as pyvcf
import websockets

from tests.writer._pipeline import submit_and_finish
from vcf_agent.analysis import ProviderSettings, RouterSettings, Secret
from vcf_agent.bus import open_bus
from vcf_agent.config import Settings
from vcf_agent.localdev import SIMULATED_API_KEY, Reply, Seen, SimulatedVendor, answering
from vcf_agent.runner import ServiceHost, ensure_topology
from vcf_agent.services import aggregator, ingest, notifier, router, writer
from vcf_agent.services.ingest import file_digest, job_id_for
from vcf_agent.services.notifier import WebSocketGateway
from vcf_agent.v1 import (
    control_pb2,
    control_pb2_grpc,
    events_pb2,
    jobs_pb2,
    jobs_pb2_grpc,
    notifier_pb2,
    notifier_pb2_grpc,
)

GATK_VCF = Path(pyvcf.__file__).parent / "test" / "gatk.vcf"
NO_ID_ERROR = "Invalid 'messages': variant has no identifier."


def alleles(path: Path) -> tuple[int, int]:
    """(ALT alleles, ALT alleles of records with an ID), as htslib reads the file."""
    with pysam.VariantFile(str(path)) as vcf:
        records = list(vcf)
    return sum(len(r.alts or ()) for r in records), sum(len(r.alts or ()) for r in records if r.id)


def variant_id(seen: Seen) -> str | None:
    """The rsID in the evidence the router sent for one variant (None for a `.` ID)."""
    user = next(m["content"] for m in seen.body["messages"] if m["role"] == "user")
    facts: dict[str, Any] = json.loads(user.split("Evidence (JSON): ", 1)[1])
    return facts.get("id")


def failing_every_request(vendor: SimulatedVendor, seen: Seen) -> Reply:
    return vendor.error(500, "The server had an error while processing your request.")


def failing_variants_without_an_id(vendor: SimulatedVendor, seen: Seen) -> Reply:
    if variant_id(seen) is None:
        return vendor.error(400, "Invalid 'messages': variant has no identifier.")
    return vendor.success(
        json.dumps(
            {"classification": "benign", "criteria": ["BA1"], "rationale": "common", "confidence": 0.9}
        )
    )


def without_provider_config() -> dict[str, str]:
    """This environment minus every provider setting and API key: nothing configures an endpoint."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("VCF_AGENT_PROVIDER_") and k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")
    }


def openai_at(fake: SimulatedVendor, **fields: str) -> dict[str, str]:
    env = without_provider_config()
    env |= {"VCF_AGENT_PROVIDER_OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": SIMULATED_API_KEY}
    env |= {f"VCF_AGENT_PROVIDER_OPENAI_{name.upper()}": value for name, value in fields.items()}
    return env


async def vcf_agent(*args: str, env: Mapping[str, str]) -> tuple[int, str, str]:
    """The CLI in a child process while this loop keeps serving the fake provider."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vcf_agent", *args,
        env=dict(env), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(child.communicate(), timeout=300)
    assert child.returncode is not None
    return child.returncode, out.decode(), err.decode()


def summary_of(stdout: str) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return summary


async def test_run_where_every_openai_analysis_fails_ends_failed_exit_1_saying_why(tmp_path: Path) -> None:
    variants, _ = alleles(GATK_VCF)
    async with SimulatedVendor("openai", failing_every_request) as fake:
        code, out, err = await vcf_agent(
            "run", str(GATK_VCF), "--data-dir", str(tmp_path), "--providers", "openai", "--json",
            env=openai_at(fake, backoff_base_s="0.01"),
        )  # fmt: skip
        assert fake.requests, "the router never called the provider"
    summary = summary_of(out)
    assert code == 1, err
    assert summary["status"] == "failed"
    # Every variant is still stored, with its failed answer: nothing is lost.
    assert (summary["variants"], summary["stored"]) == (variants, variants)
    assert summary["provider_counts"] == {"openai": {"ok": 0, "failed": variants, "missing": 0}}
    reason = f"no variant was analysed: openai: {variants} of {variants} analyses failed"
    assert summary["error"].startswith(reason), summary["error"]
    # The vendor's own error text is carried through, directly or as what opened the breaker.
    assert "HTTP 500 server_error: The server had an error" in summary["error"]
    assert f"job {summary['job_id']} ended failed: {reason}" in err


async def test_run_where_some_openai_analyses_fail_ends_complete_with_errors_exit_4(tmp_path: Path) -> None:
    variants, with_id = alleles(GATK_VCF)
    without_id = variants - with_id
    assert without_id > 0 and with_id > 0
    # One call per request and a breaker that never opens: exactly the variants the server
    # rejects fail, so the counts are known from the file.
    env_fields = {"max_attempts": "1", "breaker_failures": "100000"}
    async with SimulatedVendor("openai", failing_variants_without_an_id) as fake:
        code, out, err = await vcf_agent(
            "run", str(GATK_VCF), "--data-dir", str(tmp_path), "--providers", "local,openai", "--json",
            env=openai_at(fake, **env_fields),
        )  # fmt: skip
    summary = summary_of(out)
    assert code == 4, err
    assert summary["status"] == "complete_with_errors"
    assert (summary["variants"], summary["stored"]) == (variants, variants)
    assert summary["provider_counts"] == {
        "local": {"ok": variants, "failed": 0, "missing": 0},
        "openai": {"ok": with_id, "failed": without_id, "missing": 0},
    }
    reason = (
        f"openai: {without_id} of {variants} analyses failed"
        f' ({without_id} x "openai: HTTP 400 server_error: {NO_ID_ERROR} (attempt 1)")'
    )
    assert summary["error"] == reason
    assert f"job {summary['job_id']} ended complete_with_errors: {reason}" in err

    # The stored answers agree, variant by variant: openai failed exactly where the file has no ID.
    code, out, err = await vcf_agent(
        "query", "--data-dir", str(tmp_path), "--job", summary["job_id"], "--limit", "100", "--json",
        env=without_provider_config(),
    )  # fmt: skip
    assert code == 0, err
    stored = json.loads(out)["variants"]
    assert len(stored) == variants
    for variant in stored:
        status = {a["provider"]: a["status"] for a in variant["analyses"]}
        expected = "failed" if not variant.get("variant_id") else "ok"
        assert status == {"local": "ok", "openai": expected}, variant["variant_id"]


async def test_run_with_no_openai_endpoint_configured_ends_failed_exit_1(tmp_path: Path) -> None:
    """The issue's case: `--providers openai` and no endpoint, key or setting for it at all.

    The router then uses OpenAI's public URL with no key: unreachable from an offline
    machine, refused (401) from a connected one. Either way no analysis succeeds, and
    the job must say so instead of ending `complete`.
    """
    variants, _ = alleles(GATK_VCF)
    code, out, err = await vcf_agent(
        "run", str(GATK_VCF), "--data-dir", str(tmp_path), "--providers", "openai", "--json",
        env=without_provider_config(),
    )  # fmt: skip
    summary = summary_of(out)
    assert code == 1, err
    assert summary["status"] == "failed"
    assert summary["provider_counts"] == {"openai": {"ok": 0, "failed": variants, "missing": 0}}
    reason = f"no variant was analysed: openai: {variants} of {variants} analyses failed ("
    assert f"job {summary['job_id']} ended failed: {reason}" in err


async def _services(
    stack: AsyncExitStack, tmp_path: Path, openai: ProviderSettings
) -> dict[str, ServiceHost]:
    """The five services in this process on one embedded log, each with its own gRPC server."""
    settings = Settings(
        data_dir=tmp_path / "data", bus_url=f"embedded://{tmp_path / 'bus'}", providers=("local", "openai")
    )
    bus = open_bus(settings.bus_url)
    await bus.start()
    stack.push_async_callback(bus.stop)
    await ensure_topology(bus, settings)
    llm = RouterSettings(providers={"openai": openai})
    builders = {
        "notifier": lambda: notifier.build(settings, bus),
        "writer": lambda: writer.build(settings, bus),
        "aggregator": lambda: aggregator.build(settings, bus),
        "router": lambda: router.build(settings, bus, llm),
        "ingest": lambda: ingest.build(settings, bus, router_settings=llm),
    }
    return {
        name: await stack.enter_async_context(ServiceHost(build(), bus, settings))
        for name, build in builders.items()
    }


async def test_submit_watch_getjob_and_notifications_report_complete_with_errors(tmp_path: Path) -> None:
    variants, _ = alleles(GATK_VCF)
    job_id = job_id_for("lab-a", file_digest(GATK_VCF))
    async with AsyncExitStack() as stack:
        fake = await stack.enter_async_context(SimulatedVendor("openai", failing_every_request))
        openai = ProviderSettings(
            "openai",
            "openai",
            fake.base_url,
            "gpt-test",
            api_key=Secret(SIMULATED_API_KEY),
            backoff_base_s=0.01,
        )
        hosts = await _services(stack, tmp_path, openai)
        gateway = hosts["notifier"].parts.components[0]
        assert isinstance(gateway, WebSocketGateway)

        async def websocket_until_final() -> list[dict[str, Any]]:
            seen = []
            async with websockets.connect(f"ws://127.0.0.1:{gateway.port}/jobs/{job_id}") as socket:
                async for message in socket:
                    seen.append(json.loads(message))
                    if seen[-1]["state"] == "complete_with_errors":
                        break
            return seen

        async def grpc_watch() -> list[events_pb2.Notification]:
            async with grpc.aio.insecure_channel(hosts["notifier"].control.address) as channel:
                stub = notifier_pb2_grpc.NotifierServiceStub(channel)
                request = notifier_pb2.WatchRequest(job_id=job_id, include_latest=True)
                return [note async for note in stub.Watch(request)]

        socket_events = asyncio.create_task(websocket_until_final())
        watched = asyncio.create_task(grpc_watch())
        await asyncio.sleep(0.3)  # both subscribed before the first event
        code, out, err = await vcf_agent(
            "submit", str(GATK_VCF), "--ingest", hosts["ingest"].control.address, "--tenant", "lab-a",
            "--providers", "local,openai", "--watch",
            env=without_provider_config(),
        )  # fmt: skip
        assert code == 4, (out, err)
        reason = f"openai: {variants} of {variants} analyses failed ("
        assert f"vcf-agent submit: job {job_id} ended complete_with_errors: {reason}" in err
        last = out.strip().splitlines()[-1]
        assert last.startswith("complete_with_errors") and f"openai-failed {variants}" in last, last

        async with grpc.aio.insecure_channel(hosts["ingest"].control.address) as channel:
            job = await jobs_pb2_grpc.IngestServiceStub(channel).GetJob(
                jobs_pb2.GetJobRequest(job_id=job_id), timeout=10
            )
        assert job.state == events_pb2.JOB_STATE_COMPLETE_WITH_ERRORS
        assert (job.counts.total, job.counts.stored) == (variants, variants)
        counts = {name: (c.ok, c.failed, c.missing) for name, c in job.counts.provider_counts.items()}
        assert counts == {"local": (variants, 0, 0), "openai": (0, variants, 0)}
        assert job.error.startswith(reason) and "HTTP 500 server_error" in job.error

        # The WebSocket's last event is final, with the counts as JSON numbers.
        events = await asyncio.wait_for(socket_events, timeout=30)
        final = events[-1]
        assert final["stage"] == "storage" and final["done"] == variants
        assert final["provider_counts"] == {
            "local": {"ok": variants, "failed": 0, "missing": 0},
            "openai": {"ok": 0, "failed": variants, "missing": 0},
        }
        assert final["message"] == job.error
        # The notifier's gRPC stream ends by itself at complete_with_errors.
        notes = await asyncio.wait_for(watched, timeout=30)
        assert notes[-1].state == events_pb2.JOB_STATE_COMPLETE_WITH_ERRORS


async def test_provider_failures_redriven_once_the_provider_recovers_complete_the_job(tmp_path: Path) -> None:
    """OpenAI fails permanently for the variants without an rsID; their dead letters, redriven
    through the router's control API after it recovers, are answered and the job ends complete."""
    variants, with_id = alleles(GATK_VCF)
    without_id = variants - with_id
    async with AsyncExitStack() as stack:
        fake = await stack.enter_async_context(SimulatedVendor("openai", failing_variants_without_an_id))
        openai = ProviderSettings(
            "openai", "openai", fake.base_url, "gpt-test", api_key=Secret(SIMULATED_API_KEY),
            max_attempts=1, breaker_failures=100_000,
        )  # fmt: skip
        hosts = await _services(stack, tmp_path, openai)
        job = await submit_and_finish(hosts["ingest"].control.address, GATK_VCF)
        assert job.state == events_pb2.JOB_STATE_COMPLETE_WITH_ERRORS
        counts = {name: (c.ok, c.failed, c.missing) for name, c in job.counts.provider_counts.items()}
        assert counts == {"local": (variants, 0, 0), "openai": (with_id, without_id, 0)}

        fake.script = answering()
        async with grpc.aio.insecure_channel(hosts["router"].control.address) as channel:
            control = control_pb2_grpc.ControlServiceStub(channel)
            letters = await control.ListDeadLetters(
                control_pb2.ListDeadLettersRequest(job_id=job.job_id, page_size=1000), timeout=30
            )
            assert [e.letter.error_code for e in letters.entries] == ["provider_failed"] * without_id
            redriven = await control.RedriveDeadLetters(
                control_pb2.RedriveDeadLettersRequest(job_id=job.job_id), timeout=30
            )
        assert (redriven.redriven, redriven.skipped) == (without_id, 0)

        async with grpc.aio.insecure_channel(hosts["ingest"].control.address) as channel:
            stub = jobs_pb2_grpc.IngestServiceStub(channel)
            deadline = asyncio.get_running_loop().time() + 60
            while (job := await stub.GetJob(jobs_pb2.GetJobRequest(job_id=job.job_id), timeout=10)).state != (
                events_pb2.JOB_STATE_COMPLETE
            ):
                assert asyncio.get_running_loop().time() < deadline, job
                await asyncio.sleep(0.2)
        counts = {name: (c.ok, c.failed, c.missing) for name, c in job.counts.provider_counts.items()}
        assert counts == {"local": (variants, 0, 0), "openai": (variants, 0, 0)}
        assert (job.counts.total, job.counts.stored, job.error) == (variants, variants, "")
