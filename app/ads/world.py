"""The seeded advertising world: advertisers, campaigns, ads, users' ad choices, and a logged
ad-event dataset drawn from a documented ground-truth model.

Everything is a pure function of the vocabularies, `AdWorldGeneratorConfig` and its seed.

Generative process (one draw per entity, all from `numpy.random.default_rng(seed)`):

- Advertiser k is "advertiser-k". It runs 1 + Poisson(campaigns_per_advertiser - 1) campaigns.
- A campaign's category is political or alcohol with probability `sensitive_category_rate`,
  else uniform over the commercial categories. Its daily budget and bid are log-uniform over the
  configured ranges. It runs from up to a week before `day_start` to 1-30 days after it; one in
  ten has already ended or not yet started (so the active-window check has work to do).
- Targeting: each of age range, gender, occupations (1-5) and genre interests (1-3) is restricted
  with probability `targeting_rate`. Alcohol campaigns always target age >= 21.
- Brand safety: a quarter of campaigns avoid mature content (adjacent items must be rated for
  ages <= 13), a third block 1-2 genres, a fifth block 1-5 creators.
- Ads: 1 + Poisson(ads_per_campaign - 1) creatives per campaign; topics are the campaign's genre
  interests when it has some, else 1-2 random genres; with `sponsored_creator_rate` an ad is a
  creator's sponsored content (`creator_id`).
- Users: each opts out of each sensitive category with `opt_out_category_rate` and of all ads
  with `opt_out_all_rate`.

Ground truth (`GroundTruth`), for user u shown ad a in slot s:

    P(click)          = beta_s * sigmoid(logit(base_ctr) + overlap_effect * |genres(u) & topics(a)|
                                         + G[gender(u), cat(a)] + A[age_bucket(u), cat(a)]
                                         + O[occupation(u), cat(a)] + q_a)
    P(conv | click)   = sigmoid(logit(base_cvr) + overlap_effect/2 * |genres(u) & topics(a)|
                                + A'[age_bucket(u), cat(a)] + O'[occupation(u), cat(a)] + q'_a)

with beta = `true_slot_factors`, every table entry ~ N(0, attribute_effect_scale^2), and the
per-creative qualities q, q' ~ N(0, ad_quality_scale^2) unobserved by the learned models.

Logged events (`simulate_ad_events`) come from a uniform-random logging policy (random user,
random ad, random slot, like the Open Bandit Dataset's random policy) at timestamps following
`daily_traffic_weights`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from app.ads.config import AdWorldGeneratorConfig
from app.ads.encoding import N_AGE_BUCKETS, AdVocabulary, encode_ads, encode_users, genre_overlap
from app.ads.types import Ad, Advertiser, AdUser, BrandSafety, Campaign, Targeting
from app.state.clock import SECONDS_PER_DAY

COMMERCIAL_CATEGORIES: tuple[str, ...] = ("retail", "travel", "finance", "gaming", "entertainment", "food")
SENSITIVE_CATEGORIES: tuple[str, ...] = ("political", "alcohol")
CATEGORIES: tuple[str, ...] = COMMERCIAL_CATEGORIES + SENSITIVE_CATEGORIES

ALCOHOL_MIN_AGE = 21  # alcohol campaigns never target younger users
FAMILY_SAFE_MAX_MIN_AGE = 13  # "no content rated above PG-13 next to my ad"


@dataclass(frozen=True)
class UserVocabulary:
    """The user attributes an ad may target (MovieLens: ages 7-73, 'M'/'F', 21 occupations,
    19 genres). Passed in by the caller; this module loads no dataset."""

    genders: tuple[str, ...]
    occupations: tuple[str, ...]
    genres: tuple[str, ...]
    min_age: int = 7
    max_age: int = 73

    def ad_vocabulary(self) -> AdVocabulary:
        return AdVocabulary(self.genders, self.occupations, self.genres, CATEGORIES)


@dataclass(frozen=True)
class AdWorld:
    advertisers: tuple[Advertiser, ...]
    campaigns: tuple[Campaign, ...]
    ads: tuple[Ad, ...]

    def __post_init__(self) -> None:
        check_references(self)

    @property
    def campaigns_by_id(self) -> dict[int, Campaign]:
        return {c.campaign_id: c for c in self.campaigns}


def check_references(world: AdWorld) -> None:
    """Unique ids, and every campaign/ad points at an existing advertiser/campaign."""
    for name, ids in (
        ("advertiser_id", [a.advertiser_id for a in world.advertisers]),
        ("campaign_id", [c.campaign_id for c in world.campaigns]),
        ("ad_id", [a.ad_id for a in world.ads]),
    ):
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate {name} values")
    advertisers = {a.advertiser_id for a in world.advertisers}
    campaigns = {c.campaign_id: c for c in world.campaigns}
    for c in world.campaigns:
        if c.advertiser_id not in advertisers:
            raise ValueError(f"campaign {c.campaign_id} names unknown advertiser {c.advertiser_id}")
    for a in world.ads:
        if a.campaign_id not in campaigns:
            raise ValueError(f"ad {a.ad_id} names unknown campaign {a.campaign_id}")
        if campaigns[a.campaign_id].advertiser_id != a.advertiser_id:
            raise ValueError(f"ad {a.ad_id} has advertiser {a.advertiser_id}, its campaign another")


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(max(low, high)))))


def _subset(rng: np.random.Generator, values: Sequence[str], low: int, high: int) -> frozenset[str]:
    k = int(rng.integers(low, min(high, len(values)) + 1))
    return frozenset(str(v) for v in rng.choice(list(values), size=k, replace=False))


def _targeting(rng, vocab: UserVocabulary, cfg: AdWorldGeneratorConfig, category: str) -> Targeting:
    restrict = rng.random(4) < cfg.targeting_rate
    min_age, max_age = vocab.min_age, vocab.max_age
    if restrict[0]:
        a, b = sorted(rng.integers(vocab.min_age, vocab.max_age + 1, size=2))
        min_age, max_age = int(a), int(max(b, a + 10))
    if category == "alcohol":
        min_age = max(min_age, ALCOHOL_MIN_AGE)
        max_age = max(max_age, min_age)
    return Targeting(
        min_age=min_age,
        max_age=max_age,
        genders=frozenset({str(rng.choice(vocab.genders))}) if restrict[1] else frozenset(),
        occupations=_subset(rng, vocab.occupations, 1, 5) if restrict[2] else frozenset(),
        genre_interests=_subset(rng, vocab.genres, 1, 3) if restrict[3] else frozenset(),
    )


def _brand_safety(rng, vocab: UserVocabulary, cfg: AdWorldGeneratorConfig) -> BrandSafety:
    return BrandSafety(
        max_adjacent_min_age=FAMILY_SAFE_MAX_MIN_AGE if rng.random() < 1 / 4 else BrandSafety().max_adjacent_min_age,
        blocked_topics=_subset(rng, vocab.genres, 1, 2) if rng.random() < 1 / 3 else frozenset(),
        blocked_creator_ids=frozenset(int(x) for x in rng.integers(0, cfg.n_creators, size=rng.integers(1, 6)))
        if rng.random() < 1 / 5
        else frozenset(),
    )


def generate_ad_world(vocab: UserVocabulary, cfg: AdWorldGeneratorConfig, day_start: float) -> AdWorld:
    """The advertisers, campaigns and ads of `cfg.seed` (see the module docstring)."""
    rng = np.random.default_rng(cfg.seed)
    advertisers, campaigns, ads = [], [], []
    for advertiser_id in range(cfg.n_advertisers):
        advertisers.append(Advertiser(advertiser_id, f"advertiser-{advertiser_id}"))
        for _ in range(1 + rng.poisson(cfg.campaigns_per_advertiser - 1)):
            campaign_id = len(campaigns)
            if rng.random() < cfg.sensitive_category_rate:
                category = str(rng.choice(SENSITIVE_CATEGORIES))
            else:
                category = str(rng.choice(COMMERCIAL_CATEGORIES))
            start = day_start - rng.uniform(0, 7) * SECONDS_PER_DAY
            end = day_start + rng.uniform(1, 30) * SECONDS_PER_DAY
            if rng.random() < 0.1:  # outside today's window: ended yesterday or starts tomorrow
                start, end = (start - 8 * SECONDS_PER_DAY, day_start - 1) if rng.random() < 0.5 else (end, end + 1e6)
            targeting = _targeting(rng, vocab, cfg, category)
            campaigns.append(
                Campaign(
                    campaign_id=campaign_id,
                    advertiser_id=advertiser_id,
                    daily_budget=round(_log_uniform(rng, cfg.daily_budget_min, cfg.daily_budget_max), 2),
                    bid=round(_log_uniform(rng, cfg.bid_min, cfg.bid_max), 2),
                    start_ts=float(start),
                    end_ts=float(end),
                    category=category,
                    targeting=targeting,
                    brand_safety=_brand_safety(rng, vocab, cfg),
                )
            )
            for k in range(1 + rng.poisson(cfg.ads_per_campaign - 1)):
                topics = targeting.genre_interests or _subset(rng, vocab.genres, 1, 2)
                sponsored = rng.random() < cfg.sponsored_creator_rate
                ads.append(
                    Ad(
                        ad_id=len(ads),
                        campaign_id=campaign_id,
                        advertiser_id=advertiser_id,
                        title=f"advertiser-{advertiser_id} {category} creative {k}",
                        topics=tuple(sorted(topics)),
                        creator_id=int(rng.integers(0, cfg.n_creators)) if sponsored else None,
                    )
                )
    return AdWorld(tuple(advertisers), tuple(campaigns), tuple(ads))


def with_ad_choices(users: Sequence[AdUser], cfg: AdWorldGeneratorConfig) -> list[AdUser]:
    """The same users with seeded ad opt-outs (per sensitive category, and all ads)."""
    rng = np.random.default_rng([cfg.seed, 1])
    out = []
    for u in users:
        out_of = frozenset(c for c in SENSITIVE_CATEGORIES if rng.random() < cfg.opt_out_category_rate)
        out.append(
            AdUser(
                u.user_id, u.age, u.gender, u.occupation, u.top_genres,
                opted_out_categories=u.opted_out_categories | out_of,
                opted_out_all=u.opted_out_all or bool(rng.random() < cfg.opt_out_all_rate),
                blocked_creator_ids=u.blocked_creator_ids,
            )
        )
    return out


def synthetic_users(n: int, vocab: UserVocabulary, seed: int) -> list[AdUser]:
    """Users with MovieLens-like attributes, for tests and simulations without the dataset."""
    rng = np.random.default_rng([seed, 2])
    return [
        AdUser(
            user_id=i,
            age=int(rng.integers(vocab.min_age, vocab.max_age + 1)),
            gender=str(rng.choice(vocab.genders)),
            occupation=str(rng.choice(vocab.occupations)),
            top_genres=_subset(rng, vocab.genres, 1, 3),
        )
        for i in range(n)
    ]


def daily_traffic_weights(hours: np.ndarray) -> np.ndarray:
    """Relative request rate by hour of day (0-24): a night trough near 4h, a morning bump at
    8h30, a lunch bump at 13h and the evening peak at 20h30 (a typical consumer-feed day)."""

    def bump(center: float, width: float) -> np.ndarray:
        d = (hours - center + 12) % 24 - 12  # circular distance
        return np.exp(-0.5 * (d / width) ** 2)

    return 0.12 + 0.35 * bump(8.5, 1.5) + 0.5 * bump(13.0, 2.0) + 1.0 * bump(20.5, 2.5)


def sample_daily_timestamps(rng: np.random.Generator, n: int, day_start: float, n_days: int = 1) -> np.ndarray:
    """`n` sorted request times over `n_days` days starting at `day_start`, following the curve."""
    minutes = np.arange(24 * 60)
    weights = daily_traffic_weights(minutes / 60.0)
    minute = rng.choice(minutes, size=n, p=weights / weights.sum())
    day = rng.integers(0, n_days, size=n)
    return np.sort(day_start + day * SECONDS_PER_DAY + minute * 60.0 + rng.uniform(0, 60, size=n))


@dataclass(frozen=True)
class GroundTruth:
    """The true click and conversion model of the simulated world (module docstring)."""

    vocab: AdVocabulary
    base_ctr: float
    base_cvr: float
    slot_factors: tuple[float, ...]
    overlap_effect: float
    ctr_gender: np.ndarray  # [gender, category]
    ctr_age: np.ndarray  # [age bucket, category]
    ctr_occupation: np.ndarray  # [occupation, category]
    cvr_age: np.ndarray
    cvr_occupation: np.ndarray
    ad_ctr_quality: dict[int, float]
    ad_cvr_quality: dict[int, float]

    @classmethod
    def draw(cls, world: AdWorld, vocab: UserVocabulary, cfg: AdWorldGeneratorConfig) -> "GroundTruth":
        rng = np.random.default_rng([cfg.seed, 3])
        v = vocab.ad_vocabulary()
        n_cat = len(v.categories) + 1
        s = cfg.attribute_effect_scale

        def table(rows: int) -> np.ndarray:
            return rng.normal(0, s, size=(rows, n_cat))

        return cls(
            vocab=v,
            base_ctr=cfg.base_ctr,
            base_cvr=cfg.base_cvr,
            slot_factors=cfg.true_slot_factors,
            overlap_effect=cfg.overlap_effect,
            ctr_gender=table(len(v.genders) + 1),
            ctr_age=table(N_AGE_BUCKETS),
            ctr_occupation=table(len(v.occupations) + 1),
            cvr_age=table(N_AGE_BUCKETS),
            cvr_occupation=table(len(v.occupations) + 1),
            ad_ctr_quality={a.ad_id: float(rng.normal(0, cfg.ad_quality_scale)) for a in world.ads},
            ad_cvr_quality={a.ad_id: float(rng.normal(0, cfg.ad_quality_scale)) for a in world.ads},
        )

    def probabilities(
        self, users: Sequence[AdUser], ads: Sequence[Ad], slots: np.ndarray, campaigns: dict[int, Campaign]
    ) -> tuple[np.ndarray, np.ndarray]:
        """P(click) and P(conversion | click) for each (user, ad, slot) row."""
        u = encode_users(users, self.vocab)
        a = encode_ads(ads, campaigns, self.vocab)
        overlap = genre_overlap(u.genre_mask, a.topic_mask)
        z_ctr = (
            _logit(self.base_ctr)
            + self.overlap_effect * overlap
            + self.ctr_gender[u.gender, a.category]
            + self.ctr_age[u.age_bucket, a.category]
            + self.ctr_occupation[u.occupation, a.category]
            + np.array([self.ad_ctr_quality[x.ad_id] for x in ads])
        )
        z_cvr = (
            _logit(self.base_cvr)
            + 0.5 * self.overlap_effect * overlap
            + self.cvr_age[u.age_bucket, a.category]
            + self.cvr_occupation[u.occupation, a.category]
            + np.array([self.ad_cvr_quality[x.ad_id] for x in ads])
        )
        beta = np.asarray(self.slot_factors)[np.minimum(slots, len(self.slot_factors) - 1)]
        return beta * _sigmoid(z_ctr), _sigmoid(z_cvr)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def simulate_ad_events(
    world: AdWorld,
    users: Sequence[AdUser],
    truth: GroundTruth,
    n_impressions: int,
    day_start: float,
    n_days: int,
    seed: int,
) -> pd.DataFrame:
    """Logged impressions under a uniform-random policy, with clicks and conversions drawn from
    `truth`. Columns: ts, user_id, ad_id, campaign_id, slot, click, conversion."""
    rng = np.random.default_rng([seed, 4])
    user_idx = rng.integers(0, len(users), size=n_impressions)
    ad_idx = rng.integers(0, len(world.ads), size=n_impressions)
    slots = rng.integers(0, len(truth.slot_factors), size=n_impressions)
    shown_users = [users[i] for i in user_idx]
    shown_ads = [world.ads[i] for i in ad_idx]
    p_click, p_conv = truth.probabilities(shown_users, shown_ads, slots, world.campaigns_by_id)
    click = rng.random(n_impressions) < p_click
    conversion = click & (rng.random(n_impressions) < p_conv)
    return pd.DataFrame(
        {
            "ts": sample_daily_timestamps(rng, n_impressions, day_start, n_days),
            "user_id": np.array([u.user_id for u in shown_users], dtype=np.int64),
            "ad_id": np.array([a.ad_id for a in shown_ads], dtype=np.int64),
            "campaign_id": np.array([a.campaign_id for a in shown_ads], dtype=np.int64),
            "slot": slots.astype(np.int64),
            "click": click,
            "conversion": conversion,
        }
    )
