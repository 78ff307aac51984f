"""Evaluation configuration: bounds, unknown keys, and the no-Ray rule of app/."""
from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.evaluation.config import EASEConfig, EvaluationConfig, ItemKNNConfig, MetricsConfig


def test_defaults_and_report_columns():
    config = EvaluationConfig()
    assert config.metrics.column_names() == [
        "recall@10", "recall@20", "recall@50", "ndcg@10", "ndcg@20", "hit_rate@10", "mrr@10",
        "coverage@10", "popularity@10", "gini@10",
    ]
    assert config.metrics.max_k == 50
    assert config.ease.l2 in config.ease.l2_grid


@pytest.mark.parametrize(
    "make",
    [
        lambda: EvaluationConfig(unknown=1),
        lambda: EASEConfig(l2=0),
        lambda: EASEConfig(l2_grid=(10.0, -1.0)),
        lambda: ItemKNNConfig(k=0),
        lambda: ItemKNNConfig(shrink=-1),
        lambda: MetricsConfig(ks={"precision": (10,)}),
        lambda: MetricsConfig(ks={"recall": (0,)}),
        lambda: MetricsConfig(tuning_metric="recall@7"),
    ],
)
def test_invalid_settings_are_rejected(make):
    with pytest.raises(ValidationError):
        make()
