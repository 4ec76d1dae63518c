"""Wake-ups for a job's watchers when its row changes, so WatchJob answers at once.

Before, WatchJob re-read the job every 0.2 s: a LIMS learned a job had ended up to 0.2 s after
it did, and a client wanting it sooner had to poll GetJob. The registry now reports each write
here; the stream re-reads the row when woken, and still after `FALLBACK_S` without one, so a
write this process did not make (another process sharing the file) is seen too.

The registry may be written from any thread (it holds a lock for that; today's writers run on
the event loop), so a wake-up reaches the watcher's loop with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

# How long a watcher waits for a wake-up before it re-reads the job anyway.
FALLBACK_S = 1.0


class JobChange:
    """One watcher's wake-up: set by any write to its job, cleared when it is waited for."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def signal(self) -> None:
        """From any thread; a watcher whose loop has closed is past waking."""
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, at_most_s: float = FALLBACK_S) -> bool:
        """Until the job changes (True) or `at_most_s` passes (False)."""
        try:
            await asyncio.wait_for(self._event.wait(), at_most_s)
        except TimeoutError:
            return False
        self._event.clear()
        return True


class JobChanges:
    """Each job's watchers, told by `changed` of every write to its row."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watchers: dict[str, set[JobChange]] = {}

    @contextlib.contextmanager
    def watch(self, job_id: str) -> Iterator[JobChange]:
        """A wake-up for `job_id` until the block ends. Read the job after entering, not before,
        so that a write between the read and the wait is not missed."""
        change = JobChange(asyncio.get_running_loop())
        with self._lock:
            self._watchers.setdefault(job_id, set()).add(change)
        try:
            yield change
        finally:
            with self._lock:
                watchers = self._watchers.get(job_id)
                if watchers is not None:
                    watchers.discard(change)
                    if not watchers:
                        del self._watchers[job_id]

    def changed(self, job_id: str) -> None:
        if not self._watchers:
            return
        with self._lock:
            watchers = tuple(self._watchers.get(job_id, ()))
        for change in watchers:
            change.signal()
