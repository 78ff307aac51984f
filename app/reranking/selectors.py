"""Selectors that cut or cap a ranked list, keeping its order."""
from __future__ import annotations

import numpy as np

from app.pipeline.candidates import Candidates, FeedQuery


class TopKSelector:
    """The `k` best by a score column (stable: ties keep input order)."""

    def __init__(self, k: int, score: str = "final", name: str = "top_k_selector") -> None:
        self.k = k
        self.score_column = score
        self.name = name

    def select(self, query: FeedQuery, candidates: Candidates) -> np.ndarray:
        scores = candidates.scores[self.score_column]
        return np.argsort(-scores, kind="stable")[: self.k]


class CreatorCapSelector:
    """Keeps at most `max_per_creator` items of each creator, in the incoming order.

    Runs after MMR, so the cap removes a creator's lowest-placed items.
    """

    name = "creator_cap_selector"

    def __init__(self, max_per_creator: int) -> None:
        self.max_per_creator = max_per_creator

    def select(self, query: FeedQuery, candidates: Candidates) -> np.ndarray:
        creators = candidates.features["creator_id"]
        seen: dict[int, int] = {}
        chosen = []
        for position, creator in enumerate(creators.tolist()):
            count = seen.get(creator, 0)
            if count < self.max_per_creator:
                seen[creator] = count + 1
                chosen.append(position)
        return np.asarray(chosen, dtype=np.int64)
