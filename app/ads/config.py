"""Every tunable of the ads side, declared once with its default and bounds.

The lead composes `AdsConfig` into the root configuration; stage constructors take the values
they need from it. Nothing in app/ads or app/state reads the environment.
"""
from __future__ import annotations

from pydantic import Field, field_validator

from app._config_base import Section


class AdWorldGeneratorConfig(Section):
    """Sizes and ranges of the seeded advertising world (see `app.ads.world`)."""

    seed: int = Field(11, description="seed of the advertisers, campaigns, ads, opt-outs and logged ad events")
    n_advertisers: int = Field(40, ge=1, le=1_000_000, description="advertisers in the world")
    campaigns_per_advertiser: int = Field(3, ge=1, le=1000, description="mean campaigns per advertiser (1 + Poisson)")
    ads_per_campaign: int = Field(2, ge=1, le=100, description="mean creatives per campaign (1 + Poisson)")
    daily_budget_min: float = Field(20.0, gt=0, description="smallest daily budget (currency units)")
    daily_budget_max: float = Field(500.0, gt=0, description="largest daily budget; drawn log-uniformly between")
    bid_min: float = Field(0.5, gt=0, description="smallest bid per conversion")
    bid_max: float = Field(20.0, gt=0, description="largest bid per conversion; drawn log-uniformly between")
    targeting_rate: float = Field(0.5, ge=0, le=1, description="chance a campaign restricts each targeting attribute")
    sensitive_category_rate: float = Field(
        0.15, ge=0, le=1, description="chance a campaign is political or alcohol rather than a commercial category"
    )
    sponsored_creator_rate: float = Field(0.1, ge=0, le=1, description="chance an ad is sponsored content of a creator")
    n_creators: int = Field(500, ge=1, description="creator ids drawn for sponsored ads and blocked-creator lists")
    opt_out_category_rate: float = Field(0.05, ge=0, le=1, description="chance a user opts out of each sensitive category")
    opt_out_all_rate: float = Field(0.02, ge=0, le=1, description="chance a user opts out of all ads")
    logged_impressions: int = Field(
        200_000, ge=1000, le=100_000_000, description="uniform-random logged ad impressions the ad models train on"
    )
    logged_days: int = Field(3, ge=1, le=365, description="days the logged impressions span")
    top_genres_per_user: int = Field(3, ge=1, le=19, description="a user's strongest genres used for targeting")
    base_ctr: float = Field(0.03, gt=0, lt=1, description="ground-truth click rate of an average impression, top slot")
    base_cvr: float = Field(0.08, gt=0, lt=1, description="ground-truth conversion rate of an average click")
    true_slot_factors: tuple[float, ...] = Field(
        (1.0, 0.75, 0.55, 0.4, 0.3), min_length=1, description="ground-truth position effect on clicks, per ad slot"
    )
    overlap_effect: float = Field(0.8, ge=0, le=5, description="ground-truth logit gain per shared user/ad genre")
    attribute_effect_scale: float = Field(
        0.5, ge=0, le=5, description="std of the ground-truth logit effects of (age, gender, occupation) x category"
    )
    ad_quality_scale: float = Field(0.3, ge=0, le=5, description="std of each creative's unobserved logit quality")


class AdsConfig(Section):
    """Serving-time tunables of targeting, ranking, eligibility, auctions, pacing and state."""

    auction: str = Field("gsp", pattern="^(gsp|vcg)$", description="pricing rule: generalized second price or VCG")
    slot_ctr_factors: tuple[float, ...] = Field(
        (1.0, 0.7, 0.5, 0.35, 0.25),
        min_length=1,
        max_length=20,
        description="position click-through factors alpha_1 >= alpha_2 >= ... of the ad slots on a page",
    )
    reserve_ecpm: float = Field(
        0.0005, ge=0, description="quality-weighted reserve: an ad needs bid*pCTR*pCVR*pacing >= this (per impression)"
    )
    one_ad_per_advertiser: bool = Field(True, description="at most one ad of each advertiser per auction")
    max_candidates: int = Field(200, ge=1, le=100_000, description="ads scored per request after targeting")

    ad_user_daily_cap: int = Field(3, ge=0, le=1000, description="impressions of one ad to one user per day")
    advertiser_user_daily_cap: int = Field(6, ge=0, le=10_000, description="impressions of one advertiser's ads to one user per day")
    session_category_caps: dict[str, int] = Field(
        default_factory=lambda: {"political": 1, "alcohol": 2},
        description="at most this many ads of a category per session; categories not listed are uncapped",
    )
    session_ttl_s: int = Field(1800, ge=60, le=86_400, description="a session's category counts live this long")

    pacing_min_multiplier: float = Field(0.05, gt=0, le=1, description="lowest pacing multiplier (strongest throttle)")
    pacing_max_multiplier: float = Field(
        2.0, ge=1, le=10, description="highest pacing multiplier (strongest acceleration when behind pace)"
    )
    pacing_gain: float = Field(
        2.0, gt=0, le=8, description="exponent on the pace ratio: 1 is proportional, larger reacts harder"
    )
    pacing_min_remaining_share: float = Field(
        0.01, gt=0, le=1, description="floor on the forecast share of the day's traffic still to come"
    )
    forecast_buckets: int = Field(96, ge=1, le=1440, description="buckets of the daily traffic curve (96 = 15 min)")
    forecast_smoothing_buckets: float = Field(
        2.0, ge=0, le=100, description="std of the circular Gaussian smoothing of the traffic histogram, in buckets"
    )

    reservation_ttl_s: int = Field(
        300, ge=1, le=86_400, description="an uncommitted budget reservation is reclaimed after this many seconds"
    )
    state_key_grace_s: int = Field(
        2 * 86_400, ge=0, le=30 * 86_400, description="cap and budget keys outlive their day by this much"
    )
    redis_socket_timeout_s: float = Field(
        0.05, gt=0, le=10, description="Redis socket timeout: past it the request is served without ads"
    )

    ranker_l2: float = Field(10.0, ge=0, le=1e4, description="L2 penalty of the pCTR/pCVR logistic regressions")
    ranker_max_iter: int = Field(300, ge=1, le=10_000, description="L-BFGS iterations when training the ad models")

    generator: AdWorldGeneratorConfig = Field(default_factory=AdWorldGeneratorConfig)

    @field_validator("slot_ctr_factors")
    @classmethod
    def _factors_non_increasing(cls, factors: tuple[float, ...]) -> tuple[float, ...]:
        if any(a <= 0 or a > 1 for a in factors):
            raise ValueError("slot CTR factors must lie in (0, 1]")
        if any(later > earlier for earlier, later in zip(factors, factors[1:])):
            raise ValueError("slot CTR factors must be non-increasing (alpha_1 >= alpha_2 >= ...)")
        return factors

    @field_validator("session_category_caps")
    @classmethod
    def _caps_non_negative(cls, caps: dict[str, int]) -> dict[str, int]:
        bad = {k: v for k, v in caps.items() if v < 0}
        if bad:
            raise ValueError(f"category caps must be >= 0, got {bad}")
        return caps
