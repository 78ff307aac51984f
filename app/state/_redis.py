"""Shared plumbing of the Redis stores: the client factory, error mapping and unit conversion.

One server or a Redis Cluster, chosen by the URL (`redis_url` / REDIS_URL):

    redis://127.0.0.1:6379/0                       one redis-server (the default)
    redis+cluster://10.0.0.5:6379,10.0.0.6:6379    a Redis Cluster: any of its masters as seeds
    rediss+cluster://...                           the same over TLS

In cluster mode the factories return redis-py's `RedisCluster` (sync or asyncio), which routes
each command by its key's hash slot; every multi-key script of app/state touches one slot (keys
carry hash tags: app/state/keys.py, events.py, items.py). The URL chooses the mode so that every
process that reads the one setting (replicas, trainers, the CLI) agrees on it.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.state.errors import StoreUnavailable

# Every failure redis-py raises. A cluster client's topology refresh raises RedisClusterException
# ("cannot be connected", SlotNotCoveredError), which is not a RedisError: missing it turned a
# frozen master into 500s instead of degraded pages.
REDIS_FAILURES: tuple[type[Exception], ...] = (redis.RedisError, redis.exceptions.RedisClusterException)

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
    except REDIS_FAILURES as exc:
        raise StoreUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc


def as_str(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def cluster_seeds(url: str) -> tuple[str, list[tuple[str, int]]] | None:
    """(scheme, [(host, port), ...]) of a `redis+cluster://` URL; None for a single server's."""
    parts = urlsplit(url)
    if parts.scheme not in CLUSTER_SCHEMES:
        return None
    hosts = parts.netloc.rsplit("@", 1)[-1]
    seeds = []
    for seed in hosts.split(","):
        host, _, port = seed.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"redis_url {url!r}: cluster seeds must be host:port[,host:port...], got {seed!r}")
        seeds.append((host, int(port)))
    return CLUSTER_SCHEMES[parts.scheme], seeds


def _first_seed_url(url: str) -> str:
    """The URL redis-py's `RedisCluster.from_url` takes: plain scheme, the first seed, no db."""
    scheme, seeds = cluster_seeds(url)  # type: ignore[misc]
    parts = urlsplit(url)
    auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit((scheme, f"{auth}{seeds[0][0]}:{seeds[0][1]}", "", parts.query, ""))


def is_cluster(client) -> bool:
    """Whether `client` (sync or asyncio) talks to a Redis Cluster."""
    import redis.asyncio.cluster
    import redis.cluster

    return isinstance(client, (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster))


def fail_fast_client(url: str, timeout_s: float, max_connections: int = 64):
    """A client for the serving path: short socket timeouts and no retries, so an unreachable
    Redis costs one timeout and the request fails closed, instead of redis-py's default
    retry-with-backoff stalling the feed for seconds. A `redis+cluster://` URL gives a
    `RedisCluster` with the same bounds (per node: a blocking pool of `max_connections`)."""
    if cluster_seeds(url) is not None:
        from redis.cluster import ClusterNode, RedisCluster

        return RedisCluster.from_url(
            _first_seed_url(url),
            startup_nodes=[ClusterNode(h, p) for h, p in cluster_seeds(url)[1]],  # type: ignore[index]
            connection_pool_class=redis.BlockingConnectionPool,
            max_connections=max_connections,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
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

    seeds = cluster_seeds(url)
    if seeds is not None:
        from redis.asyncio.cluster import ClusterNode, RedisCluster
        from redis.asyncio.retry import Retry as AsyncRetry

        # Its per-node pools do not block: a burst past `max_connections` fails at once, so the
        # cluster client gets room for the bursts one process makes (a stream follower blocks on
        # one connection per partition).
        return RedisCluster.from_url(
            _first_seed_url(url),
            startup_nodes=[ClusterNode(h, p) for h, p in seeds[1]],
            max_connections=max(max_connections, 8),
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=AsyncRetry(NoBackoff(), 0),
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=None,
    )
    return aioredis.Redis(connection_pool=pool)
