"""The ingress's stage calls without Ray: fake handles stand in for the deployments, so the
logic around them (chain, retry, deadlines, ads grace, chain-wait records) is what is tested."""
from __future__ import annotations

import asyncio
import time

import pytest
from ray.exceptions import RayActorError

from app.ads.server import AdsRequest
from app.ads.types import AdResult
from app.organic import OrganicPage, OrganicRequest
from deployments import stage_client
from deployments.messages import AdsAnswer, DeadlineExceeded
from deployments.stage_client import StageClient


class FakeMethod:
    """`handle.method.remote(arg, *more)` → a task running `work(arg)`; arg may be an earlier
    call's task. `more` (e.g. the releases riding on an auction call) is kept in `extra`."""

    def __init__(self, work):
        self.work, self.calls, self.args, self.extra = work, 0, [], []

    def remote(self, arg, *more):
        self.calls += 1
        self.args.append(arg)
        self.extra.append(more)

        async def run():
            value = await arg if isinstance(arg, asyncio.Task) else arg
            return await self.work(value)

        return asyncio.ensure_future(run())


class FakeHandle:
    def __init__(self, **methods):
        for name, work in methods.items():
            setattr(self, name, FakeMethod(work))


def page_for(request: OrganicRequest) -> OrganicPage:
    return OrganicPage([], [], False, {}, {"ranking": "v1"})


def client(retrieve=None, auction=None, hook=None, release_linger_s=0.0) -> StageClient:
    async def passthrough(batch):
        return batch

    async def rerank(batch):
        return [page_for(r) for r in batch]

    async def released(releases):
        return [None] * len(releases)

    stages = StageClient(
        FakeHandle(retrieve_batch=retrieve or passthrough), FakeHandle(rank_batch=passthrough),
        FakeHandle(rerank_batch=rerank), FakeHandle(serve_ads_batch=auction or passthrough, release_batch=released),
        lambda: hook, max_in_flight=1, max_batch_size=8)
    stages.configure(1, 8, release_linger_s)
    return stages


def request(i: int, deadline_s: float = 5.0) -> OrganicRequest:
    return OrganicRequest(i, 0.0, 10, f"r{i}", deadline=time.time() + deadline_s)


def test_requests_queued_behind_a_chain_share_the_next_one():
    async def scenario():
        stages = client()
        pages = await asyncio.gather(*(stages.organic(request(i)) for i in range(5)))
        assert all(isinstance(p, OrganicPage) for p in pages)
        # max_in_flight=1: the first goes alone, the four that queued behind it share one chain.
        assert [p.timings_ms["chain_batch_size"] for p in pages] == [1.0, 4.0, 4.0, 4.0, 4.0]
        assert stages.retrieval.retrieve_batch.calls == 2

    asyncio.run(scenario())


def test_a_chain_that_lost_a_replica_is_sent_once_more():
    failures = []

    async def flaky(batch):
        if not failures:
            failures.append(1)
            raise RayActorError()
        return batch

    async def scenario():
        stages = client(retrieve=flaky)
        page = await stages.organic(request(1))
        assert isinstance(page, OrganicPage) and stages.retrieval.retrieve_batch.calls == 2

    asyncio.run(scenario())


def test_a_chain_past_its_deadline_raises_deadline_exceeded():
    async def slow(batch):
        await asyncio.sleep(1.0)
        return batch

    async def scenario():
        with pytest.raises(DeadlineExceeded):
            await client(retrieve=slow).organic(request(1, deadline_s=0.05))

    asyncio.run(scenario())


def ads_request() -> AdsRequest:
    return AdsRequest(1, "r1", 2, 0.0, "s1", deadline=time.time() + 5)


async def quick_auction(batch):
    return [AdsAnswer(AdResult([]), 0.002, "v1") for _ in batch]


