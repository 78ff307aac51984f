"""Per-item attributes every stage may need, as arrays indexed by item id.

Built once from a Dataset and held by the serving replicas; `CatalogHydrator` attaches the
columns to candidates so filters and selectors stay pure functions of their input.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.data.snapshot import mapped_topic_matrix
from app.data.tables import Dataset
from app.freshness.published import PlacedItems
from app.pipeline.candidates import Candidates, FeedQuery


@dataclass(frozen=True)
class Catalog:
    creator_id: np.ndarray  # int64, −1 for unknown ids
    min_age: np.ndarray  # int16
    topic_matrix: np.ndarray  # float32 multi-hot, rows L2-normalised for cosine similarity
    topics: tuple[str, ...]
    known: np.ndarray  # bool: the id is in the catalogue

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> "Catalog":
        # Mapped from the artifact's snapshot (shared by the node's replicas), else built here.
        topics = mapped_topic_matrix(dataset)
        if topics is None:
            topics = dataset.normalised_topic_matrix()
        known = np.zeros(dataset.max_item_id + 1, dtype=bool)
        known[dataset.items["item_id"].to_numpy()] = True
        return cls(
            creator_id=dataset.item_creator,
            min_age=dataset.item_min_age,
            topic_matrix=topics,
            topics=dataset.topics,
            known=known,
        )

    def with_items(self, placed: PlacedItems) -> Catalog:
        """This catalogue with the published items' rows after its own (app/freshness/published.py);
        topics outside this catalogue's list were refused at publish time."""
        if not len(placed):
            return self
        n, frame = placed.slots, placed.frame
        rows = frame["item_id"].to_numpy(np.int64)
        creator_id = np.full(n, -1, dtype=np.int64)
        creator_id[: len(self.creator_id)] = self.creator_id
        creator_id[rows] = frame["creator_id"].to_numpy(np.int64)
        min_age = np.zeros(n, dtype=self.min_age.dtype)
        min_age[: len(self.min_age)] = self.min_age
        min_age[rows] = frame["min_age"].to_numpy()
        topic_matrix = np.zeros((n, len(self.topics)), dtype=np.float32)
        topic_matrix[: len(self.topic_matrix)] = self.topic_matrix
        column = {t: k for k, t in enumerate(self.topics)}
        for row, topics in zip(rows.tolist(), frame["topics"]):
            cols = [column[t] for t in topics if t in column]
            if cols:
                topic_matrix[row, cols] = 1.0 / np.sqrt(len(cols))
        known = np.zeros(n, dtype=bool)
        known[: len(self.known)] = self.known
        known[rows] = True
        return Catalog(creator_id, min_age, topic_matrix, self.topics, known)

    def is_known(self, item_ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(item_ids, dtype=np.int64)
        inside = (ids >= 0) & (ids < len(self.known))
        out = np.zeros(len(ids), dtype=bool)
        out[inside] = self.known[ids[inside]]
        return out

    def topic_names(self, item_id: int) -> tuple[str, ...]:
        return self.topic_names_of(np.array([item_id]))[0]

    def topic_names_of(self, item_ids: np.ndarray) -> list[tuple[str, ...]]:
        """Each item's topics, in catalogue order, with one array pass for all items (the
        collator's input needs them for every reranked item)."""
        names: list[list[str]] = [[] for _ in range(len(item_ids))]
        rows, cols = np.nonzero(self.topic_matrix[np.asarray(item_ids, dtype=np.int64)] > 0)
        for row, col in zip(rows.tolist(), cols.tolist()):
            names[row].append(self.topics[col])
        return [tuple(n) for n in names]


class CatalogHydrator:
    """Attaches creator_id and min_age (the reranking filters' inputs)."""

    name = "catalog_hydrator"

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def hydrate(self, query: FeedQuery, candidates: Candidates) -> dict[str, np.ndarray]:
        ids = candidates.item_ids
        return {"creator_id": self.catalog.creator_id[ids], "min_age": self.catalog.min_age[ids]}
