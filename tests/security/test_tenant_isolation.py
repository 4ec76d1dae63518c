"""Two tenants and an admin against the secured deployment, tried as an attacker would.

Every RPC of every service's proto is called with no token, a wrong token and
a tenant token where an admin is needed; each LIMS RPC is called with the
other tenant's ids. Each answer's status code is asserted exactly, and no
answer a tenant gets (messages or error details) may contain any of the other
tenant's job id, file digest, file name or variant ids.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from tests.security.conftest import (
    PYVCF_TESTS,
    Deployment,
    TenantData,
    TwoTenants,
    bearer,
    upload,
    wait_final,
)
from vcf_agent.v1 import (
    control_pb2,
    events_pb2,
    jobs_pb2,
    jobs_pb2_grpc,
    notifier_pb2,
    notifier_pb2_grpc,
    query_pb2,
    query_pb2_grpc,
)

CONTROL = control_pb2.DESCRIPTOR.services_by_name["ControlService"]
# Every service-specific API, on the process that serves it; ControlService runs on all five.
LIMS = {
    jobs_pb2.DESCRIPTOR.services_by_name["IngestService"]: "ingest",
    query_pb2.DESCRIPTOR.services_by_name["QueryService"]: "writer",
    notifier_pb2.DESCRIPTOR.services_by_name["NotifierService"]: "notifier",
}
PROCESSES = ("ingest", "router", "aggregator", "writer", "notifier")


@dataclass(frozen=True)
class Rpc:
    process: str
    method: MethodDescriptor

    @property
    def path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"


def every_rpc() -> list[Rpc]:
    rpcs = [Rpc(process, method) for process in PROCESSES for method in CONTROL.methods]
    rpcs += [Rpc(process, method) for service, process in LIMS.items() for method in service.methods]
    return rpcs


@dataclass
class Answer:
    code: grpc.StatusCode
    text: str  # every response message and the error details, as the caller saw them


async def call(
    deployment: Deployment,
    rpc: Rpc,
    request: Message | None = None,
    metadata: Sequence[tuple[str, str]] = (),
    *,
    timeout_s: float = 10,
) -> Answer:
    """One call made generically from the method's descriptor, as any client could."""
    request_type = GetMessageClass(rpc.method.input_type)
    response_type = GetMessageClass(rpc.method.output_type)
    request = request if request is not None else request_type()
    seen: list[str] = []
    async with deployment.channel(rpc.process) as channel:
        kwargs: dict[str, Any] = {
            "request_serializer": request_type.SerializeToString,
            "response_deserializer": response_type.FromString,
        }
        try:
            if rpc.method.client_streaming:

                async def requests() -> AsyncIterator[Message]:
                    yield request

                seen.append(
                    str(
                        await channel.stream_unary(rpc.path, **kwargs)(
                            requests(), metadata=metadata, timeout=timeout_s
                        )
                    )
                )
            elif rpc.method.server_streaming:
                async for item in channel.unary_stream(rpc.path, **kwargs)(
                    request, metadata=metadata, timeout=timeout_s
                ):
                    seen.append(str(item))
            else:
                seen.append(
                    str(
                        await channel.unary_unary(rpc.path, **kwargs)(
                            request, metadata=metadata, timeout=timeout_s
                        )
                    )
                )
        except grpc.aio.AioRpcError as exc:
            return Answer(exc.code(), "\n".join([*seen, exc.details() or ""]))
    return Answer(grpc.StatusCode.OK, "\n".join(seen))


def leaks(answer: Answer, markers: set[str], request: Message | None = None) -> list[str]:
    """The other tenant's strings in an answer, beyond what the caller itself sent (an echoed id)."""
    sent = str(request) if request is not None else ""
    return sorted(m for m in markers if m and m in answer.text and m not in sent)


async def test_every_rpc_of_every_service_refuses_a_missing_or_wrong_token(deployment: Deployment) -> None:
    rpcs = every_rpc()
    assert len(rpcs) == 5 * len(CONTROL.methods) + sum(len(s.methods) for s in LIMS)
    wrong = [(), bearer("not-a-token"), (("authorization", f"Basic {deployment.tokens['lab-a']}"),)]
    for rpc in rpcs:
        for metadata in wrong:
            answer = await call(deployment, rpc, metadata=metadata)
            assert answer.code == grpc.StatusCode.UNAUTHENTICATED, (rpc.path, rpc.process, metadata, answer)


