"""Wake-ups for a job's watchers when its row changes, so WatchJob answers at once.

Before, WatchJob re-read the job every 0.2 s: a LIMS learned a job had ended up to 0.2 s after
it did, and a client wanting it sooner had to poll GetJob. The registry now reports each write
here, and whether it ended the job. A watcher re-reads the row at once when the job ended, and
otherwise when it changed, at most once per interval it chooses: a large job's stages report
every batch, and every watcher re-reading at each report would cost ingest more than the old
poll did. Without a wake-up it still re-reads after `FALLBACK_S`, so a write this process did
not make (another process sharing the file) is seen too.

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
    """One watcher's wake-ups: set by the writes to its job, cleared when waited for."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._changed = asyncio.Event()
        self._ended = asyncio.Event()

    def signal(self, ended: bool) -> None:
        """From any thread; a watcher whose loop has closed is past waking."""
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._wake, ended)

    def _wake(self, ended: bool) -> None:
        self._changed.set()
        if ended:
            self._ended.set()

    async def next(self, at_least_s: float = 0.0) -> bool:
        """Until the job ends, or it changed and `at_least_s` has passed (True), or `FALLBACK_S`
        passed without a change (False)."""
        began = self._loop.time()
        try:
            async with asyncio.timeout(FALLBACK_S):
                await self._changed.wait()
                left = at_least_s - (self._loop.time() - began)
                if left > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._ended.wait(), left)
        except TimeoutError:
            return self._changed.is_set()
        finally:
            self._changed.clear()
        return True


class JobChanges:
    """Each job's watchers, told by `changed` of every write to its row."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watchers: dict[str, set[JobChange]] = {}

    @contextlib.contextmanager
    def watch(self, job_id: str) -> Iterator[JobChange]:
        """Wake-ups for `job_id` until the block ends. Read the job after entering, not before,
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

    def changed(self, job_id: str, *, ended: bool = False) -> None:
        """A write to the job's row; `ended` when it put the job in a final state."""
        if not self._watchers:
            return
        with self._lock:
            watchers = tuple(self._watchers.get(job_id, ()))
        for change in watchers:
            change.signal(ended)
