"""Which server-side files SubmitVcf may read by `path` or `file://`: none unless allowed.

VCF_AGENT_INGEST_ALLOWED_DIRS names directories per tenant (`*` for every
tenant). A path is read only if its real path (symlinks and `..` resolved)
lies inside one of the caller's directories and outside the service's own
data directory (uploads, stores, job tables), and is a readable regular file.
Every refusal, missing file included, is the same PERMISSION_DENIED with the
same message, so nobody can probe which files exist; the request's path is not
echoed back.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

import grpc

ALL_TENANTS = "*"

# One message for every refusal that depends on the file system.
NOT_ALLOWED = "not a readable file in a directory this tenant may submit from (VCF_AGENT_INGEST_ALLOWED_DIRS)"


class PathRefusedError(Exception):
    """A submitted path that will not be read: the status code and message to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SubmittedPathPolicy:
    """Resolves a submitted location to a real path the tenant may read, or refuses it."""

    def __init__(self, allowed: Mapping[str, Sequence[Path]], unreachable: Sequence[Path]) -> None:
        self._allowed = {tenant: tuple(dirs) for tenant, dirs in allowed.items()}
        self._unreachable = tuple(unreachable)

    def directories(self, tenant_id: str) -> tuple[Path, ...]:
        return self._allowed.get(tenant_id, ()) + self._allowed.get(ALL_TENANTS, ())

    def resolve(self, location: str, tenant_id: str) -> Path:
        """The real path to read; raises PathRefusedError. Touches the file system (run in a thread)."""
        parts = urlsplit(location)
        if parts.scheme not in ("", "file"):
            raise PathRefusedError(
                grpc.StatusCode.INVALID_ARGUMENT, "only plain paths and file:// URIs are read here"
            )
        if parts.scheme == "file" and parts.netloc not in ("", "localhost"):
            raise PathRefusedError(grpc.StatusCode.INVALID_ARGUMENT, "file:// URIs must name this host")
        directories = self.directories(tenant_id)
        if not directories:
            raise PathRefusedError(
                grpc.StatusCode.PERMISSION_DENIED,
                "submitting by path is off for this tenant: upload the file, or allow a directory"
                " with VCF_AGENT_INGEST_ALLOWED_DIRS",
            )
        raw = unquote(parts.path) if parts.scheme == "file" else location
        denied = PathRefusedError(grpc.StatusCode.PERMISSION_DENIED, NOT_ALLOWED)
        # Relative paths would depend on the service's working directory: never allowed.
        if "\0" in raw or not os.path.isabs(raw):
            raise denied
        real = Path(os.path.realpath(raw))
        if not any(_inside(real, d) for d in directories) or any(_inside(real, u) for u in self._unreachable):
            raise denied
        try:
            status = os.stat(real)
        except OSError:
            raise denied from None
        if not stat.S_ISREG(status.st_mode) or not os.access(real, os.R_OK):
            raise denied
        return real


def _inside(path: Path, directory: Path) -> bool:
    return path.is_relative_to(os.path.realpath(directory))
