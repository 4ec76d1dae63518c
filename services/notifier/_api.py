"""NotifierService.Watch: the same events as the WebSocket, as a gRPC server stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from vcf_agent.control import abort, invalid_argument, may_see, requested_tenant
from vcf_agent.v1 import events_pb2, notifier_pb2, notifier_pb2_grpc

from ._hub import ProgressHub


class NotifierApi(notifier_pb2_grpc.NotifierServiceServicer):
    def __init__(self, hub: ProgressHub) -> None:
        self._hub = hub

    async def Watch(
        self, request: notifier_pb2.WatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[events_pb2.Notification]:
        if not request.job_id and not request.tenant_id:
            await invalid_argument(context, "job_id", "watch a job_id or a tenant_id")
        tenant = requested_tenant(request.tenant_id)
        if not may_see(tenant):
            await abort(context, grpc.StatusCode.PERMISSION_DENIED, "a tenant token watches only its tenant")
        async for note in self._hub.subscribe(
            request.job_id,
            tenant,
            include_latest=request.include_latest,
            until_terminal=True,
        ):
            yield note