def test_late_failed_and_answered_auctions(monkeypatch):
    monkeypatch.setattr(stage_client, "ADS_GRACE_S", 0.05)

    async def slow(batch):
        await asyncio.sleep(1.0)
        return [AdsAnswer(AdResult([]), 1.0, "v1") for _ in batch]

    async def broken(batch):
        raise RuntimeError("auction replica died")

    async def scenario():
        deadline = time.time() + 5
        stages = client(auction=slow)
        late, _ = await stages.ads_by(stages.start_ads(ads_request()), deadline)
        assert late.missing == "deadline" and late.result is None
        stages = client(auction=broken)
        failed, _ = await stages.ads_by(stages.start_ads(ads_request()), deadline)
        assert failed.missing == "auction_unavailable"
        stages = client(auction=quick_auction)
        answered, seconds = await stages.ads_by(stages.start_ads(ads_request()), deadline)
        assert answered.missing is None and answered.result == AdResult([]) and seconds == 0.002
        none, _ = await stages.ads_by(None, deadline)  # no auction was asked (no Redis)
        assert none.result is None and none.missing is None

    asyncio.run(scenario())


def test_chain_waits_are_recorded_through_the_ingress_hook():
    class Hook:
        def __init__(self):
            self.waits, self.records = [], []

        def wait(self, name, trace, start_ns, end_ns, batch_size):
            self.waits.append((name, batch_size))

        def record(self, record):
            self.records.append(record)

    hook = Hook()

    async def scenario():
        stages = client(hook=hook)
        await asyncio.gather(*(stages.organic(request(i)) for i in range(3)))

    asyncio.run(scenario())
    assert [w[0] for w in hook.waits] == ["chain_wait"] * 3
    assert [(r.name, r.kind) for r in hook.records] == [("chain_wait", "wait")] * 3


def test_releases_ride_on_the_next_auction_call():
    async def scenario():
        stages = client(auction=quick_auction, release_linger_s=5.0)
        stages.release("r1", [3, 4])
        stages.release("r2", [5])
        await stages.ads_by(stages.start_ads(ads_request()), time.time() + 5)
        auction = stages.auction
        assert auction.serve_ads_batch.extra == [([("r1", [3, 4]), ("r2", [5])],)]
        assert auction.release_batch.calls == 0  # no call of their own
        await stages.ads_by(stages.start_ads(ads_request()), time.time() + 5)
        assert auction.serve_ads_batch.extra[1] == ([],)  # taken once

    asyncio.run(scenario())


def test_releases_go_alone_when_no_auction_call_takes_them_in_time():
    async def scenario():
        stages = client(release_linger_s=0.05)
        stages.release("r1", [3])
        stages.release("r2", [4])
        await asyncio.sleep(0.02)
        assert stages.auction.release_batch.calls == 0  # still lingering
        await asyncio.sleep(0.1)
        assert stages.auction.release_batch.calls == 1
        assert stages.auction.release_batch.extra == [()]
        stages = client(release_linger_s=0.0)  # 0: each page's releases at once, alone
        stages.release("r3", [5])
        await asyncio.sleep(0.01)
        assert stages.auction.release_batch.calls == 1

    asyncio.run(scenario())


def test_releases_on_a_failed_auction_call_go_with_the_next_one():
    async def broken(batch):
        raise RuntimeError("auction replica died")

    async def scenario():
        stages = client(auction=broken, release_linger_s=5.0)
        stages.release("r1", [3])
        failed, _ = await stages.ads_by(stages.start_ads(ads_request()), time.time() + 5)
        assert failed.missing == "auction_unavailable"
        await stages.ads_by(stages.start_ads(ads_request()), time.time() + 5)
        assert [extra[0] for extra in stages.auction.serve_ads_batch.extra] == [[("r1", [3])], [("r1", [3])]]

    asyncio.run(scenario())


def test_releases_still_waiting_go_when_the_replica_stops():
    async def scenario():
        stages = client(release_linger_s=60.0)
        stages.release("r1", [3])
        stages.release("r2", [4])
        await stages.send_releases_now()  # FeedIngress.__del__: Serve's graceful shutdown
        assert stages.auction.release_batch.args == [[("r1", [3]), ("r2", [4])]]  # one call for both pages
        await stages.send_releases_now()  # nothing left: no call
        assert stages.auction.release_batch.calls == 1

    asyncio.run(scenario())
