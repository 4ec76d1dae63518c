"""Client for the VCF Analysis Agent's public gRPC APIs (submit, watch, query), for LIMS integrators.

The messages are the generated classes in `vcf_agent_client.v1`, compiled from the project's
`proto/` (the same files the services are built from).
"""

from vcf_agent_client._client import CHUNK_BYTES, FINAL_STATES, Connection, VcfAgentClient, is_final

__all__ = ["CHUNK_BYTES", "FINAL_STATES", "Connection", "VcfAgentClient", "is_final"]
