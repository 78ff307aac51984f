"""A tiny synthetic world and a base two-tower trained on its first half (seconds, no Ray)."""
from __future__ import annotations

import pytest

from app.data import DataConfig
from app.data.synthetic import SyntheticWorldSpec, generate_world
from app.freshness.towers import TowerSnapshot
from app.retrieval.config import TwoTowerConfig
from app.retrieval.two_tower import train_two_tower_in_process
from training.replay import split_timeline

TINY = TwoTowerConfig(embedding_dim=8, id_dim=8, feature_dim=4, hidden_dim=16, history_length=4, batch_size=64, epochs=2)


@pytest.fixture(scope="session")
def tiny_world():
    spec = SyntheticWorldSpec(n_users=80, n_items=150, n_creators=15, n_topics=4, interactions_per_user=14, days=20)
    return generate_world(spec, DataConfig(seed=5))


@pytest.fixture(scope="session")
def timeline(tiny_world):
    """(base period, later events, replay start)."""
    return split_timeline(tiny_world.interactions, 0.5)


@pytest.fixture(scope="session")
def base_snapshot(tiny_world, timeline) -> TowerSnapshot:
    base_period = timeline[0]
    artifacts = train_two_tower_in_process(tiny_world, base_period, TINY, on_epoch=None)
    return TowerSnapshot.from_artifacts(artifacts, base_period)
