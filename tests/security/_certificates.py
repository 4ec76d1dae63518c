"""Test certificates made at run time with openssl: a CA and a server certificate it signed.

Nothing here is committed: keys live in the test's temporary directory only.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_certificates(directory: Path) -> Certificates:
    """A CA, and a certificate for localhost and 127.0.0.1 signed by it (what --tls-ca trusts)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl binary missing (needed to make test certificates)")
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = directory / "ca.key", directory / "ca.pem"
    key, request, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=vcf-agent test CA",
             "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", str(key),
             "-out", str(request))  # fmt: skip
    extensions = directory / "san.ext"
    extensions.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
             "-days", "1", "-extfile", str(extensions), "-out", str(cert))  # fmt: skip
    return Certificates(ca, cert, key)
