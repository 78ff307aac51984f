"""CollatorScore: the objective both slot allocators maximise, and its one evaluation function.

Model (all terms use one examination curve w(p) = position_decay**(p-1), the probability that
the user scrolls far enough to see position p):

    CollatorScore = α·OrganicValue + β·AdRevenue − γ·ExperiencePenalty

    OrganicValue      = Σ_{organic slots}  value_i · w(p_i)
    AdRevenue         = Σ_{ad slots}       price_a · w(p_a)
    ExperiencePenalty = Σ_{ad slots}       u_a · w(p_a)  +  page_crowding_penalty · n(n−1)/2

    u_a = ad_penalty_base · category_penalty[category_a] · (1 + session_fatigue_per_ad · S)

where `price` is what the advertiser pays for a viewed impression (so w(p) is also the position
CTR/view factor), n is the number of ads on the page, and S the ads already shown this session.
The organic cost of an ad is implicit: every organic item after it moves one regular position
down (losing value·(w(p) − w(p')), or all of it when pushed off the page). A viewed ad costs
experience in proportion to its visibility, more in sensitive categories and late in a session;
the k-th ad on a page costs (k−1)·page_crowding_penalty more than the first. Notifications sit in
fixed reserved positions and add nothing (a constant for the allocation).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from app.ads.types import AdCandidate
from app.collator.config import CollatorConfig
from app.collator.types import CollatorWeights, ScoreBreakdown, SessionSignals, Slot


@dataclass(frozen=True)
class ObjectiveModel:
    """The CollatorScore model's parameters for one session (see the module docstring)."""

    position_decay: float
    ad_penalty_base: float
    session_fatigue: float  # 1 + session_fatigue_per_ad · ads shown this session
    page_crowding_penalty: float
    category_penalty: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: CollatorConfig, session: SessionSignals) -> ObjectiveModel:
        return cls(
            position_decay=config.position_decay,
            ad_penalty_base=config.ad_penalty_base,
            session_fatigue=1.0 + config.session_fatigue_per_ad * session.ads_shown_in_session,
            page_crowding_penalty=config.page_crowding_penalty,
            category_penalty=dict(config.category_penalty),
        )

    def examination(self, position: int) -> float:
        """w(p): probability that position p (1-based) is seen."""
        return self.position_decay ** (position - 1)

    def ad_penalty_unit(self, ad: AdCandidate) -> float:
        """u_a: the experience penalty of the ad if seen with certainty."""
        return self.ad_penalty_base * self.category_penalty.get(ad.category, 1.0) * self.session_fatigue

    def crowding(self, n_ads: int) -> float:
        """Page-level penalty of n ads: the k-th ad adds (k−1)·page_crowding_penalty."""
        return self.page_crowding_penalty * n_ads * (n_ads - 1) / 2


def slot_score(slot: Slot, model: ObjectiveModel, weights: CollatorWeights) -> float:
    """A slot's own weighted contribution (crowding excluded, it belongs to the page)."""
    w = model.examination(slot.position)
    if slot.kind == "organic":
        return weights.alpha * slot.item.value * w
    if slot.kind == "ad":
        return (weights.beta * slot.item.price - weights.gamma * model.ad_penalty_unit(slot.item)) * w
    return 0.0


def collator_score(slots: Sequence[Slot], model: ObjectiveModel, weights: CollatorWeights) -> ScoreBreakdown:
    """CollatorScore of a page. Both solvers are judged by this one function."""
    organic = revenue = penalty = 0.0
    n_ads = 0
    for s in slots:
        w = model.examination(s.position)
        if s.kind == "organic":
            organic += s.item.value * w
        elif s.kind == "ad":
            n_ads += 1
            revenue += s.item.price * w
            penalty += model.ad_penalty_unit(s.item) * w
    penalty += model.crowding(n_ads)
    total = weights.alpha * organic + weights.beta * revenue - weights.gamma * penalty
    return ScoreBreakdown(organic_value=organic, ad_revenue=revenue, experience_penalty=penalty, total=total)
