"""Real-time engagement counters, updated atomically with the event stream append.

    rf:cnt:items:<day>        ZSET item id    → engagements that (UTC, world-time) day
    rf:cnt:creators:<day>     ZSET creator id → engagements that day
    rf:cnt:user_topics:<user> HASH topic      → the user's engagements with items of that topic

`EngagementCounters.ops(event)` says which counters an accepted event moves; `EventStream.append`
applies them inside the same Lua script that de-duplicates and appends, so a counter moves if and
only if the event went on the stream: a retried or duplicated event counts once, and a crash
cannot leave the stream and the counters disagreeing. Day keys expire after `retention_days`.

Readers: `trending(client, now, days, k)` (time-decayed sum over day keys), `user_topics(client,
user)` (the feed's explain mode shows it), `top_creators(client, now, days, k)`. With a
partitioned stream (app/state/events.py) each partition keeps its own counters in its slot (the
names above plus the partition's hash tag): readers pass the stream's `EventPartitions` and sum.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass


from app.state._redis import REDIS_FAILURES
from app.state.errors import StoreUnavailable
from app.state.events import EventPartitions, StreamEvent

DAY = 86_400
ITEMS = "rf:cnt:items:"
CREATORS = "rf:cnt:creators:"
USER_TOPICS = "rf:cnt:user_topics:"


@dataclass(frozen=True)
class CounterOp:
    """ZINCRBY (kind "z") or HINCRBYFLOAT (kind "h") of `member` in `key` by `amount`, then
    PEXPIRE `key` `ttl_ms`."""

    kind: str
    key: str
    member: str
    amount: float
    ttl_ms: int

    def args(self) -> list[object]:
        return [self.kind, self.key, self.member, self.amount, self.ttl_ms]


def day_of(ts: float) -> int:
    return int(ts // DAY)


class EngagementCounters:
    """Which counters an event moves. `item_topics(item)` / `item_creator(item)` come from the
    catalogue (unknown items: no topics, creator < 0)."""

    def __init__(self, item_topics: Callable[[int], Sequence[str]], item_creator: Callable[[int], int],
                 engagement_types: Sequence[str], retention_days: float) -> None:
        self.item_topics, self.item_creator = item_topics, item_creator
        self.engagement_types = frozenset(engagement_types)
        self.ttl_ms = int(retention_days * DAY * 1000)

    @classmethod
    def from_catalog(cls, catalog, engagement_types: Sequence[str], retention_days: float) -> "EngagementCounters":
        """Counters whose topics and creators come from an `app.catalog.Catalog`."""
        def creator(item: int) -> int:
            return int(catalog.creator_id[item]) if 0 <= item < len(catalog.creator_id) else -1

        def topics(item: int) -> tuple[str, ...]:
            return catalog.topic_names(item) if catalog.is_known([item])[0] else ()

        return cls(topics, creator, engagement_types, retention_days)

    def ops(self, event: StreamEvent) -> list[CounterOp]:
        if event.item_id is None or event.type not in self.engagement_types:
            return []
        day, item = day_of(event.ts), int(event.item_id)
        out = [CounterOp("z", f"{ITEMS}{day}", str(item), 1.0, self.ttl_ms)]
        creator = self.item_creator(item)
        if creator >= 0:
            out.append(CounterOp("z", f"{CREATORS}{day}", str(creator), 1.0, self.ttl_ms))
        for topic in self.item_topics(item):
            out.append(CounterOp("h", f"{USER_TOPICS}{event.user_id}", topic, 1.0, self.ttl_ms))
        return out

    def ops_for(self, events: Sequence[StreamEvent]) -> list[list[CounterOp]]:
        return [self.ops(e) for e in events]


async def _decayed_top(client, prefix: str, now: float, days: int, half_life_days: float, k: int,
                       partitions: EventPartitions) -> list[tuple[int, float]]:
    today = day_of(now)
    totals: dict[int, float] = {}
    for p in range(partitions.count):  # ZUNION within a partition (one slot), the sum across them here
        weights = {partitions.local(f"{prefix}{today - d}", p): math.pow(0.5, d / half_life_days) for d in range(days)}
        try:
            rows = await client.zunion(weights, aggregate="SUM", withscores=True)
        except REDIS_FAILURES as exc:
            raise StoreUnavailable(f"counters {prefix}: {type(exc).__name__}: {exc}") from exc
        for member, score in rows:
            totals[int(member)] = totals.get(int(member), 0.0) + float(score)
    return sorted(totals.items(), key=lambda r: -r[1])[:k]


async def trending(client, now: float, days: int = 7, half_life_days: float = 1.0, k: int = 100,
                   partitions: EventPartitions = EventPartitions()) -> list[tuple[int, float]]:
    """Items by engagements over the last `days`, each day's count halved every `half_life_days`."""
    return await _decayed_top(client, ITEMS, now, days, half_life_days, k, partitions)


async def top_creators(client, now: float, days: int = 7, half_life_days: float = 1.0, k: int = 100,
                       partitions: EventPartitions = EventPartitions()) -> list[tuple[int, float]]:
    return await _decayed_top(client, CREATORS, now, days, half_life_days, k, partitions)


async def user_topics(client, user_id: int, partitions: EventPartitions = EventPartitions()) -> dict[str, float]:
    try:
        raw = await client.hgetall(partitions.local(f"{USER_TOPICS}{user_id}", partitions.of_user(user_id)))
    except REDIS_FAILURES as exc:
        raise StoreUnavailable(f"counters user topics: {type(exc).__name__}: {exc}") from exc
    return {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}
