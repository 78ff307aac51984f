"""Freshness strategies: the Strategy contract for each, what observe changes, top-k, the log."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from app.evaluation.sets import PAD, UserItemSets
from app.freshness.config import EnsembleConfig, FineTuneConfig, MicrobatchConfig
from app.freshness.ensemble import ContextEnsembleStrategy
from app.freshness.log import InteractionLog
from app.freshness.strategies import (
    DynamicEmbeddingStrategy,
    MicrobatchRegularisedStrategy,
    NaiveIncrementalStrategy,
    StaticStrategy,
    top_k,
)

TUNE = FineTuneConfig(epochs=2, lr=0.01, batch_size=32)
K = 10


def _distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return float(sum((a[n].float() - b[n].float()).pow(2).sum() for n in a if a[n].is_floating_point()))


def _all(base, base_period, log):
    static = StaticStrategy(base, log, base_period)
    naive = NaiveIncrementalStrategy(base, log, TUNE)
    return [
        static,
        DynamicEmbeddingStrategy(base, log),
        naive,
        MicrobatchRegularisedStrategy(base, log, base_period, MicrobatchConfig(epochs=1, batch_size=32, replay_sample=100), seed=0),
        ContextEnsembleStrategy(static, naive, log, EnsembleConfig()),
    ]


def test_every_strategy_keeps_the_recommend_contract_before_and_after_observing(base_snapshot, timeline) -> None:
    base_period, later, start = timeline
    log = InteractionLog(base_period, as_of=start)
    strategies = _all(base_snapshot, base_period, log)
    window = later[later["timestamp"] < start + 3 * 86_400]
    users = np.unique(window["user_id"].to_numpy())[:15]
    for observed in (False, True):
        seen = log.seen
        for strategy in strategies:
            topk = strategy.recommend(users, K, seen)
            assert topk.shape == (len(users), K), strategy.name
            real = topk != PAD
            assert np.isin(topk[real], log.items).all(), strategy.name
            assert not seen.contains_pairs(np.repeat(users[:, None], K, 1)[real], topk[real]).any(), strategy.name
            assert all(len(set(row[row != PAD])) == (row != PAD).sum() for row in topk), strategy.name
        if not observed:
            for strategy in strategies:
                strategy.observe(window)
            log.add(window, as_of=start + 3 * 86_400)


def test_static_and_dynamic_keep_the_base_weights_updates_do_not(base_snapshot, timeline) -> None:
    base_period, later, start = timeline
    log = InteractionLog(base_period, as_of=start)
    static, dynamic, naive, micro, _ = _all(base_snapshot, base_period, log)
    window = later[later["timestamp"] < start + 3 * 86_400]
    for strategy in (static, dynamic, naive, micro):
        strategy.observe(window)
    base_state = base_snapshot.state_dict()
    assert _distance(dynamic.snapshot.state_dict(), base_state) == 0.0
    assert _distance(naive.snapshot.state_dict(), base_state) > 0.0
    assert _distance(micro.snapshot.state_dict(), base_state) > 0.0
    # the naive update learned the window's users and items
    rows = naive.snapshot.features.user_rows(window["user_id"].to_numpy())
    assert naive.snapshot.known_user_rows[rows].all()


def _on(items: np.ndarray, scores: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Scores of the `keep` items, renormalised over them (the catalogue grows with the log)."""
    picked = scores[:, np.searchsorted(items, keep)]
    return picked - np.log(np.exp(picked).sum(axis=1, keepdims=True))


def test_dynamic_embeddings_follow_the_log_and_static_does_not(base_snapshot, timeline) -> None:
    base_period, later, start = timeline
    log = InteractionLog(base_period, as_of=start)
    static, dynamic = StaticStrategy(base_snapshot, log, base_period), DynamicEmbeddingStrategy(base_snapshot, log)
    window = later[later["timestamp"] < start + 5 * 86_400]
    user = np.array([int(window["user_id"].value_counts().index[0])])
    keep = log.items
    before_static, before_dynamic = _on(*static.scores(user), keep), _on(*dynamic.scores(user), keep)
    log.add(window, as_of=start + 5 * 86_400)
    assert not np.allclose(_on(*dynamic.scores(user), keep), before_dynamic, atol=1e-4)
    np.testing.assert_allclose(_on(*static.scores(user), keep), before_static, atol=1e-6)


def test_microbatch_anchor_keeps_the_model_nearer_the_base(base_snapshot, timeline) -> None:
    base_period, later, start = timeline
    window = later[later["timestamp"] < start + 5 * 86_400]
    distances = {}
    for anchor_l2 in (0.0, 10.0):
        log = InteractionLog(base_period, as_of=start)
        tune = MicrobatchConfig(epochs=3, lr=0.01, batch_size=32, replay_sample=50, anchor_l2=anchor_l2)
        micro = MicrobatchRegularisedStrategy(base_snapshot, log, base_period, tune, seed=0)
        micro.observe(window)
        distances[anchor_l2] = _distance(micro.snapshot.state_dict(), base_snapshot.state_dict())
    assert distances[10.0] < 0.5 * distances[0.0]


def test_interaction_log_histories_are_newest_first_and_time_moves_forward() -> None:
    frame = pd.DataFrame({"user_id": [1, 1, 2, 1], "item_id": [10, 11, 20, 12],
                          "rating": [4, 4, 4, 4], "timestamp": [1.0, 2.0, 2.0, 3.0]})
    log = InteractionLog(frame.iloc[:3], as_of=2.5)
    np.testing.assert_array_equal(log.latest_items(np.array([1, 2, 3]), 3), [[11, 10, PAD], [20, PAD, PAD], [PAD] * 3])
    log.add(frame.iloc[3:], as_of=3.5)
    np.testing.assert_array_equal(log.latest_items(np.array([1]), 2), [[12, 11]])
    np.testing.assert_array_equal(log.last_seen(np.array([1, 3])), [3.0, np.nan])
    assert log.seen.items_of(1).tolist() == [10, 11, 12]
    with pytest.raises(ValueError, match="forward"):
        log.add(frame.iloc[:0], as_of=1.0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n_items=st.integers(1, 12), k=st.integers(1, 8))
def test_top_k_matches_a_sort_and_filter_reference(seed, n_items, k) -> None:
    rng = np.random.default_rng(seed)
    users = np.array([3, 7])
    items = rng.choice(100, size=n_items, replace=False)
    scores = rng.normal(size=(2, n_items))
    excluded = pd.DataFrame({"user_id": [3, 3, 7], "item_id": rng.choice(items, 3)})
    exclude = UserItemSets.from_frame(excluded)
    got = top_k(scores, items, users, k, exclude)
    for r, user in enumerate(users):
        allowed = [(s, i) for s, i in zip(scores[r], items) if i not in set(exclude.items_of(user))]
        expected = [i for _, i in sorted(allowed, key=lambda t: -t[0])][:k]
        assert got[r].tolist() == expected + [PAD] * (k - len(expected))
