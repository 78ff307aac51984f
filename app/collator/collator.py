"""The feed collator: blends organic items, winning ads and notifications into one page.

Steps of `Collator.collate`, in order:
  1. notifications take the reserved positions (by priority) — `PageLayout.plan`;
  2. base rules from config for that layout — `BlendingRules.from_config`;
  3. guardrails lower the ad load — `guardrails.apply_guardrails`;
  4. a slot allocator chooses which ads go where, maximising CollatorScore — greedy or exact;
  5. the page is built and checked with `rules.page_violations`; a page that breaks a rule is
     never served: the ad-free page is served instead and `CollatedPage.fallback` says why.

Example:
    >>> from app.collator import Collator, CollatorConfig, OrganicEntry, SessionSignals
    >>> organic = [OrganicEntry(item_id=i, value=1.0, p_engage=0.3, creator_id=i) for i in range(10)]
    >>> page = Collator(CollatorConfig()).collate(organic, [], [], SessionSignals(), limit=5)
    >>> [s.ref_id for s in page.slots]
    [0, 1, 2, 3, 4]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

from app.ads.types import AdCandidate
from app.collator.allocation import AllocationProblem, PageLayout, Placement, build_slots, placement_score
from app.collator.config import CollatorConfig
from app.collator.exact import solve_exact
from app.collator.greedy import solve_greedy
from app.collator.guardrails import Guardrail, GuardrailContext, apply_guardrails, guardrails_from_config
from app.collator.objective import ObjectiveModel, collator_score
from app.collator.types import BlendingRules
from app.collator.rules import page_violations
from app.collator.types import CollatedPage, CollatorWeights, Notification, OrganicEntry, SessionSignals


@dataclass(frozen=True)
class Allocation:
    """A placement and the name of what produced it (e.g. "exact", or "greedy" after a fallback)."""

    placement: Placement
    solver: str


class SlotAllocator(Protocol):
    name: str

    def allocate(self, problem: AllocationProblem) -> Allocation: ...


@dataclass(frozen=True)
class GreedyAllocator:
    """Best marginal (ad, position) insertion first; see `greedy`."""

    name: str = "greedy"

    def allocate(self, problem: AllocationProblem) -> Allocation:
        return Allocation(solve_greedy(problem), self.name)


@dataclass(frozen=True)
class ExactAllocator:
    """The MILP optimum; see `exact`. Without a solution within the time limit, greedy's placement.

    A solution found but not proven optimal in time is kept only if it beats greedy's.
    """

    time_limit_s: float
    name: str = "exact"

    def allocate(self, problem: AllocationProblem) -> Allocation:
        result = solve_exact(problem, self.time_limit_s)
        if result.optimal and result.placement is not None:
            return Allocation(result.placement, self.name)
        greedy = solve_greedy(problem)
        if result.placement is None:
            return Allocation(greedy, "greedy (exact: no solution in time)")
        if placement_score(problem, result.placement) >= placement_score(problem, greedy):
            return Allocation(result.placement, "exact (not proven optimal)")
        return Allocation(greedy, "greedy (exact: not proven optimal, worse)")


def allocators_from_config(config: CollatorConfig) -> dict[str, SlotAllocator]:
    return {"greedy": GreedyAllocator(), "exact": ExactAllocator(config.exact_time_limit_s)}


class Collator:
    """Blends one page. Pure: the same inputs give the same page; session state comes in typed."""

    name = "collator"  # stable identifier for metrics and spans

    def __init__(
        self,
        config: CollatorConfig,
        guardrails: Sequence[Guardrail] | None = None,
        allocators: Mapping[str, SlotAllocator] | None = None,
    ) -> None:
        self.config = config
        self.guardrails = tuple(guardrails) if guardrails is not None else guardrails_from_config(config)
        self.allocators = dict(allocators) if allocators is not None else allocators_from_config(config)
        if config.solver not in self.allocators:
            raise ValueError(f"solver {config.solver!r} not among allocators {sorted(self.allocators)}")

    def default_weights(self) -> CollatorWeights:
        c = self.config
        return CollatorWeights(alpha=c.alpha, beta=c.beta, gamma=c.gamma)

    def collate(
        self,
        organic: Sequence[OrganicEntry],
        ads: Sequence[AdCandidate],
        notifications: Sequence[Notification],
        session: SessionSignals,
        limit: int,
        weights: CollatorWeights | None = None,
    ) -> CollatedPage:
        """Blend `organic` (reranker order, kept), a subset of `ads` and `notifications` into a page
        of at most `limit` positions that maximises CollatorScore under the rules."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        ad_ids = [ad.ad_id for ad in ads]
        if len(set(ad_ids)) != len(ad_ids):
            raise ValueError("ads contain a duplicate ad_id")
        weights = weights or self.default_weights()
        layout, deferred = PageLayout.plan(notifications, self.config.notification_positions, limit, len(organic))
        base = BlendingRules.from_config(self.config, limit, len(layout.notifications))
        context = GuardrailContext(session, organic, tuple(p for p, _ in layout.notifications))
        rules, fired = apply_guardrails(base, context, self.guardrails)

        model = ObjectiveModel.from_config(self.config, session)
        problem = AllocationProblem.build(organic, ads, layout, rules, model, weights)
        allocation = self.allocators[self.config.solver].allocate(problem)
        slots = build_slots(allocation.placement, organic, ads, problem, allocation.solver)
        fallback = ""
        violations = page_violations(slots, rules, organic)
        if violations:
            # Never serve a page that breaks a rule; the ad-free page always obeys them.
            fallback = "rule violations: " + "; ".join(violations)
            allocation = Allocation((), allocation.solver)
            slots = build_slots((), organic, ads, problem, allocation.solver)

        placed = {a for a, _ in allocation.placement}
        return CollatedPage(
            slots=tuple(slots),
            unplaced_ads=tuple(ad for i, ad in enumerate(ads) if i not in placed),
            unplaced_notifications=deferred,
            rules=rules,
            guardrails_fired=fired,
            score=collator_score(slots, model, weights),
            solver=allocation.solver,
            fallback=fallback,
        )
