"""The event stream and the feed's session state against the real Redis: the stream on one
redis-server and on the 3-master Redis Cluster, in one partition and in three."""
from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from app.state._redis import async_fail_fast_client
from app.state.events import EventPartitions, EventStream, StreamEvent
from app.state.sessions import FeedStateStore
from tests.app.state.conftest import flushed_client, redis_url_of


@pytest.fixture(params=[("redis", 1), ("redis", 3), ("cluster", 1), ("cluster", 3)], ids=lambda p: f"{p[0]}-P{p[1]}")
def layout(request):
    """(url, flushed sync client, partitions, their names as the stream's client sees them)."""
    kind, partitions = request.param
    client = flushed_client(request, kind)
    return redis_url_of(request, kind), client, partitions, EventPartitions.of(client, partitions)


def run(coro):
    return asyncio.run(coro)


def _event(i: int, **kw) -> StreamEvent:
    fields = {"event_id": f"e{i}", "user_id": 7, "type": "click", "ts": 1000.0 + i, "item_id": i, **kw}
    return StreamEvent(**fields)


def test_append_deduplicates_and_reads_back(layout):
    url, sync, partitions, names = layout

    async def scenario():
        client = async_fail_fast_client(url, 2.0)
        stream = EventStream(client, maxlen=1000, dedup_ttl_s=60, partitions=partitions)
        first = await stream.append([_event(1), _event(2), _event(1)])
        again = await stream.append([_event(2), _event(3)])
        entries = await stream.read()
        length = await stream.length()
        await client.aclose()
        return first, again, entries, length

    first, again, entries, length = run(scenario())
    assert first == [True, True, False] and again == [False, True]
    assert length == 3
    assert [e.event_id for _, e in entries] == ["e1", "e2", "e3"]
    assert entries[0][1] == _event(1)
    assert sync.ttl(f"{names.dedup_prefix(names.of_user(7))}e1") > 0


def test_stream_is_bounded(layout):
    url, _, partitions, _ = layout

    async def scenario():
        client = async_fail_fast_client(url, 2.0)
        stream = EventStream(client, maxlen=100, dedup_ttl_s=60, partitions=partitions)
        for chunk in range(10):
            await stream.append([_event(chunk * 100 + i) for i in range(100)])
        n = await stream.length()
        await client.aclose()
        return n

    assert run(scenario()) < 1000  # MAXLEN ~ trims whole macro-nodes: approximately 100


def test_derived_ids_are_deterministic():
    a = StreamEvent.derive_id({"user_id": 1, "type": "click", "item_id": 2, "ts": 3.0})
    assert a == StreamEvent.derive_id({"ts": 3.0, "item_id": 2, "type": "click", "user_id": 1})
    assert a != StreamEvent.derive_id({"user_id": 1, "type": "click", "item_id": 2, "ts": 4.0})


def test_feed_state_round_trip(redis_client, redis_url):
    async def scenario():
        client = aioredis.Redis.from_url(redis_url)
        store = FeedStateStore(client, served_ttl_s=60, session_ttl_s=30, hidden_ttl_s=600, quick_bounce_s=3.0)
        empty = await store.read(7, "s1")
        await store.record_page(7, "s1", [1, 2, 3], n_ads=2)
        await store.record_page(7, "s1", [4], n_ads=0)
        await store.apply_events([
            _event(1, type="hide", creator_id=99),
            _event(2, type="impression"),
            _event(3, type="impression", item_id=None, ad_id=5, request_id="r"),
            _event(4, type="watch", watch_seconds=1.0),
            _event(5, type="watch", watch_seconds=30.0),
        ])
        state = await store.read(7, "s1")
        other_chain = await store.read(7, "s2")
        secret_a, secret_b = await store.cursor_secret(), await store.cursor_secret()
        await client.aclose()
        return empty, state, other_chain, secret_a, secret_b

    empty, state, other_chain, secret_a, secret_b = run(scenario())
    assert empty.served_item_ids == frozenset() and empty.session.impressions_in_session == 0
    assert state.served_item_ids == {1, 2, 3, 4}
    assert state.hidden_item_ids == {1} and state.hidden_creator_ids == {99}
    s = state.session
    assert (s.ads_shown_in_session, s.impressions_in_session, s.ads_in_session_impressions) == (2, 2, 1)
    assert (s.quick_bounces, s.hides_in_session) == (1, 1)
    assert other_chain.served_item_ids == frozenset()
    assert secret_a == secret_b and len(secret_a) >= 32
    assert 0 < redis_client.pttl("rf:session:7") <= 30_000
    assert 0 < redis_client.pttl("rf:feed:served:s1") <= 60_000


