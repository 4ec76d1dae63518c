"""A single-node Apache Iggy server on loopback for tests, benchmarks and dev.

The iggy-server binary is not shipped with the project (it is a Rust build);
it is found through IGGY_SERVER_BIN or PATH. Each server gets free loopback
ports and its own data directory, configured only through IGGY_* environment
variables so no config file of the caller's working directory leaks in.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from vcf_agent.lifecycle import AsyncComponent
from vcf_agent.localdev._child_process import (
    free_port,
    log_tail,
    pause_process,
    resume_process,
    spawn_leashed,
    stop_process,
)
from vcf_agent.localdev._executables import find_executable

DEFAULT_USERNAME = "iggy"
DEFAULT_PASSWORD = "iggy"
_BINARY_NAME = "iggy-server"


class IggyServerError(RuntimeError):
    """The server could not be started or did not become ready."""


def find_iggy_server() -> str | None:
    """IGGY_SERVER_BIN if it names an executable file, else iggy-server on PATH, else None."""
    return find_executable(_BINARY_NAME, "IGGY_SERVER_BIN")


async def _accepts_login(address: str, username: str, password: str, timeout_s: float) -> bool:
    # Imported here: the Iggy SDK is the `iggy` extra, and this package serves the default install too.
    from apache_iggy import AutoLogin, IggyClient, TcpConfig, TcpReconnectionConfig

    # No retries inside the SDK: this probe is itself the retry loop.
    client = IggyClient(
        TcpConfig(
            server_address=address,
            auto_login=AutoLogin.disabled(),
            reconnection=TcpReconnectionConfig(enabled=False),
        )
    )
    try:
        await asyncio.wait_for(client.connect(), timeout_s)
        await asyncio.wait_for(client.login_user(username, password), timeout_s)
    except (RuntimeError, TimeoutError):
        return False
    return True


class LocalIggyServer(AsyncComponent):
    """An iggy-server child process; stop() keeps its data so start() again is a restart.

    As an async context manager it also removes the data directory it created.
    """

    def __init__(
        self,
        binary: str | None = None,
        *,
        data_dir: Path | None = None,
        host: str = "127.0.0.1",
        username: str = DEFAULT_USERNAME,
        password: str = DEFAULT_PASSWORD,
        ready_timeout_s: float = 90.0,
    ) -> None:
        self._binary = binary
        self._host = host
        self._username = username
        self._password = password
        self._ready_timeout_s = ready_timeout_s
        self._owned_dir: Path | None = None
        self._data_dir = data_dir
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise IggyServerError("the server has not been started")
        return self._port

    @property
    def address(self) -> str:
        return f"{self._host}:{self.port}"

    @property
    def url(self) -> str:
        """The bus URL for this server (iggy://user:pass@host:port)."""
        return f"iggy://{self._username}:{self._password}@{self.address}"

    @property
    def log_path(self) -> Path:
        return self._run_dir() / "iggy-server.log"

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _run_dir(self) -> Path:
        if self._data_dir is None:
            self._owned_dir = Path(tempfile.mkdtemp(prefix="vcf-agent-iggy-"))
            self._data_dir = self._owned_dir
        return self._data_dir

    def _environment(self) -> dict[str, str]:
        # Inherited IGGY_* variables (IGGY_URL, IGGY_SERVER_BIN, a developer's
        # own overrides) must not reconfigure this private instance.
        env = {key: value for key, value in os.environ.items() if not key.startswith("IGGY_")}
        env.update(
            {
                "IGGY_SYSTEM_PATH": str(self._run_dir() / "data"),
                "IGGY_CONFIG_PATH": str(self._run_dir() / "no-config.toml"),
                "IGGY_TCP_ADDRESS": self.address,
                "IGGY_HTTP_ENABLED": "false",
                "IGGY_QUIC_ENABLED": "false",
                "IGGY_WEBSOCKET_ENABLED": "false",
                "IGGY_ROOT_USERNAME": self._username,
                "IGGY_ROOT_PASSWORD": self._password,
                # One unpinned shard: the server shares a few cores with tests and services.
                "IGGY_SYSTEM_SHARDING_CPU_ALLOCATION": "1",
                "IGGY_SYSTEM_SHARDING_PIN_CORES": "false",
                "IGGY_SYSTEM_LOGGING_FILE_ENABLED": "false",
                # Group memberships survive a restart; members whose client died
                # keep their partitions until heartbeat eviction (1.2 x interval),
                # 36 s with the shipped 30 s. IggyBus clients ping every second.
                "IGGY_HEARTBEAT_INTERVAL": "3 s",
            }
        )
        return env

    async def start(self) -> None:
        """Start (or restart, keeping data and port) and wait until the root user can log in."""
        if self.running():
            return
        binary = self._binary or find_iggy_server()
        if binary is None:
            raise IggyServerError("no iggy-server binary: set IGGY_SERVER_BIN or put iggy-server on PATH")
        run_dir = self._run_dir()
        if self._port is None:
            self._port = free_port(self._host)
        self._spawn(binary, run_dir)
        await self._wait_ready()

    def _spawn(self, binary: str, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self._log_file = (run_dir / "iggy-server.log").open("ab")
        self._process = spawn_leashed(
            [binary],
            cwd=run_dir,
            env=self._environment(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._ready_timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise IggyServerError(
                    f"iggy-server exited with {self._process.returncode}:\n{log_tail(self.log_path)}"
                )
            if await _accepts_login(self.address, self._username, self._password, timeout_s=2.0):
                return
            await asyncio.sleep(0.2)
        await self.stop()
        raise IggyServerError(
            f"iggy-server did not accept a login within {self._ready_timeout_s}s:\n{log_tail(self.log_path)}"
        )

    async def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after timeout_s; the data directory is kept for a restart."""
        process, self._process = self._process, None
        if process is not None:
            await asyncio.to_thread(stop_process, process, timeout_s)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    async def kill(self) -> None:
        """SIGKILL without a clean shutdown, as a crash would."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        await self.stop()

    def pause(self) -> None:
        """SIGSTOP: a stalled or swapping server (see pause_process)."""
        if not pause_process(self._process):
            raise IggyServerError("the server is not running")

    def resume(self) -> None:
        """SIGCONT after pause()."""
        resume_process(self._process)

    def use_data_dir(self, data_dir: Path) -> None:
        """The next start() runs on data_dir, same port: an empty one is a server that lost its disk."""
        if self.running():
            raise IggyServerError("stop the server before changing its data directory")
        data_dir.mkdir(parents=True, exist_ok=True)
        self._data_dir = data_dir

    def remove_data(self) -> None:
        """Delete the data directory if this object created it."""
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)
            self._owned_dir = None
            self._data_dir = None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Unlike stop() (which keeps data for a restart), leaving the block removes it."""
        await self.stop()
        self.remove_data()
