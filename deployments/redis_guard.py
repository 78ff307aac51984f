"""The ingress's Redis, guarded: one client per URL, the feed-state store and cursor codec over
it, and one circuit breaker every call goes through.

After `api.redis_breaker_failures` consecutive failures Redis is skipped (≈0 ms, fail closed)
until a probe succeeds (app/state/breaker.py); its state is a metric and part of /readyz. A
failure is counted (`rayfeed_redis_errors_total`) and logged once per call, a skipped call only
counted (`rayfeed_redis_skipped_total`): the breaker's opening was logged.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi.responses import JSONResponse

from app.api.config import ApiConfig
from app.api.cursor import Cursor, CursorCodec, InvalidCursor
from app.api.errors import ApiError
from app.api.schemas import ReadyResponse
from app.page import PageState
from app.pipeline import StageHook
from app.state._redis import async_fail_fast_client
from app.state.breaker import BreakerState, CircuitBreaker
from app.state.counters import user_topics
from app.state.events import EventPartitions
from app.state.errors import StoreUnavailable
from app.state.overrides import AdminOverrides
from app.state.sessions import FeedStateStore, StreamAppend

log = logging.getLogger("rayfeed.serve")

T = TypeVar("T")


class GuardedRedis:
    def __init__(self, metrics_for: Callable[[], object]) -> None:
        self._metrics_for = metrics_for  # the process's metrics recorder (observability)
        self._client = None
        self._url: str | None = None
        self._codec: CursorCodec | None = None
        self._breaker: CircuitBreaker | None = None
        self._published: BreakerState | None = None
        self.api = ApiConfig()
        self.url: str | None = None

    def configure(self, url: str | None, api: ApiConfig) -> None:
        """The current configuration's Redis (None: none configured) and its API settings."""
        self.url, self.api = url, api

    @property
    def client(self):
        """The async client for the configured URL (None without one); made on first use."""
        if not self.url:
            return None
        if self._client is None or self._url != self.url:
            self._client = async_fail_fast_client(self.url, self.api.redis_timeout_s, self.api.redis_max_connections)
            self._url, self._codec = self.url, None
        return self._client

    def store(self) -> FeedStateStore | None:
        client = self.client
        if client is None:
            return None
        a = self.api
        return FeedStateStore(client, a.served_ttl_s, a.session_ttl_s, a.hidden_ttl_s, a.quick_bounce_s)

    def overrides(self) -> AdminOverrides | None:
        client = self.client
        return None if client is None else AdminOverrides(client)

    async def cursor_codec(self) -> CursorCodec:
        """The codec over the secret every ingress replica shares (created by the first to ask)."""
        if self._codec is None:
            store = self.store()
            if store is None:
                raise StoreUnavailable("no Redis configured")
            self._codec = CursorCodec(await store.cursor_secret(), self.api.cursor_max_age_s)
        return self._codec

    async def read_page_state(self, user_id: int, cursor_token: str | None, new_session: str,
                              hook: StageHook) -> PageState:
        """The user's state and the page's place in its chain, in one round trip: 400 for a bad
        cursor; without Redis a first page is served (organic only: `store_ok` False) and a
        cursor is refused with 503 (its served set cannot be read)."""
        store = self.store()
        if store is not None:
            try:
                cursor, state = await self.guarded(
                    "feed_state", lambda: store.read_for_page(user_id, cursor_token, self.cursor_codec, hook))
            except InvalidCursor as exc:
                raise ApiError(400, "cursor", str(exc)) from None
            except StoreUnavailable as exc:
                self.down("feed_state", exc)
            else:
                return PageState.from_store(cursor, state, new_session)
        if cursor_token is not None:
            raise ApiError(503, "cursor", "pagination state unavailable (Redis); retry, or start without a cursor",
                           {"Retry-After": "1"})
        return PageState(session_id=new_session, store_ok=False)

    async def record_page(self, user_id: int, state: PageState, organic_item_ids: list[int], n_ads: int,
                          next_position: int, has_more: bool, log_entry: StreamAppend | None) -> str | None:
        """After the page is served: its items join the chain's served set (and the prediction
        log its entry); the cursor of the next page when there is one. None when Redis failed:
        no cursor can be honoured without the served set."""
        store = self.store()
        if store is None or not state.store_ok:
            return None
        try:
            logged = await self.guarded("record_page", lambda: store.record_page(
                user_id, state.session_id, organic_item_ids, n_ads, append=log_entry))
            if not logged:  # the page's writes went through, its prediction-log entry did not
                self._metrics().redis_error("predictions_log")
            if not has_more:
                return None
            codec = await self.cursor_codec()
            return codec.encode(Cursor(state.session_id, user_id, state.page_number + 1, next_position, time.time()))
        except StoreUnavailable as exc:
            self.down("record_page", exc)
            return None

    async def live_topics(self, user_id: int) -> dict[str, float] | str:
        """Explain mode: the user's real-time topic counters (what the event stream says now)."""
        if self.client is None:
            return "no Redis"
        try:
            return await user_topics(self.client, user_id, EventPartitions.of(self.client, self.api.event_stream_partitions))
        except StoreUnavailable as exc:
            return f"unavailable: {exc}"

    @property
    def breaker_state(self) -> str:
        return self._breaker.state.name.lower() if self._breaker is not None else "closed"

    async def guarded(self, op: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run `call()` (Redis work raising StoreUnavailable) through the circuit breaker. An
        open breaker raises StoreUnavailable at once, marked `skipped`."""
        breaker = self._breaker_for()
        if not breaker.allow():
            self._metrics().redis_skipped(op)
            self._publish(breaker)
            exc = StoreUnavailable(f"{op}: skipped, Redis circuit breaker open")
            exc.skipped = True  # type: ignore[attr-defined]
            raise exc
        try:
            result = await call()
        except StoreUnavailable:
            breaker.record_failure()
            self._publish(breaker)
            raise
        breaker.record_success()
        self._publish(breaker)
        return result

    def down(self, op: str, exc: Exception) -> None:
        """Count and log a failed call (a skipped one was counted when it was skipped)."""
        if getattr(exc, "skipped", False):
            return
        self._metrics().redis_error(op)
        log.warning("redis unavailable (%s): %s", op, exc)

    def _metrics(self):
        return self._metrics_for()

    def _breaker_for(self) -> CircuitBreaker:
        a, b = self.api, self._breaker
        if b is None or (b.failure_threshold, b.reset_after_s) != (a.redis_breaker_failures, a.redis_breaker_reset_s):
            self._breaker = CircuitBreaker(a.redis_breaker_failures, a.redis_breaker_reset_s)
        return self._breaker

    def _publish(self, breaker: CircuitBreaker) -> None:
        state = breaker.state
        if state != self._published:
            if state == BreakerState.OPEN:
                log.warning("redis circuit breaker open: Redis skipped for %.1fs at a time (organic only, no ads)",
                            breaker.reset_after_s)
            elif self._published is not None:
                log.info("redis circuit breaker %s", state.name.lower())
            self._published = state
            self._metrics().set_redis_breaker_state(int(state))


async def readiness(state, stages, redis: GuardedRedis, items_ready: bool) -> JSONResponse:
    """GET /readyz: every stage's artifact version (or why it is not ready: not loaded, takedowns
    unread, item stream behind) and whether Redis answers; 200 only when all of it is fine."""
    own = (state.version if items_ready else "not ready: item stream behind") if state else "not loaded"
    models = {"ingress": own, **await stages.loaded_versions()}
    models_ok = all(not v.startswith("not ") for v in models.values())
    status = "not configured"
    store = redis.store() if state is not None else None
    if store is not None:
        try:
            await redis.guarded("ping", store.ping)
            status = "ok"
        except StoreUnavailable as exc:
            status = f"unreachable: {exc}"
    ready = models_ok and status == "ok"
    body = ReadyResponse(ready=ready, degraded=models_ok and status != "ok", models=models, redis=status,
                         redis_breaker=redis.breaker_state)
    return JSONResponse(body.model_dump(), 200 if ready else 503)
