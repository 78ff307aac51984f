"""Many threads against the real redis-server and the real 3-master Redis Cluster: no cap is
exceeded, no budget overspent, exactly.

Budgets and caps are small and contended so that they are actually exhausted: the assertions
check both that the limits hold and that they were reached.
"""
from __future__ import annotations

import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.state._redis import fail_fast_client
from app.state.budgets import BudgetStatus, RedisBudgetStore
from app.state.caps import CapClaim, CapStatus, RedisCapStore
from app.state.clock import day_index
from app.state.reservations import AdReservation, RedisReservations
from tests.app.state.conftest import DAY_START, REDIS_KINDS, flushed_client, redis_url_of

THREADS = 24
OPS_PER_THREAD = 250
NOW = DAY_START + 10 * 3600


@pytest.fixture(params=REDIS_KINDS)
def redis_kind(request) -> str:
    """One redis-server or the Redis Cluster; the state is flushed first."""
    flushed_client(request, request.param)
    return request.param


@pytest.fixture
def client(request, redis_kind):
    """A client with a connection per thread (per node on the cluster), as the serving path makes them."""
    made = fail_fast_client(redis_url_of(request, redis_kind), 5.0, max_connections=THREADS + 4)
    yield made
    made.close()


def test_concurrent_budget_reservations_never_overspend(client) -> None:
    budgets = {1: 7.5, 2: 12.0, 3: 30.0}
    store = RedisBudgetStore(client, reservation_ttl_s=300, key_grace_s=60)
    committed: Counter[int] = Counter()  # micro-units charged, per campaign, as the clients saw it
    lock = threading.Lock()

    def worker(t: int) -> None:
        rng = random.Random(t)
        for i in range(OPS_PER_THREAD):
            campaign = rng.choice(list(budgets))
            rid = f"t{t}-{i}"
            price = round(rng.uniform(0.01, 0.4), 6)
            if store.reserve(rid, campaign, price, budgets[campaign], NOW) != BudgetStatus.RESERVED:
                continue
            if rng.random() < 0.25:
                store.release(rid, NOW)
                continue
            # duplicate deliveries of the same impression must be charged once
            outcomes = {store.commit(rid, NOW) for _ in range(2)}
            assert outcomes == {BudgetStatus.COMMITTED}
            with lock:
                committed[campaign] += round(price * 1_000_000)

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(worker, range(THREADS)))

    states = store.snapshot(budgets, NOW)
    for campaign, budget in budgets.items():
        spent_micros = round(states[campaign].spent * 1_000_000)
        assert spent_micros == committed[campaign]  # the store and the clients agree exactly
        assert spent_micros <= round(budget * 1_000_000)  # never overspent
        assert states[campaign].reserved == 0.0  # nothing left dangling
        assert states[campaign].remaining < 0.4  # and actually exhausted: no price fits any more


def test_concurrent_cap_reservations_never_exceed_caps(client) -> None:
    store = RedisCapStore(client, session_ttl_s=600, key_grace_s=60)
    users, ads = range(4), range(3)
    ad_cap, advertiser_cap, political_cap = 3, 5, 1
    granted: Counter[tuple[int, int]] = Counter()
    lock = threading.Lock()

    def worker(t: int) -> None:
        rng = random.Random(1000 + t)
        for i in range(OPS_PER_THREAD):
            user, ad = rng.choice(users), rng.choice(ads)
            category = "political" if ad == 2 else "retail"
            claim = CapClaim(user, ad, 100, category, "s", ad_cap, advertiser_cap, political_cap if ad == 2 else None)
            rid = f"c{t}-{i}"
            status = store.reserve(rid, claim, NOW)
            if status == CapStatus.RESERVED:
                if rng.random() < 0.2:
                    assert store.release(rid, NOW) == CapStatus.RELEASED
                else:
                    store.commit(rid, NOW)
                    with lock:
                        granted[(user, ad)] += 1
            else:
                assert status == CapStatus.CAPPED

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(worker, range(THREADS)))

    political_shown = 0
    for user in users:
        counts = store.counts(user, "s", ads, [100], ["political", "retail"], NOW)
        per_ad = [granted[(user, ad)] for ad in ads]
        assert [counts.ad[a] for a in ads] == per_ad  # the store counted exactly what was shown
        # The political ad is capped by its session category cap (it may not get in at all when
        # the retail ads fill the advertiser cap first: that depends on thread interleaving).
        assert counts.ad[2] == counts.category["political"] <= political_cap
        political_shown += counts.ad[2]
        assert counts.advertiser[100] == advertiser_cap  # all ads share one advertiser: its cap binds
        assert all(c <= ad_cap for c in per_ad)
    assert political_shown >= 1  # the category cap was exercised, not vacuously true


