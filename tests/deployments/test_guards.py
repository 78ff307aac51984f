"""The ingress's capacity guards without Ray: admission and the rate-limit share."""
from __future__ import annotations

import asyncio

import pytest

from app.api.config import ApiConfig
from app.api.errors import ApiError
from deployments.guards import Admission, RateLimitShare


def test_admission_answers_503_with_retry_after_past_the_bound_and_does_no_work():
    refused, started = [], []

    async def feed():
        started.append(1)
        await asyncio.sleep(0.05)
        return "page"

    async def scenario():
        admission = Admission(lambda n: None, lambda: refused.append(1))
        admission.configure(ApiConfig(max_inflight_feeds=2, admission_target_s=0))
        results = await asyncio.gather(*(admission.run(feed()) for _ in range(3)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, ApiError)]
        assert results.count("page") == 2 and len(errors) == 1
        assert errors[0].status == 503 and errors[0].headers == {"Retry-After": "1"}
        assert len(started) == 2 and refused == [1]  # the refused feed never started

    asyncio.run(scenario())


def test_an_unbounded_ingress_admits_everything():
    async def scenario():
        admission = Admission(lambda n: None, lambda: None)
        admission.configure(ApiConfig(max_inflight_feeds=0))

        async def feed():
            return 1

        assert sum(await asyncio.gather(*(admission.run(feed()) for _ in range(50)))) == 50

    asyncio.run(scenario())


def test_the_rate_limit_share_is_one_nth_of_the_cluster_limit():
    share = RateLimitShare()
    share.configure(ApiConfig(rate_limit_per_s=10, rate_limit_burst=4))
    share.live_replicas = 2
    share.configure(ApiConfig(rate_limit_per_s=10, rate_limit_burst=4))  # a heartbeat's rescale
    refused = []
    for _ in range(2):
        share.check("10.0.0.1", lambda: refused.append(1))
    with pytest.raises(ApiError) as limited:
        share.check("10.0.0.1", lambda: refused.append(1))
    assert limited.value.status == 429 and int(limited.value.headers["Retry-After"]) >= 1 and refused == [1]
    share.check("10.0.0.2", lambda: refused.append(1))  # another client has its own bucket
    share.configure(ApiConfig(rate_limit_per_s=0))
    for _ in range(100):
        share.check("10.0.0.1", lambda: refused.append(1))  # 0 turns the limit off


def test_a_full_replica_holds_its_refusals_longer_the_more_are_waiting_and_then_answers_503():
    """A storm of clients retrying at once: each refusal is held asleep (no work started), longer
    as more wait, and ends in a 503 with a Retry-After no shorter than the hold."""
    held, answered = [], []

    async def slow_feed():
        await asyncio.sleep(1.0)
        return "page"

    async def handler(admission):
        started = asyncio.get_running_loop().time()
        try:
            await admission.refuse_when_full()
        except ApiError as exc:
            held.append(asyncio.get_running_loop().time() - started)
            return exc
        return await admission.run(slow_feed())

    async def scenario():
        admission = Admission(lambda n: None, lambda: None, answered.append)
        admission.configure(ApiConfig(max_inflight_feeds=2, admission_target_s=0, shed_delay_s=0.05,
                                      shed_delay_max_s=0.5))
        admitted = [asyncio.create_task(handler(admission)) for _ in range(2)]
        await asyncio.sleep(0.01)
        refusals = await asyncio.gather(*(handler(admission) for _ in range(12)))
        assert all(isinstance(r, ApiError) and r.status == 503 for r in refusals)
        assert all(int(r.headers["Retry-After"]) >= 1 for r in refusals)
        assert admission.waiting == 0 and len(answered) == 12
        # The k-th concurrent refusal waits ≈ 0.05 × k / 2 (×0.5..1.5): the last ones far longer than the first.
        assert max(held) > 3 * min(held) and max(held) <= 0.5 + 0.5  # the cap, plus scheduling slack
        assert await asyncio.gather(*admitted) == ["page", "page"]

    asyncio.run(scenario())


def test_with_room_a_feed_is_not_held_and_a_zero_delay_refuses_at_once():
    async def scenario():
        admission = Admission(lambda n: None, lambda: None)
        admission.configure(ApiConfig(max_inflight_feeds=1, admission_target_s=0, shed_delay_s=0))
        await admission.refuse_when_full()  # room: returns

        async def feed():
            await admission.refuse_when_full()  # full now (this one holds the slot): refused at once
        with pytest.raises(ApiError) as refused:
            await admission.run(feed())
        assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "1"}

    asyncio.run(scenario())
