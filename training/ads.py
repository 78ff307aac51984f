"""Builds the ads artifacts: the seeded ad world over the dataset's users, the pCTR/pCVR models
trained on logged (uniform-random policy) impressions, and the traffic forecast learned from
the dataset's real event timestamps."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from app.ads.bundle import AdsBundle, ad_users_from_dataset, vocabulary_of
from app.ads.config import AdsConfig
from app.ads.pacing import TrafficForecast
from app.ads.ranking import AdRanker, log_loss
from app.ads.world import GroundTruth, generate_ad_world, simulate_ad_events, with_ad_choices
from app.data.tables import Dataset
from app.state.clock import SECONDS_PER_DAY


def train_ads(dataset: Dataset, history: pd.DataFrame, config: AdsConfig, now: float) -> tuple[AdsBundle, dict[str, float]]:
    """Returns the bundle and its figures (held-out log-loss of the ad models vs a constant)."""
    started = time.perf_counter()
    generator = config.generator
    vocabulary = vocabulary_of(dataset)
    day_start = now - now % SECONDS_PER_DAY
    world = generate_ad_world(vocabulary, generator, day_start)
    users = with_ad_choices(ad_users_from_dataset(dataset, history, generator.top_genres_per_user), generator)
    truth = GroundTruth.draw(world, vocabulary, generator)
    events = simulate_ad_events(
        world, users, truth, generator.logged_impressions,
        day_start - generator.logged_days * SECONDS_PER_DAY, generator.logged_days, generator.seed,
    )
    cut = int(len(events) * 0.9)
    train, held_out = events.iloc[:cut], events.iloc[cut:]
    ranker = AdRanker.train(
        train, users, world.ads, world.campaigns_by_id, vocabulary.ad_vocabulary(),
        n_slots=len(generator.true_slot_factors), l2=config.ranker_l2, max_iter=config.ranker_max_iter,
    )
    pctr, _ = ranker.predict_events(held_out, users, world.ads, world.campaigns_by_id)
    clicks = held_out["click"].to_numpy(dtype=float)
    forecast = TrafficForecast.fit(
        dataset.interactions["timestamp"].to_numpy(), config.forecast_buckets, config.forecast_smoothing_buckets
    )
    bundle = AdsBundle(world, {u.user_id: u for u in users}, ranker, forecast, vocabulary)
    figures = {
        "ads.campaigns": float(len(world.campaigns)),
        "ads.pctr_logloss": log_loss(clicks, pctr),
        "ads.constant_logloss": log_loss(clicks, np.full_like(clicks, clicks.mean())),
        "ads.seconds": time.perf_counter() - started,
    }
    return bundle, figures
