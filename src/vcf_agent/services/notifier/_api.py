"""NotifierService: Watch (the WebSocket's events as a gRPC stream) and WebSocket tickets for browsers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from vcf_agent.control import (
    abort,
    current_principal,
    invalid_argument,
    may_see,
    requested_tenant,
    tenant_scope,
)
from vcf_agent.v1 import events_pb2, notifier_pb2, notifier_pb2_grpc

from ._hub import ProgressHub
from ._tickets import TicketBook

Context = grpc.aio.ServicerContext[Any, Any]


class NotifierApi(notifier_pb2_grpc.NotifierServiceServicer):
    def __init__(self, hub: ProgressHub, tickets: TicketBook, job_wait_s: float) -> None:
        self._hub = hub
        self._tickets = tickets
        self._job_wait_s = job_wait_s

    async def _visible_tenant(self, job_id: str, tenant_id: str, context: Context) -> str:
        """The tenant filter for this caller's subscription; aborts when it may not watch what it names."""
        tenant = requested_tenant(tenant_id)
        if not may_see(tenant):
            await abort(context, grpc.StatusCode.PERMISSION_DENIED, "a tenant token watches only its tenant")
        scope = tenant_scope()
        if job_id and scope is not None and not await self._hub.job_visible(job_id, scope, self._job_wait_s):
            # Another tenant's job is reported as absent, exactly like an unknown one.
            await abort(context, grpc.StatusCode.NOT_FOUND, "no such job for this tenant")
        return tenant

    async def Watch(
        self, request: notifier_pb2.WatchRequest, context: Context
    ) -> AsyncIterator[events_pb2.Notification]:
        if not request.job_id and not request.tenant_id:
            await invalid_argument(context, "job_id", "watch a job_id or a tenant_id")
        tenant = await self._visible_tenant(request.job_id, request.tenant_id, context)
        async for note in self._hub.subscribe(
            request.job_id,
            tenant,
            include_latest=request.include_latest,
            until_terminal=True,
        ):
            yield note

    async def CreateWebSocketTicket(
        self, request: notifier_pb2.CreateWebSocketTicketRequest, context: Context
    ) -> notifier_pb2.WebSocketTicket:
        if bool(request.job_id) == bool(request.tenant_id):
            await invalid_argument(context, "job_id", "name exactly one of job_id and tenant_id")
        await self._visible_tenant(request.job_id, request.tenant_id, context)
        path = f"/jobs/{request.job_id}" if request.job_id else f"/tenants/{request.tenant_id}"
        ticket, expires = self._tickets.issue(current_principal(), path)
        expires_at = Timestamp()
        expires_at.FromNanoseconds(int(expires * 1e9))
        return notifier_pb2.WebSocketTicket(ticket=ticket, expires_at=expires_at, path=path)
