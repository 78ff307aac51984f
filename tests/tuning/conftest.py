"""A tiny simulated world with a real (synthetic-data) ads bundle, shared by the tuning tests."""
from __future__ import annotations

import pytest

from app.ads.config import AdsConfig, AdWorldGeneratorConfig
from app.data.config import DataConfig
from app.data.synthetic import SyntheticWorldSpec, generate_world
from training.ads import train_ads
from tuning.config import SimulationConfig
from tuning.world import toy_world


@pytest.fixture(scope="session")
def ads_bundle():
    dataset = generate_world(SyntheticWorldSpec(n_users=60, n_items=300, n_creators=30, n_topics=6), DataConfig())
    config = AdsConfig(generator=AdWorldGeneratorConfig(logged_impressions=5000, n_advertisers=15))
    bundle, _ = train_ads(dataset, dataset.interactions, config, now=float(dataset.interactions["timestamp"].max()))
    return bundle


@pytest.fixture(scope="session")
def world(ads_bundle):
    return toy_world(n_users=40, n_items=300, seed=3, ads=ads_bundle)


@pytest.fixture(scope="session")
def sim_config() -> SimulationConfig:
    return SimulationConfig(days=7, n_users=40)
