"""One contract for every ReservationStore: the reference over the in-memory stores, the same
reference over the Redis stores, and the batched Redis scripts; plus a differential check that
the batched scripts answer exactly what the reference answers."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.state.budgets import BudgetStatus, InMemoryBudgetStore, RedisBudgetStore
from app.state.caps import CapClaim, CapStatus, InMemoryCapStore, RedisCapStore
from app.state.reservations import AdReservation, RedisReservations, ReservationOutcome, StoreReservations
from tests.app.state.conftest import GRACE_S, RESERVATION_TTL_S, SESSION_TTL_S, flushed_client

USER = 7


def hold(rid, ad_id=1, advertiser_id=10, category="retail", session="s1", campaign=1, amount=1.0,
         daily_budget=100.0, ad_limit=2, advertiser_limit=3, category_limit=None) -> AdReservation:
    claim = CapClaim(USER, ad_id, advertiser_id, category, session, ad_limit, advertiser_limit, category_limit)
    return AdReservation(rid, claim, campaign, amount, daily_budget)


def _redis_stores(client):
    return (RedisCapStore(client, session_ttl_s=SESSION_TTL_S, key_grace_s=GRACE_S),
            RedisBudgetStore(client, reservation_ttl_s=RESERVATION_TTL_S, key_grace_s=GRACE_S))


@pytest.fixture(params=["memory", "redis_stores", "redis_batched", "cluster_stores", "cluster_batched"])
def reservations(request):
    if request.param == "memory":
        return StoreReservations(InMemoryCapStore(), InMemoryBudgetStore(RESERVATION_TTL_S))
    kind, how = request.param.split("_")
    caps, budgets = _redis_stores(flushed_client(request, kind))
    return StoreReservations(caps, budgets) if how == "stores" else RedisReservations(caps, budgets)


def _snapshot(reservations, now, ad_ids=(1, 2, 3), advertiser_ids=(10, 11), categories=("retail", "political"),
              budgets=None, session="s1"):
    return reservations.snapshot(USER, session, ad_ids, advertiser_ids, categories, budgets or {1: 100.0, 2: 100.0}, now)


def test_reserve_holds_caps_then_budget_for_each_winner(reservations, clock) -> None:
    now = clock()
    outcomes = reservations.reserve([hold("r:1", 1, campaign=1, amount=1.5), hold("r:2", 2, 11, campaign=2, amount=0.25)], now)
    assert outcomes == [ReservationOutcome(CapStatus.RESERVED, BudgetStatus.RESERVED)] * 2
    assert all(o.held for o in outcomes)
    counts, budgets = _snapshot(reservations, now)
    assert counts.ad == {1: 1, 2: 1, 3: 0} and counts.advertiser == {10: 1, 11: 1} and counts.category["retail"] == 2
    assert budgets[1].reserved == 1.5 and budgets[2].reserved == 0.25 and budgets[1].spent == 0.0


def test_a_full_cap_tries_no_budget(reservations, clock) -> None:
    now = clock()
    outcomes = reservations.reserve([hold("a", ad_limit=1), hold("b", ad_limit=1)], now)
    assert outcomes[1] == ReservationOutcome(CapStatus.CAPPED, None)
    assert not outcomes[1].caps_held and not outcomes[1].held
    assert _snapshot(reservations, now)[1][1].reserved == 1.0


def test_a_budget_without_room_gives_the_caps_back_before_the_next_winner(reservations, clock) -> None:
    """In auction order: the first political ad's caps are freed before the second one's cap check."""
    now = clock()
    poor = hold("p1", 1, 10, "political", campaign=1, amount=5.0, daily_budget=2.0, category_limit=1)
    rich = hold("p2", 2, 11, "political", campaign=2, amount=1.0, category_limit=1)
    outcomes = reservations.reserve([poor, rich], now)
    assert outcomes[0] == ReservationOutcome(CapStatus.RESERVED, BudgetStatus.INSUFFICIENT)
    assert outcomes[0].caps_held and not outcomes[0].held
    assert outcomes[1].held
    counts, budgets = _snapshot(reservations, now, budgets={1: 2.0, 2: 100.0})
    assert counts.ad == {1: 0, 2: 1, 3: 0} and counts.category["political"] == 1
    assert budgets[1].reserved == 0.0 and budgets[2].reserved == 1.0


def test_reserve_is_idempotent_per_reservation_id(reservations, clock) -> None:
    now = clock()
    batch = [hold("r:1", 1), hold("r:2", 2, 11, campaign=2)]
    first = reservations.reserve(batch, now)
    assert reservations.reserve(batch, now) == first
    counts, budgets = _snapshot(reservations, now)
    assert counts.ad == {1: 1, 2: 1, 3: 0} and budgets[1].reserved == 1.0 and budgets[2].reserved == 1.0
    reservations.caps.commit("r:1", now)
    reservations.budgets.commit("r:1", now)
    again = reservations.reserve(batch, now)
    assert again[0] == ReservationOutcome(CapStatus.COMMITTED, BudgetStatus.COMMITTED) and again[0].held
    assert _snapshot(reservations, now)[1][1].spent == 1.0


def test_release_frees_budget_and_caps_once_and_keeps_what_was_shown(reservations, clock) -> None:
    now = clock()
    reservations.reserve([hold("r:1", 1), hold("r:2", 2, 11, campaign=2), hold("r:3", 3, 10)], now)
    reservations.caps.commit("r:3", now)
    reservations.budgets.commit("r:3", now)
    for _ in range(2):  # idempotent; unknown ids are no-ops
        reservations.release(["r:1", "r:3", "never-made"], now)
        counts, budgets = _snapshot(reservations, now)
        assert counts.ad == {1: 0, 2: 1, 3: 1} and counts.advertiser == {10: 1, 11: 1}
        assert budgets[1].reserved == 0.0 and budgets[1].spent == 1.0 and budgets[2].reserved == 1.0
    # a released id stays released: reserving it again holds nothing
    assert reservations.reserve([hold("r:1", 1)], now) == [ReservationOutcome(CapStatus.RELEASED, None)]
    reservations.release([], now)


def test_snapshot_is_the_two_stores_reads(reservations, clock) -> None:
    now = clock()
    reservations.reserve([hold("r:1", 1, campaign=1), hold("r:2", 2, 11, "political", campaign=2)], now)
    args = (USER, "s1", [1, 2, 3], [10, 11, 12], ["retail", "political", "alcohol"])
    counts, budgets = reservations.snapshot(*args, {1: 100.0, 2: 5.0, 3: 1.0}, now)
    assert counts == reservations.caps.counts(*args, now)
    assert budgets == reservations.budgets.snapshot({1: 100.0, 2: 5.0, 3: 1.0}, now)
    assert budgets[3].remaining == 1.0
    empty = reservations.snapshot(USER, "s1", [], [], [], {}, now)
    assert empty[0].ad == {} and empty[1] == {}


def test_a_replayed_id_from_another_session_gives_back_the_caps_it_holds(reservations, clock) -> None:
    """The batched script cannot release counters it was not given; the store's release does."""
    now = clock()
    assert reservations.reserve([hold("x", 1, session="s1", advertiser_limit=1)], now)[0].held
    reservations.budgets.release("x", now)
    # ... and before the next winner's caps are checked: "y" needs the advertiser cap "x" held
    outcomes = reservations.reserve([hold("x", 1, session="s2", advertiser_limit=1),
                                     hold("y", 2, session="s2", advertiser_limit=1)], now)
    assert outcomes[0] == ReservationOutcome(CapStatus.RESERVED, BudgetStatus.RELEASED)
    assert outcomes[1].held
    counts, _ = _snapshot(reservations, now)
    assert counts.ad[1] == 0 and counts.ad[2] == 1 and counts.category["retail"] == 0


