"""Ad world entities and the typed hand-off from the auction to the collator."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol


@dataclass(frozen=True)
class Targeting:
    """Who a campaign may reach, on real MovieLens user attributes. Empty means 'anyone'."""

    min_age: int = 0
    max_age: int = 200
    genders: frozenset[str] = frozenset()  # {"M", "F"}
    occupations: frozenset[str] = frozenset()
    genre_interests: frozenset[str] = frozenset()  # topics; matched against the user's top genres


class AdjacentItem(Protocol):
    """An organic item next to an ad slot, as brand safety sees it."""

    @property
    def min_age(self) -> int: ...

    @property
    def topics(self) -> Iterable[str]: ...

    @property
    def creator_id(self) -> int | None: ...


@dataclass(frozen=True)
class BrandSafety:
    """What an ad may not be shown next to."""

    max_adjacent_min_age: int = 200  # adjacent organic items must have min_age <= this
    blocked_topics: frozenset[str] = frozenset()
    blocked_creator_ids: frozenset[int] = frozenset()

    def allows(self, item: AdjacentItem) -> bool:
        """Whether the ad may sit next to `item`: the one definition of brand safety (the
        collator checks the nearest organic item on each side of every ad with it).

        Example:
            BrandSafety(blocked_topics=frozenset({"Horror"})).allows(horror_item)  # False
        """
        return (item.min_age <= self.max_adjacent_min_age
                and (item.creator_id is None or item.creator_id not in self.blocked_creator_ids)
                and not (self.blocked_topics and self.blocked_topics.intersection(item.topics)))


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
    creator_id: int | None = None  # set when the ad is a creator's sponsored content


@dataclass(frozen=True)
class AdUser:
    """A user as the ads side sees them: MovieLens attributes plus their ad choices.

    `top_genres` are the user's strongest topics (MovieLens genres); `blocked_creator_ids` are
    creators the user hid, so none of their sponsored ads is served to them.
    """

    user_id: int
    age: int
    gender: str
    occupation: str
    top_genres: frozenset[str] = frozenset()
    opted_out_categories: frozenset[str] = frozenset()
    opted_out_all: bool = False
    blocked_creator_ids: frozenset[int] = frozenset()

    def hiding_creators(self, creator_ids: frozenset[int]) -> "AdUser":
        """The same user with creators they hid in the feed blocked for sponsored ads too."""
        if not creator_ids:
            return self
        return replace(self, blocked_creator_ids=self.blocked_creator_ids | creator_ids)


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
    # The textbook price per billable action (a conversion) in bid units; `price` is its expected
    # cost per impression in this slot: slot_factor * pctr * pcvr * price_per_action.
    price_per_action: float = 0.0
    slot_factor: float = 1.0


class WithheldReason(StrEnum):
    """Why a request got no ads at all (an empty auction is not withheld)."""

    STORE_UNAVAILABLE = "store_unavailable"  # caps or budgets unreadable: fail closed
    OPTED_OUT = "opted_out"  # the user opted out of all ads


@dataclass(frozen=True)
class AdResult:
    """What the ads side hands the collator for one request."""

    ads: list[AdCandidate]
    withheld_reason: WithheldReason | None = None
    removed: dict[str, int] = field(default_factory=dict)  # candidates dropped, per stage/reason
