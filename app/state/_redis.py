"""Shared plumbing of the Redis stores: error mapping and unit conversion."""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.state.errors import StoreUnavailable

MICROS = 1_000_000  # money is stored as integer micro-units: exact sums, no float drift


def to_micros_up(amount: float) -> int:
    """A charge in micro-units, rounded up so rounding never lets spend exceed a budget."""
    return int(math.ceil(round(amount * MICROS, 3)))


def to_micros_down(amount: float) -> int:
    """A budget in micro-units, rounded down for the same reason."""
    return int(math.floor(round(amount * MICROS, 3)))


@contextlib.contextmanager
def unavailable_on_redis_error(what: str) -> Iterator[None]:
    """Turn every redis-py failure into `StoreUnavailable`, the one error callers handle."""
    try:
        yield
    except redis.RedisError as exc:
        raise StoreUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc


def as_str(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


def fail_fast_client(url: str, timeout_s: float, max_connections: int = 64) -> redis.Redis:
    """A client for the serving path: short socket timeouts and no retries, so an unreachable
    Redis costs one timeout and the request fails closed, instead of redis-py's default
    retry-with-backoff stalling the feed for seconds."""
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )
    return redis.Redis(connection_pool=pool)


def async_fail_fast_client(url: str, timeout_s: float, max_connections: int = 32):
    """The asyncio twin of `fail_fast_client`, for async servers (the HTTP ingress).

    The pool is bounded and blocking: under fan-out, callers wait up to `timeout_s` for a
    connection instead of opening one per concurrent request (and exhausting Redis's)."""
    import redis.asyncio as aioredis

    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=None,
    )
    return aioredis.Redis(connection_pool=pool)
