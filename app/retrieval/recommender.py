"""The two-tower as an offline-evaluation `Recommender` (app.evaluation's protocol).

Scores every item by exact inner product with the user's stored embedding, so the figures
measure the model, not the ANN index (the index's recall is benchmarked separately).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from app.data.tables import Dataset
from app.evaluation.sets import PAD, UserItemSets
from app.retrieval.config import TwoTowerConfig
from app.retrieval.two_tower import EpochCallback, TwoTowerArtifacts, train_two_tower_in_process


class TwoTowerRecommender:
    """fit = in-process two-tower training on the given interactions; recommend = exact top-k."""

    name = "two_tower"

    def __init__(self, dataset: Dataset, config: TwoTowerConfig, on_epoch: EpochCallback | None = None) -> None:
        self.dataset = dataset
        self.config = config
        self.on_epoch = on_epoch
        self.artifacts: TwoTowerArtifacts | None = None

    def fit(self, interactions: pd.DataFrame) -> None:
        frame = interactions
        if "rating" not in frame:
            frame = frame.assign(rating=np.float32(5.0))
        if "timestamp" not in frame:
            frame = frame.assign(timestamp=np.arange(len(frame), dtype=np.int64))
        self.artifacts = train_two_tower_in_process(self.dataset, frame, self.config, self.on_epoch)

    def recommend(self, user_ids: np.ndarray, k: int, exclude: UserItemSets) -> np.ndarray:
        if self.artifacts is None:
            raise RuntimeError("two_tower: call fit before recommend")
        art = self.artifacts
        user_ids = np.asarray(user_ids, np.int64)
        rows = art.features.user_rows(user_ids)
        if (rows == 0).any():
            raise KeyError(f"two_tower: users unknown at training time, e.g. {user_ids[rows == 0][:5].tolist()}")
        scores = (art.user_embeddings[rows - 1] @ art.item_embeddings.T).astype(np.float64)
        excluded = exclude.contains_pairs(user_ids[:, None], np.broadcast_to(art.item_ids, scores.shape))
        scores[excluded] = -np.inf
        k_eff = min(k, scores.shape[1])
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k_eff]
        out = np.full((len(user_ids), k), PAD, np.int64)
        picked = art.item_ids[top]
        out[:, :k_eff] = np.where(np.isfinite(np.take_along_axis(scores, top, 1)), picked, PAD)
        return out
