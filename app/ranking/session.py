"""Session interest: a scorer that leans the ranking toward what the user engages with right now.

The multi-task ranker is the stable, long-horizon model: its history features average hundreds
of past interactions, so a burst of likes on one genre barely moves it. This stage is the
frequently updated, short-term half of the ensemble: the topic profile of the user's engagements
in the active session (`FeedQuery.session_item_ids`, filled from the event stream within
milliseconds), blended into the final score with a configured weight. Users with no active
session get the ranker's scores unchanged.

Example:
    stage = SessionInterestScorer(store.item_topics, SessionInterestConfig(weight=1.0))
    columns = stage.score(query, candidates)   # {"final": blended, "session_interest": cosine}
"""
from __future__ import annotations

import numpy as np

from app.pipeline import Candidates, FeedQuery
from app.ranking.config import SessionInterestConfig


class SessionInterestScorer:
    name = "session_interest"

    def __init__(self, item_topics: np.ndarray, config: SessionInterestConfig) -> None:
        # TF-IDF over topics: liking five crime dramas says "crime", not "drama" (which half the
        # catalogue is); without it the common topics would lift half the catalogue.
        present = item_topics.sum(axis=1) > 0
        document_frequency = np.maximum((item_topics[present] > 0).sum(axis=0), 1)
        idf = np.log((present.sum() + 1) / document_frequency).astype(np.float32)
        weighted = item_topics.astype(np.float32) * idf[None, :]
        norms = np.linalg.norm(weighted, axis=1, keepdims=True)
        self.topics = np.divide(weighted, norms, out=np.zeros_like(weighted), where=norms > 0)
        self.config = config

    def interest(self, session_item_ids: tuple[int, ...]) -> np.ndarray | None:
        """The unit topic vector of the newest session engagements (None: no session)."""
        ids = np.asarray(session_item_ids[: self.config.max_items], dtype=np.int64)
        ids = ids[(ids >= 0) & (ids < len(self.topics))]
        if not len(ids):
            return None
        profile = self.topics[ids].sum(axis=0)
        norm = float(np.linalg.norm(profile))
        return profile / norm if norm > 0 else None

    def score(self, query: FeedQuery, candidates: Candidates) -> dict[str, np.ndarray]:
        final = candidates.scores["final"]
        profile = self.interest(query.session_item_ids) if self.config.weight > 0 else None
        if profile is None:
            return {"final": final, "session_interest": np.zeros(len(candidates), np.float32)}
        ids = candidates.item_ids
        inside = (ids >= 0) & (ids < len(self.topics))
        match = np.zeros(len(ids), np.float32)
        match[inside] = self.topics[ids[inside]] @ profile
        return {"final": (final + self.config.weight * match * np.abs(final)).astype(np.float32),
                "session_interest": match}
