"""The writer's cap on glibc malloc arenas, checked in a fresh process with real threads."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys

import pytest

# Eight threads allocating at once: without a cap glibc gives contending threads their own
# arenas (up to 8 per core), which is where the writer's resident memory went.
_PROBE = """
import ctypes, os, tempfile, threading, sys
from vcf_agent.services.writer._native_memory import limit_malloc_arenas
libc = ctypes.CDLL("libc.so.6")
def arenas():
    with tempfile.TemporaryFile() as out:
        stream = libc.fdopen(os.dup(out.fileno()), b"w")
        libc.malloc_info(0, stream)
        libc.fclose(stream)
        out.seek(0)
        return out.read().decode().count("<heap nr=")
libc.fdopen.restype = ctypes.c_void_p
libc.fdopen.argtypes = [ctypes.c_int, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
# Arenas made while importing (the stores' libraries start thread pools) stay; the cap
# bounds what the threads started afterwards add.
before = arenas()
if sys.argv[1] == "capped":
    assert limit_malloc_arenas(2)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
barrier = threading.Barrier(8)
def churn():
    barrier.wait()
    for _ in range(500):
        libc.free(libc.malloc(4096))
threads = [threading.Thread(target=churn) for _ in range(8)]
for thread in threads: thread.start()
for thread in threads: thread.join()
print(before, arenas())
"""


def _arenas(mode: str) -> tuple[int, int]:
    """Arenas after the imports, and after eight threads allocated at once."""
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
    before, after = done.stdout.split()
    return int(before), int(after)


@pytest.mark.skipif(
    sys.platform != "linux" or "libc.so" not in (ctypes.util.find_library("c") or ""),
    reason="malloc arenas are glibc's; needs glibc on Linux",
)
def test_the_writer_caps_malloc_arenas_that_threads_would_multiply() -> None:
    before, capped = _arenas("capped")
    assert capped <= max(before, 2)
    # The probe's threads do contend: uncapped, the same run spreads over more arenas.
    before, uncapped = _arenas("uncapped")
    assert uncapped > max(before, 2)
