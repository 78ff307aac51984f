"""Model-update strategies compared by the prequential replay: one small class each.

Every strategy has the same two-method contract (`Strategy`): `observe(window)` learns from a
window of events once it has passed; `recommend(user_ids, k, exclude)` returns each user's top-k
item ids from what it knew before. All of them read one shared `InteractionLog` (the event
stream), which the replay advances after every strategy has observed the window.

    static                  the base model with user embeddings frozen at training time
    dynamic_embeddings      base weights; user embeddings re-encoded from the latest histories
    naive_incremental       every window, fine-tune the previous model on that window only
    microbatch_regularised  every window, fine-tune the base on the accumulated events since it
                            plus a replay sample of its own history, anchored to it (L2-SP)
    ensemble                static + a frequently updated member, weighted by user context
                            (app/freshness/ensemble.py)
"""
from __future__ import annotations

from typing import Protocol

import numpy as np
import pandas as pd

from app.evaluation.sets import PAD, UserItemSets
from app.freshness.config import FineTuneConfig, MicrobatchConfig
from app.freshness.log import InteractionLog
from app.freshness.towers import TowerSnapshot, fine_tune


class Strategy(Protocol):
    name: str

    def observe(self, window: pd.DataFrame) -> None:
        """Learn from a window of events (user_id, item_id, rating, timestamp) that has passed."""

    def recommend(self, user_ids: np.ndarray, k: int, exclude: UserItemSets) -> np.ndarray:
        """(len(user_ids), k) item ids best first, padded with PAD; never an excluded item."""


def top_k(scores: np.ndarray, item_ids: np.ndarray, user_ids: np.ndarray, k: int, exclude: UserItemSets) -> np.ndarray:
    """Each row's k best items by score, excluded (user, item) pairs removed, PAD past the end."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    if scores.size:
        banned = exclude.contains_pairs(np.asarray(user_ids, np.int64)[:, None], np.asarray(item_ids)[None, :])
        scores[banned] = -np.inf
    n_keep = min(k, scores.shape[1])
    out = np.full((len(user_ids), k), PAD, dtype=np.int64)
    if n_keep == 0:
        return out
    part = np.argpartition(-scores, n_keep - 1, axis=1)[:, :n_keep]
    order = np.take_along_axis(part, np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable"), 1)
    chosen = np.asarray(item_ids)[order]
    out[:, :n_keep] = np.where(np.isfinite(np.take_along_axis(scores, order, 1)), chosen, PAD)
    return out


class ScoringStrategy:
    """A strategy that scores every catalogue item with log p(item | user); top-k follows."""

    name = "scoring"

    def __init__(self, log: InteractionLog) -> None:
        self.log = log

    def scores(self, user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(catalogue item ids, (len(user_ids), n_items) log-probabilities)."""
        raise NotImplementedError

    def observe(self, window: pd.DataFrame) -> None:
        return None

    def recommend(self, user_ids: np.ndarray, k: int, exclude: UserItemSets) -> np.ndarray:
        items, scores = self.scores(user_ids)
        return top_k(scores, items, user_ids, k, exclude)


def _snapshot_scores(snapshot: TowerSnapshot, log: InteractionLog, user_ids: np.ndarray,
                     histories: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    items = log.items
    return items, snapshot.log_probs(snapshot.user_vectors(user_ids, histories), snapshot.item_vectors(items))


class StaticStrategy(ScoringStrategy):
    """The base model as trained: weights and user histories frozen at the end of its data."""

    name = "static"

    def __init__(self, base: TowerSnapshot, log: InteractionLog, base_period: pd.DataFrame) -> None:
        super().__init__(log)
        self.base = base
        self._frozen = InteractionLog(base_period, as_of=float(base_period["timestamp"].max()))

    def scores(self, user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        histories = self._frozen.latest_items(user_ids, self.base.config.history_length)
        return _snapshot_scores(self.base, self.log, user_ids, histories)


class DynamicEmbeddingStrategy(ScoringStrategy):
    """Frozen base weights; each user's embedding re-encoded from their latest items."""

    name = "dynamic_embeddings"

    def __init__(self, base: TowerSnapshot, log: InteractionLog) -> None:
        super().__init__(log)
        self.snapshot = base

    def scores(self, user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        histories = self.log.latest_items(user_ids, self.snapshot.config.history_length)
        return _snapshot_scores(self.snapshot, self.log, user_ids, histories)


class NaiveIncrementalStrategy(DynamicEmbeddingStrategy):
    """Every window, fine-tune the latest model on that window's events alone, unregularised:
    the classic way a frequently updated model chases the last few minutes and forgets."""

    name = "naive_incremental"

    def __init__(self, base: TowerSnapshot, log: InteractionLog, tune: FineTuneConfig) -> None:
        super().__init__(base, log)
        self.tune = tune

    def observe(self, window: pd.DataFrame) -> None:
        if len(window):
            self.snapshot = fine_tune(self.snapshot, window, self.log.frame, self.tune)


class MicrobatchRegularisedStrategy(DynamicEmbeddingStrategy):
    """Every window, fine-tune the *base* on the accumulated events since it (or its last
    `recent_windows`) plus a seeded replay sample of the base period, with an L2-SP anchor to
    the base: each model is one bounded step from a stable base, never a chain of drifts."""

    name = "microbatch_regularised"

    def __init__(self, base: TowerSnapshot, log: InteractionLog, base_period: pd.DataFrame,
                 tune: MicrobatchConfig, seed: int) -> None:
        super().__init__(base, log)
        self.base, self.tune = base, tune
        self.base_end = float(base_period["timestamp"].max())
        self._window_starts: list[float] = []
        self._rng = np.random.default_rng(seed)

    def observe(self, window: pd.DataFrame) -> None:
        if not len(window):
            return
        self._window_starts.append(float(window["timestamp"].min()))
        recent = self._window_starts if self.tune.recent_windows is None else self._window_starts[-self.tune.recent_windows:]
        known = pd.concat([self.log.frame, window], ignore_index=True)
        timestamps = known["timestamp"].to_numpy(np.float64)
        train = timestamps >= recent[0]
        base_rows = np.flatnonzero(timestamps <= self.base_end)
        replay = self._rng.choice(base_rows, size=min(self.tune.replay_sample, len(base_rows)), replace=False)
        train[replay] = True
        self.snapshot = fine_tune(self.base, known[train], known[~train], self.tune, anchor_l2=self.tune.anchor_l2)
