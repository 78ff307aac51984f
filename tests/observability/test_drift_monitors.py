"""Monitors against naive reference implementations written here, plus properties."""
from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from observability.config import ObservabilityConfig
from observability.monitors import (
    PSI_EPSILON,
    MonitorSuite,
    MonitorWindow,
    PredictionLog,
    PSIBaseline,
    RetrainQueue,
    RetrainTrigger,
    Severity,
    SlidingWindow,
    TrainingBaseline,
    business_rates,
    calibration,
    coverage,
    diversity,
    feature_freshness,
    null_rate,
    psi,
    relative_drop,
    score_shift,
)

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
samples = st.lists(finite, min_size=1, max_size=200)


class FakeClock:
    def __init__(self, t: float = 1_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


# -- naive references ---------------------------------------------------------------------------

def naive_psi(baseline, current, n_bins=10, eps=PSI_EPSILON):
    b = sorted(x for x in baseline if x is not None and not math.isnan(x))
    c = [x for x in current if x is not None and not math.isnan(x)]
    edges = sorted(set(float(np.quantile(b, q)) for q in [i / n_bins for i in range(1, n_bins)]))

    def bin_of(x):
        for i, e in enumerate(edges):
            if x <= e:
                return i
        return len(edges)

    def fractions(xs):
        counts = [0] * (len(edges) + 1)
        for x in xs:
            counts[bin_of(x)] += 1
        return [k / len(xs) for k in counts]

    total = 0.0
    for e, a in zip(fractions(b), fractions(c)):
        e, a = max(e, eps), max(a, eps)
        total += (a - e) * math.log(a / e)
    return total


def naive_ece(p, y, n_bins=10):
    buckets = {}
    for pi, yi in zip(p, y):
        b = min(int(pi * n_bins), n_bins - 1)
        buckets.setdefault(b, []).append((pi, yi))
    return sum(len(v) / len(p) * abs(sum(a for a, _ in v) / len(v) - sum(b for _, b in v) / len(v)) for v in buckets.values())


# -- PSI ----------------------------------------------------------------------------------------

def test_psi_matches_reference_on_shifted_normal():
    rng = np.random.default_rng(1)
    base, cur = rng.normal(0, 1, 2000), rng.normal(0.5, 1.2, 1500)
    assert psi(base, cur) == pytest.approx(naive_psi(list(base), list(cur)), rel=1e-9)
    assert psi(base, cur) > 0.1


def test_psi_worked_example_with_empty_bin():
    # Baseline quartile bins hold 25% each; current puts nothing in the first bin.
    baseline = PSIBaseline(edges=(1.0, 2.0, 3.0), fractions=(0.25, 0.25, 0.25, 0.25))
    current = [1.5] * 25 + [2.5] * 25 + [3.5] * 50
    expected = (PSI_EPSILON - 0.25) * math.log(PSI_EPSILON / 0.25) + 0 + 0 + 0.25 * math.log(2)
    assert baseline.psi(current) == pytest.approx(expected)


def test_psi_ignores_nulls_and_is_nan_without_data():
    base = np.arange(100.0)
    assert psi(base, [1.0, None, np.nan, 50.0, 99.0]) == pytest.approx(naive_psi(list(base), [1.0, 50.0, 99.0]))
    assert math.isnan(psi(base, [None, np.nan]))
    with pytest.raises(ValueError):
        PSIBaseline.fit([np.nan])


def test_psi_discrete_feature_with_ties():
    base = [0] * 80 + [1] * 20
    assert psi(base, base) == 0.0
    assert psi(base, [0] * 50 + [1] * 50) == pytest.approx(naive_psi(base, [0] * 50 + [1] * 50))


@settings(max_examples=60, deadline=None)
@given(samples, samples)
def test_psi_properties(base, cur):
    value = psi(base, cur)
    assert value >= 0
    assert value == pytest.approx(naive_psi(base, cur), rel=1e-6, abs=1e-9)
    assert psi(base, base) == 0.0


# -- calibration ----------------------------------------------------------------------------

def test_calibration_matches_reference():
    rng = np.random.default_rng(2)
    p = rng.random(3000)
    y = (rng.random(3000) < p * 0.8).astype(float)
    report = calibration(p, y, 10, "click")
    assert report.ece == pytest.approx(naive_ece(p, y))
    assert report.ratio == pytest.approx(p.mean() / y.mean())
    assert report.deviation == pytest.approx(abs(p.mean() / y.mean() - 1))
    assert sum(b.count for b in report.bins) == 3000


def test_calibration_perfect_and_degenerate_cases():
    p = np.array([0.0, 0.0, 1.0, 1.0])
    assert calibration(p, [0, 0, 1, 1]).ece == 0.0
    assert calibration([0.1, 0.2], [0, 0]).ratio == math.inf
    assert calibration([0.0, 0.0], [0, 0]).deviation == 0.0
    assert calibration([], []).n == 0
    assert calibration([0.5, None], [1, 1]).n == 1
    with pytest.raises(ValueError):
        calibration([0.1], [1, 0])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.booleans()), min_size=1, max_size=100))
