"""Safe defaults: no tokens means loopback only (said at start); a busy port is never shared."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from vcf_agent.app._settings_tree import load_settings
from vcf_agent.bus import open_bus
from vcf_agent.config import ConfigError, SecuritySettings, Settings, allowed_dirs
from vcf_agent.control import ControlPlaneServer
from vcf_agent.localdev import start_service, stop_service
from vcf_agent.runner import ServiceParts


def clean_env() -> dict[str, str]:
    """This process's environment without any VCF_AGENT_ setting (no tokens, no host)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("VCF_AGENT_")}


def serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "vcf_agent", "serve", "router", "--data-dir", str(tmp_path), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=clean_env(), check=False)


def test_without_tokens_only_loopback_addresses_may_be_bound() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        Settings(grpc_host=host).check_bind()
    for host in ("0.0.0.0", "::", "10.1.2.3", "lims.example.org"):
        with pytest.raises(ConfigError, match="--insecure"):
            Settings(grpc_host=host).check_bind()
        Settings(grpc_host=host, insecure=True).check_bind()
        Settings(grpc_host=host, security=SecuritySettings(tenant_tokens={"t": "lab-a"})).check_bind()
    assert load_settings({"VCF_AGENT_GRPC_HOST": "0.0.0.0", "VCF_AGENT_INSECURE": "1"}).service.insecure


def test_allowed_directories_are_read_per_tenant() -> None:
    assert allowed_dirs("lab-a=/data/a;*=/data/shared;lab-a=/data/a2;/srv/vcf") == {
        "lab-a": (Path("/data/a"), Path("/data/a2")),
        "*": (Path("/data/shared"), Path("/srv/vcf")),
    }
    with pytest.raises(ConfigError, match="absolute"):
        allowed_dirs("lab-a=data/a")
    with pytest.raises(ConfigError, match="TENANT=DIR"):
        allowed_dirs("=/data")
    assert load_settings({}).service.ingest_allowed_dirs == {}


def test_serving_every_address_without_tokens_needs_insecure(tmp_path: Path) -> None:
    refused = serve(tmp_path / "a", "--grpc-host", "0.0.0.0")
    assert refused.returncode == 2
    assert "no tokens are configured" in refused.stderr and "--insecure" in refused.stderr
    assert refused.stdout == ""  # never reported ready


@pytest.mark.timeout(120)
def test_a_service_says_authentication_is_off_and_a_busy_port_fails_a_second_process(tmp_path: Path) -> None:
    first = start_service(
        "router", f"embedded://{tmp_path / 'bus'}", tmp_path / "first", env={"VCF_AGENT_LOG_LEVEL": "INFO"}
    )
    try:
        port = first.grpc.rsplit(":", 1)[1]
        assert first.grpc.startswith("127.0.0.1:")
        assert "authentication is off; listening on 127.0.0.1 only" in first.log()
        second = serve(tmp_path / "second", "--grpc-port", port)
        assert second.returncode != 0
        assert f"cannot bind gRPC port 127.0.0.1:{port}" in second.stderr
        assert second.stdout == ""
    finally:
        stop_service(first)


@pytest.mark.timeout(120)
def test_insecure_binds_every_address_and_says_so(tmp_path: Path) -> None:
    service = start_service(
        "router",
        f"embedded://{tmp_path / 'bus'}",
        tmp_path / "svc",
        extra_args=["--grpc-host", "0.0.0.0", "--insecure"],
        env={"VCF_AGENT_LOG_LEVEL": "INFO"},
    )
    try:
        assert "authentication is off; listening on 0.0.0.0 because of --insecure" in service.log()
    finally:
        stop_service(service)


async def test_a_port_in_use_is_not_shared_even_with_a_default_grpc_server(tmp_path: Path) -> None:
    bus = open_bus("memory://safe-defaults")
    await bus.start()
    parts = ServiceParts("probe")
    server = ControlPlaneServer("probe", bus, parts)
    await server.start()
    try:
        with pytest.raises(OSError, match="in use"):
            await ControlPlaneServer("probe", bus, parts, port=server.port).start()
        # gRPC's default would set SO_REUSEPORT; it cannot join a socket bound without it.
        plain = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
        with pytest.raises(RuntimeError):
            plain.add_insecure_port(f"127.0.0.1:{server.port}")
    finally:
        await server.stop(0)
        await bus.stop()
