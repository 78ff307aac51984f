"""Adaptive admission (AIMD on the latency of finished feeds), driven by hand."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.api.admission import AdaptiveConcurrencyLimit


def test_starts_open_and_refuses_past_the_limit():
    limit = AdaptiveConcurrencyLimit(target_s=0.2, min_limit=1, max_limit=3)
    assert [limit.try_acquire() for _ in range(4)] == [True, True, True, False]
    limit.release(0.05)
    assert limit.try_acquire() and not limit.try_acquire()


def test_slow_feeds_cut_the_limit_once_per_window_down_to_the_floor():
    limit = AdaptiveConcurrencyLimit(target_s=0.2, min_limit=2, max_limit=10, backoff=0.5)
    for _ in range(10):
        limit.try_acquire()
    for _ in range(10):  # one window of slow answers: a single cut, not ten
        limit.release(1.0)
    assert limit.limit == 5
    for _ in range(20):
        assert limit.try_acquire()
        limit.release(1.0)
    assert limit.limit == 2  # never below min_limit


def test_fast_feeds_grow_the_limit_by_about_one_per_window_up_to_the_ceiling():
    limit = AdaptiveConcurrencyLimit(target_s=0.2, min_limit=1, max_limit=6, backoff=0.5)
    for _ in range(12):
        limit.try_acquire()
        limit.release(1.0)
    assert limit.limit == 1
    grown = []
    for _ in range(12):
        limit.try_acquire()
        limit.release(0.05)
        grown.append(limit.limit)
    assert grown[0] == 2 and 3 <= grown[-1] <= 6 and grown == sorted(grown)
    for _ in range(200):
        limit.try_acquire()
        limit.release(0.05)
    assert limit.limit == 6


@given(st.lists(st.tuples(st.booleans(), st.floats(0, 2)), max_size=300))
def test_the_limit_stays_within_its_bounds_and_every_slot_is_counted(ops):
    limit = AdaptiveConcurrencyLimit(target_s=0.2, min_limit=1, max_limit=8)
    held = 0
    for acquire, seconds in ops:
        if acquire:
            held += limit.try_acquire()
        elif held:
            limit.release(seconds)
            held -= 1
        assert 1 <= limit.limit <= 8 and limit.inflight == held


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError):
        AdaptiveConcurrencyLimit(target_s=0.2, min_limit=3, max_limit=2)


def test_a_zero_target_is_a_fixed_bound_and_no_bound_is_none():
    from app.api.config import ApiConfig

    fixed = AdaptiveConcurrencyLimit.from_api(ApiConfig(admission_target_s=0, max_inflight_feeds=3))
    assert fixed is not None and fixed.limit == 3
    for _ in range(20):
        assert fixed.try_acquire()
        fixed.release(10.0)  # slow, but a fixed bound does not move
    assert fixed.limit == 3
    assert AdaptiveConcurrencyLimit.from_api(ApiConfig(max_inflight_feeds=0)) is None
    adaptive = AdaptiveConcurrencyLimit.from_api(ApiConfig(max_inflight_feeds=2, admission_min_inflight=5))
    assert adaptive is not None and adaptive.settings == (0.2, 2, 2, 0.5)  # floor clipped to the ceiling


# -- holding refusals: a storm of immediate retries is refused at a bounded rate -----------------

import random as _random

from hypothesis import given, settings, strategies as st

from app.api.admission import RefusalPacer


@settings(max_examples=200, deadline=None)
@given(waiting=st.integers(0, 10_000), limit=st.integers(1, 64), base=st.floats(0.01, 1.0), seed=st.integers(0, 99))
def test_held_refusals_complete_at_most_twice_limit_over_base_per_second(waiting, limit, base, seed):
    """With `waiting + 1` refusals held, each for at least 0.5 × base × (waiting + 1) / limit (until
    the cap), they finish at a rate ≤ 2 × limit / base a second, however many clients storm."""
    pacer = RefusalPacer(base, max_s=1e9, rng=_random.Random(seed))
    delay = pacer.delay(waiting, limit)
    assert delay >= 0.5 * base * (waiting + 1) / limit - 1e-12
    assert (waiting + 1) / delay <= 2 * limit / base + 1e-9


def test_the_hold_is_capped_and_zero_means_at_once():
    assert RefusalPacer(0.1, 2.0).delay(waiting=10**6, limit=1) == 2.0
    assert RefusalPacer(0.0, 2.0).delay(waiting=100, limit=1) == 0.0
    assert RefusalPacer.retry_after(0.0) == "1" and RefusalPacer.retry_after(1.2) == "2"
