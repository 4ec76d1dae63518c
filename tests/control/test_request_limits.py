"""Every request field has a documented bound, checked over real gRPC before any servicer runs.

The cases are derived from REQUEST_LIMITS itself: for each bounded field of
each RPC, a request holding one value just past the bound is sent to a real
server, which must answer INVALID_ARGUMENT naming that field (its path in the
request) without repeating the value. A test walks the request descriptors so
a field added to a .proto without a bound fails here, and the README table
must say what the code enforces.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message

from tests._grpc_errors import violated_field
from vcf_agent.bus import open_bus
from vcf_agent.config import ConfigError, Settings
from vcf_agent.control import (
    MAX_PAGE_BYTES,
    REQUEST_LIMITS,
    Bound,
    SecuritySettings,
    request_fields,
    request_violation,
)
from vcf_agent.runner import ServiceHost, ensure_topology
from vcf_agent.schema import INT64_MAX
from vcf_agent.services import ingest, notifier, writer
from vcf_agent.v1 import control_pb2, jobs_pb2, notifier_pb2, query_pb2

README = Path(__file__).resolve().parents[2] / "README.md"
SERVICES = {
    "vcf_agent.v1.IngestService": jobs_pb2,
    "vcf_agent.v1.QueryService": query_pb2,
    "vcf_agent.v1.ControlService": control_pb2,
    "vcf_agent.v1.NotifierService": notifier_pb2,
}


def methods() -> Iterator[MethodDescriptor]:
    for name, module in SERVICES.items():
        yield from module.DESCRIPTOR.services_by_name[name.rsplit(".", 1)[1]].methods


def bounded(field: FieldDescriptor) -> bool:
    """Fields that need a bound: every one but booleans and single nested messages (their fields do)."""
    if field.type == FieldDescriptor.TYPE_BOOL:
        return False
    return field.type != FieldDescriptor.TYPE_MESSAGE or field.is_repeated


def test_every_request_field_has_a_bound_and_every_bound_a_field() -> None:
    fields = {f.full_name for m in methods() for f in request_fields(m.input_type) if bounded(f)}
    assert sorted(fields - set(REQUEST_LIMITS)) == []
    assert sorted(set(REQUEST_LIMITS) - fields) == []


def readme_rows() -> dict[str, str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("### Request limits", 1)[1].split("\n#", 1)[0]
    return dict(re.findall(r"^\| `([\w.]+)` \| (.+?) \|$", section, flags=re.M))


def test_the_readme_table_states_every_bound_as_enforced() -> None:
    assert readme_rows() == {name: bound.rule for name, bound in REQUEST_LIMITS.items()}


def past(field: FieldDescriptor, bound: Bound) -> list[Any]:
    """Values one step outside the bound, each as the field would hold it."""
    if field.type == FieldDescriptor.TYPE_ENUM:
        return [max(v.number for v in field.enum_type.values) + 1]
    if field.type == FieldDescriptor.TYPE_BYTES:
        return [b"\0" * (bound.max_bytes + 1)]
    if field.type == FieldDescriptor.TYPE_STRING:
        values = ["7" * (bound.max_chars + 1)]
        if bound.pattern is not None or bound.check is not None:
            values.append("a/b c")  # '/' and ' ' are outside every pattern and the region syntax
        return values
    if field.type == FieldDescriptor.TYPE_DOUBLE:
        values = [float("nan"), float("inf")]
        if bound.maximum is not None:
            values.append(bound.maximum + 1)
        return values
    low = bound.minimum
    high = bound.maximum
    assert low is not None and high is not None, field.full_name
    limit = (1 << 31) - 1 if field.cpp_type == FieldDescriptor.CPPTYPE_INT32 else INT64_MAX
    values = [int(low) - 1] if low > -limit - 1 else []
    return values + ([int(high) + 1] if high < limit else [])


Case = tuple[MethodDescriptor, Message, str, Any, str]


def cases() -> Iterator[Case]:
    """(RPC, request, field path, value, bounded field) for every bounded field reachable from every RPC."""
    for method in methods():
        yield from _cases_in(method, method.input_type, [])


def _cases_in(method: MethodDescriptor, message: Descriptor, path: list[FieldDescriptor]) -> Iterator[Case]:
    for field in message.fields:
        bound = REQUEST_LIMITS.get(field.full_name)
        if field.message_type is not None and not field.message_type.GetOptions().map_entry:
            if bound is not None:  # a repeated message: one entry too many
                yield (
                    method,
                    _request(method, [*path, field], None),
                    _path([*path, field]),
                    "items",
                    field.full_name,
                )
            if field.message_type.full_name not in {m.full_name for m in _types(path)}:
                yield from _cases_in(method, field.message_type, [*path, field])
            continue
        if field.message_type is not None:  # a map: one entry too many, then each side of an entry
            assert bound is not None
            yield (
                method,
                _request(method, [*path, field], None),
                _path([*path, field]),
                "items",
                field.full_name,
            )
            for side in ("key", "value"):
                entry = field.message_type.fields_by_name[side]
                for value in past(entry, REQUEST_LIMITS[entry.full_name]):
                    request = _request(method, [*path, field], (side, value))
                    yield method, request, _path([*path, field]), value, entry.full_name
            continue
        if bound is None:
            continue
        if bound.max_items:
            yield (
                method,
                _request(method, [*path, field], None),
                _path([*path, field]),
                "items",
                field.full_name,
            )
        for value in past(field, bound):
            yield (
                method,
                _request(method, [*path, field], value),
                _path([*path, field]),
                value,
                field.full_name,
            )


def _types(path: list[FieldDescriptor]) -> list[Descriptor]:
    return [f.message_type for f in path if f.message_type is not None]


def _path(path: list[FieldDescriptor]) -> str:
    return ".".join(f.name for f in path)


def _request(method: MethodDescriptor, path: list[FieldDescriptor], value: Any) -> Message:
    """A request with only the field at `path` set: to `value`, or (value None) to one entry too many."""
    module = SERVICES[method.containing_service.full_name]
    request: Message = getattr(module, method.input_type.name)()
    target: Any = request
    for field in path[:-1]:
        target = getattr(target, field.name)
        if field.is_repeated:
            target = target.add()
    last = path[-1]
    container = getattr(target, last.name) if last.is_repeated else None
    if value is None:
        bound = REQUEST_LIMITS[last.full_name]
        for index in range(bound.max_items + 1):
            if last.message_type is not None and last.message_type.GetOptions().map_entry:
                container[f"k{index}"] = "v"
            elif last.message_type is not None:
                container.add()
            else:
                container.append("x")
    elif isinstance(value, tuple) and container is not None and last.message_type is not None:
        side, bad = value
        container[bad if side == "key" else "k"] = "v" if side == "key" else bad
    elif container is not None:
        container.append(value)
    else:
        setattr(target, last.name, value)
    return request


@pytest.fixture
async def addresses(tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """Ingest, writer and notifier on real gRPC servers; ControlService rides on each."""
    settings = Settings(data_dir=tmp_path, bus_url=f"embedded://{tmp_path / 'bus'}")
    bus = open_bus(settings.bus_url)
    await bus.start()
    await ensure_topology(bus, settings)
    try:
        async with AsyncExitStack() as stack:
            found = {}
            for parts, service in (
                (ingest.build(settings, bus), "vcf_agent.v1.IngestService"),
                (writer.build(settings, bus), "vcf_agent.v1.QueryService"),
                (notifier.build(settings, bus), "vcf_agent.v1.NotifierService"),
            ):
                host = await stack.enter_async_context(ServiceHost(parts, bus, settings))
                found[service] = host.control.address
            found["vcf_agent.v1.ControlService"] = found["vcf_agent.v1.IngestService"]
            yield found
    finally:
        await bus.stop()


async def call(channel: grpc.aio.Channel, method: MethodDescriptor, request: Message) -> None:
    """Send one request the way its RPC takes it and read the first answer."""
    name = f"/{method.containing_service.full_name}/{method.name}"
    serialize, parse = type(request).SerializeToString, lambda data: data
    if method.client_streaming:

        async def one() -> AsyncIterator[Message]:
            yield request

        if method.server_streaming:
            raise AssertionError("no bidirectional RPCs")
        await channel.stream_unary(name, request_serializer=serialize, response_deserializer=parse)(
            one(), timeout=30
        )
    elif method.server_streaming:
        stream = channel.unary_stream(name, request_serializer=serialize, response_deserializer=parse)(
            request, timeout=30
        )
        await stream.read()
    else:
        await channel.unary_unary(name, request_serializer=serialize, response_deserializer=parse)(
            request, timeout=30
        )


async def test_a_value_past_any_bound_is_refused_naming_its_field(addresses: dict[str, str]) -> None:
    covered: set[str] = set()
    channels: dict[str, grpc.aio.Channel] = {}
    try:
        for method, request, path, value, bounded_field in cases():
            address = addresses[method.containing_service.full_name]
            channel = channels.setdefault(
                address,
                grpc.aio.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)]),
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(channel, method, request)
            error = refused.value
            where = f"{method.full_name} {path} {str(value)[:40]!r}"
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, where
            assert re.sub(r"\[\d+\]", "", violated_field(error)) == path, where
            # The rule, never the input: short, and without the offending value.
            details = error.details() or ""
            assert len(details) < 400, where
            if isinstance(value, str) and len(value) > 8:
                assert value not in details, where
            covered.add(bounded_field)
    finally:
        for channel in channels.values():
            await channel.close()
    assert covered == set(REQUEST_LIMITS)


async def test_the_reported_oversized_inputs_are_refused_without_echo(addresses: dict[str, str]) -> None:
    """The two inputs of the report: a region past int64 reached LanceDB; a 5 MB job id came back."""
    options = [("grpc.max_send_message_length", 64 << 20)]
    async with (
        grpc.aio.insecure_channel(addresses["vcf_agent.v1.QueryService"]) as query_channel,
        grpc.aio.insecure_channel(addresses["vcf_agent.v1.IngestService"], options=options) as ingest_channel,
    ):
        query = query_pb2.DESCRIPTOR.services_by_name["QueryService"].methods_by_name["QueryVariants"]
        with pytest.raises(grpc.aio.AioRpcError) as region:
            await call(
                query_channel, query, query_pb2.QueryVariantsRequest(region="chr1:1-99999999999999999999")
            )
        assert region.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violated_field(region.value) == "region"
        assert "BETWEEN" not in (region.value.details() or "")
        assert "99999999999999999999" not in (region.value.details() or "")
        # The largest int64 position is a valid query (nothing stored there).
        ok = await query_channel.unary_unary(
            f"/{query.containing_service.full_name}/{query.name}",
            request_serializer=query_pb2.QueryVariantsRequest.SerializeToString,
            response_deserializer=query_pb2.QueryVariantsResponse.FromString,
        )(query_pb2.QueryVariantsRequest(region=f"chr1:1-{INT64_MAX}"), timeout=30)
        assert ok.total == 0

        get_job = jobs_pb2.DESCRIPTOR.services_by_name["IngestService"].methods_by_name["GetJob"]
        huge = "job-" + "a" * (5 << 20)
        with pytest.raises(grpc.aio.AioRpcError) as job:
            await call(ingest_channel, get_job, jobs_pb2.GetJobRequest(job_id=huge))
        assert job.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violated_field(job.value) == "job_id"
        assert len(job.value.details() or "") < 200
        # At the bound the id is accepted and merely unknown.
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await call(ingest_channel, get_job, jobs_pb2.GetJobRequest(job_id="j" * 128))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_values_at_a_bound_pass_and_one_past_it_do_not() -> None:
    assert request_violation(jobs_pb2.GetJobRequest(job_id="j" * 128)) is None
    assert request_violation(jobs_pb2.GetJobRequest(job_id="j" * 129)) is not None
    assert request_violation(query_pb2.QueryVariantsRequest(page_size=1000, page_token="9" * 18)) is None
    found = request_violation(query_pb2.QueryVariantsRequest(page_size=1001))
    assert found is not None and found.field == "page_size"
    assert request_violation(jobs_pb2.ListJobsRequest(tenant_id="t" * 63)) is None
    # '/' and ':' join tenant ids into stored keys, so a tenant id never holds them.
    for tenant in ("t" * 64, "lab/a", "lab:a", "lab\0a", "-lab"):
        found = request_violation(jobs_pb2.ListJobsRequest(tenant_id=tenant))
        assert found is not None and found.field == "tenant_id", tenant
    nested = control_pb2.RedriveDeadLettersRequest(refs=[control_pb2.DeadLetterRef(), {"offset": -1}])
    found = request_violation(nested)
    assert found is not None and found.field == "refs[1].offset"
    since = control_pb2.CompareModesRequest()
    since.since.seconds = 253_402_300_800  # 10000-01-01
    found = request_violation(since)
    assert found is not None and found.field == "since.seconds"


async def test_query_pages_are_bounded_by_bytes_as_well_as_rows(tmp_path: Path) -> None:
    """1000 Genomes extract (PyVCF3): 629 samples' genotypes per row, so 1000 rows would be several MB."""
    from tests.e2e.test_five_processes import alt_alleles, bgzipped_1kg
    from tests.writer._pipeline import running_services, submit_and_finish

    one_kg = await asyncio.to_thread(bgzipped_1kg, tmp_path)
    expected = await asyncio.to_thread(alt_alleles, one_kg)
    async with running_services(tmp_path) as services:
        job = await submit_and_finish(services["ingest"], one_kg)
        assert (job.counts.total, job.counts.stored) == (expected, expected)
        async with grpc.aio.insecure_channel(services["writer"]) as channel:
            method = channel.unary_unary(
                "/vcf_agent.v1.QueryService/QueryVariants",
                request_serializer=query_pb2.QueryVariantsRequest.SerializeToString,
                response_deserializer=query_pb2.QueryVariantsResponse.FromString,
            )
            seen: list[str] = []
            pages = []
            token = ""
            while True:
                page = await method(
                    query_pb2.QueryVariantsRequest(page_size=1000, page_token=token), timeout=60
                )
                pages.append(page)
                seen.extend(v.correlation_id for v in page.variants)
                assert page.total == expected
                assert page.ByteSize() <= MAX_PAGE_BYTES + 64  # the page's own framing
                if not page.next_page_token:
                    break
                token = page.next_page_token
    assert len(pages) >= 2  # rows alone would have allowed one page
    assert len(seen) == len(set(seen)) == expected
    assert all(len(page.variants) < 1000 for page in pages)
    assert all(len(v.genotypes) == 629 for page in pages for v in page.variants)


def test_a_token_file_cannot_name_a_tenant_that_breaks_stored_keys() -> None:
    """The token, not the request, decides a tenant-token caller's tenant: the same bound applies."""
    assert SecuritySettings(tenant_tokens={"t1": "lab-a.2"}).auth_enabled
    for tenant in ("lab/a", "lab:a", "", "t" * 64):
        with pytest.raises(ConfigError, match="tenant id"):
            SecuritySettings(tenant_tokens={"t1": tenant})
