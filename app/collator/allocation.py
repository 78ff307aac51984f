"""The slot-allocation problem both solvers work on, and the page a solution builds.

Vocabulary shared by `greedy` and `exact`:
- Regular slots s = 0..M−1 are the page positions that hold no notification, in order
  (`PageLayout.regular_positions[s]`). Ads and organic items fill them in order.
- A `Placement` is a tuple of (ad index, regular slot), sorted by slot. Organic item j (0-based, in
  the reranker's order) then sits in regular slot j + (ads in earlier slots); items pushed past
  slot M−1 leave the page, and the page ends where the organic list runs out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from app.ads.types import AdCandidate
from app.collator.objective import ObjectiveModel, slot_score
from app.collator.types import BlendingRules
from app.collator.rules import engagement_reference, is_brand_safe
from app.collator.types import CollatorWeights, Notification, OrganicEntry, Slot

Placement = tuple[tuple[int, int], ...]  # (ad index, regular slot), sorted by slot


@dataclass(frozen=True)
class PageLayout:
    """Where notifications go and which positions are left for ads and organic items."""

    limit: int
    notifications: tuple[tuple[int, Notification], ...]  # (position, notification), by position
    regular_positions: tuple[int, ...]

    @classmethod
    def plan(
        cls,
        notifications: Sequence[Notification],
        reserved_positions: Sequence[int],
        limit: int,
        n_organic: int,
    ) -> tuple[PageLayout, tuple[Notification, ...]]:
        """Give reserved positions to notifications by descending priority; return the leftovers.

        A reserved position is used only when the organic list alone can fill every regular
        position before it, so a short page never has a hole before a notification.
        """
        queue = sorted(notifications, key=lambda n: (-n.priority, n.notification_id))
        placed: list[tuple[int, Notification]] = []
        for p in reserved_positions:
            if not queue or p > limit:
                break
            regular_before = p - 1 - len(placed)
            if regular_before > n_organic:
                break
            placed.append((p, queue.pop(0)))
        taken = {p for p, _ in placed}
        regular = tuple(p for p in range(1, limit + 1) if p not in taken)
        return cls(limit=limit, notifications=tuple(placed), regular_positions=regular), tuple(queue)

    @property
    def n_regular(self) -> int:
        return len(self.regular_positions)


@dataclass(frozen=True)
class AllocationProblem:
    """A page's allocation problem as arrays (organic: length O, ads: length A, slots: length M)."""

    rules: BlendingRules
    layout: PageLayout
    weights: CollatorWeights
    model: ObjectiveModel
    value: np.ndarray  # (O,) organic value
    engage: np.ndarray  # (O,) p_engage
    close_friend: np.ndarray  # (O,) bool
    ad_net: np.ndarray  # (A,) β·price − γ·u_a: weighted score of the ad if seen with certainty
    ad_pctr: np.ndarray  # (A,)
    unsafe: np.ndarray  # (A, O) bool: ad a may not be next to organic j
    slot_weight: np.ndarray  # (M,) w(p) of each regular slot
    ad_allowed: np.ndarray  # (M,) bool: slot may hold an ad (position rule, not reserved)
    engagement_reference: float  # Σ w over the ad-free page's organic positions

    @classmethod
    def build(
        cls,
        organic: Sequence[OrganicEntry],
        ads: Sequence[AdCandidate],
        layout: PageLayout,
        rules: BlendingRules,
        model: ObjectiveModel,
        weights: CollatorWeights,
    ) -> AllocationProblem:
        positions = np.asarray(layout.regular_positions, dtype=np.int64)
        reserved = np.isin(positions, np.asarray(rules.notification_positions, dtype=np.int64))
        unsafe = np.array(
            [[not is_brand_safe(ad, entry) for entry in organic] for ad in ads], dtype=bool
        ).reshape(len(ads), len(organic))
        return cls(
            rules=rules,
            layout=layout,
            weights=weights,
            model=model,
            value=np.array([e.value for e in organic], dtype=np.float64),
            engage=np.array([e.p_engage for e in organic], dtype=np.float64),
            close_friend=np.array([e.close_friend for e in organic], dtype=bool),
            ad_net=np.array(
                [weights.beta * ad.price - weights.gamma * model.ad_penalty_unit(ad) for ad in ads],
                dtype=np.float64,
            ),
            ad_pctr=np.array([ad.pctr for ad in ads], dtype=np.float64),
            unsafe=unsafe,
            slot_weight=np.array([model.examination(int(p)) for p in positions], dtype=np.float64),
            ad_allowed=(positions >= rules.no_ads_before) & ~reserved,
            engagement_reference=engagement_reference(
                rules, [p for p, _ in layout.notifications], len(organic)
            ),
        )

    @property
    def n_organic(self) -> int:
        return len(self.value)

    @property
    def n_ads(self) -> int:
        return len(self.ad_net)

    @property
    def n_slots(self) -> int:
        return len(self.slot_weight)

    def max_ads(self) -> int:
        """Most ads any page may hold: the rules' cap, the ratio rule and the candidates available."""
        r = self.rules.organic_per_ad
        by_ratio = min(self.n_slots // (r + 1), self.n_organic // r)
        return max(0, min(self.rules.max_ads, by_ratio, self.n_ads))


def build_slots(
    placement: Placement,
    organic: Sequence[OrganicEntry],
    ads: Sequence[AdCandidate],
    problem: AllocationProblem,
    solver: str,
) -> list[Slot]:
    """The page of a placement, with each slot's score and provenance."""
    layout, model, weights = problem.layout, problem.model, problem.weights
    ad_at = dict((s, a) for a, s in placement)
    items: dict[int, Slot] = {}
    j = 0
    for s, position in enumerate(layout.regular_positions):
        if s in ad_at:
            ad = ads[ad_at[s]]
            slot = Slot(position, "ad", ad.ad_id, ad, provenance={
                "solver": solver, "ecpm": ad.ecpm, "price": ad.price, "pctr": ad.pctr,
                "auction_slot_rank": ad.slot_rank, "examination": model.examination(position),
                "penalty_unit": model.ad_penalty_unit(ad), "reservation_id": ad.reservation_id,
            })
        elif j < len(organic):
            entry = organic[j]
            slot = Slot(position, "organic", entry.item_id, entry, provenance={
                "organic_rank": j + 1, "value": entry.value, "examination": model.examination(position),
                "close_friend": entry.close_friend,
            })
            j += 1
        else:
            break  # the organic list ran out: the page ends here
        items[position] = slot
    for position, notification in layout.notifications:
        items[position] = Slot(position, "notification", notification.notification_id, notification,
                               provenance={"kind": notification.kind, "priority": notification.priority,
                                           "reserved_position": position})
    ordered = [items[p] for p in sorted(items)]
    return [
        Slot(s.position, s.kind, s.ref_id, s.item, slot_score(s, model, weights), s.provenance)
        for s in ordered
    ]


def placement_score(problem: AllocationProblem, placement: Placement) -> float:
    """CollatorScore of the page a placement builds, from the arrays alone.

    Equal to `objective.collator_score(build_slots(...))` (a test holds them together); used where
    the entries themselves are not at hand, e.g. to compare two placements of one problem.
    """
    p = problem
    M = p.n_slots
    ad_slots = sorted(s for _, s in placement)
    total = 0.0
    j = 0
    for s in range(M):
        if ad_slots and s == ad_slots[0]:
            ad_slots.pop(0)
            continue
        if j >= p.n_organic:
            break
        total += p.weights.alpha * p.value[j] * p.slot_weight[s]
        j += 1
    for a, s in placement:
        total += p.ad_net[a] * p.slot_weight[s]
    return total - p.weights.gamma * p.model.crowding(len(placement))