def test_ece_bounded(pairs):
    p, y = zip(*pairs)
    report = calibration(p, [float(v) for v in y])
    assert 0.0 <= report.ece <= 1.0
    assert report.ece == pytest.approx(naive_ece(p, [float(v) for v in y]), abs=1e-9)


# -- coverage, freshness, shift, business, diversity -------------------------------------------

def test_coverage_and_null_rate():
    values = [1.0, None, np.nan, 2.0]
    assert null_rate(values) == 0.5 and coverage(values) == 0.5
    assert math.isnan(null_rate([]))


def test_freshness():
    assert feature_freshness([100.0, 250.0, np.nan], now=300.0) == 50.0
    assert feature_freshness([], now=1.0) == math.inf


def test_score_shift_reference():
    rng = np.random.default_rng(3)
    b, c = rng.normal(0, 1, 500), rng.normal(0.3, 1, 400)
    shift = score_shift(b, c)
    naive_ks = max(abs(np.mean(b <= x) - np.mean(c <= x)) for x in np.concatenate([b, c]))
    assert shift.ks == pytest.approx(naive_ks)
    assert shift.mean_shift == pytest.approx((c.mean() - b.mean()) / b.std())
    assert score_shift(b, b).ks == 0.0 and score_shift(b, b).psi == 0.0


def test_business_rates_and_drop():
    events = ["impression"] * 100 + ["click"] * 5 + ["like"] * 3 + ["hide"] * 2 + ["watch"] * 2
    rates = business_rates(events)
    assert rates == pytest.approx({"ctr": 0.05, "engagement_rate": 0.10, "hide_rate": 0.02})
    assert relative_drop(0.045, 0.05) == pytest.approx(0.1)
    assert relative_drop(0.06, 0.05) == pytest.approx(-0.2)
    assert math.isnan(relative_drop(1.0, 0.0))
    assert math.isnan(business_rates([])["ctr"])


def test_diversity_reference():
    users = [1, 1, 1, 2, 2, 3]
    creators = [10, 10, 11, 10, 12, None]
    # user 1: {10, 11}, user 2: {10, 12}; user 3 has no known creator
    assert diversity(users, creators) == 2.0
    assert math.isnan(diversity([], []))


def test_sliding_window_evicts_by_clock():
    clock = FakeClock(0.0)
    window = SlidingWindow[int](seconds=60, clock=clock)
    window.add(1)
    clock.advance(30)
    window.extend([2, 3])
    assert window.items() == [1, 2, 3]
    clock.advance(31)
    assert window.items() == [2, 3]
    clock.advance(60)
    assert len(window) == 0


# -- suite and trigger ---------------------------------------------------------------------------

@pytest.fixture
def baseline():
    rng = np.random.default_rng(4)
    return TrainingBaseline.fit(
        {"age": rng.normal(35, 10, 5000)}, {"click": rng.beta(2, 20, 5000)},
        business={"ctr": 0.05}, diversity={"creator": 10.0},
    )


def test_suite_grades_each_monitor(baseline):
    rng = np.random.default_rng(5)
    age = rng.normal(45, 10, 2000)
    age[:100] = np.nan  # 5% nulls → warn (critical needs > 5%)
    window = MonitorWindow(
        features={"age": age},
        scores={"click": rng.beta(2, 20, 2000)},
        outcomes={"click": (np.full(1000, 0.1), (np.arange(1000) < 100).astype(float))},
        lookups={"item": (980, 20)},
        last_updates={"item": 0.0},
        business={"ctr": 0.04},
        diversity={"creator": 9.7},
    )
    results = {(r.monitor, r.subject): r for r in MonitorSuite(baseline).evaluate(window, now=4000.0)}
    assert results["feature_psi", "age"].severity is Severity.CRITICAL
    assert results["null_rate", "age"].severity is Severity.WARN
    assert results["score_psi", "click"].severity is Severity.OK
    assert results["calibration", "click"].severity is Severity.OK
    assert results["coverage", "item"].severity is Severity.WARN  # 98% < 99%, ≥ 95%
    assert results["freshness", "item"].severity is Severity.WARN
    assert results["business_drop", "ctr"].severity is Severity.CRITICAL  # 20% drop
    assert results["business_drop", "ctr"].value == pytest.approx(0.2)
    assert results["diversity", "creator"].severity is Severity.OK  # 3% < 5%


