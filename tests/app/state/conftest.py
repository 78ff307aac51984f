"""Store factories for the contract suite: every test runs on the in-memory reference and on
the Redis implementation over the real redis-server from tests/conftest.py."""
from __future__ import annotations

import pytest

from app.state.budgets import InMemoryBudgetStore, RedisBudgetStore
from app.state.caps import InMemoryCapStore, RedisCapStore
from app.state.clock import ManualClock

DAY_START = 1_700_006_400.0  # a UTC midnight
RESERVATION_TTL_S = 300
SESSION_TTL_S = 1800
GRACE_S = 3600


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(DAY_START + 9 * 3600)


@pytest.fixture(params=["memory", "redis"])
def cap_store(request):
    if request.param == "memory":
        return InMemoryCapStore()
    return RedisCapStore(request.getfixturevalue("redis_client"), session_ttl_s=SESSION_TTL_S, key_grace_s=GRACE_S)


@pytest.fixture(params=["memory", "redis"])
def budget_store(request):
    if request.param == "memory":
        return InMemoryBudgetStore(reservation_ttl_s=RESERVATION_TTL_S)
    return RedisBudgetStore(request.getfixturevalue("redis_client"), reservation_ttl_s=RESERVATION_TTL_S, key_grace_s=GRACE_S)


def run_async_store(url: str, store_class, work):
    """`work(store)` on a fresh redis.asyncio client (closed after), for the async stores
    (takedowns, the item stream)."""
    import asyncio

    import redis.asyncio as aioredis

    async def go():
        client = aioredis.Redis.from_url(url)
        try:
            return await work(store_class(client))
        finally:
            await client.aclose()

    return asyncio.run(go())
