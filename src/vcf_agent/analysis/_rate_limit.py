"""A token bucket per provider that also obeys the server's Retry-After."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class TokenBucket:
    """`rate` tokens per second up to `burst`; `defer` pauses every caller until a time.

    A 429's Retry-After applies to the whole provider, not just the request that
    got it, so it pauses the bucket rather than one caller.
    """

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = float(max(1, burst))
        self._clock = clock
        self._tokens = self._burst
        self._updated = clock()
        self._paused_until = 0.0

    def defer(self, seconds: float) -> None:
        """Hold every caller for at least `seconds` from now."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)
        # Resuming with a full burst would hit the limit again at once.
        self._tokens = min(self._tokens, 1.0)

    async def acquire(self) -> None:
        while True:
            now = self._clock()
            if now < self._paused_until:
                await asyncio.sleep(self._paused_until - now)
                continue
            if self._rate <= 0:
                return
            self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
            self._updated = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return
            await asyncio.sleep((1.0 - self._tokens) / self._rate)
