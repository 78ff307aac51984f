"""A small seeded ad world, its users and a trained ranker, shared by the ads tests."""
from __future__ import annotations

import pytest

from app.ads.config import AdsConfig, AdWorldGeneratorConfig
from app.ads.pacing import BudgetPacer, TrafficForecast
from app.ads.ranking import AdRanker
from app.ads.world import GroundTruth, UserVocabulary, generate_ad_world, simulate_ad_events, synthetic_users, with_ad_choices

GENRES = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western", "unknown",
)
OCCUPATIONS = (
    "administrator", "artist", "doctor", "educator", "engineer", "entertainment", "executive", "healthcare",
    "homemaker", "lawyer", "librarian", "marketing", "none", "other", "programmer", "retired", "salesman",
    "scientist", "student", "technician", "writer",
)
DAY_START = 1_700_006_400.0  # a UTC midnight


@pytest.fixture(scope="session")
def vocab() -> UserVocabulary:
    return UserVocabulary(("M", "F"), OCCUPATIONS, GENRES)


@pytest.fixture(scope="session")
def generator_config() -> AdWorldGeneratorConfig:
    return AdWorldGeneratorConfig(seed=5, n_advertisers=30)


@pytest.fixture(scope="session")
def world(vocab, generator_config):
    return generate_ad_world(vocab, generator_config, DAY_START)


@pytest.fixture(scope="session")
def users(vocab, generator_config):
    return with_ad_choices(synthetic_users(400, vocab, seed=3), generator_config)


@pytest.fixture(scope="session")
def truth(world, vocab, generator_config):
    return GroundTruth.draw(world, vocab, generator_config)


@pytest.fixture(scope="session")
def events(world, users, truth):
    """Three days of logged impressions before DAY_START."""
    return simulate_ad_events(world, users, truth, 400_000, DAY_START - 3 * 86_400, n_days=3, seed=9)


@pytest.fixture(scope="session")
def ads_config() -> AdsConfig:
    return AdsConfig()


@pytest.fixture(scope="session")
def ranker(events, users, world, vocab, ads_config) -> AdRanker:
    train = events.iloc[: int(0.75 * len(events))]
    return AdRanker.train(
        train, users, world.ads, world.campaigns_by_id, vocab.ad_vocabulary(), len(ads_config.slot_ctr_factors),
        ads_config.ranker_l2, ads_config.ranker_max_iter,
    )


@pytest.fixture(scope="session")
def pacer(events, ads_config) -> BudgetPacer:
    forecast = TrafficForecast.fit(events["ts"], ads_config.forecast_buckets, ads_config.forecast_smoothing_buckets)
    return BudgetPacer.from_config(forecast, ads_config)
