"""With Redis unreachable every store operation raises the one typed error callers handle."""
from __future__ import annotations

import time

import pytest
import redis

from app.state._redis import fail_fast_client
from app.state.budgets import RedisBudgetStore
from app.state.caps import CapClaim, RedisCapStore
from app.state.errors import StoreUnavailable
from app.state.local_redis import free_port
from app.state.reservations import AdReservation, RedisReservations


@pytest.fixture
def dead_client() -> redis.Redis:
    """The serving-path client, on a port nothing listens on."""
    return fail_fast_client(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.05)


def test_unreachable_redis_fails_fast(dead_client) -> None:
    start = time.perf_counter()
    with pytest.raises(StoreUnavailable):
        RedisBudgetStore(dead_client, reservation_ttl_s=60, key_grace_s=60).snapshot({1: 10.0}, 0.0)
    assert time.perf_counter() - start < 1.0


def test_cap_store_fails_closed(dead_client) -> None:
    store = RedisCapStore(dead_client, session_ttl_s=600, key_grace_s=60)
    claim = CapClaim(1, 1, 1, "retail", "s", 3, 3, None)
    with pytest.raises(StoreUnavailable, match="frequency caps"):
        store.counts(1, "s", [1], [1], ["retail"], 0.0)
    for call in (lambda: store.reserve("r", claim, 0.0), lambda: store.commit("r", 0.0), lambda: store.release("r", 0.0)):
        with pytest.raises(StoreUnavailable):
            call()


def test_budget_store_fails_closed(dead_client) -> None:
    store = RedisBudgetStore(dead_client, reservation_ttl_s=60, key_grace_s=60)
    with pytest.raises(StoreUnavailable, match="budget"):
        store.snapshot({1: 10.0}, 0.0)
    for call in (lambda: store.reserve("r", 1, 1.0, 10.0, 0.0), lambda: store.commit("r", 0.0), lambda: store.release("r", 0.0)):
        with pytest.raises(StoreUnavailable):
            call()


def test_batched_reservations_fail_closed(dead_client) -> None:
    reservations = RedisReservations(
        RedisCapStore(dead_client, session_ttl_s=600, key_grace_s=60),
        RedisBudgetStore(dead_client, reservation_ttl_s=60, key_grace_s=60),
    )
    hold = AdReservation("r", CapClaim(1, 1, 1, "retail", "s", 3, 3, None), 1, 1.0, 10.0)
    for call in (
        lambda: reservations.snapshot(1, "s", [1], [1], ["retail"], {1: 10.0}, 0.0),
        lambda: reservations.reserve([hold], 0.0),
        lambda: reservations.release(["r"], 0.0),
    ):
        with pytest.raises(StoreUnavailable, match="frequency caps and budgets"):
            call()


def test_a_frozen_redis_cluster_reads_as_store_unavailable(redis_cluster_url) -> None:
    """When no seed answers in time (every master frozen, or a master frozen on a box too busy
    for the others to answer within the socket timeout), redis-py's cluster client fails its
    topology refresh with RedisClusterException, which is not a RedisError. It must still reach
    callers as StoreUnavailable: the feed then serves a page without its state, not a 500."""
    import asyncio
    import os
    import signal

    from app.state._redis import async_fail_fast_client, cluster_seeds
    from app.state.sessions import FeedStateStore

    pids = []
    for host, port in cluster_seeds(redis_cluster_url)[1]:
        node = redis.Redis(host=host, port=port)
        pids.append(int(node.info("server")["process_id"]))
        node.close()

    async def read_while_frozen() -> list[BaseException | None]:
        client = async_fail_fast_client(redis_cluster_url, 0.05)
        store = FeedStateStore(client, 60, 60, 60, 5)
        await store.read(7, None)  # topology and connections in place before the freeze
        outcomes: list[BaseException | None] = []
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            # A single command's timeout marks the topology stale; the reads after it refresh it.
            for call in (store.ping, lambda: store.read(7, None), lambda: store.read(7, None)):
                try:
                    await call()
                    outcomes.append(None)
                except Exception as exc:  # noqa: BLE001 - the test checks which kind
                    outcomes.append(exc)
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
            await client.aclose()
        return outcomes

    outcomes = asyncio.run(read_while_frozen())
    assert outcomes and all(isinstance(o, StoreUnavailable) for o in outcomes), outcomes
