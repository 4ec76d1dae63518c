"""What every locally started server process needs: a free port, a leash, its log tail."""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def die_with_parent() -> None:
    """Runs in the child before exec: it gets SIGTERM if its parent dies without stopping it.

    The kernel ties this to the spawning *thread*: only start children this way from a
    thread that lives as long as they should (not from a short-lived pool worker).
    """
    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def log_tail(path: Path, limit: int = 3000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-limit:]
    except FileNotFoundError:
        return ""


def stop_process(
    process: subprocess.Popen[bytes] | subprocess.Popen[str], timeout_s: float, sig: int = signal.SIGTERM
) -> bool:
    """Signal a child and wait for it; SIGKILL after timeout_s. True when it had to be killed."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return True
    return False
