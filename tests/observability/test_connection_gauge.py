"""vcf_notifier_connections follows clients as they come and go, with no event in between: a real
WebSocket client and a real gRPC Watch against a notifier process, read from its /metrics."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import grpc
import httpx
from websockets.asyncio.client import connect

from vcf_agent.localdev import start_service, stop_service
from vcf_agent.v1 import notifier_pb2, notifier_pb2_grpc


def connections(metrics: str, kind: str) -> float:
    text = httpx.get(f"http://{metrics}/metrics", timeout=10).text
    found = re.search(rf'^vcf_notifier_connections\{{kind="{kind}"\}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def settles_at(metrics: str, kind: str, expected: float) -> float:
    """The gauge once it reads `expected`, or its last reading after 20 s (the connection's own
    set-up and tear-down take milliseconds; no event ever arrives in this test)."""
    deadline = time.monotonic() + 20
    value = connections(metrics, kind)
    while value != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        value = connections(metrics, kind)
    return value


async def test_connection_gauge_changes_at_connect_and_at_disconnect(tmp_path: Path) -> None:
    notifier = start_service("notifier", f"embedded://{tmp_path / 'bus'}", tmp_path / "services")
    try:
        assert notifier.metrics
        assert connections(notifier.metrics, "websocket") == 0

        socket = await connect(f"ws://127.0.0.1:{notifier.websocket_port}/jobs/no-events-ever")
        assert await settles_at(notifier.metrics, "websocket", 1) == 1
        await socket.close()
        assert await settles_at(notifier.metrics, "websocket", 0) == 0

        async with grpc.aio.insecure_channel(notifier.grpc) as channel:
            watch = notifier_pb2_grpc.NotifierServiceStub(channel).Watch(
                notifier_pb2.WatchRequest(job_id="no-events-ever", include_latest=True)
            )
            assert await settles_at(notifier.metrics, "watch", 1) == 1
            watch.cancel()
            assert await settles_at(notifier.metrics, "watch", 0) == 0
    finally:
        stop_service(notifier)
