"""Bearer-token authentication for every gRPC call, as a server interceptor.

Admin tokens may call everything; tenant tokens only the LIMS APIs, and the
servicers confine them to their own tenant through tenant_scope(). Health and
reflection stay open so probes and `grpcurl list` work without credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc

from vcf_agent.config import SecuritySettings

OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)


Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an administrator (name) or a tenant's LIMS (tenant_id)."""

    name: str
    tenant_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.tenant_id is None

    def __str__(self) -> str:
        return f"tenant:{self.tenant_id}" if self.tenant_id is not None else f"admin:{self.name}"


_principal: ContextVar[Principal | None] = ContextVar("vcf_agent_principal", default=None)


def current_principal() -> Principal | None:
    """The caller of the RPC being served; None when authentication is off."""
    return _principal.get()


def tenant_scope() -> str | None:
    """The only tenant this call may see, or None when it may see every tenant (admin, auth off)."""
    principal = _principal.get()
    return principal.tenant_id if principal is not None else None


def requested_tenant(requested: str) -> str:
    """The tenant a LIMS call is about: the one it names, else its token's, else "" (all)."""
    return requested or tenant_scope() or ""


def may_see(tenant_id: str) -> bool:
    """Whether this call may read a job or result of tenant_id (LIMS servicers check every read)."""
    scope = tenant_scope()
    return scope is None or scope == tenant_id


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenTable:
    """The configured tokens and whom each stands for; shared by gRPC and the notifier's WebSocket."""

    def __init__(self, security: SecuritySettings) -> None:
        # Looked up by digest and compared in constant time, so timing reveals nothing of a token.
        self._principals = {
            _digest(token): (token, Principal(name)) for token, name in security.admin_tokens.items()
        }
        self._principals.update(
            (_digest(token), (token, Principal(tenant, tenant)))
            for token, tenant in security.tenant_tokens.items()
        )

    def from_authorization(self, value: str) -> Principal | None:
        """The caller an `authorization: Bearer TOKEN` value names, or None."""
        scheme, _, token = value.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        found = self._principals.get(_digest(token))
        if found is not None and hmac.compare_digest(found[0], token):
            return found[1]
        return None


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Checks `authorization: Bearer TOKEN` and binds the caller for the servicer."""

    def __init__(self, security: SecuritySettings, *, admin_services: Collection[str]) -> None:
        self._tokens = TokenTable(security)
        self._admin_services = frozenset(admin_services)

    def _authenticate(self, metadata: Any) -> Principal | None:
        for key, value in metadata or ():
            if key == "authorization" and isinstance(value, str):
                return self._tokens.from_authorization(value)
        return None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        service = handler_call_details.method.strip("/").split("/")[0]
        if handler is None or service in OPEN_SERVICES:
            return handler
        principal = self._authenticate(handler_call_details.invocation_metadata)
        if principal is None:
            return _refusal(
                handler, grpc.StatusCode.UNAUTHENTICATED, "send 'authorization: Bearer TOKEN' metadata"
            )
        if service in self._admin_services and not principal.is_admin:
            return _refusal(handler, grpc.StatusCode.PERMISSION_DENIED, f"{service} needs an admin token")
        return _bound(handler, principal)


Behavior = Callable[..., Any]


def _rebuild(handler: Handler, wrap: Callable[[Behavior], Behavior]) -> Handler:
    """The same kind of handler with its behavior wrapped."""
    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(wrap(handler.unary_unary), **serializers)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(wrap(handler.unary_stream), **serializers)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(wrap(handler.stream_unary), **serializers)
    assert handler.stream_stream is not None
    return grpc.stream_stream_rpc_method_handler(wrap(handler.stream_stream), **serializers)


def _refusal(handler: Handler, code: grpc.StatusCode, message: str) -> Handler:
    def wrap(_: Behavior) -> Behavior:
        async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await context.abort(code, message)

        return refuse

    return _rebuild(handler, wrap)


def _bound(handler: Handler, principal: Principal) -> Handler:
    """Each RPC runs in its own task and context, so setting the variable needs no reset."""

    def wrap(behavior: Behavior) -> Behavior:
        if inspect.isasyncgenfunction(behavior):

            async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                _principal.set(principal)
                async for item in behavior(request, context):
                    yield item

            return stream

        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            _principal.set(principal)
            return await behavior(request, context)

        return call

    return _rebuild(handler, wrap)
