"""The two-tower as the freshness strategies see it: one model snapshot, what it was trained on,
how to score with it, and how to fine-tune it on newer events (warm start + optional anchor).

A snapshot keeps the base model's features and vocabulary (the dataset's user and item
registry). Ids the snapshot's model was never trained on (users who signed up after it, items
first engaged after it) are encoded through the out-of-vocabulary id row, which the base learned
through user-id dropout, instead of their never-trained id rows; a fine-tune that sees them
trains their rows and marks them known.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from app.freshness.config import FineTuneConfig
from app.retrieval.config import TwoTowerConfig
from app.retrieval.features import OOV, TowerFeatures
from app.retrieval.two_tower import (
    TwoTowerArtifacts,
    TwoTowerModel,
    build_model,
    build_training_examples,
    fit,
    make_loader,
)


@dataclass(frozen=True)
class TowerSnapshot:
    """A trained two-tower and the user/item rows its training has seen (bool masks by row)."""

    model: TwoTowerModel
    features: TowerFeatures
    config: TwoTowerConfig
    known_user_rows: np.ndarray
    known_item_rows: np.ndarray

    @classmethod
    def from_artifacts(cls, artifacts: TwoTowerArtifacts, trained_on: pd.DataFrame) -> TowerSnapshot:
        empty = cls(artifacts.build_model(), artifacts.features, artifacts.config,
                    np.zeros(artifacts.features.n_user_rows, bool), np.zeros(artifacts.features.n_item_rows, bool))
        return empty.trained(empty.model, trained_on)

    def trained(self, model: TwoTowerModel, frame: pd.DataFrame) -> TowerSnapshot:
        """A snapshot of `model`, whose training saw this snapshot's ids and those of `frame`."""
        users, items = self.known_user_rows.copy(), self.known_item_rows.copy()
        users[self.features.user_rows(frame["user_id"].to_numpy())] = True
        items[self.features.item_rows(frame["item_id"].to_numpy())] = True
        users[OOV] = items[OOV] = False
        return TowerSnapshot(model.eval(), self.features, self.config, users, items)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def _id_rows(self, rows: np.ndarray, known: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.where(known[rows], rows, OOV))

    @torch.no_grad()
    def item_vectors(self, item_ids: np.ndarray) -> torch.Tensor:
        rows = self.features.item_rows(np.asarray(item_ids, np.int64))
        table = torch.as_tensor(rows)
        return self.model.item_tower(
            self._id_rows(rows, self.known_item_rows), self.model.item_cats[table], self.model.item_genres[table]
        )

    @torch.no_grad()
    def user_vectors(self, user_ids: np.ndarray, history_item_ids: np.ndarray) -> torch.Tensor:
        """User tower outputs; `history_item_ids` (n, ≥ history_length) newest first, padded with
        any id the vocabulary lacks (e.g. -1). Unknown items in a history count as padding."""
        rows = self.features.user_rows(np.asarray(user_ids, np.int64))
        length = self.config.history_length
        history = self.features.item_rows(np.asarray(history_item_ids, np.int64)[:, :length].reshape(-1))
        history = history.reshape(len(rows), -1)
        history = np.where(self.known_item_rows[history], history, OOV)
        return self.model.user_tower(
            self._id_rows(rows, self.known_user_rows),
            self.model.user_cats[torch.as_tensor(rows)],
            torch.as_tensor(history),
        )

    @torch.no_grad()
    def log_probs(self, user_vectors: torch.Tensor, item_vectors: torch.Tensor) -> np.ndarray:
        """log p(item | user) over the given items: log-softmax of cosine / temperature, so two
        models' scores are on one scale and can be blended."""
        logits = user_vectors @ item_vectors.T / self.model.temperature()
        return F.log_softmax(logits, dim=1).numpy().astype(np.float64)


def fine_tune(
    snapshot: TowerSnapshot,
    train: pd.DataFrame,
    history: pd.DataFrame,
    tune: FineTuneConfig,
    anchor_l2: float = 0.0,
) -> TowerSnapshot:
    """Warm-start from `snapshot` and train on `train` (histories filled from `history`, the events
    before and beside them that are not training rows); `anchor_l2` pulls toward the snapshot."""
    config = TwoTowerConfig.model_validate(
        {**snapshot.config.model_dump(), "epochs": tune.epochs, "lr": tune.lr, "batch_size": tune.batch_size}
    )
    examples = build_training_examples(snapshot.features, train, config, history=history)
    model = build_model(snapshot.features, config)
    fit(model, make_loader(examples, config), config, init_state=snapshot.state_dict(), anchor_l2=anchor_l2)
    return snapshot.trained(model, train)
