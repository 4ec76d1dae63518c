"""podman for the container tests: the project's image built from its Dockerfile on a base made
from Debian packages, and containers on the host network (loopback traffic only).

No Docker daemon and no image registry are reachable here, so the base image is built with
debootstrap from the machine's own Debian mirror and imported; the Dockerfile takes it as
BASE_IMAGE. Both images stay in podman's store, so later runs rebuild only changed layers.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.deploy._deploy_files import ROOT

CONTAINERS_CONF = Path(__file__).with_name("containers.conf")
BASE_IMAGE = "localhost/vcf-agent-test-base:bookworm"
# The Debian packages the Dockerfile expects of a base: Python 3.11 and its venv module.
BASE_PACKAGES = ("python3", "python3-venv")


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(
    *args: str, timeout: float = 120, check: bool = True, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["podman", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=podman_env(),
        **kwargs,  # type: ignore[call-overload]
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args[:3])} failed ({result.returncode}): {result.stderr[-3000:]}"
        )
    return result  # type: ignore[no-any-return]


def require_podman() -> None:
    """Skip naming what is missing: podman, runc, or a podman that cannot run containers here."""
    for program in ("podman", "runc"):
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed (scripts/install-deploy-tools.sh installs it)")
    info = podman("info", check=False, timeout=60)
    if info.returncode != 0:
        pytest.skip(f"podman cannot run here: {info.stderr.strip()[-300:]}")


def debian_mirror() -> tuple[str, str]:
    """(mirror URL, suite) of this machine's own apt configuration."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.is_file():
        text = sources.read_text()
        uri = re.search(r"^URIs:\s*(\S+)", text, re.MULTILINE)
        suite = re.search(r"^Suites:\s*(\S+)", text, re.MULTILINE)
        if uri and suite:
            return uri.group(1), suite.group(1)
    listing = Path("/etc/apt/sources.list")
    if listing.is_file():
        line = re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", listing.read_text(), re.MULTILINE)
        if line:
            return line.group(1), line.group(2)
    pytest.skip("no Debian mirror in /etc/apt sources: the test base image is built with debootstrap")


def ensure_base_image() -> str:
    """The Debian bookworm base (debootstrap --variant=minbase, then podman import), built once."""
    if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        return BASE_IMAGE
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed (scripts/install-deploy-tools.sh installs it)")
    mirror, suite = debian_mirror()
    if suite != "bookworm":
        pytest.skip(f"the test base is Debian bookworm (Python 3.11); this machine's apt suite is {suite}")
    with tempfile.TemporaryDirectory(prefix="vcf-agent-base-") as scratch:
        rootfs = Path(scratch) / "rootfs"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                suite,
                str(rootfs),
                mirror,
            ],
            check=True,
            capture_output=True,
            timeout=1200,
        )
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        podman("import", "--change", 'CMD ["/bin/bash"]', "-", BASE_IMAGE, stdin=tar.stdout, timeout=600)
        assert tar.wait(timeout=60) == 0
    return BASE_IMAGE


def _ca_bundle() -> str | None:
    for candidate in (
        os.environ.get("PIP_CERT"),
        os.environ.get("SSL_CERT_FILE"),
        "/etc/ssl/certs/ca-certificates.crt",
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def revision() -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def build_image() -> str:
    """The project's image from its Dockerfile; tagged by the content of what the build copies."""
    base = ensure_base_image()
    digest = hashlib.sha256()
    for path in sorted(
        p
        for top in (
            "Dockerfile",
            "deploy/requirements.lock",
            "pyproject.toml",
            "setup.py",
            "proto",
            "services",
            "src",
        )
        for p in ([ROOT / top] if (ROOT / top).is_file() else (ROOT / top).rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".so", ".pyc")
    ):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    tag = f"localhost/vcf-agent:test-{digest.hexdigest()[:12]}"
    if podman("image", "exists", tag, check=False).returncode == 0:
        return tag
    args = [
        "build", "--network", "host", "--build-arg", f"BASE_IMAGE={base}",
        "--build-arg", f"REVISION={revision()}", "--build-arg", "VERSION=0.1.0", "-t", tag,
    ]  # fmt: skip
    bundle = _ca_bundle()
    if bundle is not None:
        # Only the dependency step mounts it (RUN --mount=type=secret): it is in no layer.
        args += ["--secret", f"id=pip-ca,src={bundle}"]
    podman(*args, str(ROOT), timeout=1500)
    return tag


def _debian_packages_providing(binary: str) -> list[str]:
    """The Debian packages holding the shared libraries `binary` loads on this machine."""
    listing = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=60, check=True).stdout
    packages: set[str] = set()
    for library in re.findall(r"=> (/\S+)", listing):
        # usrmerge: dpkg may know the file under /usr or only by its resolved path.
        for candidate in (library, "/usr" + library, os.path.realpath(library)):
            owner = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True, timeout=60)
            if owner.returncode == 0:
                packages.add(owner.stdout.split(":")[0])
                break
        else:
            pytest.skip(f"{binary} loads {library}, which no Debian package on this machine provides")
    return sorted(packages)


def runtime_image_for(binary: str) -> str:
    """The base plus the Debian packages of the libraries a binary found on this machine needs
    (for running a server binary, such as iggy-server, in a container of its own)."""
    base = ensure_base_image()
    packages = _debian_packages_providing(binary)
    tag = f"localhost/vcf-agent-test-runtime:{hashlib.sha256(' '.join(packages).encode()).hexdigest()[:12]}"
    if podman("image", "exists", tag, check=False).returncode == 0:
        return tag
    with tempfile.TemporaryDirectory(prefix="vcf-agent-runtime-") as context:
        containerfile = Path(context) / "Containerfile"
        containerfile.write_text(
            f"FROM {base}\n"
            "RUN apt-get update && apt-get install -y --no-install-recommends "
            f"{' '.join(packages)} && rm -rf /var/lib/apt/lists/*\n"
        )
        podman("build", "--network", "host", "-t", tag, "-f", str(containerfile), context, timeout=900)
    return tag
