"""AdServer end to end: targeting -> eligibility -> ranking -> auction -> reservation."""
from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.ads.config import AdsConfig
from app.ads.server import AdServer, reservation_id
from app.ads.targeting import matches
from app.ads.types import AdUser, WithheldReason
from app.state._redis import fail_fast_client
from app.state.budgets import InMemoryBudgetStore, RedisBudgetStore
from app.state.caps import InMemoryCapStore, RedisCapStore
from app.state.clock import ManualClock
from app.state.local_redis import free_port
from app.state.reservations import RedisReservations
from tests.app.ads.conftest import DAY_START

NOON = DAY_START + 12 * 3600


def _server(world, ranker, pacer, config=None, caps=None, budgets=None, clock=None) -> AdServer:
    config = config or AdsConfig()
    return AdServer(
        world, ranker, pacer,
        caps or InMemoryCapStore(),
        budgets or InMemoryBudgetStore(config.reservation_ttl_s),
        config,
        clock or ManualClock(NOON),
    )


def _eligible_user(users) -> AdUser:
    return next(u for u in users if not u.opted_out_all and not u.opted_out_categories)


def test_serve_returns_priced_reserved_candidates(world, users, ranker, pacer) -> None:
    server = _server(world, ranker, pacer)
    served = [server.serve(u, f"r{u.user_id}", n_slots=3) for u in users[:60]]
    ads = [a for r in served for a in r.ads]
    assert len(ads) > 60  # most users get several ads
    campaigns = world.campaigns_by_id
    for result, user in zip(served, users[:60]):
        assert [a.slot_rank for a in result.ads] == list(range(len(result.ads)))
        assert len({a.advertiser_id for a in result.ads}) == len(result.ads)
        for ad in result.ads:
            campaign = campaigns[ad.campaign_id]
            assert matches(campaign.targeting, user) and campaign.start_ts <= NOON < campaign.end_ts
            assert ad.ecpm == pytest.approx(ad.bid * ad.pctr * ad.pcvr * ad.pacing_multiplier)
            assert 0 < ad.price <= ad.slot_factor * ad.ecpm * (1 + 1e-9)
            assert ad.price_per_action <= ad.bid * ad.pacing_multiplier * (1 + 1e-9)
            assert ad.reservation_id == reservation_id(f"r{user.user_id}", ad.ad_id)
            assert ad.brand_safety == campaign.brand_safety


def test_commit_charges_release_frees(world, users, ranker, pacer) -> None:
    budgets = InMemoryBudgetStore(300)
    server = _server(world, ranker, pacer, budgets=budgets)
    result = server.serve(_eligible_user(users), "req", n_slots=2)
    assert len(result.ads) == 2
    shown, lost = result.ads
    assert server.commit_impression("req", shown.ad_id)
    assert server.commit_impression("req", shown.ad_id)  # a duplicate event is charged once
    server.release("req", [lost.ad_id])
    state = budgets.snapshot({c.campaign_id: c.daily_budget for c in world.campaigns}, NOON)
    assert state[shown.campaign_id].spent == pytest.approx(shown.price, abs=1e-6)
    assert state[lost.campaign_id].spent == 0 and state[lost.campaign_id].reserved == 0
    assert not server.commit_impression("req", lost.ad_id)  # released: never charged


def test_release_pages_frees_several_pages_in_one_call(world, users, ranker, pacer) -> None:
    budgets = InMemoryBudgetStore(300)
    server = _server(world, ranker, pacer, budgets=budgets)
    user = _eligible_user(users)
    pages = {rid: server.serve(user, rid, n_slots=2).ads for rid in ("p1", "p2")}
    assert all(pages.values())
    server.release_pages([(rid, [a.ad_id for a in ads]) for rid, ads in pages.items()])
    state = budgets.snapshot({c.campaign_id: c.daily_budget for c in world.campaigns}, NOON)
    assert all(s.reserved == 0 and s.spent == 0 for s in state.values())
    assert not any(server.commit_impression(rid, a.ad_id) for rid, ads in pages.items() for a in ads)


