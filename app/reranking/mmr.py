"""Maximal Marginal Relevance: trade relevance against similarity to what is already chosen.

    next = argmax_i  λ · rel_i − (1 − λ) · max_{j ∈ chosen} sim(i, j)

rel is the ranker's final score min–max normalised over the candidates (so λ means the same
whatever the score scale); sim is topic cosine plus `creator_similarity` for a shared creator,
capped at 1. Incremental max-similarity keeps it O(n · k) with vector operations.
"""
from __future__ import annotations

import numpy as np

from app.catalog import Catalog
from app.pipeline.candidates import Candidates, FeedQuery


class MMRSelector:
    name = "mmr_selector"

    def __init__(self, catalog: Catalog, k: int, lambda_: float, creator_similarity: float) -> None:
        self.catalog = catalog
        self.k = k
        self.lambda_ = lambda_
        self.creator_similarity = creator_similarity

    def select(self, query: FeedQuery, candidates: Candidates) -> np.ndarray:
        n = len(candidates)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        score = candidates.scores["final"].astype(np.float64)
        spread = score.max() - score.min()
        relevance = (score - score.min()) / spread if spread > 0 else np.ones(n)
        topics = self.catalog.topic_matrix[candidates.item_ids]
        creators = self.catalog.creator_id[candidates.item_ids]
        max_similarity = np.zeros(n)
        available = np.ones(n, dtype=bool)
        chosen: list[int] = []
        for _ in range(min(self.k, n)):
            gain = self.lambda_ * relevance - (1.0 - self.lambda_) * max_similarity
            gain[~available] = -np.inf
            best = int(np.argmax(gain))
            chosen.append(best)
            available[best] = False
            similarity = topics @ topics[best] + self.creator_similarity * (creators == creators[best])
            np.maximum(max_similarity, np.minimum(similarity, 1.0), out=max_similarity)
        return np.asarray(chosen, dtype=np.int64)
