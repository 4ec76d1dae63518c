"""Deterministic identifiers: the same input always yields the same id, on any replay."""

from __future__ import annotations

import hashlib


def correlation_id(file_id: str, record_index: int, alt_index: int) -> str:
    """Id of one ALT allele of one record of one file's content.

    Built from the content digest, not the job, so resubmitting the same file
    produces the same ids and every store upsert is a no-op.
    """
    digest = hashlib.blake2b(f"{file_id}:{record_index}:{alt_index}".encode(), digest_size=16).hexdigest()
    return digest


def variant_key(chromosome: str, position: int, reference: str, alternate: str) -> str:
    """Locus-and-allele key, shared across files (caching, graph Variant identity)."""
    return f"{chromosome}:{position}:{reference}:{alternate}"


def file_digest_hasher() -> hashlib._Hash:
    """The content digest used as file_id (SHA-256 of the raw bytes as submitted)."""
    return hashlib.sha256()
