"""Budget pacing: spread a campaign's daily budget over the day's traffic.

A traffic forecast gives the share of the day's requests still to come at time t, learned from
event timestamps as a circularly smoothed time-of-day histogram. The pace multiplier is

    m(t) = clamp( ((B_remaining / B_daily) / share_remaining(t)) ** gain,  m_min, m_max )

i.e. the budget left per expected remaining impression, normalised by the day's average budget
per impression: m = 1 exactly on pace, m < 1 when ahead (throttle), m > 1 when behind
(accelerate). The auction scales the campaign's bid by m.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.ads.config import AdsConfig
from app.state.clock import SECONDS_PER_DAY


@dataclass(frozen=True)
class TrafficForecast:
    """Share of a day's traffic per time-of-day bucket (sums to 1)."""

    shares: np.ndarray

    @classmethod
    def fit(cls, timestamps: Sequence[float] | np.ndarray, n_buckets: int, smoothing_buckets: float) -> "TrafficForecast":
        """Histogram the time of day of `timestamps` into `n_buckets`, smooth with a circular
        Gaussian of std `smoothing_buckets`. No timestamps gives a flat day."""
        ts = np.asarray(timestamps, dtype=np.float64)
        if ts.size == 0:
            return cls.flat(n_buckets)
        bucket = ((ts % SECONDS_PER_DAY) / SECONDS_PER_DAY * n_buckets).astype(np.int64) % n_buckets
        counts = np.bincount(bucket, minlength=n_buckets).astype(np.float64)
        if smoothing_buckets > 0:
            offsets = np.arange(n_buckets)
            distance = np.minimum(offsets, n_buckets - offsets)
            kernel = np.exp(-0.5 * (distance / smoothing_buckets) ** 2)
            counts = np.real(np.fft.ifft(np.fft.fft(counts) * np.fft.fft(kernel / kernel.sum())))
            counts = np.clip(counts, 0, None)
        return cls(counts / counts.sum())

    @classmethod
    def flat(cls, n_buckets: int) -> "TrafficForecast":
        return cls(np.full(n_buckets, 1.0 / n_buckets))

    def share_remaining(self, now: float) -> float:
        """Expected share of today's traffic from `now` to midnight (UTC), uniform within a bucket."""
        n = len(self.shares)
        position = (now % SECONDS_PER_DAY) / SECONDS_PER_DAY * n
        k = min(int(position), n - 1)
        return float(self.shares[k] * (k + 1 - position) + self.shares[k + 1 :].sum())


@dataclass(frozen=True)
class BudgetPacer:
    """The pace multiplier of one campaign at one moment: a pure function of its budget state.

    Example:
        pacer = BudgetPacer.from_config(TrafficForecast.fit(event_ts, 96, 2.0), config)
        m = pacer.multiplier(daily_budget=100.0, remaining=40.0, now=now)
    """

    forecast: TrafficForecast
    min_multiplier: float
    max_multiplier: float
    gain: float
    min_remaining_share: float
    name: str = "pacing"

    @classmethod
    def from_config(cls, forecast: TrafficForecast, config: AdsConfig) -> "BudgetPacer":
        return cls(
            forecast,
            config.pacing_min_multiplier,
            config.pacing_max_multiplier,
            config.pacing_gain,
            config.pacing_min_remaining_share,
        )

    def multiplier(self, daily_budget: float, remaining: float, now: float) -> float:
        if daily_budget <= 0 or remaining <= 0:
            return self.min_multiplier
        share = max(self.forecast.share_remaining(now), self.min_remaining_share)
        ratio = (remaining / daily_budget) / share
        return float(np.clip(ratio**self.gain, self.min_multiplier, self.max_multiplier))
