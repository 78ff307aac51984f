"""Shared fixtures: one real redis-server per test session (or REDIS_URL when set)."""
from __future__ import annotations

import os

import pytest
import redis

from app.state.local_redis import LocalRedis

# Contention on 2 cores multiplies latency when every library spawns a thread pool.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A real Redis for the whole session: REDIS_URL if given, else a private redis-server."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = LocalRedis.start()
    yield server.url
    server.stop()


@pytest.fixture
def redis_client(redis_url: str) -> redis.Redis:
    """A client on a flushed database: every test starts from empty state."""
    client = redis.Redis.from_url(redis_url, decode_responses=False)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()
