"""The ingress's calls into the stage deployments: batched, bounded by the request's deadline,
retried when a replica died under them, and traced while they wait.

- The organic chain Retrieval → Ranking → Reranking goes out as chained DeploymentResponses
  (each stage hands its output straight to the next, never back through here), carrying every
  request that arrived while earlier chains were out (`AdaptiveBatcher`, batching.py). Read-only,
  so a chain whose replica died under it is started once more while the deadline allows.
- The auction runs beside it; ads are optional to a page, so a late or failed auction is
  cancelled and the page goes without ads (`AdsOutcome.missing` says why). A page whose organic
  part is ready waits at most `ADS_GRACE_S` more for its ads.
- Releases of unplaced reservations ride on the next auction call (nearly every page leaves some:
  a call of their own would cost almost one handle call per feed); when no auction call goes out
  within `api.release_linger_s` they go in one of their own. Fire and forget: idempotent, so a
  carrying call that failed hands them on to the next, and an unreleased one expires by TTL.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from app.ads.server import AdsRequest
from app.organic import OrganicPage, OrganicRequest
from app.page import AdsOutcome
from app.pipeline import StageHook
from app.pipeline.runner import ms, record_wait
from deployments.batching import AdaptiveBatcher
from deployments.messages import AdsAnswer, DeadlineExceeded, batch_deadline

log = logging.getLogger("rayfeed.serve")

ADS_GRACE_S = 0.1  # how long a finished organic page waits for a late auction before going without ads


async def await_by(deadline: float | None, response, *upstream) -> Any:
    """Await a DeploymentResponse until `deadline`; past it, cancel it and the chained
    responses it was given (`upstream`), and raise DeadlineExceeded."""
    if deadline is None:
        return await response
    remaining = deadline - time.time()
    try:
        if remaining <= 0:
            raise asyncio.TimeoutError
        return await asyncio.wait_for(asyncio.ensure_future(response), remaining)
    except asyncio.TimeoutError:
        for r in (response, *upstream):
            r.cancel()
        raise DeadlineExceeded("ingress", time.time() - deadline) from None


class StageClient:
    def __init__(self, retrieval: DeploymentHandle, ranking: DeploymentHandle, reranking: DeploymentHandle,
                 auction: DeploymentHandle, hook_for: Callable[[], StageHook | None],
                 max_in_flight: int, max_batch_size: int) -> None:
        self.retrieval, self.ranking, self.reranking, self.auction = retrieval, ranking, reranking, auction
        self._hook_for = hook_for  # the ingress's current hook (chain-wait spans and records)
        self._chains = AdaptiveBatcher(self._organic_chain, max_in_flight, max_batch_size)
        self._auctions = AdaptiveBatcher(self._auction_call, max_in_flight, max_batch_size)
        self._releases = AdaptiveBatcher(self._release_call, 1, max_batch_size * 4)
        self._queued_ns: dict[str, int] = {}  # request id -> when it joined the chain batcher
        self._background: set[asyncio.Task] = set()
        self._unreleased: list[tuple[str, list[int]]] = []  # waiting for the next auction call
        self._release_timer: asyncio.TimerHandle | None = None
        self.release_linger_s = 0.0

    def configure(self, max_in_flight: int, max_batch_size: int, release_linger_s: float) -> None:
        """New bounds (hot reload); calls already out finish as they are."""
        self._chains.resize(max_in_flight, max_batch_size)
        self._auctions.resize(max_in_flight, max_batch_size)
        self._releases.resize(1, max_batch_size * 4)
        self.release_linger_s = release_linger_s

    async def loaded_versions(self) -> dict[str, str]:
        """Each stage's artifact version, or why it is not ready (readiness)."""
        out: dict[str, str] = {}
        for name, handle in (("retrieval", self.retrieval), ("ranking", self.ranking),
                             ("reranking", self.reranking), ("auction", self.auction)):
            try:
                out[name] = await asyncio.wait_for(handle.loaded_version.remote(), timeout=5.0)
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                out[name] = f"not ready: {type(exc).__name__}"
        return out

    # -- organic --------------------------------------------------------------------------------
    async def organic(self, request: OrganicRequest) -> OrganicPage:
        """This request's page from the next organic chain (shared with the requests that queued
        beside it), by its deadline. A client that goes away abandons only its own entry."""
        deadline = request.deadline if request.deadline is not None else time.time() + 3600.0
        remaining = deadline - time.time()
        if remaining <= 0:
            raise DeadlineExceeded("ingress", -remaining)
        self._queued_ns[request.request_id] = time.time_ns()
        try:
            return await asyncio.wait_for(self._chains.submit(request), remaining)
        except asyncio.TimeoutError:
            raise DeadlineExceeded("ingress", time.time() - deadline) from None
        finally:
            self._queued_ns.pop(request.request_id, None)  # still there: never sent

    async def _organic_chain(self, requests: list[OrganicRequest]) -> list[OrganicPage | Exception]:
        deadline = batch_deadline([r.deadline for r in requests])
        waits = self._record_chain_wait(requests)
        for attempt in (1, 2):
            retrieved = self.retrieval.retrieve_batch.remote(requests)
            ranked = self.ranking.rank_batch.remote(retrieved)
            reranked = self.reranking.rerank_batch.remote(ranked)
            try:
                pages = await await_by(deadline, reranked, ranked, retrieved)
            except (RayActorError, ReplicaUnavailableError) as exc:
                if attempt == 2 or (deadline is not None and time.time() >= deadline):
                    raise
                log.warning("organic chain lost a replica (%s); retrying once", type(exc).__name__)
                continue
            except asyncio.CancelledError:
                for r in (retrieved, ranked, reranked):
                    r.cancel()
                raise
            for request, page in zip(requests, pages):
                if isinstance(page, OrganicPage):
                    page.timings_ms["chain_batch_size"] = float(len(requests))
                    page.timings_ms["chain_wait"] = waits[request.request_id]
            return pages
        raise AssertionError("unreachable")

    def _record_chain_wait(self, requests: list[OrganicRequest]) -> dict[str, float]:
        """Each request's wait in the chain batcher, up to now (its chain is being sent)."""
        sent_ns, hook, waits = time.time_ns(), self._hook_for(), {}
        for request in requests:
            queued_ns = self._queued_ns.pop(request.request_id, sent_ns)
            seconds = (record_wait(hook, "chain_wait", request.trace, queued_ns, sent_ns, len(requests))
                       if hook is not None else (sent_ns - queued_ns) / 1e9)
            waits[request.request_id] = ms(seconds)
        return waits

    # -- ads ------------------------------------------------------------------------------------
    def start_ads(self, request: AdsRequest) -> asyncio.Future:
        return asyncio.ensure_future(self._auctions.submit(request))

    async def _auction_call(self, requests: list[AdsRequest]) -> list[AdsAnswer | Exception]:
        releases = self._take_unreleased()
        try:
            return await await_by(batch_deadline([r.deadline for r in requests]),
                                  self.auction.serve_ads_batch.remote(requests, releases))
        except BaseException:
            if releases:  # maybe never applied; applying twice is harmless
                self._hold_releases(releases)
            raise

    async def ads_by(self, call: asyncio.Future | None, deadline: float) -> tuple[AdsOutcome, float | None]:
        """The auction's answer by the deadline or the grace period, whichever comes first, and
        the seconds the auction took; a late or failed auction is cancelled (fail closed)."""
        if call is None:
            return AdsOutcome(), None
        by = min(deadline, time.time() + ADS_GRACE_S)
        try:
            answer: AdsAnswer = await await_by(by, call)
        except DeadlineExceeded:
            return AdsOutcome(missing="deadline"), None
        except BackPressureError:
            return AdsOutcome(missing="overloaded"), None
        except Exception as exc:  # noqa: BLE001 - a dead Auction replica must not fail the feed
            log.warning("auction failed, page served without ads: %s", type(exc).__name__)
            return AdsOutcome(missing="auction_unavailable"), None
        return AdsOutcome(answer.result), answer.seconds

    def release(self, request_id: str, ad_ids: list[int]) -> None:
        """Free a page's unplaced reservations with the next auction call, or alone after
        `release_linger_s`. Fire and forget: an unreleased reservation expires by itself."""
        self._hold_releases([(request_id, ad_ids)])

    def _hold_releases(self, releases: list[tuple[str, list[int]]]) -> None:
        self._unreleased.extend(releases)
        if self.release_linger_s <= 0:
            self._send_releases()
        elif self._release_timer is None:
            self._release_timer = asyncio.get_running_loop().call_later(self.release_linger_s, self._send_releases)

    def _take_unreleased(self) -> list[tuple[str, list[int]]]:
        taken, self._unreleased = self._unreleased, []
        if self._release_timer is not None:
            self._release_timer.cancel()
            self._release_timer = None
        return taken

    def _send_releases(self) -> None:
        """The releases no auction call took in time, in a call of their own."""
        releases = self._take_unreleased()
        if not releases:
            return

        async def logged() -> None:
            try:
                await self._releases.submit(releases)
            except Exception as exc:  # noqa: BLE001
                log.warning("background release failed: %s", type(exc).__name__)

        task = asyncio.ensure_future(logged())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def send_releases_now(self) -> None:
        """The releases still waiting, sent and awaited with those already out (the replica is
        stopping: what it holds in memory would otherwise wait for the reservations' TTL)."""
        releases = self._take_unreleased()
        try:
            if releases:
                await self._release_call([releases])
            if self._background:
                await asyncio.gather(*self._background, return_exceptions=True)
        except Exception as exc:  # noqa: BLE001 - they expire by TTL
            log.warning("releasing %d pages' ads at shutdown failed: %s", len(releases), type(exc).__name__)

    async def _release_call(self, groups: list[list[tuple[str, list[int]]]]) -> list[None]:
        await self.auction.release_batch.remote([release for group in groups for release in group])
        return [None] * len(groups)

    async def commit_impressions(self, impressions: list[tuple[str, int]]) -> int:
        return await self.auction.commit_impressions.remote(impressions)