def test_serving_the_same_request_twice_holds_once(world, users, ranker, pacer) -> None:
    budgets = InMemoryBudgetStore(300)
    server = _server(world, ranker, pacer, budgets=budgets)
    user = _eligible_user(users)
    first = server.serve(user, "dup", n_slots=2)
    second = server.serve(user, "dup", n_slots=2)
    assert [a.ad_id for a in first.ads] == [a.ad_id for a in second.ads]
    state = budgets.snapshot({a.campaign_id: 1e9 for a in first.ads}, NOON)
    for ad in first.ads:
        assert state[ad.campaign_id].reserved == pytest.approx(ad.price, abs=1e-6)


def test_opted_out_user_gets_no_ads(world, users, ranker, pacer) -> None:
    user = dataclasses.replace(_eligible_user(users), opted_out_all=True)
    assert _server(world, ranker, pacer).serve(user, "r", 3).withheld_reason == WithheldReason.OPTED_OUT


def test_unreachable_redis_withholds_ads(world, users, ranker, pacer) -> None:
    config = AdsConfig()
    dead = fail_fast_client(f"redis://127.0.0.1:{free_port()}/0", config.redis_socket_timeout_s)
    server = _server(
        world, ranker, pacer, config,
        caps=RedisCapStore(dead, config.session_ttl_s, config.state_key_grace_s),
        budgets=RedisBudgetStore(dead, config.reservation_ttl_s, config.state_key_grace_s),
    )
    result = server.serve(_eligible_user(users), "r", 3)
    assert result.ads == [] and result.withheld_reason == WithheldReason.STORE_UNAVAILABLE


def test_redis_failure_after_reads_still_withholds(world, users, ranker, pacer, redis_url, redis_client) -> None:
    """Reads succeed, then Redis goes away before the reservation: no partial page."""
    config = AdsConfig()
    live = fail_fast_client(redis_url, 1.0)
    dead = fail_fast_client(f"redis://127.0.0.1:{free_port()}/0", config.redis_socket_timeout_s)

    class ReadsOnly(RedisBudgetStore):
        def reserve(self, *args, **kwargs):
            return RedisBudgetStore(dead, 300, 60).reserve(*args, **kwargs)

    server = _server(
        world, ranker, pacer, config,
        caps=RedisCapStore(live, config.session_ttl_s, config.state_key_grace_s),
        budgets=ReadsOnly(live, config.reservation_ttl_s, config.state_key_grace_s),
    )
    user = _eligible_user(users)
    result = server.serve(user, "r", 3)
    assert result.ads == [] and result.withheld_reason == WithheldReason.STORE_UNAVAILABLE
    # the cap hold taken before the failure was given back
    caps = RedisCapStore(live, config.session_ttl_s, config.state_key_grace_s)
    ad_ids = [a.ad_id for a in world.ads]
    assert sum(caps.counts(user.user_id, "r", ad_ids, [], [], NOON).ad.values()) == 0


def test_serves_over_real_redis(world, users, ranker, pacer, redis_url, redis_client) -> None:
    config = AdsConfig()
    client = fail_fast_client(redis_url, 1.0)
    server = _server(
        world, ranker, pacer, config,
        caps=RedisCapStore(client, config.session_ttl_s, config.state_key_grace_s),
        budgets=RedisBudgetStore(client, config.reservation_ttl_s, config.state_key_grace_s),
    )
    user = _eligible_user(users)
    result = server.serve(user, "redis-1", 2)
    assert len(result.ads) == 2
    assert server.commit_impression("redis-1", result.ads[0].ad_id)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.data(),
    ad_cap=st.integers(0, 3),
    advertiser_cap=st.integers(0, 4),
    political_cap=st.integers(0, 2),
    auction=st.sampled_from(["gsp", "vcg"]),
)
def test_no_served_ad_breaks_a_cap_opt_out_or_category_rule(
    world, users, ranker, pacer, data, ad_cap, advertiser_cap, political_cap, auction
) -> None:
    config = AdsConfig(
        auction=auction,
        ad_user_daily_cap=ad_cap,
        advertiser_user_daily_cap=advertiser_cap,
        session_category_caps={"political": political_cap, "alcohol": 1},
    )
    clock = ManualClock(NOON)
    server = _server(world, ranker, pacer, config, clock=clock)
    pool = data.draw(st.lists(st.sampled_from(users[:40]), min_size=1, max_size=4, unique_by=lambda u: u.user_id))
    pool = [
        dataclasses.replace(u, opted_out_categories=data.draw(st.frozensets(st.sampled_from(["political", "alcohol", "retail"]))))
        for u in pool
    ]
    per_ad, per_advertiser, per_session_category = Counter(), Counter(), Counter()
    for i in range(data.draw(st.integers(1, 25))):
        user = data.draw(st.sampled_from(pool))
        session = f"s{user.user_id}-{data.draw(st.integers(0, 1))}"
        result = server.serve(user, f"q{i}", data.draw(st.integers(1, 4)), session_id=session)
        shown = [a for a in result.ads if data.draw(st.booleans())]
        server.release(f"q{i}", [a.ad_id for a in result.ads if a not in shown])
        for a in shown:
            server.commit_impression(f"q{i}", a.ad_id)
        for a in result.ads:  # every served ad counts until released
            assert not user.opted_out_all and a.category not in user.opted_out_categories
        for a in shown:
            per_ad[(user.user_id, a.ad_id)] += 1
            per_advertiser[(user.user_id, a.advertiser_id)] += 1
            per_session_category[(session, a.category)] += 1
        assert all(n <= ad_cap for n in per_ad.values())
        assert all(n <= advertiser_cap for n in per_advertiser.values())
        for (session_id, category), n in per_session_category.items():
            assert n <= config.session_category_caps.get(category, n)


