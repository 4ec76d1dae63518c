"""The notifier's WebSocket (wss://) and tickets, with a real `websockets` client."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import time
from collections.abc import Mapping

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.security.conftest import PYVCF_TESTS, Deployment, TwoTenants, bearer, upload, wait_final
from vcf_agent.services.notifier import TicketBook
from vcf_agent.v1 import jobs_pb2_grpc, notifier_pb2, notifier_pb2_grpc


def tls(deployment: Deployment) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(deployment.certificates.ca))


def headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def closed_with(
    deployment: Deployment, path: str, extra: Mapping[str, str] | None = None
) -> tuple[int, str]:
    """The close code and reason the server answers a connection with (it must close it)."""
    async with connect(deployment.websocket + path, ssl=tls(deployment), additional_headers=extra) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), timeout=10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def events_until_complete(ws: ClientConnection) -> list[dict[str, object]]:
    events: list[dict[str, object]] = []
    while not events or events[-1]["state"] != "complete":
        events.append(json.loads(await asyncio.wait_for(ws.recv(), timeout=30)))
    return events


async def ticket(deployment: Deployment, token: str, **channel: str) -> notifier_pb2.WebSocketTicket:
    async with deployment.channel("notifier") as grpc_channel:
        return await notifier_pb2_grpc.NotifierServiceStub(grpc_channel).CreateWebSocketTicket(
            notifier_pb2.CreateWebSocketTicketRequest(**channel), metadata=bearer(token)
        )


async def test_refused_connections_close_with_a_code_and_reason(
    deployment: Deployment, two_tenants: TwoTenants
) -> None:
    a_job, b_job = two_tenants.a.job.job_id, two_tenants.b.job.job_id
    token_a = deployment.tokens["lab-a"]
    cases: list[tuple[str, Mapping[str, str] | None, int, str]] = [
        (f"/jobs/{a_job}", None, 4401, "log in"),
        (f"/jobs/{a_job}", headers("not-a-token"), 4401, "unknown token"),
        (f"/jobs/{a_job}", {"Authorization": f"Basic {token_a}"}, 4401, "unknown token"),
        # A long-lived token in the URL is refused even when it is valid.
        (f"/jobs/{a_job}?token={token_a}", None, 4401, "never accepted in a URL"),
        (f"/jobs/{a_job}?access_token={token_a}", None, 4401, "never accepted in a URL"),
        (f"/jobs/{a_job}?ticket=made-up", None, 4401, "ticket"),
        (f"/jobs/{b_job}", headers(token_a), 4404, "no such job"),
        ("/jobs/job-00000000000000000000", headers(token_a), 4404, "no such job"),
        ("/tenants/lab-b", headers(token_a), 4403, "own tenant channel"),
        ("/variants/x", headers(token_a), 4400, "subscribe at"),
    ]
    for path, extra, code, reason in cases:
        got = await closed_with(deployment, path, extra)
        assert got[0] == code and reason in got[1], (path, got)
        assert not any(marker in got[1] for marker in two_tenants.b.markers)


async def test_a_program_logs_in_with_a_header_and_sees_only_its_own_job(
    deployment: Deployment, two_tenants: TwoTenants
) -> None:
    path = f"/jobs/{two_tenants.a.job.job_id}"
    for token in (deployment.tokens["lab-a"], deployment.admin):
        async with connect(
            deployment.websocket + path, ssl=tls(deployment), additional_headers=headers(token)
        ) as ws:
            events = await events_until_complete(ws)
        assert {e["tenant_id"] for e in events} == {"lab-a"}
        assert events[-1]["done"] == two_tenants.a.job.counts.total
        assert not any(marker in json.dumps(events) for marker in two_tenants.b.markers)


async def test_a_browser_logs_in_with_a_single_use_ticket_for_one_path(
    deployment: Deployment, two_tenants: TwoTenants
) -> None:
    a_job = two_tenants.a.job.job_id
    issued = await ticket(deployment, deployment.tokens["lab-a"], job_id=a_job)
    assert issued.path == f"/jobs/{a_job}"
    assert 0 < issued.expires_at.ToSeconds() - time.time() <= 31
    async with connect(
        f"{deployment.websocket}{issued.path}?ticket={issued.ticket}", ssl=tls(deployment)
    ) as ws:
        events = await events_until_complete(ws)
    assert {e["tenant_id"] for e in events} == {"lab-a"}
    # Used once; and a ticket never opens a path it was not issued for.
    code, reason = await closed_with(deployment, f"{issued.path}?ticket={issued.ticket}")
    assert (code, "ticket") == (4401, reason.split()[0])
    other = await ticket(deployment, deployment.tokens["lab-a"], job_id=a_job)
    code, _ = await closed_with(deployment, f"/jobs/{two_tenants.b.job.job_id}?ticket={other.ticket}")
    assert code == 4401
    code, _ = await closed_with(deployment, f"/tenants/lab-a?ticket={other.ticket}")
    assert code == 4401  # the failed try used it up


def test_tickets_expire() -> None:
    book = TicketBook(ttl_s=0.05)
    issued, _ = book.issue(None, "/jobs/j")
    time.sleep(0.1)
    assert book.redeem(issued, "/jobs/j") == (False, None)


async def test_tenant_channels_carry_only_their_tenant_and_the_admin_sees_all(
    deployment: Deployment, two_tenants: TwoTenants
) -> None:
    """Live events of two new jobs, one per tenant, on each tenant's channel and the admin's."""
    seen: dict[str, list[dict[str, object]]] = {"lab-a": [], "lab-b": [], "admin": []}

    async def listen(name: str, path: str, token: str | None) -> None:
        extra = headers(token) if token else None
        async with connect(deployment.websocket + path, ssl=tls(deployment), additional_headers=extra) as ws:
            while True:
                seen[name].append(json.loads(await ws.recv()))

    browsers_ticket = await ticket(deployment, deployment.tokens["lab-b"], tenant_id="lab-b")
    assert browsers_ticket.path == "/tenants/lab-b"
    listeners = [
        asyncio.create_task(listen("lab-a", "/tenants/lab-a", deployment.tokens["lab-a"])),
        asyncio.create_task(listen("lab-b", f"/tenants/lab-b?ticket={browsers_ticket.ticket}", None)),
        asyncio.create_task(listen("admin", "/tenants/lab-b", deployment.admin)),
    ]
    await asyncio.sleep(0.5)  # subscribed before the jobs start
    try:
        jobs = {}
        async with deployment.channel("ingest") as channel:
            stub = jobs_pb2_grpc.IngestServiceStub(channel)
            for tenant, source in (("lab-a", "example-4.1.vcf"), ("lab-b", "example-4.0.vcf")):
                copy = deployment.root / f"{tenant}-{source}"
                shutil.copy(PYVCF_TESTS / source, copy)
                jobs[tenant] = await upload(stub, deployment.tokens[tenant], copy)
        for job in jobs.values():
            await wait_final(deployment, job.job_id)
        await asyncio.sleep(0.5)
    finally:
        for listener in listeners:
            listener.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
    # Late events of each tenant's earlier job may still arrive; never the other tenant's.
    for name, own in (("lab-a", two_tenants.a), ("lab-b", two_tenants.b), ("admin", two_tenants.b)):
        tenant = "lab-b" if name == "admin" else name
        job_ids = {e["job_id"] for e in seen[name]}
        assert jobs[tenant].job_id in job_ids and job_ids <= {jobs[tenant].job_id, own.job.job_id}, (
            name,
            job_ids,
        )
        assert {e["tenant_id"] for e in seen[name]} == {tenant}
    # Each tenant followed its job to the end (stages report independently, so not necessarily last).
    assert all("complete" in {e["state"] for e in seen[name]} for name in ("lab-a", "lab-b")), seen
