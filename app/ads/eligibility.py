"""Which targeted ads may be shown to this user now: pure filters over hydrated request state.

Filters read the cap counts and budget states hydrated once per request (`AdRequest`); they do
no I/O, so they test without Redis or clocks. The counts are a snapshot: the atomic
reservation after the auction is what finally enforces caps and budgets under concurrency.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from app.ads.config import AdsConfig
from app.ads.types import Ad, AdUser, BrandSafety, Campaign
from app.state.budgets import BudgetState
from app.state.caps import CapClaim, CapCounts


@dataclass(frozen=True)
class CapLimits:
    """The frequency caps, from `AdsConfig`. A category missing from `session_category` is uncapped."""

    ad_daily: int
    advertiser_daily: int
    session_category: Mapping[str, int]

    @classmethod
    def from_config(cls, config: AdsConfig) -> "CapLimits":
        return cls(config.ad_user_daily_cap, config.advertiser_user_daily_cap, dict(config.session_category_caps))

    def category(self, category: str) -> int | None:
        return self.session_category.get(category)

    def claim(self, user_id: int, session_id: str, ad: Ad, category: str) -> CapClaim:
        return CapClaim(
            user_id=user_id,
            ad_id=ad.ad_id,
            advertiser_id=ad.advertiser_id,
            category=category,
            session_id=session_id,
            ad_limit=self.ad_daily,
            advertiser_limit=self.advertiser_daily,
            category_limit=self.category(category),
        )


@dataclass(frozen=True)
class AdRequest:
    """What eligibility may know about one request, hydrated before the filters run."""

    user: AdUser
    session_id: str
    now: float
    cap_counts: CapCounts
    budgets: Mapping[int, BudgetState]


class AdFilter(Protocol):
    name: str

    def keep(self, request: AdRequest, ads: Sequence[Ad], campaigns: Mapping[int, Campaign]) -> np.ndarray:
        """A keep-mask over `ads`, in input order."""
        ...


class OptOutFilter:
    """Drops every ad for a user who opted out of ads, and ads of categories they opted out of."""

    name = "opt_out"

    def keep(self, request, ads, campaigns) -> np.ndarray:
        user = request.user
        if user.opted_out_all:
            return np.zeros(len(ads), dtype=bool)
        return np.array([campaigns[a.campaign_id].category not in user.opted_out_categories for a in ads], dtype=bool)


class BlockedCreatorFilter:
    """Drops sponsored ads of creators the user blocked."""

    name = "blocked_creator"

    def keep(self, request, ads, campaigns) -> np.ndarray:
        blocked = request.user.blocked_creator_ids
        return np.array([a.creator_id is None or a.creator_id not in blocked for a in ads], dtype=bool)


class FrequencyCapFilter:
    """Drops ads already at their per-user daily cap, their advertiser's, or their category's
    per-session cap."""

    name = "frequency_cap"

    def __init__(self, limits: CapLimits) -> None:
        self.limits = limits

    def keep(self, request, ads, campaigns) -> np.ndarray:
        counts = request.cap_counts
        keep = np.ones(len(ads), dtype=bool)
        for i, a in enumerate(ads):
            category = campaigns[a.campaign_id].category
            category_limit = self.limits.category(category)
            keep[i] = (
                counts.ad.get(a.ad_id, 0) < self.limits.ad_daily
                and counts.advertiser.get(a.advertiser_id, 0) < self.limits.advertiser_daily
                and (category_limit is None or counts.category.get(category, 0) < category_limit)
            )
        return keep


class ExhaustedBudgetFilter:
    """Drops ads of campaigns with no budget left today (they could not pay for a slot)."""

    name = "budget_exhausted"

    def keep(self, request, ads, campaigns) -> np.ndarray:
        budgets = request.budgets
        return np.array([a.campaign_id in budgets and budgets[a.campaign_id].remaining > 0 for a in ads], dtype=bool)


class PageConstraintSelector:
    """Walks ads best-first and keeps those the page can hold together: one per advertiser
    (when configured) and no more of a category than its session cap still allows.

    Runs before the auction, so prices are set among ads that can actually share the page.
    """

    name = "page_constraints"

    def __init__(self, limits: CapLimits, one_ad_per_advertiser: bool) -> None:
        self.limits = limits
        self.one_ad_per_advertiser = one_ad_per_advertiser

    def select(self, request: AdRequest, ranked: Sequence[Ad], campaigns: Mapping[int, Campaign]) -> list[int]:
        """Positions into `ranked` (already best-first) that are kept, in that order."""
        advertisers: set[int] = set()
        taken: dict[str, int] = {}
        kept = []
        for i, a in enumerate(ranked):
            category = campaigns[a.campaign_id].category
            limit = self.limits.category(category)
            if self.one_ad_per_advertiser and a.advertiser_id in advertisers:
                continue
            if limit is not None and request.cap_counts.category.get(category, 0) + taken.get(category, 0) >= limit:
                continue
            advertisers.add(a.advertiser_id)
            taken[category] = taken.get(category, 0) + 1
            kept.append(i)
        return kept
