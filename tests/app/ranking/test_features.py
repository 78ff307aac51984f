"""Feature values against naive loops on tiny data; schema declaration; persistence."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.pipeline.candidates import Candidates, FeedQuery
from app.ranking import FeatureStore, RankingFeatureAssembler, RankingFeatureConfig, declare_features

DAY = 86_400


def naive_item_stats(history: pd.DataFrame, item: int, now: float, window_days: float, prior: float):
    h = history[(history["item_id"] == item) & (history["timestamp"] <= now)]
    in_window = h[h["timestamp"] > now - window_days * DAY]
    mean_r, mean_like = history["rating"].mean(), (history["rating"] >= 4).mean()
    return {
        "count_asof": len(h),
        "window": len(in_window),
        "mean_rating": (h["rating"].sum() + prior * mean_r) / (len(h) + prior),
        "like_rate": ((h["rating"] >= 4).sum() + prior * mean_like) / (len(h) + prior),
        "age_days": (now - h["timestamp"].min()) / DAY if len(h) else 0.0,
        "idle_days": (now - h["timestamp"].max()) / DAY if len(h) else 0.0,
    }


def test_item_statistics_as_of_now_match_naive(tiny_history, tiny_items, tiny_users):
    config = RankingFeatureConfig(window_days=(1.0, 7.0, 30.0))
    store = FeatureStore.build(tiny_history, tiny_items, tiny_users, config)
    t0 = tiny_history["timestamp"].min()
    for now in (t0 - 5, t0, t0 + DAY, t0 + 3 * DAY + 1, t0 + 25 * DAY, t0 + 100 * DAY):
        for item in range(1, 7):
            f = store.pair_features(np.array([1]), np.array([item]), np.array([float(now)]))
            want = naive_item_stats(tiny_history, item, now, 7.0, config.rating_prior_count)
            assert f["item_log_count_asof"][0] == pytest.approx(np.log1p(want["count_asof"]))
            assert f["item_log_count_7d"][0] == pytest.approx(np.log1p(want["window"]))
            assert f["item_mean_rating"][0] == pytest.approx(want["mean_rating"])
            assert f["item_like_rate"][0] == pytest.approx(want["like_rate"])
            assert f["item_log_age_days"][0] == pytest.approx(np.log1p(want["age_days"]))
            assert f["item_log_idle_days"][0] == pytest.approx(np.log1p(want["idle_days"]))
            total = (tiny_history["item_id"] == item).sum()
            assert f["item_log_count"][0] == pytest.approx(np.log1p(total))


def test_user_genre_and_creator_affinity_match_naive(tiny_history, tiny_items, tiny_users):
    store = FeatureStore.build(tiny_history, tiny_items, tiny_users)
    topics = dict(zip(tiny_items["item_id"], tiny_items["topics"]))
    creator = dict(zip(tiny_items["item_id"], tiny_items["creator_id"]))
    users, items = np.repeat([1, 2, 3, 4], 6), np.tile(np.arange(1, 7), 4)
    f = store.pair_features(users, items, np.full(len(users), store.as_of))
    for k, (u, i) in enumerate(zip(users, items)):
        hist = tiny_history[tiny_history["user_id"] == u]["item_id"].tolist()
        share = {g: sum(g in topics[j] for j in hist) / max(len(hist), 1) for g in ("Action", "Comedy", "Drama")}
        want = np.mean([share[g] for g in topics[i]]) if topics[i] else 0.0
        assert f["genre_affinity"][k] == pytest.approx(want)
        assert f["genre_affinity_max"][k] == pytest.approx(max([share[g] for g in topics[i]], default=0.0))
        same_creator = sum(creator[j] == creator[i] for j in hist)
        assert f["creator_log_count"][k] == pytest.approx(np.log1p(same_creator))
        assert f["creator_share"][k] == pytest.approx(same_creator / max(len(hist), 1))
        assert f["user_log_count"][k] == pytest.approx(np.log1p(len(hist)))


def test_cooccurrence_features_match_naive(tiny_history, tiny_items, tiny_users):
    config = RankingFeatureConfig(cooc_neighbours=100, cooc_shrink=1.0, recent_items=2)
    store = FeatureStore.build(tiny_history, tiny_items, tiny_users, config)
    sets = {u: set(g["item_id"]) for u, g in tiny_history.groupby("user_id")}
    holders = {i: {u for u, s in sets.items() if i in s} for i in range(1, 7)}

    def cos(a: int, b: int) -> float:
        if a == b:
            return 0.0
        n_ab = len(holders[a] & holders[b])
        return n_ab / (np.sqrt(len(holders[a]) * len(holders[b])) + 1.0) if n_ab else 0.0

    users, items = np.repeat([1, 2, 3], 6), np.tile(np.arange(1, 7), 3)
    f = store.pair_features(users, items, np.full(len(users), store.as_of))
    for k, (u, i) in enumerate(zip(users, items)):
        ordered = tiny_history[tiny_history["user_id"] == u].sort_values(["timestamp", "item_id"])["item_id"].tolist()
        assert f["cooc_sum"][k] == pytest.approx(sum(cos(j, i) for j in ordered), rel=1e-5)
        assert f["cooc_recent"][k] == pytest.approx(sum(cos(j, i) for j in ordered[-2:]), rel=1e-5)


def test_cf_score_is_ease_closed_form(tiny_history, tiny_items, tiny_users):
    config = RankingFeatureConfig(cf_l2=3.0)
    store = FeatureStore.build(tiny_history, tiny_items, tiny_users, config)
    x = np.zeros((5, 7))
    for u, i in zip(tiny_history["user_id"], tiny_history["item_id"]):
        x[u, i] = 1.0
    p = np.linalg.inv(x.T @ x + 3.0 * np.eye(7))
    b = np.eye(7) - p / np.diag(p)
    users, items = np.repeat([1, 2, 3], 6), np.tile(np.arange(1, 7), 3)
    f = store.pair_features(users, items, np.full(len(users), store.as_of))
    np.testing.assert_allclose(f["cf_score"], (x @ b)[users, items], rtol=1e-4, atol=1e-6)


def test_unknown_users_and_items_get_neutral_values(tiny_history, tiny_items, tiny_users):
    store = FeatureStore.build(tiny_history, tiny_items, tiny_users)
    f = store.pair_features(np.array([999, 1]), np.array([2, 999]), np.array([store.as_of] * 2))
    assert f["user_log_count"][0] == 0 and f["cooc_sum"][0] == 0 and f["user_gender"][0] == 0
    assert f["item_id"][1] == 0 and f["item_log_count"][1] == 0 and f["cooc_sum"][1] == 0
    assert all(np.isfinite(np.asarray(v, dtype=float)).all() for v in f.values())


def test_assembler_produces_exactly_the_declared_features(tiny_history, tiny_items, tiny_users):
    store = FeatureStore.build(tiny_history, tiny_items, tiny_users)
    assembler = RankingFeatureAssembler(store)
    declared = [d.name for d in declare_features(store.config)]
    assert list(assembler.produces) == declared
    cands = Candidates.from_source("ann", np.array([1, 4, 6]), np.array([0.3, 0.2, 0.1]))
    columns = assembler.hydrate(FeedQuery(user_id=1), cands)
    assert set(columns) == set(declared)
    assert all(len(v) == 3 for v in columns.values())


def test_broken_feature_graph_fails_at_build_time(tiny_history, tiny_items, tiny_users, monkeypatch):
    store = FeatureStore.build(tiny_history, tiny_items, tiny_users)
    original = store.pair_features

    def missing_one(*args):
        f = original(*args)
        f.pop("genre_affinity")
        return f

    monkeypatch.setattr(store, "pair_features", missing_one)
    with pytest.raises(ValueError, match="genre_affinity"):
        RankingFeatureAssembler(store)


def test_missing_source_columns_are_zero_and_present_ones_pass_through(tiny_history, tiny_items, tiny_users):
    assembler = RankingFeatureAssembler(FeatureStore.build(tiny_history, tiny_items, tiny_users))
    bare = Candidates.from_source("trending", np.array([1, 2]), np.array([1.0, 2.0]))
    columns = assembler.hydrate(FeedQuery(user_id=1), bare)
    for name in ("src_ann", "src_social", "src_trending", "src_coengagement", "n_sources"):
        np.testing.assert_array_equal(columns[name], 0.0)
    merged = bare.with_features({"src_ann": np.array([0.5, np.nan]), "n_sources": np.array([2.0, 1.0])})
    columns = assembler.hydrate(FeedQuery(user_id=1), merged)
    np.testing.assert_allclose(columns["src_ann"], [0.5, 0.0])
    np.testing.assert_allclose(columns["n_sources"], [2.0, 1.0])
    np.testing.assert_array_equal(columns["src_social"], 0.0)


def test_store_save_load_round_trip(tmp_path, tiny_history, tiny_items, tiny_users):
    store = FeatureStore.build(tiny_history, tiny_items, tiny_users)
    store.save(tmp_path)
    loaded = FeatureStore.load(tmp_path)
    assert loaded.schema() == store.schema() and loaded.as_of == store.as_of
    users, items = np.repeat([1, 2, 3, 7], 7), np.tile(np.arange(0, 7), 4)
    now = np.full(len(users), store.as_of)
    a, b = store.pair_features(users, items, now), loaded.pair_features(users, items, now)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# The catalogue fixtures are read-only, so sharing them across generated inputs is safe.
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 5), st.integers(0, 40)),
        min_size=1, max_size=30, unique_by=lambda r: (r[0], r[1]),
    ),
    now_day=st.integers(-2, 45),
)
def test_window_counts_property(rows, now_day, tiny_items, tiny_users):
    history = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    history["timestamp"] = 1_000_000_000 + history["timestamp"] * DAY // 2
    store = FeatureStore.build(history, tiny_items, tiny_users, RankingFeatureConfig(window_days=(1.0, 7.0)))
    now = 1_000_000_000 + now_day * DAY / 2
    items = np.arange(1, 7)
    f = store.pair_features(np.ones(6, np.int64), items, np.full(6, now))
    for k, item in enumerate(items):
        ts = history.loc[history["item_id"] == item, "timestamp"]
        assert np.expm1(f["item_log_count_1d"][k]) == pytest.approx(((ts <= now) & (ts > now - DAY)).sum())
        assert np.expm1(f["item_log_count_asof"][k]) == pytest.approx((ts <= now).sum())
        assert f["item_log_count_1d"][k] <= f["item_log_count_7d"][k] <= f["item_log_count_asof"][k]
