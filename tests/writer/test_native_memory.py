"""The writer's hold on glibc malloc: arenas capped, freed pages handed back, Arrow's buffers taken
from it; in fresh processes."""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vcf_agent.services.writer import _native_memory as native_memory

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


# 64,000 touched 4 KiB blocks, then every block freed but one in 16, so the freed pages lie
# between blocks still in use, where glibc never hands them back by itself. The process
# waits, inside the block, until its resident memory falls by half of what was freed.
_FRAGMENTED = """
import ctypes, importlib.util, sys, time
# The module alone, without the writer package's store engines (seconds to import).
spec = importlib.util.spec_from_file_location("native_memory", sys.argv[1])
native_memory = importlib.util.module_from_spec(spec)
spec.loader.exec_module(native_memory)
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def resident():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
blocks = [libc.malloc(4096) for _ in range(64_000)]
for block in blocks:
    ctypes.memset(block, 1, 4096)
for index, block in enumerate(blocks):
    if index % 16:
        libc.free(block)
freed = 60_000 * 4096
held = resident()
with native_memory.returning_freed_memory(interval_s=0.01):
    # Up to 20 s for the trimmer's first turns on a loaded machine; it needs milliseconds.
    deadline = time.monotonic() + 20
    while resident() > held - freed // 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    during = resident()
print(held - during, freed)
"""


@pytest.mark.skipif(
    sys.platform != "linux" or "libc.so" not in (ctypes.util.find_library("c") or ""),
    reason="malloc_trim is glibc's; needs glibc on Linux",
)
def test_a_long_native_call_hands_freed_pages_back_while_it_runs() -> None:
    """LanceDB's compaction frees as much as it allocates, but glibc keeps the freed pages until a trim:
    the writer's peak was compaction's whole churn. Trimmed while it runs, the pages go back meanwhile."""
    module = native_memory.__file__
    assert module is not None
    done = subprocess.run(
        [sys.executable, "-c", _FRAGMENTED, module], capture_output=True, text=True, check=True
    )
    returned, freed = (int(value) for value in done.stdout.split())
    assert returned >= freed // 2


# The writer as `serve writer` builds it, in a process of its own: the pool is process-wide.
_BUILT_WRITER = """
import sys
from pathlib import Path
import pyarrow as pa
from vcf_agent.bus import open_bus
from vcf_agent.config import Settings
from vcf_agent.services import writer
before = pa.default_memory_pool().backend_name
data = Path(sys.argv[1])
writer.build(Settings(data_dir=data), open_bus(f"embedded://{data / 'bus'}"))
taken = pa.array(range(100_000), pa.int64()).take(pa.array(range(0, 100_000, 2)))
after = pa.default_memory_pool().backend_name
print(before, after, pa.system_memory_pool().bytes_allocated() >= taken.nbytes)
"""


def test_the_writer_takes_arrow_buffers_from_malloc(tmp_path: Path) -> None:
    """pyarrow's own mimalloc pool handed its huge pages back between batches, and the kernel zeroed
    them again at every batch: 12% of the writer's CPU in cohort-500. From malloc they are reused."""
    # pyarrow's own default, whatever the environment running the tests chose.
    env = {name: value for name, value in os.environ.items() if name != "ARROW_DEFAULT_MEMORY_POOL"}
    done = subprocess.run(
        [sys.executable, "-c", _BUILT_WRITER, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    before, after, counted = done.stdout.split()
    assert before != "system"
    assert after == "system"
    # A compute kernel's result after the build is a malloc buffer.
    assert counted == "True"


def test_the_trim_after_store_batches_runs_at_most_once_an_interval() -> None:
    """A trim walks the whole heap (~1.8 ms in a genome's writer); batches end every ~80 ms."""
    paced = native_memory.PacedTrim(interval_s=0.2)
    assert paced.due()
    assert not paced.due()
    time.sleep(0.25)
    assert paced.due()
    assert not paced.due()
