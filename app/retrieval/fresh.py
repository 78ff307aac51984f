"""Published items in retrieval: their embeddings, the fresh index, and the fresh-items lane.

A published item has no trained row, so the item tower embeds it from content alone
(`TwoTowerArtifacts.encode_new_items`: the mean trained id embedding in place of its own, then
creator, release-year bucket, content rating and topics). Its vector goes into `FreshIndex`, an
exact inner-product table searched beside the main ANN index (a flat scan: a few thousand
fresh items cost well under a millisecond; the main index is rebuilt with them at the next
training). Two ways in:

- `EmbeddingAnnSource` searches both and merges by score (a fresh item competes with the
  catalogue on equal terms);
- `FreshItemsSource`, its own lane with its own quota: items younger than
  `retrieval.fresh.window_s`, scored by the user's embedding, so young items reach the ranker
  even when older ones outscore them.

    fresh = FreshIndex.build(placed, two_tower)
    FreshItemsSource(fresh, two_tower.user_embedding, config.retrieval.fresh).fetch(query)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.freshness.published import PlacedItems
from app.pipeline.candidates import Candidates, FeedQuery
from app.retrieval.config import FreshItemsConfig
from app.retrieval.sources import FRESH, source_candidates


@dataclass(frozen=True)
class FreshIndex:
    """Published items' vectors (rows of `vectors` belong to `item_ids`) and their publication time."""

    item_ids: np.ndarray  # int64, the models' indices
    vectors: np.ndarray  # float32 (n, dim), L2-normalised
    published_at: np.ndarray  # float64 unix seconds

    def __len__(self) -> int:
        return len(self.item_ids)

    @classmethod
    def empty(cls, dim: int) -> FreshIndex:
        return cls(np.zeros(0, np.int64), np.zeros((0, dim), np.float32), np.zeros(0))

    @classmethod
    def build(cls, placed: PlacedItems, two_tower, retention_s: float | None = None) -> FreshIndex:
        """Vectors (the item tower, content only) of the placed items published within
        `retention_s` of the newest one: the stream's own clock, so every replica keeps the
        same rows, and the index (and the work of rebuilding it) stays bounded by the retention
        window, not by everything ever published."""
        if not len(placed):
            return cls.empty(two_tower.dim)
        frame = placed.frame
        if retention_s is not None:
            frame = frame[frame["published_at"] >= frame["published_at"].max() - retention_s]
        vectors = two_tower.encode_new_items(frame)
        return cls(frame["item_id"].to_numpy(np.int64), vectors, frame["published_at"].to_numpy(np.float64))

    def search(self, vector: np.ndarray, k: int, since: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k best (item ids, scores) by inner product; only items created at or after `since`."""
        if not len(self) or k < 1:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        scores = self.vectors @ np.asarray(vector, np.float32).reshape(-1)
        rows = np.arange(len(self)) if since is None else np.flatnonzero(self.published_at >= since)
        if len(rows) > k:
            rows = rows[np.argpartition(-scores[rows], k - 1)[:k]]
        return self.item_ids[rows], scores[rows]


class FreshItemsSource:
    """Items published within `window_s` of the request, scored by the user's embedding.

    A user without an embedding (a new user) gets the newest items instead: the lane is what
    puts young posts in front of someone at all."""

    name = FRESH

    def __init__(self, fresh: FreshIndex, user_vectors, config: FreshItemsConfig) -> None:
        self.fresh, self.user_vectors, self.config = fresh, user_vectors, config

    def fetch(self, query: FeedQuery) -> Candidates:
        since = query.now - self.config.window_s
        vector = query.user_embedding if query.user_embedding is not None else self.user_vectors(query.user_id)
        if vector is None:
            young = np.flatnonzero(self.fresh.published_at >= since)
            newest = young[np.argsort(-self.fresh.published_at[young], kind="stable")[: self.config.k]]
            ids, scores = self.fresh.item_ids[newest], np.linspace(1.0, 0.5, len(newest), dtype=np.float32)
        else:
            ids, scores = self.fresh.search(vector, self.config.k, since)
        return source_candidates(self.name, ids, scores)


class PublishedItemHydrator:
    """`published_age_s` (how long ago an item was published; +inf for the artifact's items) and
    `item_engagements` (how often it was engaged with): the exploration slot's inputs."""

    name = "published_item_hydrator"

    def __init__(self, published_at: np.ndarray, engagements) -> None:
        self.published_at, self.engagements = published_at, engagements

    def hydrate(self, query: FeedQuery, candidates: Candidates) -> dict[str, np.ndarray]:
        ids = candidates.item_ids
        inside = (ids >= 0) & (ids < len(self.published_at))
        when = np.full(len(ids), np.nan)
        when[inside] = self.published_at[ids[inside]]
        age = np.where(np.isfinite(when), np.maximum(query.now - when, 0.0), np.inf)
        return {"published_age_s": age.astype(np.float32),
                "item_engagements": self.engagements.item_counts(ids).astype(np.float32)}
