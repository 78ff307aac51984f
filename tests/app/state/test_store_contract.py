"""One contract for every CapStore and BudgetStore implementation (in-memory and real Redis)."""
from __future__ import annotations

import pytest

from app.state import keys
from app.state.budgets import BudgetStatus, RedisBudgetStore
from app.state.caps import CapClaim, CapStatus, RedisCapStore
from tests.app.state.conftest import GRACE_S, RESERVATION_TTL_S, SESSION_TTL_S


def claim(ad_id=1, advertiser_id=10, category="retail", session="s1", ad_limit=2, advertiser_limit=3, category_limit=None):
    return CapClaim(7, ad_id, advertiser_id, category, session, ad_limit, advertiser_limit, category_limit)


# ---------------------------------------------------------------- caps


def test_caps_count_reservations_up_to_the_limit(cap_store, clock) -> None:
    now = clock()
    assert cap_store.reserve("r1", claim(), now) == CapStatus.RESERVED
    assert cap_store.reserve("r2", claim(), now) == CapStatus.RESERVED
    assert cap_store.reserve("r3", claim(), now) == CapStatus.CAPPED  # ad cap 2
    counts = cap_store.counts(7, "s1", [1, 2], [10], ["retail"], now)
    assert counts.ad == {1: 2, 2: 0} and counts.advertiser == {10: 2} and counts.category == {"retail": 2}


def test_advertiser_and_category_caps(cap_store, clock) -> None:
    now = clock()
    for i in range(3):
        assert cap_store.reserve(f"a{i}", claim(ad_id=i), now) == CapStatus.RESERVED
    assert cap_store.reserve("a3", claim(ad_id=3), now) == CapStatus.CAPPED  # advertiser cap 3
    political = claim(ad_id=50, advertiser_id=99, category="political", category_limit=1)
    assert cap_store.reserve("p1", political, now) == CapStatus.RESERVED
    other_ad = claim(ad_id=51, advertiser_id=98, category="political", category_limit=1)
    assert cap_store.reserve("p2", other_ad, now) == CapStatus.CAPPED
    # a new session may show a political ad again
    assert cap_store.reserve("p3", claim(51, 98, "political", "s2", category_limit=1), now) == CapStatus.RESERVED


def test_cap_of_zero_forbids_everything(cap_store, clock) -> None:
    assert cap_store.reserve("r", claim(ad_limit=0), clock()) == CapStatus.CAPPED
    assert cap_store.counts(7, "s1", [1], [10], ["retail"], clock()).ad == {1: 0}


def test_caps_are_idempotent_per_reservation(cap_store, clock) -> None:
    now = clock()
    assert cap_store.reserve("r1", claim(), now) == CapStatus.RESERVED
    assert cap_store.reserve("r1", claim(), now) == CapStatus.RESERVED
    assert cap_store.counts(7, "s1", [1], [10], ["retail"], now).ad == {1: 1}
    assert cap_store.commit("r1", now) == CapStatus.COMMITTED
    assert cap_store.commit("r1", now) == CapStatus.COMMITTED
    assert cap_store.release("r1", now) == CapStatus.COMMITTED  # a shown ad stays counted
    assert cap_store.reserve("r1", claim(), now) == CapStatus.COMMITTED
    assert cap_store.counts(7, "s1", [1], [10], ["retail"], now).ad == {1: 1}


def test_release_frees_the_caps_once(cap_store, clock) -> None:
    now = clock()
    cap_store.reserve("r1", claim(), now)
    cap_store.reserve("r2", claim(), now)
    assert cap_store.release("r1", now) == CapStatus.RELEASED
    assert cap_store.release("r1", now) == CapStatus.RELEASED
    assert cap_store.counts(7, "s1", [1], [10], ["retail"], now).ad == {1: 1}
    assert cap_store.commit("r1", now) == CapStatus.RELEASED  # too late: not counted again
    assert cap_store.reserve("r3", claim(), now) == CapStatus.RESERVED
    assert cap_store.release("nope", now) == CapStatus.UNKNOWN
    assert cap_store.commit("nope", now) == CapStatus.UNKNOWN


