"""The stage kinds. Each is a small class with a stable `name` and one typed method.

Only sources and hydrators do I/O. Filters, scorers and selectors are pure functions of the
query and the candidates, so they test without Redis, Ray or clocks.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from app.pipeline.candidates import Candidates, FeedQuery


@runtime_checkable
class Stage(Protocol):
    name: str  # stable identifier used for metrics, spans and config


@runtime_checkable
class CandidateSource(Stage, Protocol):
    """Produces candidates for a query, each tagged with this source and its score."""

    def fetch(self, query: FeedQuery) -> Candidates: ...


@runtime_checkable
class Hydrator(Stage, Protocol):
    """Returns feature columns (one row per candidate, input order) to attach to candidates."""

    def hydrate(self, query: FeedQuery, candidates: Candidates) -> dict[str, np.ndarray]: ...


@runtime_checkable
class Filter(Stage, Protocol):
    """Returns a keep-mask (input order) and the reason recorded for every dropped candidate.

    A filter whose reasons differ per candidate returns an array of reasons instead of one string.
    """

    def keep(self, query: FeedQuery, candidates: Candidates) -> tuple[np.ndarray, str | np.ndarray]: ...


@runtime_checkable
class Scorer(Stage, Protocol):
    """Returns score columns (one value per candidate, input order), e.g. per-head predictions."""

    def score(self, query: FeedQuery, candidates: Candidates) -> dict[str, np.ndarray]: ...


@runtime_checkable
class Selector(Stage, Protocol):
    """Returns the positions (into `candidates`) of the chosen ones, in page order. The rest are
    recorded as "not selected", or as the selector's `removal_reason` attribute when it has one."""

    def select(self, query: FeedQuery, candidates: Candidates) -> np.ndarray: ...


@runtime_checkable
class BatchScorer(Scorer, Protocol):
    """A scorer that can score many requests in one call (one model pass). The runner's
    `run_batch` uses it; a plain `run` calls `score`."""

    def score_batch(self, requests: list[tuple[FeedQuery, Candidates]]) -> list[dict[str, np.ndarray]]: ...
