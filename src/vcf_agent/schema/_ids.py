"""Deterministic identifiers: the same input always yields the same id, on any replay.

Every stored key is scoped by tenant: two tenants sending the same file get
independent results, while one tenant resending it gets the same ids, so
every store upsert is a no-op. STORE_KEY_VERSION names this scheme; data
written under another one is refused at start (see the writer's stamp).
"""

from __future__ import annotations

import hashlib
import re

# 1: ids from the file content only (two tenants' results collided); 2: tenant-scoped;
# 3: the graph keys variants and analyses by 64-bit integers derived from these ids.
STORE_KEY_VERSION = 3
# What a tenant id may be, wherever it comes from (a request, a token file): no '/', ':' or NUL,
# which join it into the keys below, and at most 63 characters.
TENANT_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def correlation_prefix(tenant_id: str, file_id: str) -> bytes:
    """The bytes every correlation id of one tenant's file is hashed from, before `record:alt`.

    NUL cannot occur in a tenant id (TENANT_ID_PATTERN) nor in a hex digest, so
    no two (tenant, file) pairs share a prefix. The compiled encoder hashes
    this prefix followed by `record_index:alt_index` exactly as correlation_id does.
    """
    return f"{tenant_id}\0{file_id}:".encode()


def correlation_id(tenant_id: str, file_id: str, record_index: int, alt_index: int) -> str:
    """Id of one ALT allele of one record of one tenant's file content.

    Built from the tenant and the content digest, not the job, so the same
    tenant resubmitting the same file produces the same ids.
    """
    key = correlation_prefix(tenant_id, file_id) + f"{record_index}:{alt_index}".encode()
    return hashlib.blake2b(key, digest_size=16).hexdigest()


def tenant_key(tenant_id: str, name: str) -> str:
    """Key of a node a tenant owns by name (a sample, a file digest): `tenant/name`.

    Unambiguous because a tenant id cannot contain '/' (TENANT_ID_PATTERN).
    """
    return f"{tenant_id}/{name}"


def variant_key(chromosome: str, position: int, reference: str, alternate: str) -> str:
    """Locus-and-allele key, shared across files and tenants: the router's answer cache, not a store key."""
    return f"{chromosome}:{position}:{reference}:{alternate}"


def file_digest_hasher() -> hashlib._Hash:
    """The content digest used as file_id (SHA-256 of the raw bytes as submitted)."""
    return hashlib.sha256()
