"""Local servers (Kafka, iggy-server, versitygw) are started so that no Python runs in their child,
on ports of their own."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from vcf_agent.localdev import _child_process
from vcf_agent.localdev._child_process import free_port, free_ports, spawn_leashed, stop_process

# Files the after-fork hook below creates, in any child Python forks while it is armed.
_ARMED: list[Path] = []
_HOOKED: list[bool] = []


def _mark_child() -> None:
    for path in _ARMED:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


@pytest.fixture(autouse=True)
def _needs_setpriv() -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not on PATH: servers are started through a preexec_fn")


def test_no_python_runs_in_a_server_child_between_fork_and_exec(tmp_path: Path) -> None:
    # The chaos fallback-killed restart of Kafka died with SIGSEGV (-11): a preexec_fn made
    # Python fork the whole test process (gRPC and LanceDB threads busy) and run its after-fork
    # hooks in the child, and random's reseed there crashed. An after-fork hook stands for them.
    if not _HOOKED:
        os.register_at_fork(after_in_child=_mark_child)
        _HOOKED.append(True)
    marker = tmp_path / "python-ran-in-the-child"
    _ARMED.append(marker)
    try:
        process = spawn_leashed(["true"], stdin=subprocess.DEVNULL)
        assert process.wait(30) == 0
    finally:
        _ARMED.remove(marker)
    assert not marker.exists()


def test_a_server_gets_sigterm_when_the_thread_that_started_it_ends() -> None:
    started: list[subprocess.Popen[bytes]] = []
    spawner = threading.Thread(target=lambda: started.append(spawn_leashed(["sleep", "60"])))
    spawner.start()
    spawner.join()
    (process,) = started
    try:
        assert process.wait(30) == -signal.SIGTERM
    finally:
        process.kill()


def test_a_paused_server_is_stopped_by_its_sigterm_not_killed_after_the_timeout() -> None:
    # chaos primary-slow pauses iggy-server (SIGSTOP); a stopped process acts on SIGTERM only once
    # continued, so stopping one while paused waited out the whole timeout, then killed it.
    # Like those servers, the child handles SIGTERM (a default SIGTERM ends even a stopped process).
    child = spawn_leashed(
        ["sh", "-c", "trap 'exit 3' TERM; echo trapped; while :; do sleep 0.05; done"], stdout=subprocess.PIPE
    )
    assert child.stdout is not None
    assert child.stdout.readline() == b"trapped\n"
    child.send_signal(signal.SIGSTOP)
    killed = stop_process(child, timeout_s=10)
    assert not killed
    assert child.returncode == 3
    child.stdout.close()


def test_free_port_does_not_hand_a_port_out_again_within_its_latest_picks() -> None:
    # Servers started one after another get their ports from separate calls; the kernel hands a
    # released port out again (1,000 plain bind-to-0 calls here repeated 28-40 ports), so without
    # the process's record two of them could be given one port.
    ports = [free_port() for _ in range(1000)] + free_ports(50)
    assert len(set(ports)) == len(ports)


def test_the_record_of_handed_out_ports_keeps_only_the_latest(monkeypatch: pytest.MonkeyPatch) -> None:
    # A long-lived process must not come to hold every port it ever picked.
    monkeypatch.setattr(_child_process, "_HANDED_OUT_KEPT", 10)
    picked = [free_port() for _ in range(30)]
    assert list(_child_process._handed_out) == picked[-10:]


def test_free_ports_are_distinct_and_avoid_the_ports_named() -> None:
    # A server with two listeners (Kafka's client and controller) needs two different ports: the
    # sockets stay bound until all are picked, so the kernel cannot hand one out twice.
    held = free_port()
    for _ in range(20):
        ports = free_ports(8, besides={held})
        assert len(set(ports)) == 8 and held not in ports
