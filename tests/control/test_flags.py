"""Flags across two in-process services sharing one log: versions, audit, watch, errors."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from google.rpc import error_details_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status

from tests.control.conftest import HostFactory, control_stub, probe_service
from vcf_agent.bus import Bus
from vcf_agent.runner import ServiceHost
from vcf_agent.v1 import control_pb2


def boolean_flag(key: str, value: bool) -> control_pb2.Flag:
    return control_pb2.Flag(
        key=key, type=control_pb2.FLAG_TYPE_BOOLEAN, value=control_pb2.FlagValue(bool_value=value)
    )


async def test_set_on_one_service_is_evaluated_on_the_other_within_a_second(
    bus: Bus, run_host: HostFactory
) -> None:
    async with (
        run_host(probe_service(bus, "alpha")[0]) as alpha,
        run_host(probe_service(bus, "beta")[0]) as beta,
        control_stub(alpha.control.address) as a,
        control_stub(beta.control.address) as b,
    ):
        set_at = time.monotonic()
        response = await a.SetFlag(
            control_pb2.SetFlagRequest(flag=boolean_flag("ENABLE_IGGY_STREAMING", True), expected_version=0)
        )
        assert response.flag.version == 1
        while True:
            try:
                evaluated = await b.EvaluateFlag(control_pb2.EvaluateFlagRequest(key="ENABLE_IGGY_STREAMING"))
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.NOT_FOUND
                # A hang guard only: how fast a flag spreads is load, not logic.
                assert time.monotonic() - set_at < 30, "the change never reached the other service"
                await asyncio.sleep(0.02)
        assert evaluated.value.bool_value is True
        assert (evaluated.version, evaluated.reason, evaluated.variant) == (1, "STATIC", "default")


async def test_stale_write_is_aborted_and_audit_keeps_every_accepted_change(
    bus: Bus, run_host: HostFactory
) -> None:
    async with (
        run_host(probe_service(bus, "alpha")[0]) as alpha,
        run_host(probe_service(bus, "beta")[0]) as beta,
        control_stub(alpha.control.address) as a,
        control_stub(beta.control.address) as b,
    ):
        await a.SetFlag(
            control_pb2.SetFlagRequest(flag=boolean_flag("FALLBACK_TO_BATCH", True), expected_version=0)
        )
        second = await a.SetFlag(
            control_pb2.SetFlagRequest(flag=boolean_flag("FALLBACK_TO_BATCH", False), expected_version=1),
            metadata=[("x-actor", "ops-bob")],
        )
        assert second.flag.version == 2
        with pytest.raises(grpc.aio.AioRpcError) as stale:
            await a.SetFlag(
                control_pb2.SetFlagRequest(flag=boolean_flag("FALLBACK_TO_BATCH", True), expected_version=1)
            )
        assert stale.value.code() == grpc.StatusCode.ABORTED
        assert "version 2" in (stale.value.details() or "")

        # Both services race to write version 3 from version 2: the log picks one winner everywhere.
        await wait_for_version(beta, "FALLBACK_TO_BATCH", 2)
        results = await asyncio.gather(
            a.SetFlag(
                control_pb2.SetFlagRequest(flag=boolean_flag("FALLBACK_TO_BATCH", True), expected_version=2)
            ),
            b.SetFlag(
                control_pb2.SetFlagRequest(flag=boolean_flag("FALLBACK_TO_BATCH", False), expected_version=2)
            ),
            return_exceptions=True,
        )
        codes = sorted(r.code().name if isinstance(r, grpc.aio.AioRpcError) else "OK" for r in results)
        assert codes == ["ABORTED", "OK"], results
        await wait_for_version(alpha, "FALLBACK_TO_BATCH", 3)
        await wait_for_version(beta, "FALLBACK_TO_BATCH", 3)
        assert alpha.flags.get("FALLBACK_TO_BATCH") == beta.flags.get("FALLBACK_TO_BATCH")

        audit_a = await a.ListFlagAudit(control_pb2.ListFlagAuditRequest(key="FALLBACK_TO_BATCH"))
        audit_b = await b.ListFlagAudit(control_pb2.ListFlagAuditRequest(key="FALLBACK_TO_BATCH"))
        assert [e.version for e in audit_a.entries] == [1, 2, 3]
        assert audit_a == audit_b
        assert audit_a.entries[1].actor == "unauthenticated:ops-bob"
        assert audit_a.entries[1].previous.value.bool_value is True
        assert audit_a.entries[1].flag.value.bool_value is False
        assert all(e.origin in ("alpha", "beta") and e.timestamp.seconds > 0 for e in audit_a.entries)
        page = await a.ListFlagAudit(control_pb2.ListFlagAuditRequest(page_size=2))
        rest = await a.ListFlagAudit(
            control_pb2.ListFlagAuditRequest(page_size=2, page_token=page.next_page_token)
        )
        assert [e.version for e in [*page.entries, *rest.entries]] == [1, 2, 3] and not rest.next_page_token


async def wait_for_version(host: ServiceHost, key: str, version: int) -> None:
    deadline = time.monotonic() + 2
    while (flag := host.flags.get(key)) is None or flag.version < version:
        assert time.monotonic() < deadline, f"{host.parts.name} never reached {key} v{version}"
        await asyncio.sleep(0.01)


def bad_request_fields(error: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "no google.rpc.Status in the trailers"
    fields: list[str] = []
    for detail in status.details:
        request = error_details_pb2.BadRequest()
        assert detail.Unpack(request)
        fields.extend(v.field for v in request.field_violations)
    return fields


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (control_pb2.SetFlagRequest(), "flag"),
        (control_pb2.SetFlagRequest(flag=control_pb2.Flag(type=control_pb2.FLAG_TYPE_BOOLEAN)), "flag.key"),
        (control_pb2.SetFlagRequest(flag=control_pb2.Flag(key="x")), "flag.type"),
        (
            control_pb2.SetFlagRequest(flag=control_pb2.Flag(key="x", type=control_pb2.FLAG_TYPE_NUMBER)),
            "flag.value",
        ),
        (
            control_pb2.SetFlagRequest(
                flag=control_pb2.Flag(key="x", type=control_pb2.FLAG_TYPE_PERCENTAGE_ROLLOUT, percentage=120)
            ),
            "flag.percentage",
        ),
    ],
)
async def test_bad_flag_requests_name_the_field(
    bus: Bus, run_host: HostFactory, request_: control_pb2.SetFlagRequest, field: str
) -> None:
    async with run_host(probe_service(bus)[0]) as host, control_stub(host.control.address) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.SetFlag(request_)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_request_fields(error.value) == [field]


async def test_evaluate_errors_and_rollout_needs_a_unit(bus: Bus, run_host: HostFactory) -> None:
    async with run_host(probe_service(bus)[0]) as host, control_stub(host.control.address) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.EvaluateFlag(control_pb2.EvaluateFlagRequest(key="nope"))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as no_key:
            await stub.EvaluateFlag(control_pb2.EvaluateFlagRequest())
        assert bad_request_fields(no_key.value) == ["key"]
        await stub.SetFlag(
            control_pb2.SetFlagRequest(
                flag=control_pb2.Flag(
                    key="IGGY_PERCENTAGE_ROLLOUT",
                    type=control_pb2.FLAG_TYPE_PERCENTAGE_ROLLOUT,
                    percentage=50,
                    bucket_by="tenant_id",
                    on_value=control_pb2.FlagValue(string_value="streaming"),
                    off_value=control_pb2.FlagValue(string_value="batch"),
                )
            )
        )
        with pytest.raises(grpc.aio.AioRpcError) as no_unit:
            await stub.EvaluateFlag(control_pb2.EvaluateFlagRequest(key="IGGY_PERCENTAGE_ROLLOUT"))
        assert bad_request_fields(no_unit.value) == ["context[tenant_id]"]
        seen = set()
        for tenant in ("lab-a", "lab-b", "lab-c", "lab-d", "lab-e", "lab-f", "lab-g", "lab-h"):
            result = await stub.EvaluateFlag(
                control_pb2.EvaluateFlagRequest(key="IGGY_PERCENTAGE_ROLLOUT", context={"tenant_id": tenant})
            )
            assert result.reason == "SPLIT"
            assert (result.variant, result.value.string_value) in (("on", "streaming"), ("off", "batch"))
            seen.add(result.variant)
        assert seen == {"on", "off"}


async def test_watch_streams_current_state_then_changes_and_flags_survive_restart(
    bus: Bus, run_host: HostFactory
) -> None:
    parts = probe_service(bus)[0]
    async with run_host(parts) as host, control_stub(host.control.address) as stub:
        await stub.SetFlag(control_pb2.SetFlagRequest(flag=boolean_flag("a", True)))
        watch = stub.WatchFlags(control_pb2.WatchFlagsRequest())
        initial = await watch.read()
        assert initial.initial and initial.flag.key == "a" and initial.flag.version == 1
        synced = await watch.read()
        assert synced.synced and not synced.HasField("flag")
        await stub.SetFlag(control_pb2.SetFlagRequest(flag=boolean_flag("b", False)))
        change = await asyncio.wait_for(watch.read(), 2)
        assert not change.initial and change.flag.key == "b"
        watch.cancel()
        quiet = stub.WatchFlags(control_pb2.WatchFlagsRequest(keys=["zzz"]), timeout=0.3)
        assert (await quiet.read()).synced
        with pytest.raises(grpc.aio.AioRpcError) as deadline:
            await quiet.read()
        assert deadline.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    async with run_host(probe_service(bus)[0]) as again, control_stub(again.control.address) as stub:
        # Loaded from SQLite at once, before the log is even read.
        listed = await stub.ListFlags(control_pb2.ListFlagsRequest())
        assert [(f.key, f.version) for f in listed.flags] == [("a", 1), ("b", 1)]
