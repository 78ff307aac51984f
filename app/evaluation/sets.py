"""Columnar containers for per-user item sets and top-K lists.

Everything is arrays, never per-user Python objects: evaluation runs over every user at once.
Item ids are non-negative; -1 pads a top-K row that has fewer than K items.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

PAD = -1  # fills a top-K row past its last item; never a real item id


class RaggedItems(NamedTuple):
    """Row r holds items[indptr[r]:indptr[r + 1]] (CSR layout without values)."""

    indptr: np.ndarray  # int64, len = rows + 1, indptr[0] == 0
    items: np.ndarray  # int64

    @classmethod
    def from_lists(cls, rows: Sequence[Sequence[int]]) -> RaggedItems:
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        items = np.fromiter((i for r in rows for i in r), dtype=np.int64, count=int(indptr[-1]))
        return cls(indptr, items)

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def row_index(self) -> np.ndarray:
        """The row of each entry of `items`."""
        return np.repeat(np.arange(self.n_rows, dtype=np.int64), self.lengths())


@dataclass(frozen=True)
class UserItemSets:
    """Each user's set of item ids: users sorted and unique, each row sorted and unique."""

    user_ids: np.ndarray  # int64, sorted, unique
    indptr: np.ndarray  # int64
    item_ids: np.ndarray  # int64

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> UserItemSets:
        """From any frame with user_id and item_id columns; repeated pairs collapse to one."""
        pairs = np.unique(
            np.stack([frame["user_id"].to_numpy(np.int64), frame["item_id"].to_numpy(np.int64)], axis=1)
            if len(frame) else np.zeros((0, 2), dtype=np.int64),
            axis=0,
        )
        users, counts = np.unique(pairs[:, 0], return_counts=True)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(users.astype(np.int64), indptr, pairs[:, 1].astype(np.int64))

    @classmethod
    def empty(cls) -> UserItemSets:
        return cls(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.user_ids)

    def n_pairs(self) -> int:
        return int(self.indptr[-1])

    def items_of(self, user_id: int) -> np.ndarray:
        pos = np.searchsorted(self.user_ids, user_id)
        if pos == len(self.user_ids) or self.user_ids[pos] != user_id:
            return np.zeros(0, np.int64)
        return self.item_ids[self.indptr[pos]:self.indptr[pos + 1]]

    def rows(self, user_ids: np.ndarray) -> RaggedItems:
        """Item sets aligned with `user_ids` (any order, repeats allowed); unknown users get none."""
        user_ids = np.asarray(user_ids, dtype=np.int64)
        pos = np.searchsorted(self.user_ids, user_ids)
        pos_clipped = np.minimum(pos, max(len(self.user_ids) - 1, 0))
        found = (pos < len(self.user_ids)) & (self.user_ids[pos_clipped] == user_ids) if len(self) else (
            np.zeros(len(user_ids), dtype=bool)
        )
        starts = np.where(found, self.indptr[pos_clipped], 0)
        lengths = np.where(found, self.indptr[pos_clipped + 1] - starts, 0) if len(self) else starts
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        gather = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1], dtype=np.int64)
        return RaggedItems(indptr, self.item_ids[gather])

    def contains_pairs(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """Elementwise: is item_ids[i] in the set of user_ids[i]? (Any shapes that broadcast.)"""
        user_ids, item_ids = np.broadcast_arrays(np.asarray(user_ids, np.int64), np.asarray(item_ids, np.int64))
        scale = _key_scale(self.item_ids, item_ids)
        keys = np.repeat(self.user_ids, np.diff(self.indptr)) * scale + self.item_ids
        query = user_ids * scale + item_ids
        return np.isin(query, keys) & (item_ids >= 0)


@dataclass(frozen=True)
class TopKLists:
    """Ranked recommendations: row r (user user_ids[r]) is best-first, padded with PAD (-1).

    The input a two-stage pipeline hands to the evaluator when it produces lists, not scores.
    """

    user_ids: np.ndarray  # int64 (n_users,)
    items: np.ndarray  # int64 (n_users, K)

    def __post_init__(self) -> None:
        object.__setattr__(self, "user_ids", np.asarray(self.user_ids, dtype=np.int64))
        object.__setattr__(self, "items", np.asarray(self.items, dtype=np.int64).reshape(len(self.user_ids), -1))
        if len(np.unique(self.user_ids)) != len(self.user_ids):
            raise ValueError("TopKLists has a user more than once")

    @property
    def k(self) -> int:
        return self.items.shape[1]

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> TopKLists:
        """From rows (user_id, item_id, rank), rank starting at 1 — the `rayfeed eval topk` output."""
        if frame.empty:
            return cls(np.zeros(0, np.int64), np.zeros((0, 0), np.int64))
        users, row = np.unique(frame["user_id"].to_numpy(np.int64), return_inverse=True)
        rank = frame["rank"].to_numpy(np.int64)
        if rank.min() < 1:
            raise ValueError("ranks start at 1")
        items = np.full((len(users), int(rank.max())), PAD, dtype=np.int64)
        items[row, rank - 1] = frame["item_id"].to_numpy(np.int64)
        return cls(users, items)

    def to_frame(self) -> pd.DataFrame:
        """Rows (user_id, item_id, rank) with rank starting at 1; padding dropped."""
        rows, cols = np.nonzero(self.items != PAD)
        return pd.DataFrame({
            "user_id": self.user_ids[rows],
            "item_id": self.items[rows, cols],
            "rank": (cols + 1).astype(np.int64),
        })

    def rows_for(self, user_ids: np.ndarray) -> np.ndarray:
        """The (len(user_ids), K) block for these users; KeyError naming the missing ones."""
        user_ids = np.asarray(user_ids, dtype=np.int64)
        order = np.argsort(self.user_ids)
        pos = np.searchsorted(self.user_ids, user_ids, sorter=order)
        pos = np.minimum(pos, max(len(order) - 1, 0))
        found = self.user_ids[order[pos]] == user_ids if len(order) else np.zeros(len(user_ids), bool)
        if not found.all():
            missing = user_ids[~found]
            raise KeyError(f"{len(missing)} users have no top-K list, e.g. {missing[:5].tolist()}")
        return self.items[order[pos]]


def _key_scale(*item_arrays: np.ndarray) -> np.int64:
    """A multiplier making user * scale + item unique per (user, item) pair."""
    top = max((int(a.max()) for a in item_arrays if a.size), default=0)
    return np.int64(top + 1)
