"""`vcf-agent bench load`'s peak memory readings, on real child processes."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from vcf_agent.app.load_bench import PeakWatch

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="no /proc to read memory from")

ALLOCATED_WHILE_STOPPING = 256 << 20

# Small until SIGTERM; then it fills ALLOCATED_WHILE_STOPPING bytes (written, so resident),
# holds them a second (twenty sampling intervals) and exits.
_ALLOCATES_WHILE_STOPPING = f"""
import signal, sys, time

def stop(signum, frame):
    held = bytearray(b"x") * {ALLOCATED_WHILE_STOPPING}
    time.sleep(1.0)
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


def _high_water_mark(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def test_a_peak_taken_while_stopping_is_reported() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _ALLOCATES_WHILE_STOPPING], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        watch = PeakWatch({"child": child.pid})
        before_stop = _high_water_mark(child.pid)
        assert before_stop < ALLOCATED_WHILE_STOPPING
        child.send_signal(signal.SIGTERM)
        assert child.wait(60) == 0
        peaks = watch.peaks(timeout_s=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert peaks["child"] >= ALLOCATED_WHILE_STOPPING
