"""Traffic forecast and the pace multiplier."""
from __future__ import annotations

import numpy as np
import pytest

from app.ads.pacing import BudgetPacer, TrafficForecast
from app.ads.world import daily_traffic_weights, sample_daily_timestamps
from tests.app.ads.conftest import DAY_START

HOUR = 3600.0


def test_flat_forecast_share_is_linear_in_time() -> None:
    f = TrafficForecast.flat(24)
    assert f.share_remaining(DAY_START) == pytest.approx(1.0)
    assert f.share_remaining(DAY_START + 6 * HOUR) == pytest.approx(0.75)
    assert f.share_remaining(DAY_START + 6.5 * HOUR) == pytest.approx(17.5 / 24)
    assert f.share_remaining(DAY_START + 24 * HOUR - 1e-6) == pytest.approx(0.0, abs=1e-6)


def test_fit_learns_the_daily_curve() -> None:
    ts = sample_daily_timestamps(np.random.default_rng(0), 200_000, DAY_START, n_days=7)
    f = TrafficForecast.fit(ts, n_buckets=24, smoothing_buckets=0.5)
    truth = daily_traffic_weights(np.arange(24) + 0.5)
    assert f.shares.sum() == pytest.approx(1.0)
    assert np.corrcoef(f.shares, truth)[0, 1] > 0.98
    assert int(np.argmax(f.shares)) in (19, 20, 21)  # evening peak
    assert int(np.argmin(f.shares)) in (2, 3, 4, 5)  # night trough


def test_fit_without_events_is_flat() -> None:
    assert np.allclose(TrafficForecast.fit([], 96, 2.0).shares, 1 / 96)


def _pacer(**kw) -> BudgetPacer:
    args = dict(forecast=TrafficForecast.flat(24), min_multiplier=0.1, max_multiplier=2.0, gain=1.0, min_remaining_share=0.01)
    return BudgetPacer(**{**args, **kw})


def test_multiplier_is_one_on_pace_below_ahead_above_behind() -> None:
    pacer = _pacer()
    noon = DAY_START + 12 * HOUR
    assert pacer.multiplier(100.0, 50.0, noon) == pytest.approx(1.0)  # half the day, half the budget
    assert pacer.multiplier(100.0, 25.0, noon) == pytest.approx(0.5)  # spent too fast: throttle
    assert pacer.multiplier(100.0, 75.0, noon) == pytest.approx(1.5)  # behind: accelerate
    assert _pacer(gain=2.0).multiplier(100.0, 25.0, noon) == pytest.approx(0.25)


def test_multiplier_is_clamped() -> None:
    pacer = _pacer()
    noon = DAY_START + 12 * HOUR
    assert pacer.multiplier(100.0, 1.0, noon) == pytest.approx(0.1)
    assert pacer.multiplier(100.0, 100.0, DAY_START + 23.9 * HOUR) == pytest.approx(2.0)
    assert pacer.multiplier(100.0, 0.0, noon) == pytest.approx(0.1)
