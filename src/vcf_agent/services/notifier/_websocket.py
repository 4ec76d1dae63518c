"""WebSocket endpoint: `/jobs/<job_id>` or `/tenants/<tenant_id>` streams JSON events.

With tokens configured a connection must log in, either with an
`Authorization: Bearer TOKEN` header (programs) or with `?ticket=` from
NotifierService.CreateWebSocketTicket (browsers, which cannot set headers). A
long-lived token in the URL is refused: URLs end up in logs and histories. A
tenant sees only its own jobs and its own tenant channel; an admin sees all.

Refusals and endings close the connection with a code and a reason:
4400 bad path, 4401 not authenticated, 4403 another tenant's channel,
4404 no such job for this tenant, 1001 the notifier is stopping,
1013 the subscriber fell too far behind (reconnect).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from vcf_agent.config import SecuritySettings
from vcf_agent.control import Principal, TokenTable
from vcf_agent.lifecycle import AsyncComponent

from ._hub import ProgressHub, notification_json
from ._tickets import TicketBook

log = logging.getLogger(__name__)

BAD_PATH = 4400
UNAUTHENTICATED = 4401
FORBIDDEN = 4403
NOT_FOUND = 4404
GOING_AWAY = 1001
TRY_AGAIN_LATER = 1013


class _Refusal(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class WebSocketGateway(AsyncComponent):
    def __init__(
        self,
        hub: ProgressHub,
        host: str,
        port: int,
        *,
        security: SecuritySettings | None = None,
        tickets: TicketBook | None = None,
        job_wait_s: float = 5.0,
    ) -> None:
        self._hub = hub
        self._host = host
        self._port = port
        self._security = security or SecuritySettings()
        self._tokens = TokenTable(self._security)
        self._tickets = tickets or TicketBook(30.0)
        self._job_wait_s = job_wait_s
        self._server: Server | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            return 0
        return int(next(iter(self._server.sockets)).getsockname()[1])

    def _tls(self) -> ssl.SSLContext | None:
        """wss:// with the services' certificate, so a token in a header is never sent in clear."""
        if self._security.tls_cert is None or self._security.tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self._security.tls_cert, self._security.tls_key)
        return context

    async def start(self) -> None:
        tls = self._tls()
        self._server = await serve(self._serve, self._host, self._port, ssl=tls)
        scheme = "wss" if tls else "ws"
        log.info("notifier WebSocket on %s://%s:%d/jobs/<job_id>", scheme, self._host, self.port)

    async def stop(self) -> None:
        await self._hub.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, connection: ServerConnection) -> None:
        try:
            job_id, tenant_id = await self._admit(connection)
        except _Refusal as refusal:
            log.info("WebSocket from %s refused: %s", connection.remote_address, refusal.reason)
            await connection.close(code=refusal.code, reason=refusal.reason)
            return
        streaming = asyncio.create_task(self._stream(connection, job_id, tenant_id))
        left = asyncio.create_task(connection.wait_closed())
        try:
            await asyncio.wait((streaming, left), return_when=asyncio.FIRST_COMPLETED)
        finally:
            left.cancel()
            # A client that left while no event was due ends its subscription now, so the hub and
            # the connection gauge let go of it at once rather than at the next event.
            streaming.cancel()
        await asyncio.wait((streaming,))
        if streaming.cancelled() or isinstance(streaming.exception(), ConnectionClosed):
            return
        streaming.result()  # any other error of the stream is raised here
        if self._hub.closed:
            await connection.close(code=GOING_AWAY, reason="the notifier is stopping")
        else:
            await connection.close(code=TRY_AGAIN_LATER, reason="fell too far behind; reconnect")

    async def _stream(self, connection: ServerConnection, job_id: str, tenant_id: str) -> None:
        async for note in self._hub.subscribe(job_id, tenant_id, include_latest=True, kind="websocket"):
            await connection.send(json.dumps(notification_json(note)))

    async def _admit(self, connection: ServerConnection) -> tuple[str, str]:
        """(job_id, tenant filter) of an allowed subscription, or a _Refusal saying why not."""
        request = connection.request
        target = urlsplit(request.path if request else "/")
        parts = [p for p in target.path.split("/") if p]
        if len(parts) != 2 or parts[0] not in ("jobs", "tenants"):
            raise _Refusal(BAD_PATH, "subscribe at /jobs/<job_id> or /tenants/<tenant_id>")
        query = parse_qs(target.query)
        if {"token", "access_token"} & query.keys():
            raise _Refusal(
                UNAUTHENTICATED,
                "tokens are never accepted in a URL: send Authorization: Bearer or use a ticket",
            )
        principal = self._principal(connection, target.path, query)
        job_id, tenant_id = (parts[1], "") if parts[0] == "jobs" else ("", parts[1])
        if principal is None or principal.tenant_id is None:
            return job_id, tenant_id
        if tenant_id and tenant_id != principal.tenant_id:
            raise _Refusal(FORBIDDEN, "a tenant token sees only its own tenant channel")
        if job_id and not await self._hub.job_visible(job_id, principal.tenant_id, self._job_wait_s):
            raise _Refusal(NOT_FOUND, "no such job for this tenant")
        return job_id, principal.tenant_id

    def _principal(
        self, connection: ServerConnection, path: str, query: dict[str, list[str]]
    ) -> Principal | None:
        if "ticket" in query:
            valid, principal = self._tickets.redeem(query["ticket"][0], path)
            if not valid:
                raise _Refusal(UNAUTHENTICATED, "ticket unknown, expired, used or for another path")
            return principal
        if not self._security.auth_enabled:
            return None
        header = connection.request.headers.get("Authorization") if connection.request else None
        if header is None:
            raise _Refusal(
                UNAUTHENTICATED, "log in: Authorization: Bearer TOKEN, or ?ticket= from CreateWebSocketTicket"
            )
        principal = self._tokens.from_authorization(header)
        if principal is None:
            raise _Refusal(UNAUTHENTICATED, "unknown token")
        return principal
