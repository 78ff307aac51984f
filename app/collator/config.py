"""Every tunable of the collator, declared once with its default and bounds.

Ray Tune builds the search space of the collator weights from the `alpha`, `beta` and `gamma`
declarations (their `ge`/`le` bounds), so those bounds are the range a tuner may explore.
Units: `value` of organic entries and `price` of ads are assumed to be on comparable scales
(ranker score vs. currency per impression); β converts one into the other.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from app._config_base import Section


class NotificationConfig(Section):
    """The seeded notification generator (friend requests and like milestones)."""

    max_friend_requests: int = Field(2, ge=0, le=20, description="friend requests generated per call")
    friend_request_probability: float = Field(
        0.5, ge=0, le=1, description="chance that each candidate requester actually sent a request"
    )
    milestone_thresholds: tuple[int, ...] = Field(
        (10, 50, 100, 500, 1000), description="like counts that trigger a 'your post got N likes' notification"
    )
    friend_request_priority: float = Field(1.0, ge=0, le=10, description="priority of a friend request")
    milestone_priority: float = Field(
        0.25, ge=0, le=10, description="milestone priority per decade of likes (priority = this * log10(N))"
    )

    @field_validator("milestone_thresholds")
    @classmethod
    def _positive_increasing(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(t <= 0 for t in v) or list(v) != sorted(set(v)):
            raise ValueError("milestone_thresholds must be positive and strictly increasing")
        return v


class CollatorConfig(Section):
    """Blending rules, the CollatorScore model, guardrails and the solver."""

    # CollatorScore = α·OrganicValue + β·AdRevenue − γ·ExperiencePenalty (Ray Tune searches these).
    alpha: float = Field(1.0, ge=0, le=10, description="weight of position-discounted organic value")
    beta: float = Field(
        20.0,
        ge=0,
        le=100,
        description=(
            "weight of expected ad revenue; also converts currency (per-impression prices, ~0.05-0.3) into "
            "organic-value units (ranker scores, ~0.3-0.9 per item): at 20 a typical 20-item MovieLens page "
            "carries about 2 ads"
        ),
    )
    gamma: float = Field(1.0, ge=0, le=10, description="weight of the ads' experience penalty")

    solver: Literal["greedy", "exact"] = Field("greedy", description="slot allocation: greedy or the MILP")
    exact_time_limit_s: float = Field(
        1.0, gt=0, le=60, description="time limit of the MILP; without a solution in time, greedy is used"
    )

    # Objective model.
    position_decay: float = Field(
        0.95, gt=0, le=1, description="examination probability of position p is position_decay**(p-1)"
    )
    ad_penalty_base: float = Field(0.1, ge=0, le=10, description="experience penalty of one viewed ad")
    category_penalty: dict[str, float] = Field(
        default_factory=lambda: {"political": 2.0, "alcohol": 1.5, "gambling": 2.0},
        description="multiplier of ad_penalty_base per ad category (absent: 1.0)",
    )
    session_fatigue_per_ad: float = Field(
        0.02, ge=0, le=1, description="each ad already shown this session raises the per-ad penalty by this fraction"
    )
    page_crowding_penalty: float = Field(
        0.02, ge=0, le=10, description="the k-th ad on a page adds (k-1) times this to the penalty"
    )

    # Blending rules.
    max_ads_per_page: int = Field(10, ge=0, le=100, description="hard cap of ads on one page")
    organic_per_ad: int = Field(5, ge=1, le=100, description="at most 1 ad per this many organic items on a page")
    min_gap: int = Field(3, ge=1, le=50, description="at least this many organic items between two ads")
    no_ads_before: int = Field(3, ge=1, le=100, description="first page position an ad may take (3: none in 1-2)")
    notification_positions: tuple[int, ...] = Field(
        (4,), description="reserved notification positions (1-based); organic when no notification"
    )

    # Guardrails (ad-load reductions), applied in the order of guardrails.GUARDRAILS.
    pacing_after_ads: int = Field(20, ge=0, le=10_000, description="session pacing starts after this many ads")
    pacing_factor: float = Field(0.5, ge=0, le=1, description="max ads multiplier once pacing starts")
    fast_scroll_threshold: float = Field(
        4.0, gt=0, le=100, description="scroll velocity (items/s) at or above which a user is a fast scroller"
    )
    fast_scroll_factor: float = Field(0.5, ge=0, le=1, description="max ads multiplier for fast scrollers")
    bounce_threshold: int = Field(3, ge=1, le=1000, description="quick bounces that mark a disengaged session")
    hide_threshold: int = Field(2, ge=1, le=1000, description="hides that mark a disengaged session")
    disengaged_factor: float = Field(0.5, ge=0, le=1, description="max ads multiplier in a disengaged session")
    ad_load_target: float = Field(
        0.15, ge=0, le=1, description="ad impressions / all impressions of the session, this page included, at most"
    )
    engagement_floor: float = Field(
        0.05, ge=0, le=1, description="min position-weighted mean predicted engagement of a page with ads (0: off)"
    )

    notifications: NotificationConfig = Field(
        default_factory=NotificationConfig, description="the seeded notification generator"
    )

    @field_validator("notification_positions")
    @classmethod
    def _positions_valid(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(p < 1 for p in v) or list(v) != sorted(set(v)):
            raise ValueError("notification_positions must be >= 1 and strictly increasing")
        return v

    @field_validator("category_penalty")
    @classmethod
    def _penalties_nonnegative(cls, v: dict[str, float]) -> dict[str, float]:
        if any(m < 0 for m in v.values()):
            raise ValueError("category_penalty multipliers must be >= 0")
        return v

    def ad_slots(self, page_size: int) -> int:
        """Ads the auction should fill for a page: the most the ratio rule could ever place."""
        return max(1, page_size // self.organic_per_ad)