async def test_a_tenant_token_is_refused_on_every_admin_rpc(deployment: Deployment) -> None:
    admin_only = [rpc for rpc in every_rpc() if rpc.method.containing_service is CONTROL]
    admin_only.append(
        Rpc("writer", query_pb2.DESCRIPTOR.services_by_name["QueryService"].methods_by_name["GetStoreStats"])
    )
    for tenant in ("lab-a", "lab-b"):
        for rpc in admin_only:
            answer = await call(deployment, rpc, metadata=bearer(deployment.tokens[tenant]))
            assert answer.code == grpc.StatusCode.PERMISSION_DENIED, (rpc.path, rpc.process, answer)
    # The same calls pass the token check with the admin's token (so the refusals above are the token's).
    status = await call(deployment, admin_only[0], metadata=bearer(deployment.admin))
    assert status.code == grpc.StatusCode.OK, status


def cross_tenant_cases(other: TwoTenants) -> dict[str, list[tuple[Message, grpc.StatusCode]]]:
    """lab-a's attempts on lab-b's data, per LIMS RPC, with the exact answer each must get."""
    b_job = other.b.job.job_id
    b_variant = other.b.variants[0].correlation_id
    return {
        "SubmitVcf": [
            (jobs_pb2.SubmitVcfRequest(metadata=jobs_pb2.SubmitVcfMetadata(tenant_id="lab-b")),
             grpc.StatusCode.PERMISSION_DENIED),
        ],
        "GetJob": [(jobs_pb2.GetJobRequest(job_id=b_job), grpc.StatusCode.NOT_FOUND)],
        "WatchJob": [(jobs_pb2.WatchJobRequest(job_id=b_job), grpc.StatusCode.NOT_FOUND)],
        "ListJobs": [(jobs_pb2.ListJobsRequest(tenant_id="lab-b"), grpc.StatusCode.PERMISSION_DENIED)],
        "CancelJob": [(jobs_pb2.CancelJobRequest(job_id=b_job), grpc.StatusCode.NOT_FOUND)],
        "GetVariant": [(query_pb2.GetVariantRequest(correlation_id=b_variant), grpc.StatusCode.NOT_FOUND)],
        "QueryVariants": [
            (query_pb2.QueryVariantsRequest(tenant_id="lab-b"), grpc.StatusCode.PERMISSION_DENIED),
        ],
        "GetStoreStats": [(query_pb2.GetStoreStatsRequest(job_id=b_job), grpc.StatusCode.PERMISSION_DENIED)],
        "Watch": [
            (notifier_pb2.WatchRequest(job_id=b_job, include_latest=True), grpc.StatusCode.NOT_FOUND),
            (notifier_pb2.WatchRequest(tenant_id="lab-b"), grpc.StatusCode.PERMISSION_DENIED),
            # An id nobody has: the same answer as another tenant's, so ids cannot be probed.
            (notifier_pb2.WatchRequest(job_id="job-00000000000000000000"), grpc.StatusCode.NOT_FOUND),
        ],
        "CreateWebSocketTicket": [
            (notifier_pb2.CreateWebSocketTicketRequest(job_id=b_job), grpc.StatusCode.NOT_FOUND),
            (notifier_pb2.CreateWebSocketTicketRequest(tenant_id="lab-b"), grpc.StatusCode.PERMISSION_DENIED),
        ],
    }  # fmt: skip


async def assert_lab_a_gets_nothing_of_lab_b(deployment: Deployment, two_tenants: TwoTenants) -> None:
    """lab-a calls every LIMS RPC with lab-b's ids, then lists and queries what it may."""
    cases = cross_tenant_cases(two_tenants)
    lims = [Rpc(process, method) for service, process in LIMS.items() for method in service.methods]
    # A new RPC fails here until it is given its cross-tenant cases.
    assert {rpc.method.name for rpc in lims} == set(cases)
    token = bearer(deployment.tokens["lab-a"])
    for rpc in lims:
        for request, code in cases[rpc.method.name]:
            answer = await call(deployment, rpc, request, token)
            assert answer.code == code, (rpc.path, request, answer)
            assert leaks(answer, two_tenants.b.markers, request) == [], (rpc.path, answer)

    # What lab-a may list and query holds its own data only.
    for rpc_name, request in (
        ("ListJobs", jobs_pb2.ListJobsRequest(page_size=1000)),
        ("QueryVariants", query_pb2.QueryVariantsRequest(page_size=1000)),
        ("QueryVariants", query_pb2.QueryVariantsRequest(job_id=two_tenants.b.job.job_id)),
    ):
        rpc = next(r for r in lims if r.method.name == rpc_name)
        answer = await call(deployment, rpc, request, token)
        assert answer.code == grpc.StatusCode.OK, answer
        assert leaks(answer, two_tenants.b.markers) == [], (rpc_name, answer)
        assert "lab-b" not in answer.text


