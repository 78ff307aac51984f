"""Exposure-aware reranking: a popularity penalty in an MMR-like greedy selection.

    next = argmax_i  rel_i − penalty · pop_i − exposure_weight · shown_creator_i

rel is the candidates' score min–max normalised (as in MMRSelector), pop_i = log1p(count_i) /
max log1p(count) over the catalogue (0 for never-seen items), shown_creator_i the number of
already chosen items by the same creator. It lives in tuning/ because it is an audited
experiment, not yet a product stage; it follows the Selector contract (`select(query,
candidates) -> indices`) so moving it into app/reranking is a one-line pipeline change.

Example:
    >>> import numpy as np
    >>> s = PopularityPenaltySelector(np.array([0, 100, 1, 1]), np.array([-1, 1, 2, 3]), k=2, penalty=1.0)
    >>> s.rerank(np.array([1, 2, 3]), np.array([1.0, 0.9, 0.1])).tolist()
    [1, 0]
"""
from __future__ import annotations

import numpy as np

from app.pipeline.candidates import Candidates, FeedQuery


class PopularityPenaltySelector:
    name = "popularity_penalty_selector"

    def __init__(self, popularity: np.ndarray, creator_of: np.ndarray, k: int, penalty: float,
                 creator_weight: float = 0.0) -> None:
        if penalty < 0 or creator_weight < 0:
            raise ValueError("penalty and creator_weight must be >= 0")
        log_pop = np.log1p(np.asarray(popularity, dtype=np.float64))
        self.pop = log_pop / max(float(log_pop.max()), 1e-12)
        self.creator_of = np.asarray(creator_of)
        self.k = k
        self.penalty = penalty
        self.creator_weight = creator_weight

    def rerank(self, item_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Indices of the chosen items (at most k), best first."""
        n = len(item_ids)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        scores = np.asarray(scores, dtype=np.float64)
        spread = scores.max() - scores.min()
        rel = (scores - scores.min()) / spread if spread > 0 else np.ones(n)
        gain = rel - self.penalty * self.pop[item_ids]
        if self.creator_weight == 0:
            return np.argsort(-gain, kind="stable")[: self.k].astype(np.int64)
        creators = self.creator_of[item_ids]
        shown: dict[int, int] = {}
        available = np.ones(n, bool)
        chosen = []
        for _ in range(min(self.k, n)):
            g = gain - self.creator_weight * np.array([shown.get(int(c), 0) for c in creators])
            g[~available] = -np.inf
            best = int(np.argmax(g))
            chosen.append(best)
            available[best] = False
            shown[int(creators[best])] = shown.get(int(creators[best]), 0) + 1
        return np.asarray(chosen, dtype=np.int64)

    def select(self, query: FeedQuery, candidates: Candidates) -> np.ndarray:
        return self.rerank(candidates.item_ids, candidates.scores["final"])
