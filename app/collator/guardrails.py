"""Guardrails: small rules that lower the ad load of a page before slot allocation.

Each guardrail is one class with one method, `adjust(rules, context) -> rules`; it returns the
rules unchanged when it does not fire. `GUARDRAILS` lists them in the order they run.
Close-friend protection and brand safety are not here: they are hard rules of every page,
enforced by the solvers and checked by `rules.page_violations`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Protocol, Sequence

from app.collator.config import CollatorConfig
from app.collator.types import BlendingRules
from app.collator.rules import ad_free_organic_positions
from app.collator.types import OrganicEntry, SessionSignals


@dataclass(frozen=True)
class GuardrailContext:
    """What a guardrail may look at: the session, the organic list and the page's notifications."""

    session: SessionSignals
    organic: Sequence[OrganicEntry]
    notification_positions: tuple[int, ...]  # positions actually given to notifications


class Guardrail(Protocol):
    name: str  # stable identifier, reported in CollatedPage.guardrails_fired

    def adjust(self, rules: BlendingRules, context: GuardrailContext) -> BlendingRules: ...


def _scaled(max_ads: int, factor: float) -> int:
    return math.floor(max_ads * factor + 1e-9)


@dataclass(frozen=True)
class SessionPacing:
    """Fewer ads once the session has already shown `pacing_after_ads` ads."""

    after_ads: int
    factor: float
    name: str = "session_pacing"

    def adjust(self, rules: BlendingRules, context: GuardrailContext) -> BlendingRules:
        if context.session.ads_shown_in_session < self.after_ads:
            return rules
        return replace(rules, max_ads=_scaled(rules.max_ads, self.factor))


@dataclass(frozen=True)
class FastScrollGuardrail:
    """Fast scrollers (items/s at or above the threshold) see fewer ads."""

    threshold: float
    factor: float
    name: str = "fast_scroll"

    def adjust(self, rules: BlendingRules, context: GuardrailContext) -> BlendingRules:
        if context.session.scroll_velocity < self.threshold:
            return rules
        return replace(rules, max_ads=_scaled(rules.max_ads, self.factor))


@dataclass(frozen=True)
class SessionDisengagementGuardrail:
    """Quick bounces or hides past a threshold lower the ad load for the rest of the session.

    The session counters are cumulative, so once they cross a threshold every later page of the
    session is affected.
    """

    bounce_threshold: int
    hide_threshold: int
    factor: float
    name: str = "session_disengagement"

    def adjust(self, rules: BlendingRules, context: GuardrailContext) -> BlendingRules:
        s = context.session
        if s.quick_bounces < self.bounce_threshold and s.hides_in_session < self.hide_threshold:
            return rules
        return replace(rules, max_ads=_scaled(rules.max_ads, self.factor))


@dataclass(frozen=True)
class AdLoadTarget:
    """Cap the page's ads so the session's ad load, this page included, stays at most the target.

    ads allowed = floor(target · (impressions so far + page size)) − ad impressions so far.
    """

    target: float
    name: str = "ad_load_target"

    def adjust(self, rules: BlendingRules, context: GuardrailContext) -> BlendingRules:
        s = context.session
        allowed = math.floor(self.target * (s.impressions_in_session + rules.limit) + 1e-9)
        allowed = max(0, allowed - s.ads_in_session_impressions)
        if allowed >= rules.max_ads:
            return rules
        return replace(rules, max_ads=allowed)


@dataclass(frozen=True)
class EngagementFloor:
    """No ads when the ad-free page's predicted engagement is already below the floor.

    Otherwise the floor stays in the rules as a constraint: ads may only be added while the
    blended page's engagement (`rules.page_engagement`) stays at or above it.
    """

    floor: float
    name: str = "engagement_floor"

    def adjust(self, rules: BlendingRules, context: GuardrailContext) -> BlendingRules:
        if self.floor <= 0 or rules.max_ads == 0:
            return rules
        positions = ad_free_organic_positions(rules.limit, context.notification_positions, len(context.organic))
        weights = [rules.examination(p) for p in positions]
        reference = sum(weights)
        engagement = sum(w * e.p_engage for w, e in zip(weights, context.organic))
        if reference > 0 and engagement >= self.floor * reference - 1e-12:
            return rules
        return replace(rules, max_ads=0)


def guardrails_from_config(config: CollatorConfig) -> tuple[Guardrail, ...]:
    """The guardrails in the order they run.

    Order matters because of rounding: the multiplicative reductions act on the structural
    maximum first, then the absolute ad-load cap, and the engagement floor runs last because it
    judges the page that the earlier guardrails allow.
    """
    return (
        SessionPacing(config.pacing_after_ads, config.pacing_factor),
        FastScrollGuardrail(config.fast_scroll_threshold, config.fast_scroll_factor),
        SessionDisengagementGuardrail(config.bounce_threshold, config.hide_threshold, config.disengaged_factor),
        AdLoadTarget(config.ad_load_target),
        EngagementFloor(config.engagement_floor),
    )


def apply_guardrails(
    rules: BlendingRules, context: GuardrailContext, guardrails: Sequence[Guardrail]
) -> tuple[BlendingRules, tuple[str, ...]]:
    """Run the guardrails in order; return the final rules and the names of those that fired."""
    fired: list[str] = []
    for guardrail in guardrails:
        adjusted = guardrail.adjust(rules, context)
        if adjusted != rules:
            fired.append(guardrail.name)
        rules = adjusted
    return rules, tuple(fired)
