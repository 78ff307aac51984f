"""Ad world entities and the typed hand-off from the auction to the collator."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Targeting:
    """Who a campaign may reach, on real MovieLens user attributes. Empty means 'anyone'."""

    min_age: int = 0
    max_age: int = 200
    genders: frozenset[str] = frozenset()  # {"M", "F"}
    occupations: frozenset[str] = frozenset()
    genre_interests: frozenset[str] = frozenset()  # topics; matched against the user's top genres


@dataclass(frozen=True)
class BrandSafety:
    """What an ad may not be shown next to."""

    max_adjacent_min_age: int = 200  # adjacent organic items must have min_age <= this
    blocked_topics: frozenset[str] = frozenset()
    blocked_creator_ids: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Advertiser:
    advertiser_id: int
    name: str


@dataclass(frozen=True)
class Campaign:
    campaign_id: int
    advertiser_id: int
    daily_budget: float  # currency units per day
    bid: float  # max bid per conversion-weighted impression unit (eCPM = bid * pCTR * pCVR * pacing)
    start_ts: float
    end_ts: float
    category: str  # e.g. "general", "political", "alcohol"
    targeting: Targeting = field(default_factory=Targeting)
    brand_safety: BrandSafety = field(default_factory=BrandSafety)


@dataclass(frozen=True)
class Ad:
    ad_id: int
    campaign_id: int
    advertiser_id: int
    title: str
    topics: tuple[str, ...] = ()


@dataclass(frozen=True)
class AdCandidate:
    """An ad that won a slot in the auction, ready for the collator.

    `price` is what the advertiser pays per impression if shown; `ecpm` is the ranking value.
    `reservation_id` ties the budget reservation to this request so it can be committed on
    impression or released when the collator does not place the ad.
    """

    ad_id: int
    campaign_id: int
    advertiser_id: int
    category: str
    bid: float
    pctr: float
    pcvr: float
    pacing_multiplier: float
    ecpm: float
    price: float
    slot_rank: int  # 0-based ad slot the auction assigned (0 = best ad slot)
    brand_safety: BrandSafety = field(default_factory=BrandSafety)
    reservation_id: str = ""