def test_daily_caps_reset_at_midnight_session_caps_do_not(cap_store, clock) -> None:
    political = dict(category="political", category_limit=1)
    assert cap_store.reserve("r1", claim(ad_limit=1, **political), clock()) == CapStatus.RESERVED
    clock.advance(14 * 3600)  # 23:00: same day
    assert cap_store.reserve("r2", claim(ad_limit=1, session="s9"), clock()) == CapStatus.CAPPED
    clock.advance(2 * 3600)  # 01:00 next day
    assert cap_store.reserve("r3", claim(ad_limit=1, session="s9"), clock()) == CapStatus.RESERVED
    # the session's political count is not a daily counter
    assert cap_store.reserve("r4", claim(ad_id=2, advertiser_id=11, **political), clock()) == CapStatus.CAPPED


# ---------------------------------------------------------------- budgets


def test_budget_reserve_commit_release(budget_store, clock) -> None:
    now = clock()
    assert budget_store.reserve("a", 1, 4.0, 10.0, now) == BudgetStatus.RESERVED
    assert budget_store.reserve("b", 1, 4.0, 10.0, now) == BudgetStatus.RESERVED
    assert budget_store.reserve("c", 1, 4.0, 10.0, now) == BudgetStatus.INSUFFICIENT  # 12 > 10
    assert budget_store.snapshot({1: 10.0}, now)[1].remaining == pytest.approx(2.0)
    assert budget_store.commit("a", now) == BudgetStatus.COMMITTED
    assert budget_store.release("b", now) == BudgetStatus.RELEASED
    state = budget_store.snapshot({1: 10.0}, now)[1]
    assert (state.spent, state.reserved, state.remaining) == pytest.approx((4.0, 0.0, 6.0))
    assert budget_store.reserve("c", 1, 6.0, 10.0, now) == BudgetStatus.RESERVED  # exactly fills it
    assert budget_store.reserve("d", 1, 0.000001, 10.0, now) == BudgetStatus.INSUFFICIENT


def test_budget_operations_are_idempotent(budget_store, clock) -> None:
    now = clock()
    assert budget_store.reserve("a", 1, 3.0, 10.0, now) == BudgetStatus.RESERVED
    assert budget_store.reserve("a", 1, 3.0, 10.0, now) == BudgetStatus.RESERVED
    assert budget_store.snapshot({1: 10.0}, now)[1].reserved == pytest.approx(3.0)
    assert budget_store.commit("a", now) == BudgetStatus.COMMITTED
    assert budget_store.commit("a", now) == BudgetStatus.COMMITTED
    assert budget_store.release("a", now) == BudgetStatus.COMMITTED
    assert budget_store.reserve("a", 1, 3.0, 10.0, now) == BudgetStatus.COMMITTED
    state = budget_store.snapshot({1: 10.0}, now)[1]
    assert (state.spent, state.reserved) == pytest.approx((3.0, 0.0))
    assert budget_store.release("b", now) == BudgetStatus.UNKNOWN
    assert budget_store.commit("b", now) == BudgetStatus.UNKNOWN


def test_released_reservation_is_not_charged_later(budget_store, clock) -> None:
    now = clock()
    budget_store.reserve("a", 1, 3.0, 10.0, now)
    assert budget_store.release("a", now) == BudgetStatus.RELEASED
    assert budget_store.commit("a", now) == BudgetStatus.RELEASED
    assert budget_store.snapshot({1: 10.0}, now)[1].spent == 0.0


def test_stale_reservations_are_reclaimed_after_their_ttl(budget_store, clock) -> None:
    assert budget_store.reserve("a", 1, 8.0, 10.0, clock()) == BudgetStatus.RESERVED
    assert budget_store.reserve("b", 1, 8.0, 10.0, clock()) == BudgetStatus.INSUFFICIENT
    clock.advance(RESERVATION_TTL_S - 1)
    assert budget_store.reserve("b", 1, 8.0, 10.0, clock()) == BudgetStatus.INSUFFICIENT
    clock.advance(1)
    assert budget_store.reserve("b", 1, 8.0, 10.0, clock()) == BudgetStatus.RESERVED  # "a" reclaimed
    # a late commit of "a" finds no room and is not charged; "b" still can be
    assert budget_store.commit("a", clock()) == BudgetStatus.EXPIRED
    assert budget_store.commit("b", clock()) == BudgetStatus.COMMITTED
    assert budget_store.snapshot({1: 10.0}, clock())[1].spent == pytest.approx(8.0)


