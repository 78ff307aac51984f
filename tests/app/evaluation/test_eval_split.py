"""Per-user temporal split: the rounding rule, time order, disjointness and the phase protocol."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.evaluation.config import SplitConfig
from app.evaluation.split import split_sizes, temporal_split


def frame(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]).astype(
        {"user_id": np.int64, "item_id": np.int64, "rating": np.float32, "timestamp": np.int64}
    )


@pytest.mark.parametrize(
    "n, expected",
    [(1, (1, 0, 0)), (2, (1, 0, 1)), (3, (1, 1, 1)), (4, (2, 1, 1)), (10, (8, 1, 1)),
     (15, (11, 2, 2)), (20, (16, 2, 2)), (24, (20, 2, 2)), (25, (19, 3, 3)), (737, (589, 74, 74))],
)
def test_rounding_rule_worked_examples(n, expected):
    sizes = split_sizes(np.array([n]), SplitConfig())
    assert tuple(int(s[0]) for s in sizes) == expected


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 2000), min_size=1, max_size=30),
    st.floats(0.05, 0.45), st.floats(0.05, 0.45),
)
def test_rounding_rule_invariants(ns, f_valid, f_test):
    config = SplitConfig(train_fraction=1 - f_valid - f_test, valid_fraction=f_valid, test_fraction=f_test)
    n = np.array(ns)
    n_train, n_valid, n_test = split_sizes(n, config)
    assert (n_train + n_valid + n_test == n).all()
    assert (n_train >= 1).all()
    assert ((n_test >= 1) == (n >= 2)).all()
    assert ((n_valid >= 1) == (n >= 3)).all()
    # Away from the small-n clamps, each part is its fraction rounded half up.
    big = n >= 40
    np.testing.assert_array_equal(n_test[big], np.floor(f_test * n[big] + 0.5 + 1e-9))


def test_split_orders_by_time_then_item_and_partitions_the_input():
    rng = np.random.default_rng(0)
    rows = []
    for user in range(1, 30):
        for item in rng.choice(200, size=int(rng.integers(1, 40)), replace=False):
            rows.append((user, int(item), 4.0, int(rng.integers(0, 5))))  # many timestamp ties
    interactions = frame(rows)
    split = temporal_split(interactions)
    parts = {"train": split.train, "valid": split.valid, "test": split.test}
    combined = pd.concat(parts.values()).sort_values(["user_id", "item_id"], ignore_index=True)
    pd.testing.assert_frame_equal(combined, interactions.sort_values(["user_id", "item_id"], ignore_index=True))
    assert list(split.train.columns) == list(interactions.columns)
    for user, group in interactions.groupby("user_id"):
        ordered = list(group.sort_values(["timestamp", "item_id"]).item_id)
        n_train, n_valid, _ = (int(s[0]) for s in split_sizes(np.array([len(group)]), SplitConfig()))
        assert list(split.train[split.train.user_id == user].item_id) == ordered[:n_train]
        assert list(split.valid[split.valid.user_id == user].item_id) == ordered[n_train:n_train + n_valid]
        assert list(split.test[split.test.user_id == user].item_id) == ordered[n_train + n_valid:]


def test_phase_protocol_fit_history_truth():
    # User 1 re-consumes item 10 in test: it is history, so it is not a target.
    interactions = frame([
        (1, 10, 5, 1), (1, 11, 5, 2), (1, 12, 5, 3), (1, 13, 5, 4), (1, 10, 5, 5),
        (2, 20, 3, 1), (2, 21, 3, 2), (2, 22, 3, 3),
        (3, 30, 1, 1),
    ])
    split = temporal_split(interactions)
    assert len(split.fit_data("valid")) == len(split.train) == 5
    assert len(split.fit_data("test")) == len(split.train) + len(split.valid) == 7
    assert split.history("valid").items_of(1).tolist() == [10, 11, 12]
    assert split.history("test").items_of(1).tolist() == [10, 11, 12, 13]
    assert split.truth("valid").items_of(1).tolist() == [13]
    assert split.truth("test").user_ids.tolist() == [2]  # user 1's only test item is seen, user 3 has none
    assert split.truth("test").items_of(2).tolist() == [22]
    assert split.catalogue.tolist() == [10, 11, 12, 13, 20, 21, 22, 30]
    with pytest.raises(ValueError, match="phase"):
        split.fit_data("train")


def test_bad_fractions_and_columns_are_rejected():
    with pytest.raises(ValidationError, match="sum to 1"):
        temporal_split(frame([(1, 1, 1, 1)]), (0.8, 0.2, 0.1))
    with pytest.raises(ValueError, match="timestamp"):
        temporal_split(pd.DataFrame({"user_id": [1], "item_id": [1]}))
