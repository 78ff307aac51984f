"""Store factories for the contract suite: every test runs on the in-memory reference, on the
Redis implementation over the real redis-server, and on it over the real 3-master Redis Cluster
(both from tests/conftest.py)."""
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


REDIS_KINDS = ["redis", "cluster"]  # one redis-server; a 3-master Redis Cluster


def flushed_client(request, kind: str):
    """The flushed sync client of a Redis kind (`redis_client` / `redis_cluster_client`)."""
    return request.getfixturevalue("redis_client" if kind == "redis" else "redis_cluster_client")


def redis_url_of(request, kind: str) -> str:
    return request.getfixturevalue("redis_url" if kind == "redis" else "redis_cluster_url")


@pytest.fixture(params=REDIS_KINDS)
def any_redis(request):
    """(kind, flushed sync client) for each Redis kind."""
    return request.param, flushed_client(request, request.param)


@pytest.fixture(params=["memory", *REDIS_KINDS])
def cap_store(request):
    if request.param == "memory":
        return InMemoryCapStore()
    return RedisCapStore(flushed_client(request, request.param), session_ttl_s=SESSION_TTL_S, key_grace_s=GRACE_S)


@pytest.fixture(params=["memory", *REDIS_KINDS])
def budget_store(request):
    if request.param == "memory":
        return InMemoryBudgetStore(reservation_ttl_s=RESERVATION_TTL_S)
    return RedisBudgetStore(flushed_client(request, request.param), reservation_ttl_s=RESERVATION_TTL_S, key_grace_s=GRACE_S)


def run_async_store(url: str, store_class, work):
    """`work(store)` on a fresh redis.asyncio client (closed after; a cluster client for a
    redis+cluster:// URL), for the async stores (takedowns, the item stream)."""
    import asyncio

    from app.state._redis import async_fail_fast_client

    async def go():
        client = async_fail_fast_client(url, 2.0)
        try:
            return await work(store_class(client))
        finally:
            await client.aclose()

    return asyncio.run(go())


@pytest.fixture(params=REDIS_KINDS)
def state_url(request) -> str:
    """The URL of each Redis kind, its state flushed: the async stores run on both."""
    flushed_client(request, request.param)
    return redis_url_of(request, request.param)
