"""Single-use, short-lived WebSocket tickets: how a browser logs in without a token in a URL.

A ticket is 32 random bytes held only in this notifier's memory, bound to the
principal that asked for it and to one WebSocket path; it opens that path once
before it expires. Tickets are therefore redeemed at the notifier instance
that issued them (route a browser's gRPC and WebSocket to the same one).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from vcf_agent.control import Principal


@dataclass(frozen=True, slots=True)
class _Ticket:
    # None when authentication is off (the ticket then carries no rights beyond an open endpoint).
    principal: Principal | None
    path: str
    expires_at: float


class TicketBook:
    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._tickets: dict[str, _Ticket] = {}

    def issue(self, principal: Principal | None, path: str) -> tuple[str, float]:
        """A new ticket for `path` and when it expires (epoch seconds)."""
        now = time.time()
        self._tickets = {k: t for k, t in self._tickets.items() if t.expires_at > now}
        ticket = secrets.token_urlsafe(32)
        expires_at = now + self.ttl_s
        self._tickets[ticket] = _Ticket(principal, path, expires_at)
        return ticket, expires_at

    def redeem(self, ticket: str, path: str) -> tuple[bool, Principal | None]:
        """(valid, principal): used up whether or not it matched, so a ticket is never tried twice."""
        found = self._tickets.pop(ticket, None)
        if found is None or found.expires_at <= time.time() or found.path != path:
            return False, None
        return True, found.principal
