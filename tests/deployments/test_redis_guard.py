"""The ingress's guarded Redis against a real redis-server (and a dead address): page state,
cursors, the circuit breaker and what each failure becomes for the client."""
from __future__ import annotations

import asyncio

import pytest

from app.api.config import ApiConfig
from app.api.errors import ApiError
from app.pipeline import NullHook
from app.state.errors import StoreUnavailable
from app.state.local_redis import free_port
from deployments.redis_guard import GuardedRedis
from observability.metrics import InMemoryMetrics
from observability import metric_names as m


def guard(url: str | None, metrics: InMemoryMetrics, **api) -> GuardedRedis:
    redis = GuardedRedis(lambda: metrics)
    redis.configure(url, ApiConfig(**api))
    return redis


def test_a_page_chain_reads_its_state_records_its_items_and_signs_its_cursor(redis_client, redis_url):
    async def scenario():
        redis = guard(redis_url, InMemoryMetrics())
        first = await redis.read_page_state(42, None, "session-1", NullHook())
        assert (first.session_id, first.page_number, first.first_position, first.store_ok) == ("session-1", 1, 1, True)
        cursor = await redis.record_page(42, first, [5, 6, 7], n_ads=1, next_position=5, has_more=True, log_entry=None)
        assert cursor is not None
        second = await redis.read_page_state(42, cursor, "unused", NullHook())
        assert (second.session_id, second.page_number, second.first_position) == ("session-1", 2, 5)
        assert second.served_item_ids == {5, 6, 7} and second.session.ads_shown_in_session == 1
        assert await redis.record_page(42, second, [8], 0, 6, has_more=False, log_entry=None) is None
        with pytest.raises(ApiError) as other_user:
            await redis.read_page_state(43, cursor, "s", NullHook())
        assert (other_user.value.status, other_user.value.field) == (400, "cursor")

    asyncio.run(scenario())


def test_without_redis_a_first_page_is_organic_only_and_a_cursor_is_refused():
    async def scenario():
        for url in (None, f"redis://127.0.0.1:{free_port()}/0"):
            metrics = InMemoryMetrics()
            redis = guard(url, metrics)
            state = await redis.read_page_state(1, None, "s", NullHook())
            assert not state.store_ok and state.page_number == 1
            with pytest.raises(ApiError) as refused:
                await redis.read_page_state(1, "some.cursor", "s", NullHook())
            assert (refused.value.status, refused.value.field) == (503, "cursor")
            assert refused.value.headers == {"Retry-After": "1"}
            assert await redis.record_page(1, state, [1], 0, 2, True, None) is None
            assert (metrics.counter(m.REDIS_ERRORS, op="feed_state") > 0) == (url is not None)

    asyncio.run(scenario())


def test_the_breaker_opens_after_consecutive_failures_and_then_skips_redis():
    async def scenario():
        metrics = InMemoryMetrics()
        redis = guard(f"redis://127.0.0.1:{free_port()}/0", metrics, redis_breaker_failures=2,
                      redis_breaker_reset_s=600)
        store = redis.store()
        for _ in range(2):
            with pytest.raises(StoreUnavailable):
                await redis.guarded("ping", store.ping)
        assert redis.breaker_state == "open"
        with pytest.raises(StoreUnavailable) as skipped:
            await redis.guarded("ping", store.ping)
        assert getattr(skipped.value, "skipped", False)
        assert metrics.counter(m.REDIS_SKIPPED, op="ping") == 1
        assert metrics.gauge(m.REDIS_BREAKER_STATE) == 2

    asyncio.run(scenario())
