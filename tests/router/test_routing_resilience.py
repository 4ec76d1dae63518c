"""Circuit breaker and token bucket behaviour, on a controlled clock where timing matters."""

from __future__ import annotations

import time

from vcf_agent.analysis._breaker import CircuitBreaker
from vcf_agent.analysis._rate_limit import TokenBucket


def state(breaker: CircuitBreaker) -> str:
    # A call, so the type checker does not carry a narrowed state across breaker calls.
    return breaker.state


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_only() -> None:
    clock = Clock()
    opened: list[int] = []
    breaker = CircuitBreaker("p", failures=3, reset_s=10, clock=clock)
    breaker.on_open(lambda: opened.append(1))
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert state(breaker) == "closed"
    breaker.record_failure()
    assert state(breaker) == "open"
    assert opened == [1]
    assert not breaker.allow()
    assert not breaker.available
    assert breaker.retry_in == 10


def test_half_open_lets_one_probe_and_closes_on_success() -> None:
    clock = Clock()
    breaker = CircuitBreaker("p", failures=1, reset_s=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    assert breaker.available
    assert breaker.allow()
    assert state(breaker) == "half_open"
    assert not breaker.allow()  # one probe at a time
    breaker.record_success()
    assert state(breaker) == "closed"
    assert breaker.allow() and breaker.allow()


def test_failed_probe_reopens_and_released_probe_can_be_retaken() -> None:
    clock = Clock()
    breaker = CircuitBreaker("p", failures=2, reset_s=5, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    clock.now += 5
    assert breaker.allow()
    breaker.release()
    assert breaker.allow()
    breaker.record_failure()
    assert state(breaker) == "open"
    assert not breaker.allow()
    clock.now += 5
    assert breaker.allow()


async def test_token_bucket_limits_rate_after_the_burst() -> None:
    bucket = TokenBucket(rate=20, burst=2)
    started = time.perf_counter()
    for _ in range(6):
        await bucket.acquire()
    # Two from the burst, four more at 20/s: at least 0.2 s (later under load is not a defect).
    assert time.perf_counter() - started >= 0.18


async def test_token_bucket_defer_holds_every_caller() -> None:
    bucket = TokenBucket(rate=0, burst=1)
    bucket.defer(0.2)
    started = time.perf_counter()
    await bucket.acquire()
    assert time.perf_counter() - started >= 0.19
