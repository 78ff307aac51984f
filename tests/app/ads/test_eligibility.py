"""Eligibility filters, page constraints and brand safety as pure functions."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.ads.eligibility import (
    AdRequest,
    BlockedCreatorFilter,
    CapLimits,
    ExhaustedBudgetFilter,
    FrequencyCapFilter,
    OptOutFilter,
    PageConstraintSelector,
)
from app.ads.types import Ad, AdUser, BrandSafety, Campaign
from app.state.budgets import BudgetState
from app.state.caps import CapCounts

CAMPAIGNS = {
    1: Campaign(1, 10, 100.0, 1.0, 0.0, 1e12, "political"),
    2: Campaign(2, 20, 100.0, 1.0, 0.0, 1e12, "alcohol"),
    3: Campaign(3, 30, 100.0, 1.0, 0.0, 1e12, "retail"),
    4: Campaign(4, 10, 100.0, 1.0, 0.0, 1e12, "political"),
}
ADS = [
    Ad(100, 1, 10, "p"),
    Ad(200, 2, 20, "a", creator_id=7),
    Ad(300, 3, 30, "r"),
    Ad(400, 4, 10, "p2"),
]
LIMITS = CapLimits(ad_daily=3, advertiser_daily=5, session_category={"political": 1, "alcohol": 2})


def _request(user=None, ad=None, adv=None, cat=None, budgets=None) -> AdRequest:
    user = user or AdUser(1, 30, "F", "artist")
    counts = CapCounts(ad or {}, adv or {}, cat or {})
    budgets = budgets or {c: BudgetState(100.0, 0.0, 0.0) for c in CAMPAIGNS}
    return AdRequest(user, "s", 0.0, counts, budgets)


def test_opt_outs() -> None:
    user = AdUser(1, 30, "F", "artist", opted_out_categories=frozenset({"political"}))
    assert OptOutFilter().keep(_request(user), ADS, CAMPAIGNS).tolist() == [False, True, True, False]
    everyone = AdUser(1, 30, "F", "artist", opted_out_all=True)
    assert not OptOutFilter().keep(_request(everyone), ADS, CAMPAIGNS).any()


def test_blocked_creators() -> None:
    user = AdUser(1, 30, "F", "artist", blocked_creator_ids=frozenset({7}))
    assert BlockedCreatorFilter().keep(_request(user), ADS, CAMPAIGNS).tolist() == [True, False, True, True]


def test_frequency_caps_at_the_limit() -> None:
    f = FrequencyCapFilter(LIMITS)
    assert f.keep(_request(ad={300: 2}), ADS, CAMPAIGNS).all()
    assert f.keep(_request(ad={300: 3}), ADS, CAMPAIGNS).tolist() == [True, True, False, True]
    assert f.keep(_request(adv={10: 5}), ADS, CAMPAIGNS).tolist() == [False, True, True, False]
    assert f.keep(_request(cat={"political": 1}), ADS, CAMPAIGNS).tolist() == [False, True, True, False]
    assert f.keep(_request(cat={"retail": 99}), ADS, CAMPAIGNS).all()  # uncapped category


def test_exhausted_budgets() -> None:
    budgets = {c: BudgetState(100.0, 100.0 if c == 2 else 10.0, 0.0) for c in CAMPAIGNS}
    assert ExhaustedBudgetFilter().keep(_request(budgets=budgets), ADS, CAMPAIGNS).tolist() == [True, False, True, True]


def test_page_constraints_one_per_advertiser_and_category_allowance() -> None:
    selector = PageConstraintSelector(LIMITS, one_ad_per_advertiser=True)
    # ranked best-first: two political ads of one advertiser: only the first stays
    assert selector.select(_request(), ADS, CAMPAIGNS) == [0, 1, 2]
    # the session already saw its political ad: none now
    assert selector.select(_request(cat={"political": 1}), ADS, CAMPAIGNS) == [1, 2]
    # without the advertiser rule the category cap still keeps the second political ad out
    relaxed = PageConstraintSelector(LIMITS, one_ad_per_advertiser=False)
    assert relaxed.select(_request(), ADS, CAMPAIGNS) == [0, 1, 2]


@dataclass(frozen=True)
class Item:
    min_age: int
    topics: tuple[str, ...]
    creator_id: int | None


def test_brand_safety() -> None:
    safety = BrandSafety(max_adjacent_min_age=13, blocked_topics=frozenset({"Horror"}), blocked_creator_ids=frozenset({5}))
    assert safety.allows(Item(0, ("Comedy",), 1)) and safety.allows(Item(13, ("Drama",), None))
    assert not safety.allows(Item(17, ("Drama",), 2))
    assert not safety.allows(Item(0, ("Comedy", "Horror"), 1))
    assert not safety.allows(Item(0, ("Comedy",), 5))
    assert BrandSafety().allows(Item(18, ("Horror",), 5))


def test_filters_return_input_order_masks() -> None:
    for f in (OptOutFilter(), BlockedCreatorFilter(), FrequencyCapFilter(LIMITS), ExhaustedBudgetFilter()):
        mask = f.keep(_request(), ADS, CAMPAIGNS)
        assert isinstance(mask, np.ndarray) and mask.dtype == bool and mask.shape == (len(ADS),)
