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

    async def handler(admission):
        async with admission.admitted():
            return await feed()

    async def scenario():
        admission = Admission(lambda n: None, lambda: refused.append(1))
        admission.configure(ApiConfig(max_inflight_feeds=2, admission_target_s=0, shed_delay_s=0))
        results = await asyncio.gather(*(handler(admission) for _ in range(3)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, ApiError)]
        assert results.count("page") == 2 and len(errors) == 1
        assert errors[0].status == 503 and errors[0].headers == {"Retry-After": "1"}
        assert len(started) == 2 and refused == [1]  # the refused feed never started

    asyncio.run(scenario())


def test_an_unbounded_ingress_admits_everything():
    async def scenario():
        admission = Admission(lambda n: None, lambda: None)
        admission.configure(ApiConfig(max_inflight_feeds=0))

        async def handler():
            async with admission.admitted():
                await asyncio.sleep(0)
                return 1

        assert sum(await asyncio.gather(*(handler() for _ in range(50)))) == 50

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
            async with admission.admitted():
                return await slow_feed()
        except ApiError as exc:
            held.append(asyncio.get_running_loop().time() - started)
            return exc

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
        async with admission.admitted():  # room: in at once
            with pytest.raises(ApiError) as refused:
                async with admission.admitted():  # full (the outer one holds the slot): refused at once
                    raise AssertionError("admitted past the bound")
        assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "1"}
        async with admission.admitted():  # the slot came back
            pass

    asyncio.run(scenario())


def test_a_slot_freed_during_a_hold_goes_to_the_newest_held_request():
    """Work-conserving holds: when the running feed ends, the most recently held request is
    admitted at once (not after its hold), and the older one is still answered 503."""
    order: list[str] = []

    async def handler(admission, name, seconds):
        try:
            async with admission.admitted():
                order.append(f"{name} in")
                await asyncio.sleep(seconds)
            return "page"
        except ApiError as exc:
            order.append(f"{name} 503")
            return exc

    async def scenario():
        admission = Admission(lambda n: None, lambda: None)
        admission.configure(ApiConfig(max_inflight_feeds=1, admission_target_s=0, shed_delay_s=1.0,
                                      shed_delay_max_s=1.0, shed_handover_max_wait_s=1.0))
        admission._pacer.delay = lambda waiting, limit: 0.6  # a fixed hold: this test is about the hand-over
        loop = asyncio.get_running_loop()
        running = asyncio.create_task(handler(admission, "first", 0.2))
        await asyncio.sleep(0.01)
        older = asyncio.create_task(handler(admission, "older", 0.0))
        await asyncio.sleep(0.01)
        started = loop.time()
        newer = asyncio.create_task(handler(admission, "newer", 0.5))
        await asyncio.sleep(0.01)
        assert admission.waiting == 2
        assert await running == "page"
        await asyncio.sleep(0.05)
        assert order == ["first in", "newer in"] and loop.time() - started < 0.5  # in when "first" ended
        assert await newer == "page"
        assert isinstance(refusal := await older, ApiError) and refusal.status == 503
        assert order == ["first in", "newer in", "older 503"] and admission.waiting == 0

    asyncio.run(scenario())


def test_a_held_request_that_goes_away_gives_its_slot_back():
    async def scenario():
        admission = Admission(lambda n: None, lambda: None)
        admission.configure(ApiConfig(max_inflight_feeds=1, admission_target_s=0, shed_delay_s=1.0,
                                      shed_delay_max_s=1.0, shed_handover_max_wait_s=1.0))

        async def held():
            async with admission.admitted():
                await asyncio.sleep(10)

        async with admission.admitted():
            waiter = asyncio.create_task(held())
            await asyncio.sleep(0.01)
            assert admission.waiting == 1
        waiter.cancel()  # the slot was just handed to it; it disconnects before running
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert admission.waiting == 0 and admission._limit.inflight == 0
        async with admission.admitted():  # the slot is free again
            pass

    asyncio.run(scenario())


def test_a_request_held_past_the_hand_over_wait_keeps_its_503():
    """`shed_handover_max_wait_s`: a slot freeing after the only held request has waited longer
    than that stays free for the next arrival; the held one is answered 503 at its hold's end."""
    async def scenario():
        admission = Admission(lambda n: None, lambda: None)
        admission.configure(ApiConfig(max_inflight_feeds=1, admission_target_s=0, shed_delay_s=1.0,
                                      shed_delay_max_s=1.0, shed_handover_max_wait_s=0.05))
        admission._pacer.delay = lambda waiting, limit: 0.3

        async def held():
            async with admission.admitted():
                return "page"

        async with admission.admitted():
            waiter = asyncio.create_task(held())
            await asyncio.sleep(0.1)  # held for 0.1 s > 0.05 s when the slot frees
        with pytest.raises(ApiError) as refused:
            await waiter
        assert refused.value.status == 503
        async with admission.admitted():  # the slot was left for a new arrival
            pass

    asyncio.run(scenario())
