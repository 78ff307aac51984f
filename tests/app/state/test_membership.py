"""Replica heartbeats on the real redis-server: counts, expiry, and failure as StoreUnavailable."""
from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from app.state.errors import StoreUnavailable
from app.state.membership import ReplicaMembership


def test_members_are_counted_until_their_heartbeat_is_older_than_the_ttl(redis_url):
    async def scenario():
        client = aioredis.Redis.from_url(redis_url)
        members = ReplicaMembership(client, f"rf:test:members:{uuid.uuid4().hex}", ttl_s=3.0)
        try:
            assert await members.heartbeat("a", 100.0) == 1
            assert await members.heartbeat("b", 101.0) == 2
            assert await members.heartbeat("a", 102.0) == 2  # a beat again: still two
            assert await members.heartbeat("a", 104.5) == 1  # b's last beat (101) is older than 3 s
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_an_unreachable_redis_is_store_unavailable():
    async def scenario():
        client = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
        try:
            with pytest.raises(StoreUnavailable, match="membership"):
                await ReplicaMembership(client, "rf:test:members", ttl_s=3.0).heartbeat("a", 1.0)
        finally:
            await client.aclose()

    asyncio.run(scenario())
