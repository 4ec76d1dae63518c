"""Notifier service: live job progress to WebSocket clients and gRPC watchers."""

from __future__ import annotations

from vcf_agent.bus import Bus
from vcf_agent.config import Settings
from vcf_agent.control import FlagStore, ServiceApi
from vcf_agent.processing import DeadLetterSink, StreamProcessor
from vcf_agent.runner import ServiceParts
from vcf_agent.v1 import notifier_pb2, notifier_pb2_grpc

from ._api import NotifierApi
from ._hub import ProgressHub, notification_json
from ._tickets import TicketBook
from ._websocket import WebSocketGateway

__all__ = ["ProgressHub", "TicketBook", "WebSocketGateway", "build", "notification_json"]

NAME = "notifier"


def build(settings: Settings, bus: Bus, *, flags: FlagStore | None = None) -> ServiceParts:
    """Flags are accepted for the common builder shape; this service reads none yet."""
    del flags
    hub = ProgressHub(DeadLetterSink(bus, settings.topology.dead_letters, NAME))
    # Each notifier instance needs every event, so each reads in its own group from the start.
    processor = StreamProcessor(
        bus, [settings.topology.user_notifications], "notifier", hub.handle, service=NAME, max_records=500
    )
    tickets = TicketBook(settings.websocket_ticket_ttl_s)
    gateway = WebSocketGateway(
        hub,
        settings.grpc_host,
        settings.websocket_port,
        security=settings.security,
        tickets=tickets,
        job_wait_s=settings.notifier_job_wait_s,
    )
    api = NotifierApi(hub, tickets, settings.notifier_job_wait_s)
    parts = ServiceParts(
        NAME,
        components=[gateway, processor],
        apis=[
            ServiceApi(
                lambda server: notifier_pb2_grpc.add_NotifierServiceServicer_to_server(api, server),
                [notifier_pb2.DESCRIPTOR.services_by_name["NotifierService"].full_name],
            )
        ],
    )
    return parts
