"""Adaptive admission: how many feeds one ingress replica works on at once, learned from the
latency of the feeds it finishes (additive increase, multiplicative decrease, as TCP's
congestion window and Netflix's concurrency-limits do).

A fixed bound is either too high for a loaded machine (every admitted feed waits behind the
others: at 15 feeds/s, 16 in flight is a second each) or too low for an idle one. Here the
bound follows the machine: each feed finished within `target_s` raises it by 1/limit (≈ +1 per
window of `limit` feeds), one finished later cuts it by `backoff` (at most once per window, so
one slow burst does not collapse it), always within [min_limit, max_limit]. Past the bound the
ingress answers 503 + Retry-After at once, so the feeds it does take keep their latency.

    limit = AdaptiveConcurrencyLimit(target_s=0.2, min_limit=1, max_limit=8)   # or .from_api(config.api)
    if not limit.try_acquire(): hold, then answer 503
    try: ... finally: limit.release(seconds_the_feed_took)

`target_s = 0` keeps the limit at `max_limit` (a fixed bound).

A refusal is cheap but not free (the HTTP proxy and the ingress spend CPU on each), and a client
that retries at once turns a fast refusal into a spin: the faster the server refuses, the more
refusals it must serve, until they crowd out the feeds (the collapse in the SRE book's "Handling
Overload"). `RefusalPacer` holds each refusal before its 503 — asleep, no CPU — for a delay that
grows with the number of refusals already waiting: with `w` waiting and a bound of `L` feeds in
flight, each waits ≈ `base_s × w / L`, so a storm of any size is refused at most ≈ `L / base_s`
times a second, and a calm moment (w ≈ 0) refuses at once. A slot freed during a hold goes to
the newest held request (deployments/guards.py `Admission`), so holding never idles the bound.
"""
from __future__ import annotations

import math
import random

from app.api.config import ApiConfig


class AdaptiveConcurrencyLimit:
    def __init__(self, target_s: float, min_limit: int, max_limit: int, backoff: float = 0.5) -> None:
        if target_s < 0 or not 1 <= min_limit <= max_limit or not 0 < backoff < 1:
            raise ValueError("need target_s >= 0, 1 <= min_limit <= max_limit and 0 < backoff < 1")
        self.target_s, self.min_limit, self.max_limit, self.backoff = target_s, min_limit, max_limit, backoff
        self._limit = float(max_limit)  # start open: an idle replica should not shed its first burst
        self._inflight = 0
        self._since_decrease = 0  # completions since the last cut

    @classmethod
    def from_api(cls, api: ApiConfig) -> "AdaptiveConcurrencyLimit | None":
        """The ingress's bound from `api.*` settings; None when `max_inflight_feeds` is 0 (no bound)."""
        if not api.max_inflight_feeds:
            return None
        return cls(api.admission_target_s, min(api.admission_min_inflight, api.max_inflight_feeds),
                   api.max_inflight_feeds, api.admission_backoff)

    @property
    def settings(self) -> tuple[float, int, int, float]:
        return self.target_s, self.min_limit, self.max_limit, self.backoff

    @property
    def limit(self) -> int:
        return int(self._limit)

    @property
    def inflight(self) -> int:
        return self._inflight

    def try_acquire(self) -> bool:
        """Take a slot if one is free under the current limit."""
        if self._inflight >= self.limit:
            return False
        self._inflight += 1
        return True

    def give_back(self) -> None:
        """Return a slot that did no work (its request went away before starting): nothing learned."""
        self._inflight = max(0, self._inflight - 1)

    def release(self, seconds: float) -> None:
        """Give the slot back with the time the admitted work took (failures count too: a feed
        that ran into its deadline is the clearest sign of too much work in flight)."""
        self._inflight = max(0, self._inflight - 1)
        if not self.target_s:
            return  # a fixed bound
        self._since_decrease += 1
        if seconds > self.target_s:
            if self._since_decrease >= self._limit:
                self._limit = max(float(self.min_limit), self._limit * self.backoff)
                self._since_decrease = 0
        else:
            self._limit = min(float(self.max_limit), self._limit + 1.0 / self._limit)


class RefusalPacer:
    """How long to hold a refusal, and the Retry-After to answer it with.

    >>> pacer = RefusalPacer(base_s=0.1, max_s=2.0, rng=random.Random(0))
    >>> delay = pacer.delay(waiting=16, limit=4)   # ≈ 0.1 × 17 / 4, jittered ×[0.5, 1.5)
    """

    def __init__(self, base_s: float, max_s: float, rng: random.Random | None = None) -> None:
        if base_s < 0 or max_s < 0:
            raise ValueError("need base_s >= 0 and max_s >= 0")
        self.base_s, self.max_s, self.rng = base_s, max_s, rng or random.Random()

    @classmethod
    def from_api(cls, api: ApiConfig) -> "RefusalPacer":
        return cls(api.shed_delay_s, api.shed_delay_max_s)

    @property
    def settings(self) -> tuple[float, float]:
        return self.base_s, self.max_s

    def delay(self, waiting: int, limit: int) -> float:
        """Seconds to hold this refusal: `waiting` refusals held already, `limit` feeds in flight."""
        if not self.base_s:
            return 0.0
        pressure = (waiting + 1) / max(1, limit)
        return min(self.max_s, self.base_s * pressure * self.rng.uniform(0.5, 1.5))

    @staticmethod
    def retry_after(delay_s: float) -> str:
        """Whole seconds (HTTP's Retry-After), at least 1: a polite client waits longer than it was held."""
        return str(max(1, math.ceil(delay_s)))