def test_suite_no_data_and_baseline_round_trip(baseline, tmp_path):
    path = tmp_path / "baseline.json"
    baseline.save(path)
    loaded = TrainingBaseline.load(path)
    assert loaded == baseline
    results = MonitorSuite(loaded).evaluate(MonitorWindow(features={"age": np.array([np.nan])}, business={"unknown": 1.0}))
    assert [(r.monitor, r.severity) for r in results if r.monitor == "null_rate"] == [("null_rate", Severity.CRITICAL)]
    assert [r.severity for r in results if r.monitor in ("feature_psi", "business_drop")] == [Severity.NO_DATA] * 2
    with pytest.raises(ValueError, match="now"):
        MonitorSuite(loaded).evaluate(MonitorWindow(last_updates={"x": 1.0}))


def test_retrain_trigger_rate_limited(baseline, caplog):
    clock, queue = FakeClock(), RetrainQueue()
    trigger = RetrainTrigger.from_config(queue, ObservabilityConfig(retrain_min_interval_seconds=3600), clock)
    rng = np.random.default_rng(6)
    drifted = MonitorSuite(baseline).evaluate(MonitorWindow(features={"age": rng.normal(60, 10, 500)}))
    healthy = MonitorSuite(baseline).evaluate(MonitorWindow(features={"age": rng.normal(35, 10, 500)}))

    assert trigger.consider(healthy) is None
    with caplog.at_level(logging.WARNING, logger="observability.monitors"):
        first = trigger.consider(drifted)
    assert first is not None and first.requested_at == clock.t
    assert [r.monitor for r in first.reasons] == ["feature_psi"]
    assert "requesting retraining" in caplog.text
    clock.advance(3599)
    assert trigger.consider(drifted) is None and trigger.suppressed == 1
    clock.advance(1)
    assert trigger.consider(drifted) is not None
    assert len(queue.drain()) == 2 and len(queue) == 0


def test_retrain_trigger_ignores_monitors_not_configured(baseline):
    queue = RetrainQueue()
    trigger = RetrainTrigger(queue, 0, monitors=("calibration",), clock=FakeClock())
    drifted = MonitorSuite(baseline).evaluate(MonitorWindow(features={"age": np.full(100, 90.0)}))
    assert any(r.severity is Severity.CRITICAL for r in drifted)
    assert trigger.consider(drifted) is None and len(queue) == 0


# -- prediction log (calibration join) -------------------------------------------------------

def test_prediction_log_joins_events_once_and_finalises():
    clock = FakeClock(0.0)
    log = PredictionLog(ttl_seconds=600, clock=clock)
    log.log("r1", [1, 2, 3], {"click": [0.1, 0.2, 0.3], "like": [0.01, 0.02, 0.03], "watch": [5, 6, 7]})
    joined = log.join([
        ("r1", 1, "impression"), ("r1", 2, "impression"), ("r1", 2, "impression"),  # duplicate ignored
        ("r1", 2, "click"), ("r1", 2, "click"), ("r1", 2, "like"), ("r9", 1, "click"),  # unknown request ignored
    ])
    assert joined.predicted_sum == pytest.approx({"click": 0.3, "like": 0.03})
    assert joined.observed == {"click": 1, "like": 1}
    clock.advance(599)
    assert log.pop_finalised() == {}
    clock.advance(1)
    final = log.pop_finalised()
    np.testing.assert_allclose(final["click"][0], [0.1, 0.2])  # item 3 never shown: no outcome
    np.testing.assert_allclose(final["click"][1], [0.0, 1.0])
    assert len(log) == 0


def test_prediction_log_bounded():
    log = PredictionLog(max_entries=2, clock=FakeClock())
    log.log("r", [1, 2, 3], {"click": [0.1, 0.2, 0.3]})
    assert len(log) == 2
    assert log.join([("r", 1, "impression")]).predicted_sum == {}