def test_same_request_reserved_concurrently_counts_once(client) -> None:
    budgets = RedisBudgetStore(client, reservation_ttl_s=300, key_grace_s=60)
    caps = RedisCapStore(client, session_ttl_s=600, key_grace_s=60)
    claim = CapClaim(1, 1, 1, "retail", "s", 3, 3, None)
    barrier = threading.Barrier(THREADS)

    def worker(_: int) -> tuple[CapStatus, BudgetStatus]:
        barrier.wait()
        return caps.reserve("same", claim, NOW), budgets.reserve("same", 9, 1.0, 100.0, NOW)

    with ThreadPoolExecutor(THREADS) as pool:
        outcomes = list(pool.map(worker, range(THREADS)))
    assert set(outcomes) == {(CapStatus.RESERVED, BudgetStatus.RESERVED)}
    assert caps.counts(1, "s", [1], [1], ["retail"], NOW).ad == {1: 1}
    assert budgets.snapshot({9: 100.0}, NOW)[9].reserved == 1.0
    assert day_index(NOW) == day_index(DAY_START)


def test_concurrent_batched_reservations_never_exceed_caps_or_budgets(client) -> None:
    """Pages of winners held in one script each (single-slot steps on the cluster), released or
    committed per ad, from many threads."""
    reservations = RedisReservations(
        RedisCapStore(client, session_ttl_s=600, key_grace_s=60), RedisBudgetStore(client, reservation_ttl_s=300, key_grace_s=60)
    )
    budgets = {1: 6.0, 2: 9.0}
    ad_cap, advertiser_cap, political_cap = 4, 6, 1
    spent: Counter[int] = Counter()
    shown: Counter[tuple[int, int]] = Counter()
    lock = threading.Lock()

    def worker(t: int) -> None:
        rng = random.Random(2000 + t)
        for i in range(OPS_PER_THREAD // 5):
            user = rng.choice(range(3))
            page = []
            for ad in rng.sample(range(4), rng.randint(1, 3)):
                category = "political" if ad == 3 else "retail"
                claim = CapClaim(user, ad, 100, category, "s", ad_cap, advertiser_cap, political_cap if ad == 3 else None)
                campaign = 1 + ad % 2
                page.append(AdReservation(f"p{t}-{i}:{ad}", claim, campaign, round(rng.uniform(0.01, 0.3), 6), budgets[campaign]))
            for hold, outcome in zip(page, reservations.reserve(page, NOW)):
                if not outcome.held:
                    continue
                if rng.random() < 0.3:
                    reservations.release([hold.reservation_id], NOW)
                    continue
                reservations.caps.commit(hold.reservation_id, NOW)
                assert reservations.budgets.commit(hold.reservation_id, NOW) == BudgetStatus.COMMITTED
                with lock:
                    spent[hold.campaign_id] += round(hold.amount * 1_000_000)
                    shown[(user, hold.claim.ad_id)] += 1

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(worker, range(THREADS)))

    counts_by_user = [reservations.caps.counts(u, "s", range(4), [100], ["political"], NOW) for u in range(3)]
    for user, counts in enumerate(counts_by_user):
        assert [counts.ad[a] for a in range(4)] == [shown[(user, a)] for a in range(4)]
        assert all(c <= ad_cap for c in counts.ad.values()) and counts.advertiser[100] <= advertiser_cap
        assert counts.category["political"] <= political_cap
    states = reservations.budgets.snapshot(budgets, NOW)
    for campaign, budget in budgets.items():
        assert round(states[campaign].spent * 1_000_000) == spent[campaign] <= round(budget * 1_000_000)
        assert states[campaign].reserved == 0.0
    assert sum(c.advertiser[100] for c in counts_by_user) == 3 * advertiser_cap  # the caps were reached
