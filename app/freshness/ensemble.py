"""The static+dynamic ensemble: a stable long-horizon model and a frequently updated one,
blended per user with a weight that depends on the user's context.

    score(u, i) = (1 − w_b)·log p_static(i | u) + w_b·log p_dynamic(i | u),   b = bucket(u)

Buckets (as of the log's time): "new" (no event yet), "recent" (an event within
`recent_activity_s`: an active session at the replay's granularity), "returning" (older history
only). Each bucket's w is chosen on validation windows by grid search (`choose_weights`).
"""
from __future__ import annotations

import numpy as np

from app.evaluation import metrics as m
from app.evaluation.sets import RaggedItems, UserItemSets
from app.freshness.config import CONTEXT_BUCKETS, ContextBucket, EnsembleConfig
from app.freshness.log import InteractionLog
from app.freshness.strategies import ScoringStrategy, top_k


def context_buckets(log: InteractionLog, user_ids: np.ndarray, recent_activity_s: float) -> np.ndarray:
    """Each user's bucket name as of `log.as_of` (see the module docstring)."""
    last = log.last_seen(user_ids)
    return np.where(np.isnan(last), "new", np.where(log.as_of - last <= recent_activity_s, "recent", "returning"))


def per_user_metric(topk: np.ndarray, truth: RaggedItems, k: int, metric: str) -> np.ndarray:
    """Recall@k or NDCG@k of each row (app.evaluation.metrics)."""
    hits = m.hit_matrix(topk, truth)
    fn = m.recall_at_k if metric == "recall" else m.ndcg_at_k
    return fn(hits, truth.lengths(), k)


def choose_weights(
    metric_by_weight: np.ndarray, buckets: np.ndarray, grid: tuple[float, ...], fallback: dict[ContextBucket, float]
) -> dict[ContextBucket, float]:
    """Per bucket, the grid weight with the best mean metric over that bucket's users
    (metric_by_weight: (n_users, len(grid))); the smaller weight wins a tie; buckets without
    validation users keep `fallback`."""
    chosen = dict(fallback)
    for bucket in CONTEXT_BUCKETS:
        rows = buckets == bucket
        if rows.any():
            chosen[bucket] = float(grid[int(np.argmax(metric_by_weight[rows].mean(axis=0)))])
    return chosen


class ContextEnsembleStrategy(ScoringStrategy):
    """Static + dynamic member blended by context; weights learned on validation windows.

    Its members are strategies the replay also runs (and observes) on their own: `observe` here
    does nothing, so a member is never trained twice.

    Example:
        ensemble = ContextEnsembleStrategy(static, naive, log, config.ensemble)
        ensemble.learn(users, truth, exclude, k=20)   # on each validation window
        ensemble.freeze()                             # weights per bucket from then on
    """

    name = "ensemble"

    def __init__(self, static: ScoringStrategy, dynamic: ScoringStrategy, log: InteractionLog,
                 config: EnsembleConfig, name: str = "ensemble") -> None:
        super().__init__(log)
        self.name = name
        self.static, self.dynamic, self.config = static, dynamic, config
        self.weights: dict[ContextBucket, float] = dict(config.initial_weights)
        self._metrics: list[np.ndarray] = []
        self._buckets: list[np.ndarray] = []

    @property
    def members(self) -> tuple[ScoringStrategy, ScoringStrategy]:
        return self.static, self.dynamic

    def _member_scores(self, user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        items, static = self.static.scores(user_ids)
        dynamic_items, dynamic = self.dynamic.scores(user_ids)
        if not np.array_equal(items, dynamic_items):
            raise ValueError("ensemble members rank different catalogues")
        return items, static, dynamic

    def scores(self, user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        items, static, dynamic = self._member_scores(user_ids)
        buckets = context_buckets(self.log, user_ids, self.config.recent_activity_s)
        w = np.array([self.weights[b] for b in buckets], dtype=np.float64)[:, None]
        return items, (1 - w) * static + w * dynamic

    def learn(self, user_ids: np.ndarray, truth: RaggedItems, exclude: UserItemSets, k: int) -> None:
        """Record, for every grid weight, each validation user's metric (before the window)."""
        items, static, dynamic = self._member_scores(user_ids)
        self._metrics.append(np.stack([
            per_user_metric(top_k((1 - w) * static + w * dynamic, items, user_ids, k, exclude), truth, k,
                            self.config.learn_metric)
            for w in self.config.weight_grid
        ], axis=1))
        self._buckets.append(context_buckets(self.log, user_ids, self.config.recent_activity_s))

    def freeze(self) -> dict[ContextBucket, float]:
        """Fix the per-bucket weights from what `learn` recorded (unchanged if learning is off)."""
        if self.config.learn_weights and self._metrics:
            self.weights = choose_weights(
                np.concatenate(self._metrics), np.concatenate(self._buckets), self.config.weight_grid, self.weights
            )
        return dict(self.weights)
