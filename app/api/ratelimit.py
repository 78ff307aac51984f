"""Per-client token buckets for the public endpoints: pure logic over an injected clock.

Each client (key: its address) has a bucket of `burst` tokens refilled at `rate_per_s`; a
request takes one token or is refused with the seconds until the next token (the 429's
Retry-After). At most `max_clients` buckets are kept, least recently used evicted first, so a
flood of distinct addresses cannot grow memory without bound (an evicted client starts again
with a full bucket, which errs on the side of serving).

The buckets are in-process, on purpose: the limiter must keep working when Redis is slow or
down (exactly when load shedding matters most) and must not add a Redis round trip to every
feed. The limit still holds across replicas: each ingress replica enforces its share,
`rate / n` and `burst / n`, where n is the number of live ingress replicas it learns from a
heartbeat in Redis once a second (`app/state/membership.py`, `rescale`). The proxy spreads a
client's requests over the replicas, so the shares add up to the configured limit; while Redis
is down a replica keeps the last n it saw.

Example:
    limiter = TokenBucketLimiter(rate_per_s=20, burst=40, max_clients=100_000, clock=time.monotonic)
    wait = limiter.acquire("10.0.0.7")
    if wait > 0: answer 429 with Retry-After: ceil(wait)
"""
from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class TokenBucketLimiter:
    """Token bucket per key, bounded number of keys (LRU)."""

    def __init__(self, rate_per_s: float, burst: float, max_clients: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0 or burst < 1 or max_clients < 1:
            raise ValueError("need rate_per_s > 0, burst >= 1 and max_clients >= 1")
        self.rate_per_s, self.burst, self.max_clients = rate_per_s, float(burst), max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def rescale(self, rate_per_s: float, burst: float) -> None:
        """New rate and bucket size (a replica's share changed): buckets are kept, none above
        the new burst, so shrinking the share takes effect at once."""
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("need rate_per_s > 0 and burst >= 1")
        shrinks = burst < self.burst
        self.rate_per_s, self.burst = rate_per_s, float(burst)
        if not shrinks:
            return  # called on every heartbeat: walk the buckets only when a bucket can be too full
        for key, (tokens, at) in self._buckets.items():
            if tokens > self.burst:
                self._buckets[key] = (self.burst, at)

    def __len__(self) -> int:
        return len(self._buckets)

    def acquire(self, key: str, cost: float = 1.0) -> float:
        """Take `cost` tokens from `key`'s bucket: 0.0 when allowed, else the seconds until
        enough tokens will have accrued (nothing is taken then)."""
        now = self._clock()
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate_per_s)
        wait = 0.0
        if tokens >= cost:
            tokens -= cost
        else:
            wait = (cost - tokens) / self.rate_per_s
        self._buckets[key] = (tokens, now)  # most recently used last
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait
