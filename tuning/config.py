"""Every parameter of the user simulator and of the long-term objective, declared once.

The simulator's parameters are its *ground truth*: the position curve, the click model, how
satisfaction, fatigue and churn respond to what is served. Nothing in the serving path reads
them; the collator only sees its own (CollatorConfig) model of the page. Defaults are the
documented calibration used for every figure in the tuning report (see tuning/README.md).
"""
from __future__ import annotations

import numpy as np
from pydantic import Field

from app._config_base import Section


class ChoiceModelConfig(Section):
    """Position-based click model: P(click at p) = θ_p · σ(scale · u·v_i + bias)."""

    position_power: float = Field(
        0.7, ge=0, le=5, description="examination curve θ_p = p^(−power) (1-based slot p): the known truth"
    )
    affinity_scale: float = Field(6.0, gt=0, le=100, description="logit per unit cosine between user and item latents")
    affinity_bias: float = Field(-3.0, ge=-20, le=20, description="logit of an item orthogonal to the user's interests")
    organic_hide_rate: float = Field(
        0.08, ge=0, le=1, description="P(hide | examined, not clicked) at zero relevance, scaled by 1 − σ(affinity)"
    )
    ad_hide_rate: float = Field(0.03, ge=0, le=1, description="P(hide | an ad is examined), times its category annoyance")

    def examination(self, n: int) -> np.ndarray:
        """θ_1..θ_n."""
        return np.arange(1, n + 1, dtype=np.float64) ** (-self.position_power)


class UserDynamicsConfig(Section):
    """Satisfaction, fatigue, sessions, churn and interest drift of one simulated user."""

    max_pages_per_session: int = Field(4, ge=1, le=50, description="pages one session can scroll at most")
    continue_bias: float = Field(-0.2, ge=-20, le=20, description="logit of scrolling to the next page at zero utility")
    continue_utility: float = Field(1.2, ge=0, le=20, description="logit gain of continuing per unit page utility")
    continue_page_decay: float = Field(0.5, ge=0, le=20, description="logit lost per page already scrolled (boredom)")
    diversity_bonus: float = Field(
        0.15, ge=0, le=10, description="page utility per distinct topic among the page's clicks (beyond the first)"
    )
    ad_annoyance: float = Field(0.35, ge=0, le=10, description="page utility lost per examined ad (before fatigue)")
    ad_category_annoyance: dict[str, float] = Field(
        default_factory=lambda: {"political": 2.5, "alcohol": 1.5, "gambling": 2.5},
        description="annoyance multiplier of an ad category (absent: 1)",
    )
    ad_fatigue_sensitivity: float = Field(
        0.5, ge=0, le=10, description="annoyance multiplier gained per unit of accumulated ad fatigue"
    )
    ad_fatigue_per_ad: float = Field(0.1, ge=0, le=10, description="fatigue added per examined ad")
    ad_fatigue_daily_decay: float = Field(0.7, ge=0, le=1, description="fatigue kept from one day to the next")
    hide_annoyance: float = Field(0.5, ge=0, le=10, description="page utility lost per hide (organic or ad)")
    satisfaction_rate: float = Field(0.3, gt=0, le=1, description="EWMA weight of a session's mean page utility")
    satisfaction_init: float = Field(0.5, ge=-10, le=10, description="satisfaction of a new user")
    sessions_per_day: float = Field(1.2, gt=0, le=20, description="Poisson mean of sessions on a visit day at S = 0")
    sessions_satisfaction: float = Field(0.3, ge=0, le=10, description="log-rate gain of sessions per unit satisfaction")
    max_sessions_per_day: int = Field(4, ge=1, le=50, description="sessions per day at most")
    return_bias: float = Field(0.3, ge=-20, le=20, description="logit of visiting on a day at S = 0, no fatigue")
    return_satisfaction: float = Field(1.5, ge=0, le=20, description="return logit gain per unit satisfaction")
    return_fatigue: float = Field(0.6, ge=0, le=20, description="return logit lost per unit ad fatigue")
    churn_bias: float = Field(-3.6, ge=-20, le=20, description="logit of quitting for good after a visit day at S = 0")
    churn_satisfaction: float = Field(2.0, ge=0, le=20, description="churn logit lost per unit satisfaction")
    churn_fatigue: float = Field(0.8, ge=0, le=20, description="churn logit gained per unit ad fatigue")
    interest_drift: float = Field(
        0.08, ge=0, le=1, description="a session moves the user's latent this far toward the mean of its clicks"
    )


class CreatorConfig(Section):
    """Creators stay active only if the feed shows their work."""

    min_weekly_exposure: float = Field(
        3.0, ge=0, le=1e6, description="examined impressions a creator needs per week to keep posting"
    )
    quit_probability: float = Field(0.5, ge=0, le=1, description="chance an under-exposed creator stops that week")


class SystemConfig(Section):
    """How the simulated serving system adapts between days (the system side of the feedback loop)."""

    pool_size: int = Field(200, ge=20, le=5000, description="reranked organic candidates kept per user (real pipeline)")
    ranking_size: int = Field(500, ge=20, le=100_000, description="ranker output the pool is reranked from")
    dynamic_weight: float = Field(
        1.0, ge=0, le=100,
        description="weight of the daily dynamic-embedding term u_t·v − u_0·v added to the pipeline's final score",
    )
    page_size: int = Field(20, ge=1, le=200, description="positions per served page")


class ObjectiveConfig(Section):
    """Long-term value = revenue + click_value · organic clicks + retained_user_value · retained users."""

    click_value: float = Field(0.03, ge=0, le=100, description="currency value of one organic click (engagement)")
    retained_user_value: float = Field(
        6.0, ge=0, le=1e6,
        description="currency value of a user still active at the horizon (about 30 more days of their revenue)",
    )


class SimulationConfig(Section):
    """The whole simulator: choice model, user dynamics, creators, system, objective."""

    choice: ChoiceModelConfig = Field(default_factory=ChoiceModelConfig)
    user: UserDynamicsConfig = Field(default_factory=UserDynamicsConfig)
    creators: CreatorConfig = Field(default_factory=CreatorConfig)
    system: SystemConfig = Field(default_factory=SystemConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    days: int = Field(21, ge=1, le=365, description="simulated horizon in days")
    n_users: int = Field(200, ge=1, le=100_000, description="simulated users (the first n of the dataset by id)")
