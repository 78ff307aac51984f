"""The Recommender protocol and the collaborative-filtering baselines (Pop, ItemKNN, EASE).

Every model is evaluated through one protocol: `fit` on an interactions frame, then `recommend`
top-K item ids for users seen in that frame, never an item in `exclude`. A two-stage pipeline
implements the same protocol (it produces lists directly); a model that has a full score matrix
also offers `score`, and `ScoringRecommender` turns scores into lists.

Interactions are implicit feedback: any rating counts as one interaction, repeats collapse.
A model recommends only items present in its fit data (an unseen item has no signal, and in
`rayfeed eval topk` no features either); recommending for a user absent from the fit data is a
KeyError — cold start is the caller's policy (topk_export falls back to PopularityRecommender).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.sparse as sp

from app.evaluation.config import EASEConfig, EvaluationConfig, ItemKNNConfig
from app.evaluation.sets import PAD, UserItemSets

DEFAULT_BATCH_USERS: int = EvaluationConfig.model_fields["score_batch_users"].default


@runtime_checkable
class Recommender(Protocol):
    name: str  # stable identifier: the row label in benchmark tables

    def fit(self, interactions: pd.DataFrame) -> None:
        """Learn from a frame with at least user_id and item_id columns (MovieLens ids)."""

    def recommend(self, user_ids: np.ndarray, k: int, exclude: UserItemSets) -> np.ndarray:
        """(len(user_ids), k) int64 item ids, best first, never an item of the user in `exclude`;
        rows with fewer than k recommendable items are padded with -1."""


RecommenderFactory = Callable[[], Recommender]


class ScoringRecommender(ABC):
    """A model with a dense user × item score matrix over the items of its fit data.

    Subclasses implement `_fit_matrix` and `_score_rows` on the binary user × item matrix;
    this class owns id mapping, batching, exclusion and top-K selection.
    """

    name: str = "scoring"

    def __init__(self, batch_users: int = DEFAULT_BATCH_USERS) -> None:
        if batch_users < 1:
            raise ValueError("batch_users must be >= 1")
        self.batch_users = batch_users
        self._user_ids: np.ndarray | None = None
        self._item_ids: np.ndarray | None = None
        self._x: sp.csr_matrix | None = None

    @property
    def item_ids(self) -> np.ndarray:
        """Column order of `score`: the sorted item ids of the fit data."""
        return self._fitted()[1]

    def fit(self, interactions: pd.DataFrame) -> None:
        users = interactions["user_id"].to_numpy(np.int64)
        items = interactions["item_id"].to_numpy(np.int64)
        if users.size == 0:
            raise ValueError(f"{self.name}: cannot fit on no interactions")
        self._user_ids, rows = np.unique(users, return_inverse=True)
        self._item_ids, cols = np.unique(items, return_inverse=True)
        x = sp.csr_matrix(
            (np.ones(rows.size, dtype=np.float32), (rows, cols)),
            shape=(self._user_ids.size, self._item_ids.size),
        )
        x.sum_duplicates()
        x.data[:] = 1.0  # implicit feedback: repeats collapse to one
        self._x = x
        self._fit_matrix(x)

    def score(self, user_ids: np.ndarray) -> np.ndarray:
        """(len(user_ids), len(item_ids)) float32 scores; higher is better. History not masked."""
        user_index, _, x = self._fitted()
        return self._score_rows(x[self._rows_of(user_ids, user_index)]).astype(np.float32, copy=False)

    def recommend(self, user_ids: np.ndarray, k: int, exclude: UserItemSets) -> np.ndarray:
        if k < 1:
            raise ValueError("k must be >= 1")
        user_ids = np.asarray(user_ids, dtype=np.int64)
        _, item_ids, _ = self._fitted()
        out = np.full((user_ids.size, k), PAD, dtype=np.int64)
        for start in range(0, user_ids.size, self.batch_users):
            batch = user_ids[start:start + self.batch_users]
            scores = self.score(batch).astype(np.float64)
            _mask_excluded(scores, batch, item_ids, exclude)
            out[start:start + batch.size] = _top_k(scores, k, item_ids)
        return out

    @abstractmethod
    def _fit_matrix(self, x: sp.csr_matrix) -> None: ...

    @abstractmethod
    def _score_rows(self, x_rows: sp.csr_matrix) -> np.ndarray: ...

    def _fitted(self) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
        if self._x is None:
            raise RuntimeError(f"{self.name}: call fit before score or recommend")
        return self._user_ids, self._item_ids, self._x

    def _rows_of(self, user_ids: np.ndarray, user_index: np.ndarray) -> np.ndarray:
        user_ids = np.asarray(user_ids, dtype=np.int64)
        pos = np.minimum(np.searchsorted(user_index, user_ids), user_index.size - 1)
        unknown = user_index[pos] != user_ids
        if unknown.any():
            raise KeyError(
                f"{self.name}: {int(unknown.sum())} users not in the fit data, e.g. "
                f"{user_ids[unknown][:5].tolist()} (cold start is the caller's policy)"
            )
        return pos


class PopularityRecommender(ScoringRecommender):
    """Most-interacted items first (ties: smaller item id first). Also the cold-start fallback."""

    name = "Pop"

    def _fit_matrix(self, x: sp.csr_matrix) -> None:
        self._counts = np.asarray(x.sum(axis=0)).ravel().astype(np.float64)

    def _score_rows(self, x_rows: sp.csr_matrix) -> np.ndarray:
        return np.broadcast_to(self._counts, (x_rows.shape[0], self._counts.size))

    def recommend_cold(self, n_users: int, k: int) -> np.ndarray:
        """The same top-k for n_users users with no history (no exclusions)."""
        _, item_ids, _ = self._fitted()
        return np.repeat(_top_k(self._counts[None, :], k, item_ids), n_users, axis=0)


class ItemKNNRecommender(ScoringRecommender):
    """Item-based kNN: score(u, j) = Σ_{i ∈ hist(u)} sim(i, j) over j's k nearest items i.

    sim(i, j) = |U_i ∩ U_j| / (sqrt(|U_i|) sqrt(|U_j|) + shrink) — cosine on binary columns,
    shrunk towards 0 for items seen by few users; sim(j, j) = 0.
    """

    name = "ItemKNN"

    def __init__(self, config: ItemKNNConfig | None = None, batch_users: int = DEFAULT_BATCH_USERS) -> None:
        super().__init__(batch_users)
        self.config = config or ItemKNNConfig()

    def _fit_matrix(self, x: sp.csr_matrix) -> None:
        n_items = x.shape[1]
        co = (x.T @ x).tocsc().astype(np.float64)  # item × item co-occurrence counts
        norms = np.sqrt(co.diagonal())
        k = min(self.config.k, n_items - 1)
        rows_out, cols_out, vals_out = [], [], []
        for start in range(0, n_items, self.config.column_chunk):
            stop = min(start + self.config.column_chunk, n_items)
            sim = co[:, start:stop].toarray()
            sim /= norms[:, None] * norms[None, start:stop] + self.config.shrink
            sim[np.arange(start, stop), np.arange(stop - start)] = 0.0
            if k <= 0:
                continue
            # The k most similar source items of each target column.
            top = np.argpartition(-sim, k - 1, axis=0)[:k]  # k <= n_items - 1 by construction
            vals = np.take_along_axis(sim, top, axis=0)
            keep = vals > 0
            rows_out.append(top[keep])
            cols_out.append(np.broadcast_to(np.arange(start, stop), top.shape)[keep])
            vals_out.append(vals[keep])
        if rows_out:
            rows, cols, vals = (np.concatenate(a) for a in (rows_out, cols_out, vals_out))
        else:
            rows = cols = np.zeros(0, np.int64)
            vals = np.zeros(0)
        self._w = sp.csr_matrix((vals.astype(np.float32), (rows, cols)), shape=(n_items, n_items))

    def _score_rows(self, x_rows: sp.csr_matrix) -> np.ndarray:
        return (x_rows @ self._w).toarray()


class EASERecommender(ScoringRecommender):
    """EASE (Steck, WWW 2019): B = argmin ||X - XB||² + λ||B||² s.t. diag(B) = 0, closed form
    B = I - P / diag(P) with P = (XᵀX + λI)⁻¹; score = X_u B. One items × items solve: on
    ML-100k (1.6k items) well under a second; memory is O(items²).
    """

    name = "EASE"

    def __init__(self, config: EASEConfig | None = None, batch_users: int = DEFAULT_BATCH_USERS) -> None:
        super().__init__(batch_users)
        self.config = config or EASEConfig()

    def _fit_matrix(self, x: sp.csr_matrix) -> None:
        gram = (x.T @ x).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.config.l2
        # Gram + λI is symmetric positive definite: Cholesky is the cheap, stable inverse.
        factor = scipy.linalg.cho_factor(gram, overwrite_a=True, check_finite=False)
        p = scipy.linalg.cho_solve(factor, np.eye(gram.shape[0]), overwrite_b=True, check_finite=False)
        b = p / -np.diag(p)[None, :]
        b[np.diag_indices_from(b)] = 0.0
        self._b = b.astype(np.float32)

    def _score_rows(self, x_rows: sp.csr_matrix) -> np.ndarray:
        return np.asarray(x_rows @ self._b)


def _mask_excluded(scores: np.ndarray, user_ids: np.ndarray, item_ids: np.ndarray, exclude: UserItemSets) -> None:
    """Set scores of excluded (user, item) pairs to -inf in place; unknown items are ignored."""
    ragged = exclude.rows(user_ids)
    if ragged.items.size == 0:
        return
    col = np.minimum(np.searchsorted(item_ids, ragged.items), item_ids.size - 1)
    known = item_ids[col] == ragged.items
    scores[ragged.row_index()[known], col[known]] = -np.inf


def _top_k(scores: np.ndarray, k: int, item_ids: np.ndarray) -> np.ndarray:
    """Row-wise top-k item ids, ties to the smaller item id (stable sort), -inf slots -> PAD."""
    width = min(k, scores.shape[1])
    # Stable full sort: deterministic under ties (popularity has many); O(items log items) a row.
    order = np.argsort(-scores, axis=1, kind="stable")[:, :width]
    top_items = item_ids[order]
    top_items[np.isneginf(np.take_along_axis(scores, order, axis=1))] = PAD
    out = np.full((scores.shape[0], k), PAD, dtype=np.int64)
    out[:, :width] = top_items
    return out
