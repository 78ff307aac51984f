"""Static+dynamic ensemble: context buckets, the per-bucket weight search, the blend."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from app.evaluation.sets import RaggedItems, UserItemSets
from app.freshness.config import EnsembleConfig
from app.freshness.ensemble import ContextEnsembleStrategy, choose_weights, context_buckets
from app.freshness.log import InteractionLog
from app.freshness.strategies import ScoringStrategy

ITEMS = np.arange(100, 110)


class FixedScores(ScoringStrategy):
    """A member whose log-probabilities are a fixed table per user (a test double, not a mock)."""

    def __init__(self, log: InteractionLog, table: dict[int, np.ndarray]) -> None:
        super().__init__(log)
        self.table = table

    def scores(self, user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return ITEMS, np.stack([self.table[int(u)] for u in user_ids])


def _log() -> InteractionLog:
    # user 1: last event at t=95 (recent as of 100); user 2: t=10 (returning); user 3: never (new)
    frame = pd.DataFrame({"user_id": [1, 2], "item_id": [100, 101], "rating": [4, 4], "timestamp": [95.0, 10.0]})
    return InteractionLog(frame, as_of=100.0)


def _preferring(item: int) -> np.ndarray:
    scores = np.linspace(-2.0, -3.0, len(ITEMS))  # a default order: items 100, 101, ...
    scores[ITEMS == item] = 0.0
    return scores


def test_context_buckets_by_last_event() -> None:
    assert context_buckets(_log(), np.array([1, 2, 3]), recent_activity_s=20).tolist() == ["recent", "returning", "new"]


def test_choose_weights_takes_each_buckets_best_and_keeps_the_fallback_elsewhere() -> None:
    grid = (0.0, 0.5, 1.0)
    metric = np.array([[0.1, 0.2, 0.9], [0.0, 0.3, 0.5], [0.8, 0.1, 0.0], [0.2, 0.2, 0.2]])
    buckets = np.array(["recent", "recent", "returning", "returning"])
    chosen = choose_weights(metric, buckets, grid, {"new": 0.3, "recent": 0.3, "returning": 0.3})
    assert chosen == {"new": 0.3, "recent": 1.0, "returning": 0.0}


def test_ensemble_learns_more_dynamic_weight_where_the_dynamic_member_is_right() -> None:
    """Recent user 1 next engages the item the dynamic member ranks first; returning user 2 the
    item the static member ranks first: learning must pick w=1 for recent and w=0 for returning."""
    log = _log()
    static = FixedScores(log, {1: _preferring(107), 2: _preferring(108)})
    dynamic = FixedScores(log, {1: _preferring(109), 2: _preferring(106)})
    config = EnsembleConfig(weight_grid=(0.0, 0.5, 1.0), recent_activity_s=20, learn_metric="ndcg")
    ensemble = ContextEnsembleStrategy(static, dynamic, log, config)
    users = np.array([1, 2])
    truth = RaggedItems.from_lists([[109], [108]])
    exclude = log.seen
    ensemble.learn(users, truth, exclude, k=1)
    weights = ensemble.freeze()
    assert weights["recent"] == 1.0 and weights["returning"] == 0.0 and weights["new"] == 0.5
    assert ensemble.recommend(users, 1, exclude)[:, 0].tolist() == [109, 108]
    assert set(ensemble.members) == {static, dynamic}


def test_blend_is_the_weighted_sum_of_member_log_probabilities() -> None:
    log = _log()
    static = FixedScores(log, {3: _preferring(105)})
    dynamic = FixedScores(log, {3: _preferring(102)})
    ensemble = ContextEnsembleStrategy(static, dynamic, log, EnsembleConfig(initial_weights={"new": 0.25, "recent": 0.5, "returning": 0.5}, learn_weights=False))
    _, blended = ensemble.scores(np.array([3]))
    np.testing.assert_allclose(blended[0], 0.75 * _preferring(105) + 0.25 * _preferring(102))
    ensemble.learn(np.array([3]), RaggedItems.from_lists([[102]]), UserItemSets.empty(), k=1)
    assert ensemble.freeze()["new"] == 0.25  # learning switched off: the configured weight stays


def test_config_rejects_weights_outside_the_unit_interval() -> None:
    with pytest.raises(ValidationError, match="ensemble weights"):
        EnsembleConfig(weight_grid=(0.0, 1.5))
    with pytest.raises(ValidationError):
        EnsembleConfig(initial_weights={"sleepy": 0.5})
