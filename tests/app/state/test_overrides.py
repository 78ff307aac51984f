"""Admin overrides in a real Redis: generations, merging, refusal writes nothing, Redis down."""
from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from app.state.errors import StoreUnavailable
from app.state.local_redis import free_port
from app.state.overrides import OVERRIDES_KEY, AdminOverrides, Overrides


def run(coro):
    return asyncio.run(coro)


async def with_client(url: str, work):
    client = aioredis.Redis.from_url(url)
    try:
        return await work(AdminOverrides(client))
    finally:
        await client.aclose()


def test_a_missing_key_is_generation_zero_and_merges_bump_the_generation(redis_client, redis_url):
    assert run(with_client(redis_url, lambda o: o.read())) == Overrides()
    first = run(with_client(redis_url, lambda o: o.merge({"collator": {"alpha": 2.0}}, lambda merged: None)))
    second = run(with_client(redis_url, lambda o: o.merge({"collator": {"beta": 3.0}}, lambda merged: None)))
    assert (first.generation, second.generation) == (1, 2)
    assert second.overrides == {"collator": {"alpha": 2.0, "beta": 3.0}}
    assert Overrides.decode(redis_client.get(OVERRIDES_KEY)) == second
    redis_client.delete(OVERRIDES_KEY)  # deleting returns every replica to its deployed config
    assert run(with_client(redis_url, lambda o: o.read())).generation == 0


def test_a_refused_change_writes_nothing(redis_client, redis_url):
    def refuse(merged):
        raise ValueError(f"bad: {merged}")

    with pytest.raises(ValueError, match="bad"):
        run(with_client(redis_url, lambda o: o.merge({"collator": {"alpha": -1}}, refuse)))
    assert redis_client.get(OVERRIDES_KEY) is None


def test_redis_down_is_store_unavailable():
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(StoreUnavailable, match="admin overrides"):
        run(with_client(dead, lambda o: o.read()))
