"""Auction: the ads side (targeting → pCTR·pCVR → eligibility → auction → reservations in Redis).

Runs beside the organic chain. AdServer's Redis stores are synchronous, so the methods are
plain `def`: Serve runs them in its thread pool, off the replica's event loop. Any store
failure withholds the ads (fail closed) — AdServer does that and says why.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ray import serve

from app.ads.bundle import AdsBundle
from app.ads.server import AdServer, AdsRequest, serve_page_ads
from app.ads.types import WithheldReason
from app.bootstrap import ad_server_from_bundle
from app.state._redis import fail_fast_client
from app.state.errors import StoreUnavailable
from config import RayfeedConfig
from deployments.common import (
    DeploymentSettings, Loaded, ReloadableDeployment, load_once, observability, resolve_version, serving_clock, stage_hook,
)
from deployments.messages import AdsAnswer, check_deadline

log = logging.getLogger("rayfeed.serve")


@dataclass(frozen=True)
class AuctionState:
    config: RayfeedConfig
    version: str
    bundle: Loaded[AdsBundle]
    hook: object  # the ads funnel's StageHook (its part span and steps)
    server: AdServer | None  # None without Redis: no caps or budgets can be checked, so no ads


@serve.deployment(name="Auction")
class Auction(ReloadableDeployment[AuctionState]):
    stage_name = "auction"

    def build_state(self, config: RayfeedConfig, settings: DeploymentSettings, previous: AuctionState | None) -> AuctionState:
        version = resolve_version(config)
        bundle = load_once(previous.bundle if previous else None, (str(version.root), version.version),
                           lambda: AdsBundle.load(version.path / "ads"))
        server = None
        hook = stage_hook("ads", config, version.version)
        if config.redis_url:
            client = fail_fast_client(config.redis_url, config.ads.redis_socket_timeout_s)
            server = ad_server_from_bundle(bundle.value, config, client, serving_clock(version), hook)
        return AuctionState(config, version.version, bundle, hook, server)

    def _current(self) -> AuctionState:
        if self._state is None:
            raise RuntimeError("auction: state not loaded yet")
        return self._state

    def serve_ads_batch(self, requests: list[AdsRequest],
                        releases: list[tuple[str, list[int]]] | None = None) -> list[AdsAnswer | Exception]:
        """The ingress's batched call (deployments/batching.py): one answer, or that request's
        exception (e.g. its deadline), per request. Earlier pages' unplaced ads ride along
        (`releases`, saving a call of their own) and are freed first, so these auctions see them free."""
        if releases:
            self.release_batch(releases)
        answers: list[AdsAnswer | Exception] = []
        for request in requests:
            try:
                answers.append(self.serve_ads(request))
            except Exception as exc:  # noqa: BLE001 - returned to that request's caller
                answers.append(exc)
        return answers

    def serve_ads(self, request: AdsRequest) -> AdsAnswer:
        state = self._current()
        check_deadline(request.deadline, "auction")  # before any reservation is made
        started = time.perf_counter()
        with state.hook.part("auction", request.trace or None) as span:
            result = serve_page_ads(state.server, state.bundle.value.users, request)
            span.figures.update(n_out=len(result.ads) if result else 0)
        if state.server is not None and result is not None and result.withheld_reason == WithheldReason.STORE_UNAVAILABLE:
            observability(state.config).redis_error("ads_serve")
        return AdsAnswer(result, time.perf_counter() - started, state.version)

    def release_batch(self, releases: list[tuple[str, list[int]]]) -> list[None]:
        """Unplaced reservations of several pages (request id, ad ids), freed in one store call.
        Never raises: a reservation not released expires (budgets) or ages out with its session (caps)."""
        state = self._current()
        pages = [(request_id, ad_ids) for request_id, ad_ids in releases if ad_ids]
        if state.server is not None and pages:
            try:
                state.server.release_pages(pages)
            except StoreUnavailable as exc:
                observability(state.config).redis_error("ads_release")
                log.warning("release of %d pages' ads failed: %s", len(pages), exc)
        return [None] * len(releases)

    def commit_impressions(self, impressions: list[tuple[str, int]]) -> int:
        """Ad impression events: each (request_id, ad_id) reservation becomes spend. Raises
        StoreUnavailable so the caller can report the events as not applied."""
        state = self._current()
        if state.server is None:
            raise StoreUnavailable("no Redis configured")
        return sum(bool(state.server.commit_impression(rid, ad_id)) for rid, ad_id in impressions)