async def test_a_tenant_gets_nothing_of_the_other_tenant_through_any_lims_rpc(
    deployment: Deployment, two_tenants: TwoTenants
) -> None:
    await assert_lab_a_gets_nothing_of_lab_b(deployment, two_tenants)
    token = bearer(deployment.tokens["lab-a"])
    async with deployment.channel("writer") as channel:
        query = query_pb2_grpc.QueryServiceStub(channel)
        own = await query.QueryVariants(query_pb2.QueryVariantsRequest(page_size=1000), metadata=token)
        foreign_job = await query.QueryVariants(
            query_pb2.QueryVariantsRequest(job_id=two_tenants.b.job.job_id), metadata=token
        )
    assert {v.tenant_id for v in own.variants} == {"lab-a"}
    assert two_tenants.a.job.job_id in {v.job_id for v in own.variants}
    assert foreign_job.total == 0 and not foreign_job.variants


async def test_the_faults_of_a_tenants_file_reach_that_tenant_and_no_other(
    deployment: Deployment, two_tenants: TwoTenants
) -> None:
    """A job's file issues quote its file's text. lab-b's Strelka output (PyVCF's strelka.vcf, a
    real somatic caller's file) breaks VCF 4.1 §1.4.2 once, checked by hand: line 55's second
    sample column (NORMAL.variant2) is empty, so its AU, declared Number=2 Type=Integer, is ''.
    Its last line has no newline. lab-b and the admin read both faults on the job; every LIMS RPC
    lab-a makes with the job's ids must answer without a word of them."""
    name = "b-somatic-tumour-normal.vcf"
    async with deployment.channel("ingest") as channel:
        jobs = jobs_pb2_grpc.IngestServiceStub(channel)
        job = await upload(jobs, deployment.tokens["lab-b"], PYVCF_TESTS / "strelka.vcf", file_name=name)
        job = await wait_final(deployment, job.job_id)
        assert job.state == events_pb2.JOB_STATE_COMPLETE, job
        seen = {
            who: await jobs.GetJob(jobs_pb2.GetJobRequest(job_id=job.job_id), metadata=bearer(token))
            for who, token in (("lab-b", deployment.tokens["lab-b"]), ("admin", deployment.admin))
        }
    for answer in seen.values():
        issues = [(i.line, i.column, i.code, i.warning) for i in answer.file_issues]
        assert issues == [
            (55, "FORMAT", "FORMAT_TYPE", False),
            (57, "CHROM", "MISSING_FINAL_NEWLINE", True),
        ]
        assert "FORMAT AU value '' is not an integer" in answer.file_issues[0].message
    async with deployment.channel("writer") as channel:
        stored = await query_pb2_grpc.QueryServiceStub(channel).QueryVariants(
            query_pb2.QueryVariantsRequest(job_id=job.job_id), metadata=bearer(deployment.tokens["lab-b"])
        )
    assert stored.total == job.counts.stored == 3
    faults = TenantData("lab-b", job, list(stored.variants))
    faults.markers = {
        job.job_id,
        job.file_id,
        name,
        *(v.correlation_id for v in stored.variants),
        # The fault's own words (the newline warning's are any file's, lab-a's included).
        job.file_issues[0].message,
        "FORMAT AU",
    }
    await assert_lab_a_gets_nothing_of_lab_b(deployment, TwoTenants(two_tenants.a, faults))


async def test_each_tenant_reads_its_own_job_and_the_admin_reads_both(
    deployment: Deployment, two_tenants: TwoTenants
) -> None:
    async with deployment.channel("ingest") as channel:
        jobs = jobs_pb2_grpc.IngestServiceStub(channel)
        for data in (two_tenants.a, two_tenants.b):
            own = await jobs.GetJob(
                jobs_pb2.GetJobRequest(job_id=data.job.job_id),
                metadata=bearer(deployment.tokens[data.tenant]),
            )
            assert own.tenant_id == data.tenant
            admin = await jobs.GetJob(
                jobs_pb2.GetJobRequest(job_id=data.job.job_id), metadata=bearer(deployment.admin)
            )
            assert admin.job_id == data.job.job_id
    async with deployment.channel("notifier") as channel:
        notifier = notifier_pb2_grpc.NotifierServiceStub(channel)
        events = [
            note
            async for note in notifier.Watch(
                notifier_pb2.WatchRequest(job_id=two_tenants.a.job.job_id, include_latest=True),
                metadata=bearer(deployment.tokens["lab-a"]),
                timeout=10,
            )
        ]
    assert events and {e.tenant_id for e in events} == {"lab-a"}
    assert events[-1].state == events_pb2.JOB_STATE_COMPLETE