def test_follow_wakes_on_a_new_event_and_groups_hand_each_entry_out_once(layout):
    url, _, partitions, _ = layout

    async def scenario():
        client = async_fail_fast_client(url, 7.0)
        stream = EventStream(client, maxlen=1000, dedup_ttl_s=60, partitions=partitions)
        await stream.append([_event(1)])
        start = await stream.last_id()
        waiter = asyncio.create_task(stream.follow(start, count=10, block_ms=5000))
        await asyncio.sleep(0.05)
        await stream.append([_event(2, user_id=8)])  # another partition when P > 1
        followed = await asyncio.wait_for(waiter, timeout=2)  # woken by the append, not the 5 s timeout
        assert await stream.follow(stream.position_after(start, followed), count=10, block_ms=10) == []
        await stream.ensure_group("trainer")
        await stream.ensure_group("trainer")  # idempotent
        first = await stream.read_group("trainer", "a", count=1)
        second = await stream.read_group("trainer", "b", count=10)
        pending_a = await stream.read_group("trainer", "a", count=10, pending=True)  # crashed before ack
        acked = await stream.ack("trainer", [entry for entry, _ in pending_a])
        pending_after = await stream.read_group("trainer", "a", count=10, pending=True)
        await client.aclose()
        return followed, first, second, pending_a, acked, pending_after

    followed, first, second, pending_a, acked, pending_after = run(scenario())
    assert [e.event_id for _, e in followed] == ["e2"]
    ids = lambda entries: [e.event_id for _, e in entries]  # noqa: E731
    assert ids(first)[0] == "e1" and sorted(ids(first) + ids(second)) == ["e1", "e2"]  # each handed out once
    assert ids(pending_a) == ids(first) and acked == len(first) and pending_after == []


def test_counters_move_with_the_append_and_a_duplicate_counts_once(layout):
    from app.state.counters import EngagementCounters, top_creators, trending, user_topics

    topics = {1: ("Crime", "Drama"), 2: ("Comedy",), 3: ()}
    counters = EngagementCounters(lambda i: topics.get(i, ()), lambda i: {1: 10, 2: 20}.get(i, -1),
                                  ("like", "click"), retention_days=3)
    day = 86_400.0 * 20_000
    events = [
        StreamEvent("c1", 7, "like", day + 10, item_id=1), StreamEvent("c2", 7, "click", day + 20, item_id=1),
        StreamEvent("c3", 8, "like", day - 86_400 + 5, item_id=2),  # yesterday
        StreamEvent("c4", 7, "impression", day + 30, item_id=2),    # not an engagement
        StreamEvent("c5", 7, "like", day + 40, item_id=3),          # no topics, no creator
    ]

    url, sync, partitions, names = layout

    async def scenario():
        client = async_fail_fast_client(url, 2.0)
        stream = EventStream(client, maxlen=1000, dedup_ttl_s=60, partitions=partitions)
        first = await stream.append(events, counters.ops_for(events))
        again = await stream.append(events[:2], counters.ops_for(events[:2]))  # a retried batch
        parts = stream.partitions
        result = (first, again, await trending(client, day + 100, days=3, half_life_days=1.0, k=10, partitions=parts),
                  await user_topics(client, 7, parts), await top_creators(client, day + 100, days=3, k=10, partitions=parts))
        await client.aclose()
        return result

    first, again, top, topics_7, creators = run(scenario())
    assert first == [True] * 5 and again == [False, False]
    assert top == [(1, 2.0), (3, 1.0), (2, 0.5)]  # yesterday's like counts half
    assert topics_7 == {"Crime": 2.0, "Drama": 2.0}
    assert creators == [(10, 2.0), (20, 0.5)]
    assert 0 < sync.pttl(names.local(f"rf:cnt:items:{int(day // 86_400)}", names.of_user(7))) <= 3 * 86_400 * 1000
