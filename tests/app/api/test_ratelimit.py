"""Per-client token buckets, driven by a manual clock."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.api.ratelimit import TokenBucketLimiter
from app.state.clock import ManualClock


def test_burst_then_refill_at_the_rate_with_retry_after():
    clock = ManualClock(0.0)
    limiter = TokenBucketLimiter(rate_per_s=2.0, burst=3, max_clients=10, clock=clock)
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(0.5)  # one token accrues in 1/rate s
    clock.advance(0.5)
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0
    clock.advance(100.0)  # refill is capped at the burst
    assert [limiter.acquire("a") for _ in range(4)][-1] > 0


def test_clients_are_independent():
    clock = ManualClock(0.0)
    limiter = TokenBucketLimiter(1.0, 1, 10, clock)
    assert limiter.acquire("a") == 0.0 and limiter.acquire("a") > 0
    assert limiter.acquire("b") == 0.0


def test_memory_is_bounded_by_evicting_the_least_recently_used():
    clock = ManualClock(0.0)
    limiter = TokenBucketLimiter(1.0, 1, max_clients=3, clock=clock)
    for key in "abc":
        limiter.acquire(key)
    limiter.acquire("a")  # a is now the most recent; b the least
    limiter.acquire("d")
    assert len(limiter) == 3
    assert limiter.acquire("b") == 0.0  # evicted: starts again with a full bucket
    assert limiter.acquire("a") > 0  # kept, still empty


def test_rejects_nonsense_settings():
    for args in ((0, 1, 1), (1, 0.5, 1), (1, 1, 0)):
        with pytest.raises(ValueError):
            TokenBucketLimiter(*args, clock=ManualClock(0))


@settings(deadline=None)
@given(st.floats(0.5, 50), st.integers(1, 20), st.lists(st.floats(0, 2), min_size=1, max_size=200))
def test_never_admits_more_than_burst_plus_rate_times_elapsed(rate, burst, gaps):
    """The token-bucket bound, checked against the arithmetic a reviewer would write."""
    clock = ManualClock(0.0)
    limiter = TokenBucketLimiter(rate, burst, 10, clock)
    admitted = 0
    for gap in gaps:
        clock.advance(gap)
        admitted += limiter.acquire("k") == 0.0
    assert admitted <= burst + rate * clock.now + 1e-9


def test_rescale_shrinks_full_buckets_at_once_and_refills_at_the_new_rate():
    clock = ManualClock(0.0)
    limiter = TokenBucketLimiter(rate_per_s=10.0, burst=10, max_clients=10, clock=clock)
    assert limiter.acquire("a") == 0.0  # 9 tokens left
    limiter.rescale(rate_per_s=5.0, burst=4)  # a second replica joined: half each (rounded burst)
    assert [limiter.acquire("a") for _ in range(4)] == [0.0] * 4
    assert limiter.acquire("a") == pytest.approx(0.2)  # one token per 1/5 s now
    assert limiter.acquire("b") == 0.0  # new clients start with the new burst
    with pytest.raises(ValueError):
        limiter.rescale(0.0, 1)
