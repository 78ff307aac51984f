"""The Redis circuit breaker, driven by a manual clock (no sleeping)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.state.breaker import BreakerState, CircuitBreaker
from app.state.clock import ManualClock


def make(threshold: int = 3, reset: float = 1.0) -> tuple[CircuitBreaker, ManualClock]:
    clock = ManualClock(100.0)
    return CircuitBreaker(threshold, reset, clock), clock


def test_opens_after_consecutive_failures_only():
    breaker, _ = make(threshold=3)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    breaker.record_success()  # a success resets the count: failures must be consecutive
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and breaker.opened_count == 1
    assert not breaker.allow()


def test_half_open_lets_exactly_one_probe_through_then_closes_on_success():
    breaker, clock = make(threshold=1, reset=1.0)
    breaker.record_failure()
    clock.advance(0.999)
    assert not breaker.allow()
    clock.advance(0.001)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()  # the probe
    assert not breaker.allow() and not breaker.allow()  # everyone else still skips Redis
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()


def test_failed_probe_reopens_for_a_full_period():
    breaker, clock = make(threshold=2, reset=2.0)
    breaker.record_failure()
    breaker.record_failure()
    clock.advance(2.0)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.advance(1.9)
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.allow()
    assert breaker.opened_count == 1  # re-opening after a probe is the same outage


def test_a_probe_that_never_reports_is_superseded():
    breaker, clock = make(threshold=1, reset=1.0)
    breaker.record_failure()
    clock.advance(1.0)
    assert breaker.allow()  # this probe's request is cancelled: it never reports
    clock.advance(0.5)
    assert not breaker.allow()
    clock.advance(0.5)
    assert breaker.allow()


def test_rejects_nonsense_settings():
    with pytest.raises(ValueError):
        CircuitBreaker(0, 1.0, ManualClock(0))
    with pytest.raises(ValueError):
        CircuitBreaker(1, 0.0, ManualClock(0))


@settings(deadline=None)
@given(st.lists(st.sampled_from(["ok", "fail", "tick"]), max_size=60), st.integers(1, 5))
def test_never_allows_while_open_and_always_closes_after_a_success(ops, threshold):
    """Against a naive model: while OPEN nothing is allowed; a success always closes."""
    breaker, clock = make(threshold=threshold, reset=1.0)
    for op in ops:
        if op == "tick":
            clock.advance(0.4)
        elif op == "ok":
            breaker.record_success()
            assert breaker.state is BreakerState.CLOSED
        else:
            breaker.record_failure()
        if breaker.state is BreakerState.OPEN:
            assert not breaker.allow()
