"""How the project's own clients (`submit`, `query`) reach a deployment: TLS and a bearer token."""

from __future__ import annotations

import sys

import grpc

from vcf_agent import tracing
from vcf_agent.config import ClientSettings, is_loopback


def open_channel(address: str, client: ClientSettings) -> grpc.aio.Channel:
    """A TLS channel when asked for (trusting --tls-ca, else the system's roots), else plaintext."""
    if client.tls:
        roots = client.tls_ca.read_bytes() if client.tls_ca is not None else None
        return grpc.aio.secure_channel(
            address,
            grpc.ssl_channel_credentials(root_certificates=roots),
            interceptors=tracing.grpc_client_interceptors() or None,
        )
    host = address.rsplit(":", 1)[0]
    if client.token and not is_loopback(host):
        print(
            f"vcf-agent: warning: sending a token to {address} without TLS; anyone on the path can read it"
            " (use --tls-ca)",
            file=sys.stderr,
        )
    return grpc.aio.insecure_channel(address, interceptors=tracing.grpc_client_interceptors() or None)


def call_metadata(client: ClientSettings) -> tuple[tuple[str, str], ...]:
    """Sent on every call; as metadata rather than call credentials so plaintext loopback works too."""
    return (("authorization", f"Bearer {client.token}"),) if client.token else ()
