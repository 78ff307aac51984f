"""Who else is serving: live members of a replica group, from heartbeats in one Redis sorted set.

Each member writes `ZADD key now member` every period; members whose last beat is older than
`ttl_s` are dropped in the same transaction (a replica that stopped is gone within `ttl_s`), and the count of the rest is the answer. The ingress
uses it to size its share of the cluster-wide rate limit (app/api/ratelimit.py); nothing else
depends on it, so a Redis failure raises StoreUnavailable and the caller keeps its last count.

    members = ReplicaMembership(async_client, "rf:members:ingress", ttl_s=3.0)
    n = await members.heartbeat(replica_id, time.time())
"""
from __future__ import annotations

from app.state._redis import unavailable_on_redis_error


class ReplicaMembership:
    def __init__(self, client, key: str, ttl_s: float) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be > 0")
        self.client, self.key, self.ttl_s = client, key, ttl_s

    async def heartbeat(self, member: str, now: float) -> int:
        """Record `member` alive at `now`; the number of members alive (itself included)."""
        with unavailable_on_redis_error(f"membership heartbeat {self.key}"):
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.zadd(self.key, {member: now})
                pipe.zremrangebyscore(self.key, "-inf", now - self.ttl_s)
                pipe.zcard(self.key)
                pipe.expire(self.key, max(1, int(self.ttl_s * 10)))
                _, _, count, _ = await pipe.execute()
        return max(1, int(count))
