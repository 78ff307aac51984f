"""One table layout for every data source (MovieLens-100k, the synthetic world).

users:         user_id, age, gender, occupation, zip_code
items:         item_id, title, release_year, topics (tuple[str]), creator_id, content_rating, min_age
creators:      creator_id, entity (Freebase MID or "unknown:<item_id>"), n_items
interactions:  user_id, item_id, rating, timestamp, position (-1 when unknown)
social_edges:  user_id, friend_id, weight, close (directed rows; the graph is symmetric)

Labels from ratings (documented once, used by every model):
  click = any rating; like = rating >= 4; share = rating == 5; hide = rating <= 2;
  watch fraction = (rating - 1) / 4 (a proxy for E(watch_time) in [0, 1]).
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from collections.abc import Iterable
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from app.data.errors import DataFormatError
from app.data.friends import FriendLists

if TYPE_CHECKING:
    from app.data.ids import IdMaps

LIKE_MIN_RATING = 4.0
SHARE_MIN_RATING = 5.0
HIDE_MAX_RATING = 2.0


def labels_from_ratings(ratings: np.ndarray) -> dict[str, np.ndarray]:
    """The documented rating → label mapping for the multi-task heads."""
    r = np.asarray(ratings, dtype=np.float32)
    return {
        "click": np.ones_like(r),
        "like": (r >= LIKE_MIN_RATING).astype(np.float32),
        "share": (r >= SHARE_MIN_RATING).astype(np.float32),
        "hide": (r <= HIDE_MAX_RATING).astype(np.float32),
        "watch": np.clip((r - 1.0) / 4.0, 0.0, 1.0),
    }


USER_COLUMNS = ("user_id", "age", "gender", "occupation", "zip_code")
ITEM_COLUMNS = ("item_id", "title", "release_year", "topics", "creator_id", "content_rating", "min_age")
INTERACTION_COLUMNS = ("user_id", "item_id", "rating", "timestamp", "position")
EDGE_COLUMNS = ("user_id", "friend_id", "weight", "close")


def shared_topic_tuples(column: Iterable) -> list[tuple[str, ...]]:
    """Each row's topics as a tuple, one tuple object per distinct combination. Rows read from
    parquet each got their own tuple and strings: ≈ 60 MiB at 1M items in every process holding
    the catalogue, for a few thousand distinct combinations."""
    shared: dict[tuple[str, ...], tuple[str, ...]] = {}
    return [shared.setdefault(key, key) for key in (t if isinstance(t, tuple) else tuple(t) for t in column)]


@dataclass
class Dataset:
    """Every table of one world, validated on construction."""

    name: str
    users: pd.DataFrame
    items: pd.DataFrame
    creators: pd.DataFrame
    interactions: pd.DataFrame
    social_edges: pd.DataFrame
    topics: tuple[str, ...]
    meta: dict[str, object] = field(default_factory=dict)
    # The user's own ids (app/data/ids.py); None when they already are the dense 1..n integers.
    ids: IdMaps | None = None
    # The whole event log, impressions included, when the data came as events (the ranker's labels).
    events: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        for table, columns in (
            ("users", USER_COLUMNS),
            ("items", ITEM_COLUMNS),
            ("interactions", INTERACTION_COLUMNS),
            ("social_edges", EDGE_COLUMNS),
        ):
            missing = set(columns) - set(getattr(self, table).columns)
            if missing:
                raise DataFormatError(f"<{self.name}:{table}>", None, sorted(missing)[0], "missing column")
        self.users = self.users.sort_values("user_id").reset_index(drop=True)
        self.items = self.items.sort_values("item_id").reset_index(drop=True)
        self.items["topics"] = pd.Series(shared_topic_tuples(self.items["topics"]), dtype=object)
        unknown_users = ~self.interactions["user_id"].isin(self.users["user_id"])
        unknown_items = ~self.interactions["item_id"].isin(self.items["item_id"])
        for mask, column in ((unknown_users, "user_id"), (unknown_items, "item_id")):
            if mask.any():
                row = int(np.flatnonzero(mask.to_numpy())[0])
                raise DataFormatError(
                    f"<{self.name}:interactions>", row + 1, column,
                    f"unknown id {int(self.interactions[column].iloc[row])}",
                )

    def for_serving(self) -> Dataset:
        """These tables without the interaction log, the raw events and the edge rows: a serving
        replica's history is the engagement log its artifact carries, and its friends the CSR
        `friend_lists` (built here, carried over). At 1M items the log is ≈ 0.1 GiB and the edge
        rows ≈ 30 MiB in every replica that keeps the dataset. The empty frames are copies: a
        slice would be a view that keeps the whole table's columns alive."""
        friends = self.friend_lists
        serving = dataclasses.replace(self, interactions=self.interactions.iloc[:0].copy(), events=None,
                                      social_edges=self.social_edges.iloc[:0].copy())
        serving.__dict__["friend_lists"] = friends  # cached_property's slot: not rebuilt from no rows
        return serving

    def with_item_ids_only(self) -> Dataset:
        """These tables with the items frame cut to its id column, for a replica whose catalogue
        arrays (app/catalog.py) already hold every item attribute it reads: Retrieval. Titles,
        ratings and topic lists are ≈ 80 MiB at 1M items. Per-item arrays already computed (the
        catalogue's creators and ages) and the friend lists carry over; the ids-only frame is
        not a full table any more, so nothing may build item attributes from it."""
        slim = copy.copy(self)  # no __post_init__: the tables were validated when this one was built
        slim.items = self.items[["item_id"]].copy()
        return slim

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @cached_property
    def max_user_id(self) -> int:
        return int(self.users["user_id"].max())

    @cached_property
    def max_item_id(self) -> int:
        return int(self.items["item_id"].max())

    @cached_property
    def item_topic_matrix(self) -> np.ndarray:
        """(max_item_id + 1) × n_topics multi-hot, indexed by item id (row 0 unused)."""
        return self.new_item_topic_matrix()

    def normalised_topic_matrix(self) -> np.ndarray:
        """`new_item_topic_matrix` with every row L2-normalised (cosines between items): the
        catalogue's form, which the artifact's snapshot carries ready to map."""
        topics = self.new_item_topic_matrix()
        norms = np.linalg.norm(topics, axis=1, keepdims=True)
        np.divide(topics, norms, out=topics, where=norms > 0)
        return topics

    def new_item_topic_matrix(self) -> np.ndarray:
        """`item_topic_matrix` built afresh and not kept: for a caller that transforms it in place
        (the catalogue normalises it), so a replica does not hold both (0.12 GiB each at 1M items)."""
        index = {t: i for i, t in enumerate(self.topics)}
        matrix = np.zeros((self.max_item_id + 1, len(self.topics)), dtype=np.float32)
        for item_id, topics in zip(self.items["item_id"].to_numpy(), self.items["topics"]):
            for t in topics:
                matrix[item_id, index[t]] = 1.0
        return matrix

    @cached_property
    def item_creator(self) -> np.ndarray:
        """creator_id per item id (−1 for ids not in the catalogue)."""
        out = np.full(self.max_item_id + 1, -1, dtype=np.int64)
        out[self.items["item_id"].to_numpy()] = self.items["creator_id"].to_numpy()
        return out

    @cached_property
    def item_min_age(self) -> np.ndarray:
        out = np.zeros(self.max_item_id + 1, dtype=np.int16)
        out[self.items["item_id"].to_numpy()] = self.items["min_age"].to_numpy()
        return out

    def friends_of(self, user_id: int) -> np.ndarray:
        return self.friend_lists.of(user_id)[0]

    def close_friends_of(self, user_id: int) -> np.ndarray:
        friends, _, close = self.friend_lists.of(user_id)
        return friends[close]

    @cached_property
    def friend_lists(self) -> FriendLists:
        """The social graph as one CSR table (app/data/friends.py), shared with retrieval's social source."""
        return FriendLists.from_edges(self.social_edges)

    def user_row(self, user_id: int) -> dict[str, object] | None:
        position = np.searchsorted(self.users["user_id"].to_numpy(), user_id)
        if position >= len(self.users) or self.users["user_id"].iat[position] != user_id:
            return None
        return self.users.iloc[position].to_dict()
