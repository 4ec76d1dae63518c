"""Serves the process's Prometheus registry on http://HOST:PORT/metrics."""

from __future__ import annotations

import asyncio
import logging
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

from vcf_agent.lifecycle import AsyncComponent

log = logging.getLogger(__name__)


class MetricsEndpoint(AsyncComponent):
    """prometheus_client's HTTP server (a daemon thread) for the life of a service.

    Port 0 picks a free port; `address` says which once started. Besides the
    project's series it serves the client's default process collector (CPU,
    resident memory, open files) and Python's GC and platform series.
    """

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._server: WSGIServer | None = None

    @property
    def address(self) -> str:
        if self._server is None:
            return ""
        host = self._host if ":" not in self._host else f"[{self._host}]"
        return f"{host}:{self._server.server_port}"

    async def start(self) -> None:
        server, _ = start_http_server(self._port, addr=self._host)
        self._server = server
        log.info("metrics on http://%s/metrics", self.address)

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await asyncio.to_thread(server.shutdown)
            server.server_close()
