"""Every user's friends as one compressed-row table (CSR): what the social source and the query's
friend lists read.

A dict of per-user arrays cost ≈ 0.3–0.4 KiB of Python objects per user (three array headers, a
tuple, a dict slot) before any edge: at 100k users 64–79 MiB in each of the two places that built
one (the dataset's friend lists and retrieval's social graph), and 4 s to build. Here a user's
friends are a slice of four flat arrays, built once by one sort.

    friends = FriendLists.from_edges(dataset.social_edges)
    ids, weights, close = friends.of(user_id)       # views: not to be written
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class FriendLists:
    offsets: np.ndarray  # user u's edges are rows offsets[u]:offsets[u + 1]
    friend_ids: np.ndarray  # int64
    weights: np.ndarray  # float64
    close: np.ndarray  # bool

    @classmethod
    def from_edges(cls, edges: pd.DataFrame) -> FriendLists:
        """Rows of `user_id, friend_id, weight, close`; a user's friends keep the table's order."""
        users = edges["user_id"].to_numpy(np.int64)
        if len(users) and users.min() < 0:
            raise ValueError("social_edges.user_id: negative user id")
        order = np.argsort(users, kind="stable")
        counts = np.bincount(users, minlength=1) if len(users) else np.zeros(1, np.int64)
        offsets = np.zeros(len(counts) + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        return cls(offsets, edges["friend_id"].to_numpy(np.int64)[order],
                   edges["weight"].to_numpy(np.float64)[order], edges["close"].to_numpy(bool)[order])

    def of(self, user_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(friend ids, edge weights, close flags); empty for a user without friends or unknown."""
        user = int(user_id)
        if not 0 <= user < len(self.offsets) - 1:
            return np.zeros(0, np.int64), np.zeros(0), np.zeros(0, bool)
        start, end = int(self.offsets[user]), int(self.offsets[user + 1])
        return self.friend_ids[start:end], self.weights[start:end], self.close[start:end]
