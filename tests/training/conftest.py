"""A small synthetic world with a trained organic pipeline and ads bundle, once per session."""
from __future__ import annotations

import pytest

from config import RayfeedConfig, config_from_mapping
from app.data import DataConfig
from app.data.synthetic import SyntheticWorldSpec, generate_world
from training.organic import fit_organic, production_split


def small_config(tmp_root) -> RayfeedConfig:
    return config_from_mapping({
        "artifacts": {"root": str(tmp_root / "artifacts")},
        "training": {"storage_dir": str(tmp_root / "runs")},
        "retrieval": {
            "two_tower": {"epochs": 2, "embedding_dim": 16},
            "index": {"kind": "exact"},
            "sources": {"ann_k": 300, "total_candidates": 600,
                        "quotas": {"ann": 300, "coengagement": 150, "social": 75, "trending": 75}},
        },
        "ranking": {"training": {"epochs": 6}, "output_size": 100},
        "reranking": {"output_size": 40},
        "ads": {"generator": {"logged_impressions": 20_000}},
    })


@pytest.fixture(scope="session")
def small_world():
    spec = SyntheticWorldSpec(n_users=300, n_items=1500, n_creators=120, n_topics=8, interactions_per_user=25)
    return generate_world(spec, DataConfig(seed=11))


@pytest.fixture(scope="session")
def small_config_(tmp_path_factory):
    return small_config(tmp_path_factory.mktemp("organic"))


@pytest.fixture(scope="session")
def trained_models(small_world, small_config_):
    history, labels = production_split(small_world.interactions, 0.1)
    return fit_organic(small_world, history, labels, small_config_, use_ray=False, log=lambda m: None)
