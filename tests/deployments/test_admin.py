"""The admin API's work without Ray: the token before anything, takedowns against a real Redis
(404 for what the catalogue does not hold, 503 without Redis), restore as the undo."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from app.api.config import ApiConfig
from app.api.errors import ApiError
from app.api.ids import ApiIds
from app.api.schemas import TakedownRequest
from app.catalog import Catalog
from app.state.local_redis import free_port
from app.state.takedowns import TakedownStore
from deployments import admin
from deployments.redis_guard import GuardedRedis
from observability.metrics import InMemoryMetrics
from tests.deployments.test_http import request_with

CATALOG = Catalog(creator_id=np.array([-1, 10, 10, 20]), min_age=np.zeros(4, np.int16),
                  topic_matrix=np.zeros((4, 1), np.float32), topics=("t",),
                  known=np.array([False, True, True, True]))


def guarded(url: str | None) -> GuardedRedis:
    redis = GuardedRedis(lambda: InMemoryMetrics())
    redis.configure(url, ApiConfig())
    return redis


def test_the_token_is_checked_before_the_body_is_read():
    with pytest.raises(ApiError) as refused:
        asyncio.run(admin.authorised_body(request_with(b"not json"), "secret", TakedownRequest))
    assert refused.value.status == 401
    with pytest.raises(ApiError) as bad:
        asyncio.run(admin.authorised_body(request_with(b"{}", {"authorization": "Bearer secret"}), "secret",
                                          TakedownRequest))
    assert (bad.value.status, bad.value.field) == (422, "reason")


def test_takedowns_and_restores_of_items_and_creators(redis_client, redis_url):
    async def scenario():
        redis = guarded(redis_url)
        done = await admin.take_down(redis, CATALOG, ApiIds(None), "item", "2", "spam", poll_s=0.25)
        assert done["taken_down"] and done["id"] == 2
        await admin.take_down(redis, CATALOG, ApiIds(None), "creator", "20", "policy", poll_s=0.25)
        for kind, ref in (("item", "9"), ("creator", "99")):
            with pytest.raises(ApiError) as missing:
                await admin.take_down(redis, CATALOG, ApiIds(None), kind, ref, "x", poll_s=0.25)
            assert missing.value.status == 404
        held = await TakedownStore(redis.client).load()
        assert held.items == {2} and held.creators == {20}
        undone = await admin.restore(redis, ApiIds(None), "item", "2", poll_s=0.25)
        assert undone["was_taken_down"] and (await TakedownStore(redis.client).load()).items == frozenset()

    asyncio.run(scenario())


def test_without_redis_a_takedown_is_refused_not_lost():
    async def scenario():
        for url in (None, f"redis://127.0.0.1:{free_port()}/0"):
            with pytest.raises(ApiError) as refused:
                await admin.take_down(guarded(url), CATALOG, ApiIds(None), "item", "1", "x", poll_s=0.25)
            assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "1"}

    asyncio.run(scenario())