# ---------------------------------------------------------------- batched == reference


def _page_hold(i: int, session: str, amount: float) -> AdReservation:
    """Reservation `r<i>` is always the same ad (as in serving: the id is request:ad), of a fixed
    advertiser, category and campaign; the session and price may differ when it is replayed."""
    ad = 1 + i % 4
    category = "political" if ad == 4 else "retail"
    return hold(f"r{i}", ad, 10 + ad % 3, category, session, 1 + ad % 3, amount, daily_budget=4.0,
                category_limit=1 if category == "political" else None)


_HOLD = st.builds(_page_hold, st.integers(0, 12), st.sampled_from(["s1", "s2"]), st.sampled_from([0.5, 1.0, 2.5]))
_STEP = st.one_of(
    st.tuples(st.just("reserve"), st.lists(_HOLD, max_size=5)),
    st.tuples(st.just("release"), st.lists(st.integers(0, 12).map(lambda i: f"r{i}"), max_size=4)),
    st.tuples(st.just("commit"), st.integers(0, 12).map(lambda i: f"r{i}")),
    st.tuples(st.just("advance"), st.sampled_from([60.0, 400.0])),
)


@pytest.fixture(params=["one_script", "steps", "cluster_steps"])
def batched_client(request):
    """(client, one_script): the page in one script on one server; in single-slot steps on one
    server and on the Redis Cluster."""
    kind = "cluster" if request.param.startswith("cluster") else "redis"
    return flushed_client(request, kind), request.param == "one_script"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(_STEP, min_size=1, max_size=12))
def test_batched_scripts_answer_what_the_reference_answers(batched_client, clock, steps) -> None:
    client, one_script = batched_client
    client.flushdb()
    reference = StoreReservations(InMemoryCapStore(), InMemoryBudgetStore(RESERVATION_TTL_S))
    batched = RedisReservations(*_redis_stores(client), one_script=one_script)
    now = clock()
    for kind, arg in steps:
        if kind == "advance":
            now += arg
        elif kind == "commit":
            for r in (reference, batched):
                r.caps.commit(arg, now)
                r.budgets.commit(arg, now)
        else:
            answers = [getattr(r, kind)(arg, now) for r in (reference, batched)]
            assert answers[0] == answers[1], (kind, arg)
        reads = [r.snapshot(USER, s, [1, 2, 3, 4], [10, 11, 12], ["retail", "political"], {1: 4.0, 2: 4.0, 3: 4.0}, now)
                 for s in ("s1", "s2") for r in (reference, batched)]
        assert reads[0] == reads[1] and reads[2] == reads[3]


def test_batched_reservations_need_one_client(redis_client, redis_url) -> None:
    import redis

    caps, _ = _redis_stores(redis_client)
    _, budgets = _redis_stores(redis.Redis.from_url(redis_url))
    with pytest.raises(ValueError, match="one Redis client"):
        RedisReservations(caps, budgets)


def test_one_script_per_page_is_refused_on_a_cluster(redis_cluster_client) -> None:
    with pytest.raises(ValueError, match="Redis Cluster"):
        RedisReservations(*_redis_stores(redis_cluster_client), one_script=True)
