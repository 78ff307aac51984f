"""The exploration slot: a few young, little-engaged items lifted into a band of positions.

A new post has no engagement for the ranker to learn from, so it ranks low and stays unseen (a
feedback loop). Per page, at most `max_items` items that are young (published within
`max_age_s`) and unproven (engaged with at most `max_engagements` times) are reserved in ranking
(`ExplorationPicker`, the best-scored of them), survive the cuts after it (`KeepingExplored`
around ranking's top-K and MMR; the creator cap still applies), and when they land below the
band they move to its first positions (organic positions `first_position..last_position`,
1-based; ads the collator inserts come on top). Everything else keeps its order. Reserved items
carry `explored` = 1, which explain output shows as provenance.

    ranking:   ..., ExplorationPicker(config), KeepingExplored(TopKSelector(...))
    reranking: KeepingExplored(MMRSelector(...)), CreatorCapSelector(...), ExplorationSlot(config)
"""
from __future__ import annotations

import numpy as np

from app.pipeline.candidates import Candidates, FeedQuery
from app.reranking.config import ExplorationConfig


class ExplorationPicker:
    """Hydrator: `explored` = 1 on at most `max_items` young, unproven rows (the best-scored
    first). Runs before ranking's cuts (the cascade's, when on, and the top-K): the selectors after
    it keep those rows (`KeepingExplored`), so a new item that a ranker would cut still reaches the slot."""

    name = "exploration_picker"

    def __init__(self, config: ExplorationConfig) -> None:
        self.config = config

    def eligible(self, candidates: Candidates) -> np.ndarray:
        """Rows that are young and unproven (none when the columns are absent)."""
        if "published_age_s" not in candidates.features or "item_engagements" not in candidates.features:
            return np.zeros(len(candidates), bool)
        return ((candidates.features["published_age_s"] <= self.config.max_age_s)
                & (candidates.features["item_engagements"] <= self.config.max_engagements))

    def hydrate(self, query: FeedQuery, candidates: Candidates) -> dict[str, np.ndarray]:
        marked = np.zeros(len(candidates), np.float32)
        rows = np.flatnonzero(self.eligible(candidates))
        if self.config.max_items > 0 and len(rows):
            # The DCN's score, or the pre-ranker's when the picker runs before the cascade's cut.
            score = next((candidates.scores[c] for c in ("final", "prerank") if c in candidates.scores), None)
            if score is not None:
                rows = rows[np.argsort(-score[rows], kind="stable")]
            marked[rows[: self.config.max_items]] = 1.0
        return {"explored": marked}


class KeepingExplored:
    """Selector wrapper: `inner` selects among the other rows; the `explored` rows are kept,
    after the ones it chose (the exploration slot places them)."""

    def __init__(self, inner) -> None:
        self.inner, self.name = inner, inner.name
        self.removal_reason = getattr(inner, "removal_reason", "not selected")

    def select(self, query: FeedQuery, candidates: Candidates) -> np.ndarray:
        explored = candidates.features.get("explored")
        if explored is None or not explored.any():
            return self.inner.select(query, candidates)
        rest = np.flatnonzero(explored <= 0)
        chosen = rest[np.asarray(self.inner.select(query, candidates.take(rest)), np.int64)]
        return np.concatenate([chosen, np.flatnonzero(explored > 0)])


class ExplorationSlot:
    """Selector: `explored` rows placed below the band move to its first positions (after the
    explored rows already inside it); every other row keeps its order."""

    name = "exploration_slot"

    def __init__(self, config: ExplorationConfig) -> None:
        self.config = config

    def select(self, query: FeedQuery, candidates: Candidates) -> np.ndarray:
        order = np.arange(len(candidates))
        explored = candidates.features.get("explored")
        if explored is None or not explored.any():
            return order
        first, last = self.config.first_position - 1, self.config.last_position
        below = np.flatnonzero(explored[last:] > 0) + last
        if not len(below):
            return order
        rest = np.setdiff1d(order, below, assume_unique=True)
        at = min(first + int((explored[first:last] > 0).sum()), len(rest))
        return np.concatenate([rest[:at], below, rest[at:]])
