"""The ads side's one entry point: targeting -> eligibility -> ranking -> auction -> reservation.

`AdServer.serve` returns the winning ads as `AdCandidate`s for the collator, each holding a
reservation on its campaign's budget and on the user's caps. The collator's verdict comes back
through `commit_impression` (the ad was shown: the reservation becomes spend) or `release` (it
was not placed). If caps or budgets cannot be read or reserved, the request gets no ads
(`WithheldReason.STORE_UNAVAILABLE`): failing closed is the only way no cap or budget breaks.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from app.ads.auction import AuctionBid, GSPAuction, PositionAuction, VCGAuction
from app.ads.config import AdsConfig
from app.ads.eligibility import (
    AdFilter,
    AdRequest,
    BlockedCreatorFilter,
    CapLimits,
    ExhaustedBudgetFilter,
    FrequencyCapFilter,
    OptOutFilter,
    PageConstraintSelector,
)
from app.ads.pacing import BudgetPacer
from app.ads.ranking import AdRanker
from app.ads.targeting import TargetingIndex
from app.ads.types import Ad, AdCandidate, AdResult, AdUser, WithheldReason
from app.ads.world import AdWorld
from app.pipeline.runner import NullHook, StageHook, timed_step
from app.state.budgets import BudgetStatus, BudgetStore
from app.state.caps import CapStore
from app.state.clock import Clock
from app.state.errors import StoreUnavailable
from app.state.reservations import AdReservation, ReservationStore, StoreReservations

log = logging.getLogger(__name__)


def reservation_id(request_id: str, ad_id: int) -> str:
    """One ad's reservation within one request: the idempotency key of reserve/commit/release."""
    return f"{request_id}:{ad_id}"


@dataclass(frozen=True)
class AdsRequest:
    """One page's ask of the ads side. `trace` and `deadline` travel with it to the Auction
    replica (spans join the request's trace; a request reached too late reserves nothing)."""

    user_id: int
    request_id: str
    n_slots: int
    now: float
    session_id: str
    hidden_creator_ids: frozenset[int] = frozenset()
    trace: dict[str, str] = field(default_factory=dict)
    deadline: float | None = None


def serve_page_ads(server: AdServer | None, users: Mapping[int, AdUser], request: AdsRequest) -> AdResult | None:
    """The ads of one page: None for a user without an ad profile; withheld (fail closed) when
    there is no server, i.e. no store to check caps and budgets against."""
    user = users.get(request.user_id)
    if user is None:
        return None
    if server is None:
        return AdResult([], WithheldReason.STORE_UNAVAILABLE)
    return server.serve(user.hiding_creators(request.hidden_creator_ids), request.request_id, request.n_slots,
                        now=request.now, session_id=request.session_id)


@dataclass
class AdFunnel:
    """One request on its way through the funnel: what each step hands the next."""

    user: AdUser
    request_id: str
    n_slots: int
    now: float
    session_id: str
    ads: list[Ad] = field(default_factory=list)
    request: AdRequest | None = None  # the user's caps and the campaigns' budgets, read once
    removed: dict[str, int] = field(default_factory=dict)
    bids: list[AuctionBid] = field(default_factory=list)
    scores: dict[int, tuple[float, float]] = field(default_factory=dict)  # ad -> (pCTR, pCVR)
    pacing: dict[int, float] = field(default_factory=dict)  # campaign -> multiplier
    awards: list = field(default_factory=list)
    winners: list[AdCandidate] = field(default_factory=list)
    result: AdResult | None = None  # set by a step that settles the request early


@dataclass(frozen=True)
class AdStep:
    name: str
    kind: str
    run: Callable[[AdFunnel], None]


def make_auction(config: AdsConfig) -> PositionAuction:
    kind = {"gsp": GSPAuction, "vcg": VCGAuction}[config.auction]
    return kind(tuple(config.slot_ctr_factors), config.reserve_ecpm)


