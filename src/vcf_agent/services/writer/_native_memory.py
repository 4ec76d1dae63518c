"""The C allocator's share of the writer's memory: fewer malloc arenas, freed pages handed back,
Arrow's buffers from malloc too.

The writer's resident memory is mostly glibc malloc arenas, not Python objects nor the graph's
buffer pool: the graph engine, LanceDB and Arrow allocate on many threads, and glibc gives each
contending thread its own arena (up to 8 per core), each keeping what was freed in it. Measured on
the writer's two stores, 300,000 single-sample variants in 10,000-variant batches: 16 arenas and
364 MB of arena memory of which 235 MB free; with two arenas and a trim after each batch, 2
arenas and 40 MB less resident at the same point, at the same CPU per variant.
Elsewhere than glibc (musl, macOS) mallopt and malloc_trim are absent and the arena cap and the
trims do nothing; Arrow's buffers still come from the C library's allocator.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
import threading
import time
from collections.abc import Iterator

import pyarrow as pa

# glibc's mallopt parameter number for the arena limit (malloc.h: M_ARENA_MAX).
_M_ARENA_MAX = -8
# Two arenas: the store threads still rarely wait on one another's allocations (measured: no
# change in CPU per variant), and freed memory is shared instead of stranded per thread.
WRITER_MALLOC_ARENAS = 2

_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6") if sys.platform == "linux" else None


def limit_malloc_arenas(arenas: int = WRITER_MALLOC_ARENAS) -> bool:
    """Cap the arenas glibc creates from now on; True if the C library took it.

    Called when the writer is built, before its stores start their thread pools (arenas are
    made by threads as they first allocate). Process-wide: in `vcf-agent run` every service
    shares the limit, which their allocations (Python objects, small Arrow batches) do not mind.
    """
    mallopt = getattr(_LIBC, "mallopt", None)
    return bool(mallopt is not None and mallopt(_M_ARENA_MAX, arenas) == 1)


def allocate_arrow_from_malloc() -> None:
    """Give Arrow's buffers (the rows' compute kernels: carrier rows, filters, takes) to glibc malloc.

    pyarrow allocates from its own mimalloc pool by default, which asks for transparent huge
    pages and hands freed ones back to the OS within milliseconds, so every store batch faulted
    fresh 2 MiB pages in and the kernel zeroed them: `clear_page_erms` under mimalloc's page
    extension and Arrow's copies was 12% of the writer's CPU while cohort-500 ran (perf, 499 Hz,
    2026-12-06). From malloc, what a batch frees is reused by the next one and handed back by the
    writer's paced trim (glibc's arenas capped at two); those faults left the profile. Measured
    through the five services, alternating runs: writer 586 / 592 / 630 / 569 / 603 / 669 / 650
    against 650 / 636 / 657 / 721 / 640 / 711 / 677 µs of CPU per cohort-500 variant (~8% less);
    the 2,504-sample cohort's writer peak 1,482 MB against 1,713, the genome's unchanged.
    Process-wide: in `vcf-agent run` the other services' few Arrow buffers come from malloc too.
    """
    pa.set_memory_pool(pa.system_memory_pool())


def return_freed_memory() -> None:
    """Hand the pages malloc holds free back to the OS (glibc keeps them in its arenas otherwise).

    Measured after LanceDB compaction, 1M variants written in 10k batches: 546 MB resident with
    this, 648 MB without. Its cost grows with the heap it walks (~1.8 ms in a 1M-variant job's
    writer), which is why store batches pace it (PacedTrim).
    """
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


# The least time between two trims after store batches. A trim walks the whole heap, and a batch
# ends every ~80 ms in a five-process single-sample job: trimming after each took ~1.8 ms a batch
# (py-spy on the writer of a 1M-variant job, 2026-12-05: 2.6% of its CPU, ~0.9 us per variant),
# while what a batch frees is reused by the next ones within the interval anyway.
BATCH_TRIM_INTERVAL_S = 1.0


class PacedTrim:
    """`return_freed_memory` after a batch, at most once per `interval_s` (the first time at once)."""

    def __init__(self, interval_s: float = BATCH_TRIM_INTERVAL_S) -> None:
        self._interval_s = interval_s
        self._trimmed_at: float | None = None

    def due(self) -> bool:
        """Whether to trim now; True starts the next interval."""
        now = time.monotonic()
        if self._trimmed_at is not None and now - self._trimmed_at < self._interval_s:
            return False
        self._trimmed_at = now
        return True


# How often a long native call's freed pages are handed back while it runs. A trim walks the
# arenas' chunks: measured 35 ms over 1.2 GB of fragmented heap, so a few percent of a core at
# this interval, during compaction only. LanceDB compaction's CPU did not measurably change
# (21.4 s with, 23.0 s without, compacting 800,000 variants in 20 new fragments).
TRIM_INTERVAL_S = 0.5


@contextlib.contextmanager
def returning_freed_memory(interval_s: float = TRIM_INTERVAL_S) -> Iterator[None]:
    """Trim every `interval_s` while the block runs, and once at its end.

    For native calls that run long and churn memory, LanceDB's compaction above all: it
    frees as much as it allocates, but glibc keeps what was freed in the arenas, so the
    writer's resident memory reached the sum of everything compaction had touched. Measured
    in `vcf-agent bench load` (ten jobs at once): during a 25 s compaction 736 MB of arena,
    of which 429 MB free, at the writer's peak of 1,130 MB; compacting 800,000 variants alone
    peaked at 591 MB without and 509-516 MB with this.
    """
    stopped = threading.Event()

    def trim_until_stopped() -> None:
        while not stopped.wait(interval_s):
            return_freed_memory()

    trimmer = threading.Thread(target=trim_until_stopped, name="writer-malloc-trim", daemon=True)
    trimmer.start()
    try:
        yield
    finally:
        stopped.set()
        trimmer.join()
        return_freed_memory()
