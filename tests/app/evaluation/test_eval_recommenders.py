"""Baselines against naive formulas; the recommend contract (exclusion, padding, errors)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app.evaluation.config import EASEConfig, ItemKNNConfig
from app.evaluation.recommenders import (
    EASERecommender,
    ItemKNNRecommender,
    PopularityRecommender,
    Recommender,
)
from app.evaluation.sets import PAD, UserItemSets


def random_interactions(seed=0, n_users=30, n_items=25, density=0.25):
    rng = np.random.default_rng(seed)
    users, items = np.nonzero(rng.random((n_users, n_items)) < density)
    # Ids that are not 0..n-1, to exercise the id mapping.
    return pd.DataFrame({"user_id": users * 3 + 7, "item_id": items * 5 + 2, "rating": 4.0, "timestamp": 0})


def dense_binary(interactions):
    users = np.unique(interactions.user_id)
    items = np.unique(interactions.item_id)
    x = np.zeros((users.size, items.size))
    x[np.searchsorted(users, interactions.user_id), np.searchsorted(items, interactions.item_id)] = 1
    return users, items, x


def test_ease_matches_the_closed_form():
    data = random_interactions()
    users, items, x = dense_binary(data)
    l2 = 7.0
    p = np.linalg.inv(x.T @ x + l2 * np.eye(items.size))
    b = np.eye(items.size) - p / np.diag(p)
    np.testing.assert_allclose(np.diag(b), 0, atol=1e-12)
    model = EASERecommender(EASEConfig(l2=l2))
    model.fit(data)
    assert model.item_ids.tolist() == items.tolist()
    np.testing.assert_allclose(model.score(users), x @ b, rtol=1e-4, atol=1e-5)


def naive_knn_similarity(x, shrink):
    n = x.shape[1]
    sim = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                sim[i, j] = (x[:, i] @ x[:, j]) / (np.sqrt(x[:, i].sum() * x[:, j].sum()) + shrink)
    return sim


def test_itemknn_with_all_neighbours_matches_the_naive_sum():
    data = random_interactions(seed=1)
    users, items, x = dense_binary(data)
    model = ItemKNNRecommender(ItemKNNConfig(k=items.size, shrink=3.0, column_chunk=7))
    model.fit(data)
    np.testing.assert_allclose(model.score(users), x @ naive_knn_similarity(x, 3.0), rtol=1e-5, atol=1e-6)


def test_itemknn_keeps_the_k_largest_similarities_per_target_item():
    data = random_interactions(seed=2)
    _, items, x = dense_binary(data)
    k = 4
    model = ItemKNNRecommender(ItemKNNConfig(k=k, shrink=0.5, column_chunk=10))
    model.fit(data)
    w = model._w.toarray()
    sim = naive_knn_similarity(x, 0.5)
    for j in range(items.size):
        expected = np.sort(sim[:, j])[::-1][:k]
        kept = np.sort(w[:, j][w[:, j] > 0])[::-1]
        np.testing.assert_allclose(kept, expected[expected > 0], rtol=1e-5)


def test_popularity_order_ties_to_smaller_id_and_cold_lists():
    data = pd.DataFrame({"user_id": [1, 2, 3, 1, 2, 3, 1], "item_id": [9, 9, 9, 4, 4, 8, 8]})
    pop = PopularityRecommender()
    pop.fit(data)
    assert pop.recommend_cold(2, 3).tolist() == [[9, 4, 8], [9, 4, 8]]
    assert pop.recommend_cold(1, 5).tolist() == [[9, 4, 8, PAD, PAD]]
    history = UserItemSets.from_frame(data)
    assert pop.recommend(np.array([3, 2]), 2, history).tolist() == [[4, PAD], [8, PAD]]


@pytest.mark.parametrize("model_cls", [PopularityRecommender, ItemKNNRecommender, EASERecommender])
def test_recommend_contract(model_cls):
    data = random_interactions(seed=3)
    model = model_cls()
    assert isinstance(model, Recommender)
    with pytest.raises(RuntimeError, match="fit"):
        model.recommend(np.array([7]), 3, UserItemSets.empty())
    model.fit(data)
    history = UserItemSets.from_frame(data)
    users = np.unique(data.user_id)[::-1]
    n_items = data.item_id.nunique()
    top = model.recommend(users, n_items, history)
    assert top.shape == (users.size, n_items)
    for user, row in zip(users, top):
        shown = row[row != PAD]
        assert not set(shown) & set(history.items_of(user))  # never a history item
        assert len(shown) == len(set(shown)) == n_items - len(history.items_of(user))  # rest padded
        assert (row[len(shown):] == PAD).all()
    # Batching changes nothing; no exclusion gives full rows; unknown users are the caller's job.
    small_batches = model_cls(batch_users=4)
    small_batches.fit(data)
    np.testing.assert_array_equal(small_batches.recommend(users, 5, history), model.recommend(users, 5, history))
    assert (model.recommend(users, 5, UserItemSets.empty()) != PAD).all()
    with pytest.raises(KeyError, match="not in the fit data"):
        model.recommend(np.array([1, 7]), 3, history)
    with pytest.raises(ValueError, match="k must be"):
        model.recommend(users, 0, history)


def test_ease_ranks_the_co_consumed_item_first():
    # Items 1 and 2 always go together; a user who saw 1 should get 2 before the others.
    rows = [(u, i) for u in range(20) for i in (1, 2)] + [(u, 3 + u % 4) for u in range(20)] + [(99, 1), (99, 5)]
    data = pd.DataFrame(rows, columns=["user_id", "item_id"])
    for model in (EASERecommender(EASEConfig(l2=1.0)), ItemKNNRecommender(ItemKNNConfig(k=2))):
        model.fit(data)
        assert model.recommend(np.array([99]), 1, UserItemSets.from_frame(data))[0, 0] == 2
