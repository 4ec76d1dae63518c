"""A circuit breaker per provider, so a failing endpoint stops receiving work quickly.

Closed: calls flow and consecutive failures are counted. After `failures` in a
row it opens: nothing is sent for `reset_s`, and the provider's queued work
fails over at once. Then one probe call is let through (half-open); its
success closes the breaker, its failure opens it for another `reset_s`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from ._metrics import breaker_state

State = Literal["closed", "half_open", "open"]

_GAUGE = {"closed": 0, "half_open": 1, "open": 2}


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        failures: int,
        reset_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._threshold = failures
        self._reset_s = reset_s
        self._clock = clock
        self._state: State = "closed"
        self._consecutive = 0
        self._opened_at = 0.0
        self._probing = False
        self._listeners: list[Callable[[], None]] = []
        breaker_state.labels(name).set(0)

    @property
    def state(self) -> State:
        return self._state

    def on_open(self, listener: Callable[[], None]) -> None:
        """Call `listener` each time the breaker opens (to fail queued work over)."""
        self._listeners.append(listener)

    @property
    def available(self) -> bool:
        """Whether a new request may be routed here now (a due probe counts)."""
        if self._state == "closed":
            return True
        if self._state == "open":
            return self._clock() - self._opened_at >= self._reset_s
        return not self._probing

    @property
    def retry_in(self) -> float:
        """Seconds until a request may be routed here again (0 when it may now)."""
        if self._state == "open":
            return max(0.0, self._opened_at + self._reset_s - self._clock())
        # A probe in flight settles within the provider timeout; look again soon.
        return 0.0 if self.available else 0.05

    def allow(self) -> bool:
        """Take permission for one call; in half-open only one caller gets it."""
        if self._state == "closed":
            return True
        if self._state == "open":
            if self._clock() - self._opened_at < self._reset_s:
                return False
            self._set("half_open")
        if self._probing:
            return False
        self._probing = True
        return True

    def record_success(self) -> None:
        self._consecutive = 0
        self._probing = False
        if self._state != "closed":
            self._set("closed")

    def record_failure(self) -> None:
        self._consecutive += 1
        if self._state == "half_open" or self._consecutive >= self._threshold:
            self._probing = False
            self._opened_at = self._clock()
            if self._state != "open":
                self._set("open")
                for listener in self._listeners:
                    listener()

    def release(self) -> None:
        """The permitted call ended with no verdict (rate limited, cancelled): free the probe."""
        self._probing = False

    def _set(self, state: State) -> None:
        self._state = state
        breaker_state.labels(self.name).set(_GAUGE[state])