def test_late_commit_is_charged_when_budget_has_room(budget_store, clock) -> None:
    budget_store.reserve("a", 1, 2.0, 10.0, clock())
    clock.advance(RESERVATION_TTL_S + 1)
    assert budget_store.reserve("b", 1, 1.0, 10.0, clock()) == BudgetStatus.RESERVED  # reclaims "a"
    assert budget_store.snapshot({1: 10.0}, clock())[1].reserved == pytest.approx(1.0)
    assert budget_store.commit("a", clock()) == BudgetStatus.COMMITTED
    assert budget_store.snapshot({1: 10.0}, clock())[1].spent == pytest.approx(2.0)


def test_budgets_are_per_day_and_commit_charges_the_reservation_day(budget_store, clock) -> None:
    clock.advance(15 * 3600 - 10)  # 23:59:50
    assert budget_store.reserve("a", 1, 10.0, 10.0, clock()) == BudgetStatus.RESERVED
    clock.advance(20)  # past midnight: a fresh budget
    assert budget_store.snapshot({1: 10.0}, clock())[1].remaining == pytest.approx(10.0)
    assert budget_store.reserve("b", 1, 10.0, 10.0, clock()) == BudgetStatus.RESERVED
    assert budget_store.commit("a", clock()) == BudgetStatus.COMMITTED  # yesterday's spend
    assert budget_store.snapshot({1: 10.0}, clock())[1].spent == 0.0


def test_money_is_exact_in_micro_units(budget_store, clock) -> None:
    now = clock()
    for i in range(10):
        assert budget_store.reserve(f"r{i}", 1, 0.1, 1.0, now) == BudgetStatus.RESERVED
        budget_store.commit(f"r{i}", now)
    assert budget_store.reserve("r10", 1, 0.000001, 1.0, now) == BudgetStatus.INSUFFICIENT
    assert budget_store.snapshot({1: 1.0}, now)[1].spent == 1.0


def test_budget_lowered_midday_takes_effect(budget_store, clock) -> None:
    budget_store.reserve("a", 1, 6.0, 10.0, clock())
    assert budget_store.reserve("b", 1, 1.0, 5.0, clock()) == BudgetStatus.INSUFFICIENT


# ---------------------------------------------------------------- Redis specifics


def test_redis_keys_get_ttls_in_the_same_step(any_redis, clock) -> None:
    kind, client = any_redis
    caps = RedisCapStore(client, session_ttl_s=SESSION_TTL_S, key_grace_s=GRACE_S)
    budgets = RedisBudgetStore(client, reservation_ttl_s=RESERVATION_TTL_S, key_grace_s=GRACE_S)
    caps.reserve("r1", claim(), clock())
    budgets.reserve("r1", 1, 1.0, 10.0, clock())
    to_midnight = 15 * 3600
    on_every_master = {"target_nodes": "primaries"} if kind == "cluster" else {}
    names = [k.decode() for k in client.keys(f"{keys.PREFIX}:*", **on_every_master)]
    assert len(names) == 9  # 3 counters, cap ledger and owner; budget, ledger, pending and owner
    for name in names:
        ttl = client.ttl(name)
        expected = SESSION_TTL_S if ":cap:cat:" in name else to_midnight + GRACE_S
        assert expected - 2 <= ttl <= expected + 2, (name, ttl)


def test_each_script_touches_one_hash_slot(clock) -> None:
    """A user's caps and cap ledger share one slot, a campaign's budget keys another: what lets
    every script run on a Redis Cluster (the owner pointers are written in their own step)."""
    from redis.crc import key_slot

    caps = RedisCapStore.__new__(RedisCapStore)
    caps._session_ttl_s, caps._key_grace_s = SESSION_TTL_S, GRACE_S
    cap_keys, _ = caps.reserve_call("r1", claim(), clock(), with_owner=False)
    assert len({key_slot(k.encode()) for k in cap_keys}) == 1
    budget_keys = RedisBudgetStore.campaign_keys(3, 19_000)
    assert len({key_slot(k.encode()) for k in budget_keys}) == 1
