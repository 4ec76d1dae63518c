"""What every locally started server process needs: free ports, a leash, its log tail."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import OrderedDict
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

# The ports this process handed out last: a port released by `free_ports` is free again to the
# kernel, which may give it to the next caller while the first one's server is still starting
# (an S3 server and a Kafka broker picked in turn could be handed one port). Only the last
# _HANDED_OUT_KEPT are kept, so a long-lived process never runs out of ports to pick; a server
# given a port that many picks ago has long bound it.
_HANDED_OUT_KEPT = 4096
_handed_out: OrderedDict[int, None] = OrderedDict()
_handed_out_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """One port free on `host` now. For a server listening on two or more, use `free_ports`."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1", *, besides: Collection[int] = ()) -> list[int]:
    """`count` distinct ports free on `host` now, none of them in `besides`, none handed out lately.

    Each socket stays bound until all are picked, so one call returns distinct ports; and no port
    is returned again within this process's next _HANDED_OUT_KEPT picks, so servers given ports by
    separate calls do not share one. Another process picking ports at the same time can still,
    rarely, be given the same one.
    """
    ports: list[int] = []
    with _handed_out_lock, contextlib.ExitStack() as held:
        while len(ports) < count:
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
            if port not in besides and port not in _handed_out:
                ports.append(port)
        for port in ports:
            _handed_out[port] = None
        while len(_handed_out) > _HANDED_OUT_KEPT:
            _handed_out.popitem(last=False)
    return ports


def spawn_leashed(command: Sequence[str], **popen: Any) -> subprocess.Popen[bytes]:
    """Start a server process that gets SIGTERM if its parent dies without stopping it.

    The kernel ties this to the spawning *thread*: only start children this way from a
    thread that lives as long as they should (not from a short-lived pool worker).

    `setpriv --pdeathsig` sets the signal and execs the command, so no Python code runs in
    the child between fork and exec. A `preexec_fn` doing it made Python fork the whole
    process and run its after-fork hooks in the child, which, in a process with gRPC and
    LanceDB threads busy, crashed (the chaos `fallback-killed` restart of Kafka died with
    SIGSEGV in `random`'s after-fork reseed) and broke the parent's gRPC calls: 4 SIGSEGV,
    3 SIGABRT and 3 UNAVAILABLE calls in 391 spawns in 45 s, none in 4,461 spawns without
    it. The `preexec_fn` remains only where setpriv is missing (util-linux).
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return subprocess.Popen(list(command), preexec_fn=_die_with_parent, **popen)
    process = subprocess.Popen([setpriv, "--pdeathsig", "TERM", "--", *command], **popen)
    _until_leashed(process, os.path.realpath(setpriv))
    return process


def _until_leashed(process: subprocess.Popen[bytes], setpriv: str, timeout_s: float = 10.0) -> None:
    """Wait until setpriv has set the signal (it has exec'd the command): a spawning thread
    that ended before that would leave the server without its leash."""
    deadline = time.monotonic() + timeout_s
    while process.poll() is None and time.monotonic() < deadline:
        try:
            if os.readlink(f"/proc/{process.pid}/exe") != setpriv:
                return
        except OSError:  # exiting, or no /proc to read
            return
        time.sleep(0.001)


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM when the spawning thread ends."""
    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def log_tail(path: Path, limit: int = 3000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-limit:]
    except FileNotFoundError:
        return ""


def pause_process(process: subprocess.Popen[bytes] | None) -> bool:
    """SIGSTOP a running child: it keeps its port and connections but answers nothing, as a
    stalled host would (connects still succeed: the kernel accepts them). False if not running."""
    if process is None or process.poll() is not None:
        return False
    process.send_signal(signal.SIGSTOP)
    return True


def resume_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGCONT after pause_process(): the child answers what queued up meanwhile."""
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGCONT)


def stop_process(
    process: subprocess.Popen[bytes] | subprocess.Popen[str], timeout_s: float, sig: int = signal.SIGTERM
) -> bool:
    """Signal a child and wait for it; SIGKILL after timeout_s. True when it had to be killed."""
    if process.poll() is None:
        process.send_signal(sig)
        # A paused (SIGSTOPped) child acts on the signal only once continued.
        process.send_signal(signal.SIGCONT)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return True
    return False
