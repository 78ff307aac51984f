"""Two-tower retrieval quality on MovieLens-100k's per-user temporal split (slow: trains).

Protocol (app.evaluation): each user's interactions ordered by (timestamp, item_id); fit on the
oldest 80%, exclude those items, score Recall@20 / NDCG@20 on the next 10% ("valid" phase).
The two-tower must stay in ItemKNN's league: at least 90% of its Recall@20.
"""
from __future__ import annotations

import pytest

from app.data import DataConfig, load_dataset
from app.evaluation.config import MetricsConfig
from app.evaluation.harness import evaluate
from app.evaluation.recommenders import ItemKNNRecommender
from app.evaluation.split import temporal_split
from app.retrieval.config import TwoTowerConfig
from app.retrieval.recommender import TwoTowerRecommender

pytestmark = pytest.mark.slow


def test_two_tower_recall_is_in_itemknn_league() -> None:
    ds = load_dataset(DataConfig())
    split = temporal_split(ds.interactions)
    metrics = MetricsConfig(ks={"recall": (20,), "ndcg": (20,)}, tuning_metric="recall@20")
    two_tower = evaluate(TwoTowerRecommender(ds, TwoTowerConfig()), split, "valid", metrics)
    itemknn = evaluate(ItemKNNRecommender(), split, "valid", metrics)
    print(f"\ntwo-tower {two_tower}\nitemknn   {itemknn}")
    assert two_tower["recall@20"] >= 0.9 * itemknn["recall@20"]
