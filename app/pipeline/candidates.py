"""Columnar candidates and the typed query every stage receives.

Candidates are columns (NumPy arrays) rather than a list of objects: a request carries
thousands of them through several stages, and every stage works on whole columns.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class FeedQuery:
    """What a stage may know about the request. Hydrated once, before the first source runs."""

    user_id: int
    limit: int = 50
    now: float = 0.0  # unix seconds; injected, never read from a clock inside a stage
    user_features: dict[str, object] = field(default_factory=dict)
    seen_item_ids: frozenset[int] = frozenset()
    hidden_item_ids: frozenset[int] = frozenset()
    hidden_creator_ids: frozenset[int] = frozenset()
    friend_ids: tuple[int, ...] = ()
    close_friend_ids: frozenset[int] = frozenset()
    user_embedding: np.ndarray | None = None
    request_id: str = ""
    cold_start: bool = False
    # Items engaged since the serving artifact's snapshot (event stream), newest first: ranking
    # features add them to the user's history, so a burst of likes moves the scores at once.
    fresh_item_ids: tuple[int, ...] = ()
    # The subset engaged in the user's active session (newest first): short-term interest.
    session_item_ids: tuple[int, ...] = ()
    # Taken down (app/state/takedowns.py): never served, on any page.
    taken_down_item_ids: frozenset[int] = frozenset()
    taken_down_creator_ids: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Removal:
    """Why a candidate left the pipeline: the stage that removed it and the reason it gave."""

    item_id: int
    stage: str
    reason: str


def _empty_f32() -> np.ndarray:
    return np.zeros(0, dtype=np.float32)


@dataclass
class Candidates:
    """Items flowing through the pipeline, with provenance, features and scores as columns.

    Every column has one entry per candidate, in the same order (a feature column may be a matrix
    with one row per candidate: the ranking stages' model inputs). `take` keeps that invariant.
    """

    item_ids: np.ndarray
    sources: np.ndarray  # str per candidate: the source that produced it ("ann", "social", ...)
    source_scores: np.ndarray  # float32: the source's own score (similarity, decayed count, ...)
    features: dict[str, np.ndarray] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # per head, plus "final"

    def __post_init__(self) -> None:
        self.item_ids = np.asarray(self.item_ids, dtype=np.int64)
        self.sources = np.asarray(self.sources, dtype=object)
        self.source_scores = np.asarray(self.source_scores, dtype=np.float32)
        n = len(self.item_ids)
        for name, column in (
            ("sources", self.sources),
            ("source_scores", self.source_scores),
            *self.features.items(),
            *self.scores.items(),
        ):
            if len(column) != n:
                raise ValueError(f"candidate column {name!r} has {len(column)} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.item_ids)

    @classmethod
    def empty(cls) -> "Candidates":
        return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object), _empty_f32())

    @classmethod
    def from_source(cls, source: str, item_ids: np.ndarray, scores: np.ndarray) -> "Candidates":
        item_ids = np.asarray(item_ids, dtype=np.int64)
        return cls(item_ids, np.full(len(item_ids), source, dtype=object), np.asarray(scores, np.float32))

    def take(self, index: np.ndarray) -> "Candidates":
        """The candidates at `index` (an integer array or boolean mask), in that order."""
        index = np.asarray(index)
        return Candidates(
            item_ids=self.item_ids[index],
            sources=self.sources[index],
            source_scores=self.source_scores[index],
            features={k: v[index] for k, v in self.features.items()},
            scores={k: v[index] for k, v in self.scores.items()},
        )

    def with_features(self, columns: dict[str, np.ndarray]) -> "Candidates":
        return Candidates(
            self.item_ids, self.sources, self.source_scores, {**self.features, **columns}, dict(self.scores)
        )

    def without_features(self, names: tuple[str, ...]) -> "Candidates":
        kept = {k: v for k, v in self.features.items() if k not in names}
        return Candidates(self.item_ids, self.sources, self.source_scores, kept, dict(self.scores))

    def with_scores(self, columns: dict[str, np.ndarray]) -> "Candidates":
        return Candidates(
            self.item_ids, self.sources, self.source_scores, dict(self.features), {**self.scores, **columns}
        )

    @staticmethod
    def concat(parts: list["Candidates"]) -> "Candidates":
        """Stack candidates from several sources; feature/score columns must agree across parts."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return Candidates.empty()
        feature_names = set(parts[0].features)
        score_names = set(parts[0].scores)
        for p in parts[1:]:
            if set(p.features) != feature_names or set(p.scores) != score_names:
                raise ValueError("cannot concatenate candidates with different feature or score columns")
        return Candidates(
            item_ids=np.concatenate([p.item_ids for p in parts]),
            sources=np.concatenate([p.sources for p in parts]),
            source_scores=np.concatenate([p.source_scores for p in parts]),
            features={k: np.concatenate([p.features[k] for p in parts]) for k in feature_names},
            scores={k: np.concatenate([p.scores[k] for p in parts]) for k in score_names},
        )
