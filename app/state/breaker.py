"""A circuit breaker for the serving path's Redis calls: pure logic over an injected clock.

Why: a paused or partitioned Redis makes every call wait its full socket timeout. With the
breaker, `failure_threshold` consecutive failures open the circuit and, while it is open,
callers skip Redis at once (≈0 ms) and take their fail-closed path (organic feed only, no ads).
After `reset_after_s` one caller is let through as a probe (half-open): success closes the
circuit, failure opens it again for another `reset_after_s`. A probe that never reports (its
request was cancelled) is superseded after another `reset_after_s`.

The breaker does no I/O and holds no lock: one instance per asyncio event loop (an ingress
replica), where calls between awaits are atomic.

Example:
    breaker = CircuitBreaker(failure_threshold=3, reset_after_s=1.0, clock=time.monotonic)
    if not breaker.allow():
        ...fail closed without calling Redis...
    try:
        value = await redis_call()
    except StoreUnavailable:
        breaker.record_failure()
        raise
    breaker.record_success()
"""
from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum


class BreakerState(IntEnum):
    """Values are what the `rayfeed_redis_breaker_state` gauge exports."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Consecutive-failure circuit breaker (closed → open → half-open → closed)."""

    def __init__(self, failure_threshold: int, reset_after_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if failure_threshold < 1 or reset_after_s <= 0:
            raise ValueError("need failure_threshold >= 1 and reset_after_s > 0")
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None  # set while open or half-open
        self._probe_at: float | None = None  # when the current half-open probe was let through
        self.opened_count = 0  # how many times the circuit opened (tests, logs)

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._probe_at is not None or self._clock() - self._opened_at >= self.reset_after_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allow(self) -> bool:
        """Whether a call may go to Redis now. In half-open state exactly one caller (the
        probe) gets True until it reports, or until its report is overdue."""
        if self._opened_at is None:
            return True
        now = self._clock()
        if now - self._opened_at < self.reset_after_s:
            return False
        if self._probe_at is None or now - self._probe_at >= self.reset_after_s:
            self._probe_at = now
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = self._probe_at = None

    def record_failure(self) -> None:
        self._failures += 1
        if self._opened_at is not None:  # a failed probe (or a straggler): open for another period
            self._opened_at, self._probe_at = self._clock(), None
        elif self._failures >= self.failure_threshold:
            self._opened_at, self._probe_at = self._clock(), None
            self.opened_count += 1
