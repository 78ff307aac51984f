"""Typed inputs and outputs of the collator.

The collator is a pure function of these values: the reranked organic list, the auction's
winning ads (`app.ads.types.AdCandidate`), the user's pending notifications and a snapshot of
the session. It returns a `CollatedPage`. Nothing here does I/O.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping

from app.ads.types import AdCandidate
from app.collator.config import CollatorConfig

NotificationKind = Literal["friend_request", "milestone"]
NOTIFICATION_KINDS: tuple[str, ...] = ("friend_request", "milestone")
SlotKind = Literal["organic", "ad", "notification"]


@dataclass(frozen=True)
class OrganicEntry:
    """One reranked organic item. The collator keeps the reranker's order of these.

    `value` is the organic value of showing the item (e.g. the ranker's final score) and
    `p_engage` its predicted engagement probability (used by the engagement floor).
    """

    item_id: int
    value: float
    p_engage: float
    creator_id: int
    topics: tuple[str, ...] = ()
    min_age: int = 0  # youngest audience the content is suitable for
    close_friend: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.p_engage <= 1.0:
            raise ValueError(f"OrganicEntry.p_engage must be in [0, 1], got {self.p_engage}")
        if self.min_age < 0:
            raise ValueError(f"OrganicEntry.min_age must be >= 0, got {self.min_age}")


@dataclass(frozen=True)
class Notification:
    """A notification for the user; the higher `priority`, the earlier a reserved slot it gets."""

    notification_id: str
    kind: NotificationKind
    text: str
    priority: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in NOTIFICATION_KINDS:
            raise ValueError(f"Notification.kind must be one of {NOTIFICATION_KINDS}, got {self.kind!r}")


@dataclass(frozen=True)
class SessionSignals:
    """A snapshot of the user's session, read from session state before collation.

    Counts are cumulative for the session, so a guardrail that fires on them keeps firing for the
    rest of the session.
    """

    ads_shown_in_session: int = 0  # ads served so far this session (pacing, fatigue)
    impressions_in_session: int = 0  # items of every kind impressed this session
    ads_in_session_impressions: int = 0  # ad impressions among them (ad-load target)
    scroll_velocity: float = 0.0  # items per second, recent average
    quick_bounces: int = 0  # items left within a moment of opening
    hides_in_session: int = 0

    def __post_init__(self) -> None:
        for name in ("ads_shown_in_session", "impressions_in_session", "ads_in_session_impressions",
                     "quick_bounces", "hides_in_session"):
            if getattr(self, name) < 0:
                raise ValueError(f"SessionSignals.{name} must be >= 0, got {getattr(self, name)}")
        if self.scroll_velocity < 0:
            raise ValueError(f"SessionSignals.scroll_velocity must be >= 0, got {self.scroll_velocity}")
        if self.ads_in_session_impressions > self.impressions_in_session:
            raise ValueError("SessionSignals.ads_in_session_impressions exceeds impressions_in_session")


@dataclass(frozen=True)
class CollatorWeights:
    """α, β, γ of CollatorScore = α·OrganicValue + β·AdRevenue − γ·ExperiencePenalty."""

    alpha: float
    beta: float
    gamma: float

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma"):
            if getattr(self, name) < 0:
                raise ValueError(f"CollatorWeights.{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class Slot:
    """One position of the page. `item` is the entry shown there; `ref_id` its id.

    `score` is the slot's own contribution to CollatorScore (organic: α·value·w(p); ad:
    β·revenue − γ·penalty at its position; notification: 0). The page-level crowding penalty is
    in `CollatedPage.score`, not in any slot. `provenance` says why the slot holds what it holds.
    """

    position: int  # 1-based
    kind: SlotKind
    ref_id: int | str
    item: OrganicEntry | AdCandidate | Notification
    score: float = 0.0
    provenance: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoreBreakdown:
    """CollatorScore of a page and its three terms (before weighting)."""

    organic_value: float
    ad_revenue: float
    experience_penalty: float
    total: float  # α·organic_value + β·ad_revenue − γ·experience_penalty


@dataclass(frozen=True)
class CollatedPage:
    """The collator's answer for one page.

    `unplaced_ads` are the candidates not shown: their budget reservations must be released.
    `unplaced_notifications` wait for a later page. `rules` are the effective rules after the
    guardrails, `guardrails_fired` the names of the guardrails that lowered the ad load.
    `fallback` is empty normally; otherwise it says why the page was served without ads.
    """

    slots: tuple[Slot, ...]
    unplaced_ads: tuple[AdCandidate, ...]
    unplaced_notifications: tuple[Notification, ...]
    rules: BlendingRules
    guardrails_fired: tuple[str, ...]
    score: ScoreBreakdown
    solver: str
    fallback: str = ""


@dataclass(frozen=True)
class BlendingRules:
    """The effective rules for one page: config values after the guardrails adjusted them."""

    limit: int  # page size
    max_ads: int
    min_gap: int
    no_ads_before: int
    organic_per_ad: int
    notification_positions: tuple[int, ...]
    min_page_engagement: float  # 0 disables the engagement floor
    position_decay: float  # examination curve, shared with the objective

    @classmethod
    def from_config(cls, config: CollatorConfig, limit: int, n_notifications: int) -> BlendingRules:
        """Base rules for a page of `limit` positions, `n_notifications` of them notifications.

        `max_ads` starts at the most ads the structural rules allow on such a page, so that the
        guardrails' multiplicative reductions act on a meaningful number.
        """
        regular = limit - n_notifications
        structural = regular // (config.organic_per_ad + 1)
        return cls(
            limit=limit,
            max_ads=min(config.max_ads_per_page, structural),
            min_gap=config.min_gap,
            no_ads_before=config.no_ads_before,
            organic_per_ad=config.organic_per_ad,
            notification_positions=config.notification_positions,
            min_page_engagement=config.engagement_floor,
            position_decay=config.position_decay,
        )

    def examination(self, position: int) -> float:
        """Probability that the user examines `position` (1-based): decay**(position-1)."""
        return self.position_decay ** (position - 1)
