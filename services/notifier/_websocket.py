"""WebSocket endpoint: `ws://HOST:PORT/jobs/<job_id>` or `/tenants/<tenant_id>` streams JSON events."""

from __future__ import annotations

import json
import logging

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from ._hub import ProgressHub, notification_json

log = logging.getLogger(__name__)


class WebSocketGateway:
    def __init__(self, hub: ProgressHub, host: str, port: int) -> None:
        self._hub = hub
        self._host = host
        self._port = port
        self._server: Server | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            return 0
        return int(next(iter(self._server.sockets)).getsockname()[1])

    async def start(self) -> None:
        self._server = await serve(self._serve, self._host, self._port)
        log.info("notifier WebSocket on ws://%s:%d/jobs/<job_id>", self._host, self.port)

    async def stop(self) -> None:
        await self._hub.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, connection: ServerConnection) -> None:
        path = connection.request.path if connection.request else "/"
        parts = [p for p in path.split("?")[0].split("/") if p]
        if len(parts) != 2 or parts[0] not in ("jobs", "tenants"):
            await connection.close(code=1008, reason="subscribe at /jobs/<job_id> or /tenants/<tenant_id>")
            return
        job_id, tenant_id = (parts[1], "") if parts[0] == "jobs" else ("", parts[1])
        try:
            async for note in self._hub.subscribe(job_id, tenant_id, include_latest=True):
                await connection.send(json.dumps(notification_json(note)))
        except ConnectionClosed:
            return
