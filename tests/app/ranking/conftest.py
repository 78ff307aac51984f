"""Tiny hand-made worlds for the ranking tests: values are checked against naive loops."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

DAY = 86_400


@pytest.fixture
def tiny_items() -> pd.DataFrame:
    return pd.DataFrame({
        "item_id": [1, 2, 3, 4, 5, 6],
        "title": list("abcdef"),
        "release_year": [1990, 1995, 1995, 2000, np.nan, 1980],
        "topics": [("Action",), ("Action", "Comedy"), ("Comedy",), ("Drama",), ("Drama", "Action"), ()],
        "creator_id": [10, 10, 11, 12, 12, 13],
        "content_rating": ["R", "PG", "PG", "R", "NR", "G"],
        "min_age": [17, 0, 0, 17, 13, 0],
    })


@pytest.fixture
def tiny_users() -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": [1, 2, 3, 4],
        "age": [24, 53, 17, 33],
        "gender": ["M", "F", "M", "F"],
        "occupation": ["technician", "other", "student", "other"],
        "zip_code": ["1", "2", "3", "4"],
    })


@pytest.fixture
def tiny_history() -> pd.DataFrame:
    t0 = 1_000_000_000
    rows = [
        (1, 1, 5, t0), (1, 2, 4, t0 + DAY), (1, 3, 2, t0 + 2 * DAY), (1, 4, 3, t0 + 10 * DAY),
        (2, 1, 3, t0 + DAY), (2, 2, 5, t0 + 3 * DAY), (2, 5, 1, t0 + 20 * DAY),
        (3, 2, 4, t0 + 5 * DAY), (3, 3, 4, t0 + 5 * DAY), (3, 1, 1, t0 + 40 * DAY),
    ]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]).assign(position=-1)


def random_world(seed: int, n_users: int = 40, n_items: int = 60, n_rows: int = 900):
    """A random world with enough structure to train on (users prefer a genre each)."""
    rng = np.random.default_rng(seed)
    genres = ["Action", "Comedy", "Drama", "Horror"]
    items = pd.DataFrame({
        "item_id": np.arange(1, n_items + 1),
        "title": [f"m{i}" for i in range(n_items)],
        "release_year": rng.integers(1950, 2000, n_items),
        "topics": [(genres[i % 4],) for i in range(n_items)],
        "creator_id": rng.integers(0, 15, n_items),
        "content_rating": rng.choice(["G", "PG", "R"], n_items),
        "min_age": rng.choice([0, 13, 17], n_items),
    })
    users = pd.DataFrame({
        "user_id": np.arange(1, n_users + 1),
        "age": rng.integers(15, 70, n_users),
        "gender": rng.choice(["M", "F"], n_users),
        "occupation": rng.choice(["a", "b", "c"], n_users),
        "zip_code": ["0"] * n_users,
    })
    u = rng.integers(1, n_users + 1, n_rows)
    liked_genre = u % 4
    same = rng.random(n_rows) < 0.7
    item = np.where(same, (rng.integers(0, n_items // 4, n_rows) * 4 + liked_genre) % n_items, rng.integers(0, n_items, n_rows)) + 1
    frame = pd.DataFrame({
        "user_id": u, "item_id": item,
        "rating": np.where(same, rng.integers(3, 6, n_rows), rng.integers(1, 4, n_rows)).astype(float),
        "timestamp": 1_000_000_000 + rng.integers(0, 60 * DAY, n_rows),
        "position": rng.integers(1, 10, n_rows),
    }).drop_duplicates(["user_id", "item_id"])
    return items, users, frame.reset_index(drop=True)


@pytest.fixture(scope="session")
def make_world():
    """random_world as a fixture: test modules reach it without importing the tests tree."""
    return random_world
