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
