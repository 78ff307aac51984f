"""Concurrent feed requests through AdServer over the real redis-server: every campaign's tiny
budget and every user's caps hold exactly, and the budgets do run out."""
from __future__ import annotations

import dataclasses
import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from app.ads.config import AdsConfig
from app.ads.server import AdServer
from app.ads.world import AdWorld
from app.state._redis import fail_fast_client
from app.state.budgets import RedisBudgetStore
from app.state.caps import RedisCapStore
from app.state.clock import ManualClock
from tests.app.ads.conftest import DAY_START

THREADS = 16
REQUESTS_PER_THREAD = 80
BUDGET = 0.05


def test_concurrent_serving_never_overspends_or_exceeds_caps(world, users, ranker, pacer, redis_url, redis_client) -> None:
    tight = AdWorld(world.advertisers, tuple(dataclasses.replace(c, daily_budget=BUDGET) for c in world.campaigns), world.ads)
    config = AdsConfig(ad_user_daily_cap=2, advertiser_user_daily_cap=3)
    client = fail_fast_client(redis_url, 2.0, max_connections=THREADS + 4)
    caps = RedisCapStore(client, config.session_ttl_s, config.state_key_grace_s)
    budgets = RedisBudgetStore(client, config.reservation_ttl_s, config.state_key_grace_s)
    server = AdServer(tight, ranker, pacer, caps, budgets, config, ManualClock(DAY_START + 20 * 3600))
    audience = [u for u in users if not u.opted_out_all][:12]  # few users: caps bind too
    shown: Counter[tuple[int, int]] = Counter()
    lock = threading.Lock()

    def worker(t: int) -> None:
        rng = random.Random(t)
        for i in range(REQUESTS_PER_THREAD):
            user = rng.choice(audience)
            rid = f"t{t}-{i}"
            result = server.serve(user, rid, n_slots=3)
            assert result.withheld_reason is None
            placed = [a for a in result.ads if rng.random() < 0.8]
            server.release(rid, [a.ad_id for a in result.ads if a not in placed])
            for a in placed:
                assert server.commit_impression(rid, a.ad_id)
                with lock:
                    shown[(user.user_id, a.ad_id)] += 1

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(worker, range(THREADS)))

    states = budgets.snapshot({c.campaign_id: BUDGET for c in tight.campaigns}, server.clock())
    assert all(s.spent <= BUDGET and s.reserved == 0 for s in states.values())
    exhausted = [c for c, s in states.items() if s.spent > 0.9 * BUDGET]
    assert len(exhausted) >= 5, sorted((s.spent for s in states.values()), reverse=True)[:10]
    assert sum(shown.values()) > 100
    assert max(shown.values()) <= config.ad_user_daily_cap
    per_advertiser = Counter()
    by_ad = {a.ad_id: a for a in world.ads}
    for (user_id, ad_id), n in shown.items():
        per_advertiser[(user_id, by_ad[ad_id].advertiser_id)] += n
    assert max(per_advertiser.values()) <= config.advertiser_user_daily_cap