def _redis_server(world, ranker, pacer, config, client, clock) -> AdServer:
    caps = RedisCapStore(client, config.session_ttl_s, config.state_key_grace_s)
    budgets = RedisBudgetStore(client, config.reservation_ttl_s, config.state_key_grace_s)
    return AdServer(world, ranker, pacer, caps, budgets, config, clock, reservations=RedisReservations(caps, budgets))


def test_batched_redis_reservations_serve_what_the_reference_serves(world, users, ranker, pacer, redis_url, redis_client) -> None:
    """Tight caps and budgets, so caps fill and budgets run out; page after page, the batched
    Redis path and the in-memory reference serve the same ads at the same prices."""
    poor = dataclasses.replace(world, campaigns=tuple(dataclasses.replace(c, daily_budget=0.3) for c in world.campaigns))
    config = AdsConfig(ad_user_daily_cap=2, advertiser_user_daily_cap=3, session_category_caps={"political": 1, "alcohol": 1})
    clock = ManualClock(NOON)
    reference = _server(poor, ranker, pacer, config, clock=clock)
    batched = _redis_server(poor, ranker, pacer, config, fail_fast_client(redis_url, 1.0), clock)
    removed: Counter[str] = Counter()
    for i in range(60):
        user = users[i % 8]
        request = f"q{i}"
        served = [s.serve(user, request, 3, session_id=f"s{user.user_id}") for s in (reference, batched)]
        assert served[0] == served[1]
        removed.update(served[0].removed)
        ads = served[0].ads
        for server in (reference, batched):
            server.release(request, [a.ad_id for a in ads[1:]])
            if ads:
                assert server.commit_impression(request, ads[0].ad_id)
        clock.advance(30.0)
    assert removed["frequency_cap"] > 0 and removed["budget_reserve"] > 0, removed


def test_redis_failure_during_batched_reservation_withholds(world, users, ranker, pacer, redis_url, redis_client) -> None:
    config = AdsConfig()
    server = _redis_server(world, ranker, pacer, config, fail_fast_client(redis_url, 1.0), ManualClock(NOON))
    dead = fail_fast_client(f"redis://127.0.0.1:{free_port()}/0", config.redis_socket_timeout_s)
    dead_reservations = RedisReservations(
        RedisCapStore(dead, config.session_ttl_s, config.state_key_grace_s),
        RedisBudgetStore(dead, config.reservation_ttl_s, config.state_key_grace_s),
    )
    server.reservations.reserve = dead_reservations.reserve  # reads succeed, the holds fail
    result = server.serve(_eligible_user(users), "r", 3)
    assert result.ads == [] and result.withheld_reason == WithheldReason.STORE_UNAVAILABLE
    assert redis_client.keys("rf:ads:capres:*") == [] and redis_client.keys("rf:ads:resv:*") == []
