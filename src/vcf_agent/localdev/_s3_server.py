"""A real S3-compatible server on loopback for tests and benchmarks: Versity's versitygw.

versitygw (Apache-2.0) serves a local directory through its posix backend, one subdirectory per
bucket, and honours conditional puts (If-None-Match: *), which LanceDB's commits on S3 rely on.
It is not shipped with the project: scripts/install-s3-server.sh builds it from the Go module proxy
and links it into .venv/bin; it is found through VERSITYGW_BIN, .venv/bin or PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO

from vcf_agent.localdev._child_process import free_port, log_tail, spawn_leashed, stop_process
from vcf_agent.localdev._executables import find_executable

_BINARY_NAME = "versitygw"
ACCESS_KEY = "vcf-agent-test"
SECRET_KEY = "vcf-agent-test-secret"
REGION = "us-east-1"


class S3ServerError(RuntimeError):
    """The server could not be started or did not become ready."""


def find_s3_server() -> str | None:
    """VERSITYGW_BIN if it names an executable file, else versitygw beside this Python or on PATH."""
    return find_executable(_BINARY_NAME, "VERSITYGW_BIN", beside_python=True)


class LocalS3Server:
    """A versitygw child process serving a fresh directory; `with` starts it and removes the directory.

    `bucket(name)` creates a bucket (a directory of the posix backend, as a CreateBucket call does).
    `environment()` is what a client process needs to reach it (AWS_ENDPOINT_URL, keys, region).
    """

    def __init__(self, binary: str | None = None, *, ready_timeout_s: float = 30.0) -> None:
        found = binary or find_s3_server()
        if found is None:
            raise S3ServerError("versitygw not found: run scripts/install-s3-server.sh (needs Go)")
        self._binary = found
        self._ready_timeout_s = ready_timeout_s
        self._root = Path(tempfile.mkdtemp(prefix="vcf-agent-s3-"))
        self._port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise S3ServerError("the server has not been started")
        return self._process.pid

    @property
    def data_root(self) -> Path:
        """The directory the buckets live in (one subdirectory each)."""
        return self._root / "buckets"

    def environment(self, *, secret_key: str = SECRET_KEY) -> dict[str, str]:
        """The standard AWS variables for a client of this server (another secret: a wrong one)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": secret_key,
            "AWS_REGION": REGION,
        }

    def bucket(self, name: str) -> str:
        """Create a bucket; its s3:// URL."""
        (self.data_root / name).mkdir(parents=True, exist_ok=True)
        return f"s3://{name}"

    def start(self) -> None:
        self.data_root.mkdir(parents=True, exist_ok=True)
        log_path = self._root / "versitygw.log"
        self._log = log_path.open("ab")
        # Only what it needs: versitygw reads many VGW_*/ROOT_* variables that must not leak in.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self._root)}
        command = [
            self._binary,
            "--access", ACCESS_KEY,
            "--secret", SECRET_KEY,
            "--region", REGION,
            "--port", f"127.0.0.1:{self._port}",
            "--quiet",
            "posix", str(self.data_root),
        ]  # fmt: skip
        self._process = spawn_leashed(command, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + self._ready_timeout_s
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise S3ServerError(f"versitygw did not start: {log_tail(log_path)}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        # Any HTTP answer (an unsigned request is refused with 403) means it is serving.
        try:
            urllib.request.urlopen(self.endpoint, timeout=1).close()
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process, 10.0)
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LocalS3Server:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        shutil.rmtree(self._root, ignore_errors=True)
