"""What guards one ingress replica's capacity: its share of the cluster-wide rate limit and
its adaptive in-flight bound (admission).

- Rate limit: per client address, across all ingress replicas. Each replica heartbeats into a
  Redis set every `api.replica_heartbeat_s` (app/state/membership.py) and enforces 1/n of the
  limit with its local token buckets (app/api/ratelimit.py); on Redis trouble the last count
  stands (the limit errs towards the share it had). 429 + Retry-After past it.
- Admission: past this replica's in-flight bound (adaptive, app/api/admission.py) answer 503 +
  Retry-After instead of queueing: the proxy's own queue-full 503 carries no Retry-After, and a
  queued request only grows everyone's latency. The refusal comes first in the handler (before
  the state, a span, Redis or a handle call) and is held asleep for a delay that grows with the
  refusals already waiting (`RefusalPacer`), so clients that retry at once cannot spin the proxy
  and the ingress on refusals. A slot freed during the hold goes to the newest held request,
  so the bound's room never idles while requests wait.
"""
from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from app.api.admission import AdaptiveConcurrencyLimit, RefusalPacer
from app.api.config import ApiConfig
from app.api.errors import ApiError
from app.api.ratelimit import TokenBucketLimiter
from app.state.errors import StoreUnavailable
from app.state.membership import ReplicaMembership

MEMBERSHIP_KEY = "rf:members:ingress"  # live ingress replicas


class RateLimitShare:
    """This replica's buckets, sized to 1/n of the cluster-wide limit."""

    def __init__(self) -> None:
        self.replica_id = uuid.uuid4().hex
        self.live_replicas = 1
        self.limiter: TokenBucketLimiter | None = None
        self.api = ApiConfig()
        self._heartbeat: asyncio.Task | None = None

    def configure(self, api: ApiConfig) -> None:
        """New settings (hot reload): buckets rebuilt only when the limit's shape changed."""
        if api.rate_limit_per_s <= 0:
            self.limiter = None
        elif self.limiter is None or (self.api.rate_limit_per_s, self.api.rate_limit_burst,
                                      self.api.rate_limit_max_clients) != (
                api.rate_limit_per_s, api.rate_limit_burst, api.rate_limit_max_clients):
            self.limiter = TokenBucketLimiter(api.rate_limit_per_s, api.rate_limit_burst, api.rate_limit_max_clients)
        self.api = api
        self._rescale()

    def check(self, client: str, on_refused: Callable[[], None]) -> None:
        """429 with Retry-After when this client's bucket is empty."""
        if self.limiter is None:
            return
        wait = self.limiter.acquire(client)
        if wait > 0:
            on_refused()
            raise ApiError(429, None, f"rate limit of {self.api.rate_limit_per_s:g} requests/s per client",
                           {"Retry-After": str(max(1, math.ceil(wait)))})

    def start(self, client_for: Callable[[], Any],
              guarded: Callable[[str, Callable[[], Awaitable[int]]], Awaitable[int]],
              on_error: Callable[[str, Exception], None]) -> None:
        if self._heartbeat is None:
            self._heartbeat = asyncio.get_running_loop().create_task(self._count_replicas(client_for, guarded, on_error))

    async def _count_replicas(self, client_for, guarded, on_error) -> None:
        while True:
            client = client_for()
            if client is not None:
                members = ReplicaMembership(client, MEMBERSHIP_KEY, 3 * self.api.replica_heartbeat_s)
                try:
                    self.live_replicas = await guarded(
                        "membership", lambda: members.heartbeat(self.replica_id, time.time()))
                    self._rescale()
                except StoreUnavailable as exc:
                    on_error("membership", exc)
            await asyncio.sleep(self.api.replica_heartbeat_s)

    def _rescale(self) -> None:
        if self.limiter is not None:
            a, n = self.api, self.live_replicas
            self.limiter.rescale(a.rate_limit_per_s / n, max(1.0, a.rate_limit_burst / n))