class AdServer:
    """Serves the ads of one feed page.

    `reservations` reads and holds caps and budgets together (default: through `caps` and
    `budgets` one step at a time; `RedisReservations` batches a page's steps into few round trips).

    Example:
        server = AdServer(world, ranker, pacer, RedisCapStore(...), RedisBudgetStore(...), config, clock)
        result = server.serve(user, request_id="r-1", n_slots=2)
        server.commit_impression("r-1", result.ads[0].ad_id)    # shown
        server.release("r-1", [a.ad_id for a in result.ads[1:]])  # not placed
    """

    def __init__(
        self,
        world: AdWorld,
        ranker: AdRanker,
        pacer: BudgetPacer,
        caps: CapStore,
        budgets: BudgetStore,
        config: AdsConfig,
        clock: Clock,
        hook: StageHook | None = None,
        reservations: ReservationStore | None = None,
    ) -> None:
        self.config = config
        # Times, counts and traces each step of the funnel (observability's hook in serving).
        self.hook: StageHook = hook or NullHook()
        self.campaigns = world.campaigns_by_id
        self._ads_by_campaign: dict[int, list[Ad]] = {}
        for ad in world.ads:
            self._ads_by_campaign.setdefault(ad.campaign_id, []).append(ad)
        self.limits = CapLimits.from_config(config)
        self.targeting = TargetingIndex(world.campaigns)
        # Cheap, user-only filters first; the cap and budget ones read the hydrated snapshot.
        self.filters: tuple[AdFilter, ...] = (
            OptOutFilter(),
            BlockedCreatorFilter(),
            FrequencyCapFilter(self.limits),
            ExhaustedBudgetFilter(),
        )
        self.ranker = ranker
        self.pacer = pacer
        self.page = PageConstraintSelector(self.limits, config.one_ad_per_advertiser)
        self.auction = make_auction(config)
        # The funnel, in order; each step is timed, counted and traced through the hook. A step
        # that settles the request (no targeted ads, a store failure) ends it early.
        self.steps: tuple[AdStep, ...] = (
            AdStep("targeting", "source", self._target),
            AdStep("cap_budget_hydration", "hydrator", self._hydrate_caps_and_budgets),
            AdStep("eligibility", "filter", self._eligible),
            AdStep("ad_ranker", "scorer", self._rank),
            AdStep("auction", "selector", self._run_auction),
            AdStep("reservation", "hydrator", self._reserve),
        )
        self.caps = caps
        self.budgets = budgets
        self.reservations: ReservationStore = reservations or StoreReservations(caps, budgets)
        self.clock = clock

    def serve(
        self, user: AdUser, request_id: str, n_slots: int, now: float | None = None, session_id: str | None = None
    ) -> AdResult:
        """Up to `n_slots` ads for `user`, each reserved under `request_id`.

        `session_id` scopes the per-session category caps; without one the request is its own
        session. Serving the same `request_id` again holds nothing twice.
        """
        now = self.clock() if now is None else now
        if user.opted_out_all:
            return AdResult([], WithheldReason.OPTED_OUT)
        funnel = AdFunnel(user, request_id, n_slots, now, session_id or request_id)
        for step in self.steps:
            with timed_step(self.hook, step.name, step.kind) as figures:
                figures["n_in"] = len(funnel.ads)
                step.run(funnel)
                figures["n_out"] = len(funnel.ads)
            if funnel.result is not None:
                return funnel.result
        return AdResult(funnel.winners, None, funnel.removed)

    # -- the funnel's steps, in the order `steps` declares them ----------------------------------
    def _target(self, f: AdFunnel) -> None:
        f.ads = [ad for cid in self.targeting.match(f.user, f.now) for ad in self._ads_by_campaign.get(int(cid), ())]
        if not f.ads or f.n_slots <= 0:
            f.result = AdResult([])

    def _hydrate_caps_and_budgets(self, f: AdFunnel) -> None:
        try:
            f.request = self._hydrate(f.user, f.session_id, f.now, f.ads)
        except StoreUnavailable as exc:
            log.warning("ads withheld for request %s: %s", f.request_id, exc)
            f.result = AdResult([], WithheldReason.STORE_UNAVAILABLE)

    def _eligible(self, f: AdFunnel) -> None:
        assert f.request is not None
        ads = f.ads
        for ad_filter in self.filters:
            keep = ad_filter.keep(f.request, ads, self.campaigns)
            f.removed[ad_filter.name] = int(len(ads) - keep.sum())
            ads = [a for a, k in zip(ads, keep) if k]
        if len(ads) > self.config.max_candidates:  # cheapest prior: the campaign's own bid
            ads = sorted(ads, key=lambda a: (-self.campaigns[a.campaign_id].bid, a.ad_id))[: self.config.max_candidates]
        f.ads = ads

    def _rank(self, f: AdFunnel) -> None:
        assert f.request is not None
        f.bids, f.scores, f.pacing = self._bids(f.request, f.ads)

    def _run_auction(self, f: AdFunnel) -> None:
        assert f.request is not None
        by_id = {a.ad_id: a for a in f.ads}
        ranked = sorted(f.bids, key=lambda b: (-b.ecpm, b.ad_id))
        kept = self.page.select(f.request, [by_id[b.ad_id] for b in ranked], self.campaigns)
        f.removed[self.page.name] = len(ranked) - len(kept)
        f.awards = self.auction.run([ranked[i] for i in kept], f.n_slots)
        awarded = {a.ad_id for a in f.awards}
        f.ads = [a for a in f.ads if a.ad_id in awarded]

    def _reserve(self, f: AdFunnel) -> None:
        assert f.request is not None
        by_id = {a.ad_id: a for a in f.ads}
        holds = [self._reservation(f.request_id, f.request, by_id[a.ad_id], a.price_per_impression) for a in f.awards]
        try:
            outcomes = self.reservations.reserve(holds, f.now)
        except StoreUnavailable as exc:
            log.warning("ads withheld for request %s mid-reservation: %s", f.request_id, exc)
            self._release_quietly([h.reservation_id for h in holds], f.now)
            f.result = AdResult([], WithheldReason.STORE_UNAVAILABLE, f.removed)
            return
        for award, hold, outcome in zip(f.awards, holds, outcomes):
            if not outcome.caps_held:
                f.removed["cap_reserve"] = f.removed.get("cap_reserve", 0) + 1
                continue
            if not outcome.held:
                f.removed["budget_reserve"] = f.removed.get("budget_reserve", 0) + 1
                continue
            ad = by_id[award.ad_id]
            campaign = self.campaigns[ad.campaign_id]
            pctr, pcvr = f.scores[ad.ad_id]
            f.winners.append(
                AdCandidate(
                    ad_id=ad.ad_id,
                    campaign_id=ad.campaign_id,
                    advertiser_id=ad.advertiser_id,
                    category=campaign.category,
                    bid=campaign.bid,
                    pctr=pctr,
                    pcvr=pcvr,
                    pacing_multiplier=f.pacing[ad.campaign_id],
                    ecpm=award.ecpm,
                    price=award.price_per_impression,
                    slot_rank=award.slot,
                    brand_safety=campaign.brand_safety,
                    reservation_id=hold.reservation_id,
                    price_per_action=award.price_per_action,
                    slot_factor=award.slot_factor,
                )
            )
        f.ads = [by_id[w.ad_id] for w in f.winners]

    def commit_impression(self, request_id: str, ad_id: int) -> bool:
        """The ad was shown: its reservation becomes spend and a counted impression.

        Idempotent. Returns whether the campaign was charged (False for an unknown or released
        reservation). Raises `StoreUnavailable` so the event can be retried."""
        rid, now = reservation_id(request_id, ad_id), self.clock()
        self.caps.commit(rid, now)
        return self.budgets.commit(rid, now) == BudgetStatus.COMMITTED

    def release(self, request_id: str, ad_ids: Sequence[int]) -> None:
        """The ads were not placed: free their budget and cap reservations. Idempotent."""
        self.release_pages([(request_id, ad_ids)])

    def release_pages(self, pages: Sequence[tuple[str, Sequence[int]]]) -> None:
        """Several pages' unplaced ads (request id, ad ids) in one store call: the serving layer
        gathers them and sends them along with its next auction call."""
        self.reservations.release([reservation_id(request_id, ad_id) for request_id, ad_ids in pages
                                   for ad_id in ad_ids], self.clock())

    def _hydrate(self, user: AdUser, session_id: str, now: float, ads: list[Ad]) -> AdRequest:
        counts, budgets = self.reservations.snapshot(
            user.user_id,
            session_id,
            {a.ad_id for a in ads},
            {a.advertiser_id for a in ads},
            {self.campaigns[a.campaign_id].category for a in ads},
            {a.campaign_id: self.campaigns[a.campaign_id].daily_budget for a in ads},
            now,
        )
        return AdRequest(user, session_id, now, counts, budgets)

    def _bids(
        self, request: AdRequest, ads: list[Ad]
    ) -> tuple[list[AuctionBid], dict[int, tuple[float, float]], dict[int, float]]:
        """Paced bids (eCPM = bid * pCTR * pCVR * m), the model scores per ad, m per campaign."""
        pctr, pcvr = self.ranker.score(request.user, ads, self.campaigns)
        pacing: dict[int, float] = {}
        scores: dict[int, tuple[float, float]] = {}
        bids = []
        for ad, ctr, cvr in zip(ads, pctr, pcvr):
            campaign = self.campaigns[ad.campaign_id]
            if campaign.campaign_id not in pacing:
                state = request.budgets[campaign.campaign_id]
                pacing[campaign.campaign_id] = self.pacer.multiplier(campaign.daily_budget, state.remaining, request.now)
            scores[ad.ad_id] = (float(ctr), float(cvr))
            bids.append(AuctionBid(ad.ad_id, campaign.bid * pacing[campaign.campaign_id], float(ctr * cvr)))
        return bids, scores, pacing

    def _reservation(self, request_id: str, request: AdRequest, ad: Ad, price: float) -> AdReservation:
        """A winner's hold on the user's caps and its campaign's budget."""
        campaign = self.campaigns[ad.campaign_id]
        claim = self.limits.claim(request.user.user_id, request.session_id, ad, campaign.category)
        return AdReservation(reservation_id(request_id, ad.ad_id), claim, ad.campaign_id, price, campaign.daily_budget)

    def _release_quietly(self, reservation_ids: list[str], now: float) -> None:
        """Best effort after a store failure; what cannot be released expires (budgets) or keeps
        counting (caps), which under-serves but never overspends."""
        try:
            self.reservations.release(reservation_ids, now)
        except StoreUnavailable:
            pass
