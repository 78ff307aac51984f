"""Ranking metrics as pure, vectorised functions of a top-K matrix and ground-truth sets.

Inputs:
    topk:  (n_users, K) int64 item ids, best first, padded with -1 (sets.PAD) past the last item.
    truth: RaggedItems aligned with topk's rows: row r is the relevant set of topk[r]'s user.
           Every evaluated user has at least one relevant item (the harness drops the others).
Accuracy metrics return one value per user (the harness averages them, users weighted equally);
beyond-accuracy metrics return one number for the whole top-K matrix.

Definitions (k is the cut-off, rel_u the relevant set, rank_u(i) the 1-based position of i):
    recall@k    = |top-k ∩ rel_u| / |rel_u|               (denominator |rel_u|, not min(k, |rel_u|):
                                                            it cannot reach 1 when |rel_u| > k)
    ndcg@k      = DCG / IDCG, binary gains, DCG = Σ_{i ∈ top-k ∩ rel_u} 1 / log2(rank_u(i) + 1),
                  IDCG = Σ_{j=1}^{min(k, |rel_u|)} 1 / log2(j + 1)
    hit_rate@k  = 1 if top-k ∩ rel_u ≠ ∅ else 0
    mrr@k       = 1 / (rank of the first relevant item), 0 when none is in the top k
    coverage@k  = |∪_u top-k(u) ∩ catalogue| / |catalogue|
    popularity@k = mean over every recommended slot (all users, first k, padding skipped) of
                  log(1 + c_i), c_i = the item's interaction count in the training data
    gini@k      = Gini coefficient of exposure counts e_i = #{u : i ∈ top-k(u)} over every
                  catalogue item (zeros included): Σ_j (2j - n - 1) e_(j) / (n Σ e), e sorted
                  ascending, n = |catalogue|. 0 = every item equally exposed, (n-1)/n = one item
                  takes all exposure. NaN when nothing is recommended.
"""
from __future__ import annotations

import numpy as np

from app.evaluation.sets import PAD, RaggedItems


def metric_name(family: str, k: int) -> str:
    """The one place metric names are made: "ndcg@10"."""
    return f"{family}@{k}"


def hit_matrix(topk: np.ndarray, truth: RaggedItems) -> np.ndarray:
    """(n_users, K) bool: is topk[r, j] in row r's relevant set."""
    topk = np.asarray(topk, dtype=np.int64)
    if topk.ndim != 2 or topk.shape[0] != truth.n_rows:
        raise ValueError(f"topk has shape {topk.shape}; truth has {truth.n_rows} rows")
    scale = np.int64(max(int(topk.max(initial=0)), int(truth.items.max(initial=0))) + 1)
    rows = np.arange(topk.shape[0], dtype=np.int64)[:, None]
    truth_keys = truth.row_index() * scale + truth.items
    return np.isin(rows * scale + topk, truth_keys) & (topk != PAD)


def recall_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    return hits[:, :k].sum(axis=1) / _positive(n_relevant)


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    discounts = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
    dcg = hits[:, :k] @ discounts[: hits[:, :k].shape[1]]
    ideal_cumulative = np.concatenate([[0.0], np.cumsum(discounts)])
    idcg = ideal_cumulative[np.minimum(_positive(n_relevant), k)]
    return dcg / idcg


def hit_rate_at_k(hits: np.ndarray, k: int) -> np.ndarray:
    return hits[:, :k].any(axis=1).astype(np.float64)


def mrr_at_k(hits: np.ndarray, k: int) -> np.ndarray:
    head = hits[:, :k]
    first = head.argmax(axis=1)
    return np.where(head.any(axis=1), 1.0 / (first + 1), 0.0)


def coverage_at_k(topk: np.ndarray, k: int, catalogue: np.ndarray) -> float:
    catalogue = np.unique(np.asarray(catalogue, dtype=np.int64))
    if catalogue.size == 0:
        raise ValueError("empty catalogue")
    shown = np.unique(np.asarray(topk)[:, :k])
    return float(np.isin(catalogue, shown).sum() / catalogue.size)


def mean_log_popularity(topk: np.ndarray, k: int, item_ids: np.ndarray, counts: np.ndarray) -> float:
    """Mean log(1 + training count) over recommended slots; items absent from item_ids count 0."""
    shown = np.asarray(topk, dtype=np.int64)[:, :k].ravel()
    shown = shown[shown != PAD]
    if shown.size == 0:
        return float("nan")
    order = np.argsort(item_ids)
    sorted_ids, sorted_counts = np.asarray(item_ids)[order], np.asarray(counts, dtype=np.float64)[order]
    pos = np.minimum(np.searchsorted(sorted_ids, shown), max(len(sorted_ids) - 1, 0))
    known = sorted_ids[pos] == shown if len(sorted_ids) else np.zeros(shown.size, bool)
    return float(np.log1p(np.where(known, sorted_counts[pos], 0.0)).mean())


def exposure_counts(topk: np.ndarray, k: int, catalogue: np.ndarray) -> np.ndarray:
    """Times each catalogue item (in np.unique(catalogue) order) appears in the first k slots."""
    catalogue = np.unique(np.asarray(catalogue, dtype=np.int64))
    shown = np.asarray(topk, dtype=np.int64)[:, :k].ravel()
    shown = shown[np.isin(shown, catalogue)]
    return np.bincount(np.searchsorted(catalogue, shown), minlength=catalogue.size)


def gini_at_k(topk: np.ndarray, k: int, catalogue: np.ndarray) -> float:
    return gini(exposure_counts(topk, k, catalogue))


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (sorted-rank formula); NaN for an all-zero input."""
    values = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = values.size, values.sum()
    if n == 0 or total == 0:
        return float("nan")
    ranks = np.arange(1, n + 1, dtype=np.float64)
    return float(((2 * ranks - n - 1) * values).sum() / (n * total))


def _positive(n_relevant: np.ndarray) -> np.ndarray:
    n_relevant = np.asarray(n_relevant, dtype=np.int64)
    if (n_relevant < 1).any():
        raise ValueError("every evaluated user needs at least one relevant item")
    return n_relevant
