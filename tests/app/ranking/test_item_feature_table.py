"""The serving table of item-only features: the exact features as of its moment, never from the future."""
from __future__ import annotations

import numpy as np
import pytest

from app.ranking.features import FeatureStore, RankingFeatureAssembler

DAY = 86_400.0
ITEM_ONLY = ("item_log_count", "item_log_count_asof", "item_trend", "item_log_age_days", "item_log_idle_days",
             "item_mean_rating", "item_like_rate", "item_release_year", "item_min_age")


@pytest.fixture(scope="module")
def world(make_world):
    return make_world(seed=11)


@pytest.fixture
def store(world):
    """A store of its own per test: a table only ever moves forward in time."""
    items, users, interactions = world
    return FeatureStore.build(interactions, items, users)


def _pairs(store: FeatureStore, n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    items = rng.integers(-2, store.n_item_slots + 3, n)  # unknown ids on both sides
    return rng.integers(0, store.n_user_slots + 2, n), items


def _ready(store: FeatureStore, now: float, refresh_s: float) -> None:
    store.item_table.rows_for(np.array([now - store.origin]), refresh_s)
    store.item_table.wait(30)


def test_the_table_holds_the_exact_item_features_at_its_moment(store):
    users, items = _pairs(store)
    moment = store.as_of - 3 * DAY
    _ready(store, moment, 60.0)
    table = store.item_table.rows_for(np.array([moment - store.origin]), 60.0)
    assert table is not None and table.moment == moment - store.origin
    exact = store.pair_features(users, items, np.full(len(items), moment))
    served = store.pair_features(users, items, np.full(len(items), moment + 59.0), item_refresh_s=60.0)
    window_names = [k for k in exact if k.startswith("item_log_count_")]
    for name in (*ITEM_ONLY, *window_names):
        np.testing.assert_allclose(served[name], exact[name].astype(np.float32), rtol=1e-6, err_msg=name)
    later = store.pair_features(users, items, np.full(len(items), moment + 59.0))
    for name in set(exact) - set(ITEM_ONLY) - set(window_names):  # user and cross features: per pair, exact
        np.testing.assert_array_equal(served[name], later[name], err_msg=name)


def test_pairs_before_the_moment_or_far_past_it_are_computed_exactly(store):
    users, items = _pairs(store, seed=1)
    moment = store.as_of - 10 * DAY
    _ready(store, moment, 60.0)
    for now in (moment - 1.0, moment + 120.0):  # the future, and past twice the refresh
        served = store.pair_features(users, items, np.full(len(items), now), item_refresh_s=60.0)
        exact = store.pair_features(users, items, np.full(len(items), now))
        for name in exact:
            np.testing.assert_array_equal(served[name], exact[name], err_msg=f"{name} at {now - moment:+.0f} s")


def test_a_request_past_the_refresh_builds_the_next_table_in_the_background(store):
    first = store.as_of - 20 * DAY
    _ready(store, first, 60.0)
    assert store.item_table.rows_for(np.array([first + 61.0 - store.origin]), 60.0).moment == first - store.origin
    store.item_table.wait(30)
    table = store.item_table.rows_for(np.array([first + 62.0 - store.origin]), 60.0)
    assert table is not None and table.moment == first + 61.0 - store.origin


def test_a_table_never_moves_back_in_time(store):
    later = store.as_of - 5 * DAY
    _ready(store, later, 60.0)
    earlier = np.array([later - DAY - store.origin])
    assert store.item_table.rows_for(earlier, 60.0) is None  # computed exactly, no build started
    store.item_table.wait(30)
    assert store.item_table.rows_for(np.array([later - store.origin]), 60.0).moment == later - store.origin


def test_a_store_with_published_items_shares_the_table(store):
    import pandas as pd

    published = store.with_published(pd.DataFrame({
        "item_id": [store.n_item_slots], "creator_id": [3], "release_year": [1999.0], "min_age": [13],
        "content_rating": ["PG"], "topics": [("Drama",)], "created_at": [store.as_of],
    }))
    assert published.item_table is store.item_table


def test_the_assembler_gives_the_dcn_the_same_rows_once_the_table_is_ready(store):
    users, items = _pairs(store, seed=2)
    now = store.as_of + 30.0
    exact = RankingFeatureAssembler(store).batch(users, items, now)
    served_assembler = RankingFeatureAssembler(store, item_refresh_s=60.0)
    before = served_assembler.batch(users, items, now)  # no table for this time yet: exact
    np.testing.assert_array_equal(before.dense, exact.dense)
    store.item_table.wait(30)
    after = served_assembler.batch(users, items, now)  # the table's moment is this request's time
    np.testing.assert_allclose(after.dense, exact.dense, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(after.categorical, exact.categorical)


@pytest.mark.parametrize("days_before", [-1.0, 0.0, 0.5, 7.0, 45.0, 10_000.0])
def test_counting_every_item_at_one_moment_equals_searching_item_by_item(store, days_before):
    n = store.n_item_slots
    slots, known = np.append(np.arange(n), 0), np.append(np.ones(n, bool), False)
    moment = np.float64(store.as_of - store.origin - days_before * DAY)
    counted = store.item_features(slots, known, moment, one_moment=True)
    searched = store.item_features(slots, known, moment)
    for name in searched:
        np.testing.assert_array_equal(counted[name], searched[name], err_msg=name)


def test_a_failed_build_leaves_exact_features_and_is_retried_only_a_refresh_later(store, monkeypatch):
    users, items = _pairs(store, seed=4)
    now = store.as_of - 2 * DAY
    calls = []
    exact_path = store.item_features

    def broken(*args, one_moment=False, **kwargs):
        if not one_moment:  # the per-request exact path still works
            return exact_path(*args, **kwargs)
        calls.append(1)
        raise MemoryError("no room for the table")

    monkeypatch.setattr(store, "item_features", broken)
    served = store.pair_features(users, items, np.full(len(items), now), item_refresh_s=60.0)
    store.item_table.wait(30)
    store.pair_features(users, items, np.full(len(items), now + 30.0), item_refresh_s=60.0)
    store.item_table.wait(30)
    assert len(calls) == 1  # within the refresh after a failure: no second attempt
    monkeypatch.undo()
    exact = store.pair_features(users, items, np.full(len(items), now))
    for name in exact:
        np.testing.assert_array_equal(served[name], exact[name], err_msg=name)
    store.pair_features(users, items, np.full(len(items), now + 61.0), item_refresh_s=60.0)
    store.item_table.wait(30)
    assert store.item_table.rows_for(np.array([now + 61.0 - store.origin]), 60.0) is not None


def test_a_pickled_store_carries_no_table_and_builds_its_own(store):
    import pickle

    _ready(store, store.as_of, 60.0)
    copy = pickle.loads(pickle.dumps(store))
    assert copy.item_table.rows_for(np.array([store.as_of - store.origin]), 60.0) is None
    copy.item_table.wait(30)
    assert copy.item_table.rows_for(np.array([store.as_of - store.origin]), 60.0) is not None
