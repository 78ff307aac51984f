"""The organic pipeline as an offline `Recommender`, for `rayfeed eval topk` and the quality
benchmark: fit trains the whole pipeline (training/organic.py) on the given interactions,
recommend runs retrieval + ranking for each user.

Items never seen in the given interactions are never recommended (the eval contract: no
evidence about them), and neither is anything in the user's history.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

import numpy as np
import pandas as pd

from config import RayfeedConfig
from app.data import load_dataset
from app.data.tables import Dataset
from app.evaluation.sets import PAD, UserItemSets
from app.organic import OrganicModels, OrganicPipeline
from training.organic import fit_organic, production_split


class OrganicRecommender:
    def __init__(
        self,
        dataset: Dataset,
        config: RayfeedConfig,
        *,
        through: str = "ranking",
        use_ray: bool = True,
        labels: pd.DataFrame | None = None,
        name: str = "organic pipeline",
        log: Callable[[str], None] = print,
    ) -> None:
        self.dataset = dataset
        self.config = config
        self.through = through
        self.use_ray = use_ray
        self.labels = labels
        self.name = name
        self.log = log
        self.models: OrganicModels | None = None
        self._fitted_on: tuple[int, int] | None = None

    def at_stage(self, through: str, name: str) -> "OrganicRecommender":
        """The same fitted pipeline cut after another part (fit on the same data is not repeated)."""
        other = copy.copy(self)
        other.through, other.name = through, name
        return other

    def served_with(self, config: RayfeedConfig, name: str) -> "OrganicRecommender":
        """The same fitted models served under other serving settings (the cascade off, say):
        only what `OrganicPipeline` reads at serving time may differ from the training config."""
        other = copy.copy(self)
        other.config, other.name = config, name
        return other

    def fit(self, interactions: pd.DataFrame) -> None:
        """With `labels` given at construction (the validation split, contained in
        `interactions`), the ranker learns to predict them from the rest; otherwise each user's
        newest `training.label_fraction` is held out for it."""
        key = (len(interactions), int(interactions["timestamp"].sum()))
        if self.models is not None and self._fitted_on == key:
            return
        frame = interactions.assign(
            rating=interactions.get("rating", pd.Series(5.0, index=interactions.index)).astype(np.float32),
            position=np.int64(-1),
        )
        if self.labels is not None:
            marked = frame.merge(
                self.labels[["user_id", "item_id", "timestamp"]].assign(_label=True),
                on=["user_id", "item_id", "timestamp"], how="left",
            )
            is_label = marked["_label"].fillna(False).to_numpy(bool)
            history, labels = frame[~is_label], frame[is_label]
        else:
            history, labels = production_split(frame, self.config.training.label_fraction)
        world = dataclasses.replace(self.dataset, interactions=pd.concat([history, labels], ignore_index=True))
        self.models = fit_organic(world, history, labels, self.config, use_ray=self.use_ray, log=self.log)
        self.known_items = np.unique(frame["item_id"].to_numpy(np.int64))
        self._fitted_on = key

    def recommend(self, user_ids: np.ndarray, k: int, exclude: UserItemSets) -> np.ndarray:
        if self.models is None:
            raise RuntimeError(f"{self.name}: call fit before recommend")
        pipeline = OrganicPipeline(self.models, self.config)
        now = self.models.engagements.last_timestamp
        out = np.full((len(user_ids), k), PAD, dtype=np.int64)
        for row, user_id in enumerate(np.asarray(user_ids, np.int64)):
            query = self.models.query(
                int(user_id), now=now, limit=k, served_item_ids=frozenset(exclude.items_of(int(user_id)).tolist())
            )
            ranked = pipeline.run(query, through=self.through).candidates.item_ids
            ranked = ranked[np.isin(ranked, self.known_items)][:k]
            out[row, : len(ranked)] = ranked
        return out


class MappedRecommender:
    """A recommender trained on a dataset whose ids are not the evaluation split's (the same data
    exported to the contract with string ids, say): the split's ids are mapped in, its
    recommendations mapped back, so both rows of a benchmark score the same test interactions."""

    def __init__(self, inner, to_internal: Callable[[str, np.ndarray], np.ndarray],
                 to_split_items: Callable[[np.ndarray], np.ndarray], name: str) -> None:
        self.inner, self.to_internal, self.to_split_items, self.name = inner, to_internal, to_split_items, name

    def _mapped(self, frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(user_id=self.to_internal("users", frame["user_id"].to_numpy()),
                            item_id=self.to_internal("items", frame["item_id"].to_numpy()))

    def served_with(self, config: RayfeedConfig, name: str) -> "OrganicRecommender":
        """The same fitted models served under other serving settings (the cascade off, say):
        only what `OrganicPipeline` reads at serving time may differ from the training config."""
        other = copy.copy(self)
        other.config, other.name = config, name
        return other

    def fit(self, interactions: pd.DataFrame) -> None:
        self.inner.fit(self._mapped(interactions))

    def recommend(self, user_ids: np.ndarray, k: int, exclude: UserItemSets) -> np.ndarray:
        pairs = pd.DataFrame({"user_id": np.repeat(exclude.user_ids, np.diff(exclude.indptr)),
                              "item_id": exclude.item_ids})
        internal = self.inner.recommend(self.to_internal("users", np.asarray(user_ids)), k,
                                        UserItemSets.from_frame(self._mapped(pairs)))
        out = np.full_like(internal, PAD)
        found = internal != PAD
        out[found] = self.to_split_items(internal[found])
        return out


def organic_recommender_factory(config: RayfeedConfig, use_ray: bool = True) -> Callable[[], OrganicRecommender]:
    dataset = load_dataset(config.data)
    return lambda: OrganicRecommender(dataset, config, use_ray=use_ray)