class Admission:
    """This replica's in-flight bound, rebuilt only when a new config changes its settings (a
    reload keeps what it has learned), and the refusals it holds.

    A held refusal is also a short wait for room: a slot freed while refusals are held goes to
    the newest of them (LIFO: it has waited least, so the admitted feed keeps its latency, as
    in Facebook's "adaptive LIFO") if it has waited at most `api.shed_handover_max_wait_s`,
    and a hold that ends without a slot is answered 503.
    Without the hand-over a freed slot stays idle until some held client's 503 and retry come
    back, and the storm costs the goodput it was meant to protect.
    """

    def __init__(self, on_limit: Callable[[int], None], on_refused: Callable[[], None],
                 on_answered: Callable[[float], None] = lambda held_s: None) -> None:
        self._limit: AdaptiveConcurrencyLimit | None = None
        self._pacer = RefusalPacer(0.0, 0.0)
        # (future, limit, held since): oldest first
        self._held: list[tuple[asyncio.Future[None], AdaptiveConcurrencyLimit, float]] = []
        self._handover_max_wait_s = 0.0
        self._on_limit, self._on_refused, self._on_answered = on_limit, on_refused, on_answered

    def configure(self, api: ApiConfig) -> None:
        wanted = AdaptiveConcurrencyLimit.from_api(api)
        if wanted is None or self._limit is None or wanted.settings != self._limit.settings:
            self._limit = wanted
        if RefusalPacer.from_api(api).settings != self._pacer.settings:
            self._pacer = RefusalPacer.from_api(api)
        self._handover_max_wait_s = api.shed_handover_max_wait_s

    @property
    def waiting(self) -> int:
        """Requests held for room (each answered 503 unless a slot frees first)."""
        return len(self._held)

    @contextlib.asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """Run the body in a slot of the bound; when there is none, hold the request (the
        pacer's delay) and raise 503 + Retry-After unless a slot was handed to it meanwhile.
        The caller enters this before any other work."""
        limit = self._limit
        if limit is None:
            yield
            return
        if not limit.try_acquire():
            await self._hold(limit)  # returns holding a handed-over slot, or raises the 503
        started = time.perf_counter()
        try:
            yield
        finally:
            before = limit.limit
            limit.release(time.perf_counter() - started)
            if limit.limit != before:
                self._on_limit(limit.limit)
            self._hand_over(limit)

    async def _hold(self, limit: AdaptiveConcurrencyLimit) -> None:
        delay = self._pacer.delay(len(self._held), limit.limit)
        if delay > 0:
            handed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = (handed, limit, time.monotonic())
            self._held.append(entry)
            try:
                await asyncio.wait([handed], timeout=delay)
            except asyncio.CancelledError:  # the client went away while held
                if handed.done():
                    limit.give_back()
                    self._hand_over(limit)
                raise
            finally:
                if not handed.done():
                    self._held.remove(entry)
                    handed.cancel()
            if handed.done() and not handed.cancelled():
                return
        self._on_refused()
        self._on_answered(delay)  # the handler's own request metric never sees this refusal
        raise ApiError(503, None, f"overloaded: {limit.limit} feeds in progress on this replica",
                       {"Retry-After": RefusalPacer.retry_after(delay)})

    def _hand_over(self, limit: AdaptiveConcurrencyLimit) -> None:
        """Give room under `limit` to the newest requests held for it, if they have not waited
        longer than `api.shed_handover_max_wait_s` (an older one would spend its feed's latency
        budget waiting: it keeps its hold and gets its 503)."""
        oldest_eligible = time.monotonic() - self._handover_max_wait_s
        for entry in reversed(self._held[:]):
            handed, owner, since = entry
            if owner is not limit:
                continue
            if since < oldest_eligible:
                return  # this one and every older one waited too long
            if not limit.try_acquire():
                return
            self._held.remove(entry)
            handed.set_result(None)