@pytest.mark.parametrize("tenant", ["lab-a", "lab-b"])
async def test_a_tenant_token_cannot_submit_for_the_other_tenant(deployment: Deployment, tenant: str) -> None:
    other = "lab-b" if tenant == "lab-a" else "lab-a"
    rpc = Rpc("ingest", jobs_pb2.DESCRIPTOR.services_by_name["IngestService"].methods_by_name["SubmitVcf"])
    request = jobs_pb2.SubmitVcfRequest(
        metadata=jobs_pb2.SubmitVcfMetadata(tenant_id=other, path="/etc/hostname")
    )
    answer = await call(deployment, rpc, request, bearer(deployment.tokens[tenant]))
    assert answer.code == grpc.StatusCode.PERMISSION_DENIED
    assert "submits only for its tenant" in answer.text


async def test_plaintext_calls_to_a_tls_deployment_fail(deployment: Deployment) -> None:
    async with grpc.aio.insecure_channel(deployment.services["ingest"].grpc) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await jobs_pb2_grpc.IngestServiceStub(channel).ListJobs(
                jobs_pb2.ListJobsRequest(), metadata=bearer(deployment.tokens["lab-a"]), timeout=3
            )
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_oversized_fields_of_every_lims_rpc_are_refused_without_being_echoed(
    deployment: Deployment,
) -> None:
    huge = "x" * (1 << 20)
    token = bearer(deployment.tokens["lab-a"])
    tried = 0
    for service, process in LIMS.items():
        for method in service.methods:
            request_type = GetMessageClass(method.input_type)
            target, holder = (request_type(), None)
            if method.input_type.full_name == "vcf_agent.v1.SubmitVcfRequest":
                holder = jobs_pb2.SubmitVcfRequest()
                target = holder.metadata
            for field in target.DESCRIPTOR.fields:
                if field.type != field.TYPE_STRING or field.is_repeated:
                    continue
                request = request_type() if holder is None else jobs_pb2.SubmitVcfRequest()
                carrier = request if holder is None else request.metadata
                setattr(carrier, field.name, huge)
                answer = await call(deployment, Rpc(process, method), request, token)
                assert answer.code == grpc.StatusCode.INVALID_ARGUMENT, (method.name, field.name, answer.code)
                assert field.name in answer.text and len(answer.text) < 1000, (method.name, field.name)
                tried += 1
    assert tried >= 20
    query = Rpc(
        "writer", query_pb2.DESCRIPTOR.services_by_name["QueryService"].methods_by_name["QueryVariants"]
    )
    overflow = await call(
        deployment, query, query_pb2.QueryVariantsRequest(region="chr1:1-99999999999999999999"), token
    )
    assert overflow.code == grpc.StatusCode.INVALID_ARGUMENT and "region" in overflow.text


async def test_the_same_file_from_two_tenants_gives_each_its_own_complete_results(
    deployment: Deployment,
) -> None:
    source = PYVCF_TESTS / "walk_left.vcf"
    expected = 7  # six records: two with two ALTs, one REF-only (ALT "."), as counted in the text
    jobs = {}
    async with deployment.channel("ingest") as channel:
        stub = jobs_pb2_grpc.IngestServiceStub(channel)
        for tenant in ("lab-a", "lab-b"):
            jobs[tenant] = await upload(stub, deployment.tokens[tenant], source)
    assert jobs["lab-a"].job_id != jobs["lab-b"].job_id
    stored: dict[str, set[str]] = {}
    for tenant, job in jobs.items():
        final = await wait_final(deployment, job.job_id)
        assert (final.state, final.counts.total, final.counts.stored) == (
            events_pb2.JOB_STATE_COMPLETE,
            expected,
            expected,
        )
        async with deployment.channel("writer") as channel:
            rows = await query_pb2_grpc.QueryServiceStub(channel).QueryVariants(
                query_pb2.QueryVariantsRequest(job_id=job.job_id), metadata=bearer(deployment.tokens[tenant])
            )
        assert rows.total == expected and {v.tenant_id for v in rows.variants} == {tenant}
        stored[tenant] = {v.correlation_id for v in rows.variants}
    assert not stored["lab-a"] & stored["lab-b"]
    get_variant = Rpc(
        "writer", query_pb2.DESCRIPTOR.services_by_name["QueryService"].methods_by_name["GetVariant"]
    )
    for variant_id in stored["lab-b"]:
        answer = await call(
            deployment,
            get_variant,
            query_pb2.GetVariantRequest(correlation_id=variant_id),
            bearer(deployment.tokens["lab-a"]),
        )
        assert answer.code == grpc.StatusCode.NOT_FOUND
