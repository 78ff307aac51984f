"""The harness: phase protocol, top-K list input, evaluate_all, tuning, and one real-data run."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.evaluation.config import EASEConfig, MetricsConfig
from app.evaluation.harness import evaluate, evaluate_all, to_markdown, tune_ease, tune_on_validation
from app.evaluation.recommenders import EASERecommender, PopularityRecommender
from app.evaluation.sets import PAD, TopKLists, UserItemSets
from app.evaluation.split import Split, temporal_split

RAW = Path("/tmp/rb/recbole/dataset_example/ml-100k/ml-100k.inter")
SMALL = MetricsConfig(ks={"recall": (1, 2), "ndcg": (2,), "hit_rate": (1,), "mrr": (2,), "coverage": (2,),
                          "popularity": (2,), "gini": (2,)}, tuning_metric="recall@2")


def parts(train, valid, test):
    def f(rows):
        return pd.DataFrame(rows, columns=["user_id", "item_id"]).assign(rating=1.0, timestamp=0)
    return Split(f(train), f(valid), f(test))


# Users 1, 2; items 1..5. Test truth: user 1 -> {4}, user 2 -> {5}.
SPLIT = parts(train=[(1, 1), (1, 2), (2, 1), (2, 3)], valid=[(1, 3), (2, 2)], test=[(1, 4), (2, 5)])


def test_evaluate_top_k_lists_worked_example():
    lists = TopKLists(np.array([2, 1]), np.array([[4, 5], [4, 5]]))
    result = evaluate(lists, SPLIT, "test", SMALL)
    # user 1: [4, 5] hits at rank 1; user 2: [4, 5] hits at rank 2.
    assert result["recall@1"] == 0.5 and result["recall@2"] == 1.0
    assert result["hit_rate@1"] == 0.5
    assert result["mrr@2"] == pytest.approx((1 + 0.5) / 2)
    assert result["ndcg@2"] == pytest.approx((1 + 1 / np.log2(3)) / 2)
    assert result["coverage@2"] == pytest.approx(2 / 5)
    # Fit data of the test phase (train + valid) has items 1, 2, 3 twice each; 4 and 5 never.
    assert result["popularity@2"] == 0.0
    assert result["gini@2"] == pytest.approx(((2 * 4 - 6) * 2 + (2 * 5 - 6) * 2) / (5 * 4))
    assert result["users"] == 2


def test_evaluate_rejects_bad_lists():
    with pytest.raises(ValueError, match="history"):
        evaluate(TopKLists(np.array([1, 2]), np.array([[4, 3], [5, 4]])), SPLIT, "test", SMALL)
    with pytest.raises(ValueError, match="repeats"):
        evaluate(TopKLists(np.array([1, 2]), np.array([[4, 4], [5, 4]])), SPLIT, "test", SMALL)
    with pytest.raises(ValueError, match="need 2"):
        evaluate(TopKLists(np.array([1, 2]), np.array([[4], [5]])), SPLIT, "test", SMALL)
    with pytest.raises(KeyError, match="no top-K list"):
        evaluate(TopKLists(np.array([1]), np.array([[4, 5]])), SPLIT, "test", SMALL)


class SpyRecommender:
    """Records what the harness hands it; recommends a fixed list minus the exclusions."""

    name = "spy"

    def __init__(self, ranking=(5, 4, 3, 2, 1)):
        self.ranking = ranking
        self.fit_pairs = None
        self.calls = []

    def fit(self, interactions):
        self.fit_pairs = sorted(zip(interactions.user_id, interactions.item_id))

    def recommend(self, user_ids, k, exclude: UserItemSets):
        self.calls.append((user_ids.tolist(), k))
        rows = [[i for i in self.ranking if i not in exclude.items_of(u)][:k] for u in user_ids]
        return np.array([r + [PAD] * (k - len(r)) for r in rows])


@pytest.mark.parametrize("phase, fit_size, users", [("valid", 4, [1, 2]), ("test", 6, [1, 2])])
def test_evaluate_fits_on_the_phase_fit_data(phase, fit_size, users):
    spy = SpyRecommender()
    evaluate(spy, SPLIT, phase, SMALL)
    assert len(spy.fit_pairs) == fit_size
    assert spy.calls == [(users, 2)]


def test_evaluate_all_one_row_per_model():
    table = evaluate_all([("spy", SpyRecommender), ("pop", PopularityRecommender)], SPLIT, "test", SMALL)
    assert list(table.index) == ["spy", "pop"]
    assert list(table.columns) == SMALL.column_names() + ["users", "seconds"]
    assert table.loc["spy", "recall@2"] == 1.0  # ranking 5, 4 first
    markdown = to_markdown(table)
    assert markdown.splitlines()[0].startswith("| model | recall@1 |")
    assert "| spy | 0.5000 | 1.0000 |" in markdown


def test_tuning_uses_validation_only_and_keeps_the_first_best():
    # Validation truth: user 1 -> {3}, user 2 -> {2}. Rankings putting those first win.
    grid = [(5, 4), (3, 2, 1, 4, 5), (2, 3, 1, 4, 5)]
    result = tune_on_validation(lambda r: SpyRecommender(r), grid, SPLIT, SMALL)
    assert result.metric == "recall@2"
    assert result.scores[grid[0]] == 0.0
    assert result.scores[grid[1]] == result.scores[grid[2]] == 1.0
    assert result.best == grid[1]
    with pytest.raises(ValueError, match="empty grid"):
        tune_on_validation(SpyRecommender, [], SPLIT, SMALL)


def load_raw(path):
    raw = pd.read_csv(path, sep="\t")
    raw.columns = [c.split(":")[0] for c in raw.columns]
    return raw.astype({"user_id": np.int64, "item_id": np.int64, "rating": np.float32, "timestamp": np.int64})


@pytest.mark.skipif(not RAW.exists(), reason="raw ML-100k copy not present")
def test_movielens_100k_split_and_ease_beats_popularity():
    split = temporal_split(load_raw(RAW))
    assert (len(split.train), len(split.valid), len(split.test)) == (79926, 10037, 10037)
    start = time.perf_counter()
    ease = evaluate(EASERecommender(), split, "test")
    assert time.perf_counter() - start < 10  # fit + 943 full rankings: seconds, not minutes
    pop = evaluate(PopularityRecommender(), split, "test")
    assert ease["users"] == 943
    assert ease["recall@20"] > 1.5 * pop["recall@20"]
    assert ease["coverage@10"] > pop["coverage@10"] and ease["gini@10"] < pop["gini@10"]


def test_tune_ease_returns_a_validated_config():
    rng = np.random.default_rng(0)
    users, items = np.nonzero(rng.random((40, 30)) < 0.3)
    timestamps = rng.integers(0, 9, users.size)
    data = pd.DataFrame({"user_id": users, "item_id": items, "rating": 1.0, "timestamp": timestamps})
    config, result = tune_ease(temporal_split(data), EASEConfig(l2_grid=(1.0, 10.0, 100.0)))
    assert config.l2 == result.best in (1.0, 10.0, 100.0)
    assert set(result.scores) == {1.0, 10.0, 100.0}
