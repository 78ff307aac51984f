"""The loaded organic artifact: everything the organic stages read, as one object per replica.

`OrganicModels` (models, index, engagement state, catalogue) is built by training/organic.py,
saved as one artifact version and loaded by the Retrieval replica and the in-process service;
`CatalogModels` is the slice reranking and the notifications read (no model stack).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from app.catalog import Catalog
from app.data.tables import Dataset
from app.freshness.published import PlacedItems
from app.pipeline import FeedQuery
from app.settings import OrganicSettings

NEIGHBOURS_DIR = "neighbours"  # the co-engagement neighbours' arrays, mapped at load
ENGAGEMENT_LOG_DIR = "engagement_log"  # the engagement log's arrays, mapped at load (engagements.parquet: portable)

# The model stack (torch, FAISS) is imported where it is used: the Reranking replica needs
# only the catalogue, and a replacement replica that skips those imports starts seconds sooner.

if TYPE_CHECKING:
    from app.ranking.artifacts import RankerArtifacts
    from app.retrieval.engagement import EngagementLog, ItemNeighbours
    from app.retrieval.fresh import FreshIndex
    from app.retrieval.index import AnnIndex
    from app.retrieval.sources import SocialGraph
    from app.retrieval.two_tower_serving import TwoTowerArtifacts


@dataclass(frozen=True)
class CatalogModels:
    """What reranking and the notifications read: the dataset and its catalogue, no models."""

    dataset: Dataset
    catalog: Catalog

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> "CatalogModels":
        return cls(dataset, Catalog.from_dataset(dataset))

    def with_published(self, placed: PlacedItems) -> "CatalogModels":
        """These models knowing the items published since the artifact (app/freshness/published.py)."""
        return dataclasses.replace(self, catalog=self.catalog.with_items(placed))


@dataclass
class OrganicModels:
    """Everything the organic stages read, loaded once per replica."""

    dataset: Dataset
    catalog: Catalog
    two_tower: TwoTowerArtifacts
    index: AnnIndex
    engagements: EngagementLog
    neighbours: ItemNeighbours
    social: SocialGraph
    ranker: RankerArtifacts | None  # None: loaded for retrieval alone (`load(with_ranker=False)`)
    meta: dict[str, object] = field(default_factory=dict)
    # Items published since the artifact (app/freshness/published.py): their vectors and when.
    fresh: FreshIndex | None = None
    published_at: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def with_published(self, placed: PlacedItems, retention_s: float | None = None) -> "OrganicModels":
        """These models knowing the published items: catalogue rows, content-only vectors in the
        fresh index, publication times, and a ranker whose feature store has their content.
        Called on the artifact's own models (a replica keeps them and re-applies on each change).
        `retention_s`: only items published that recently stay in the fresh index (FreshIndex.build)."""
        from app.retrieval.fresh import FreshIndex

        if not len(placed):
            return self
        return dataclasses.replace(
            self, catalog=self.catalog.with_items(placed), fresh=FreshIndex.build(placed, self.two_tower, retention_s),
            published_at=placed.published_at(),
            ranker=None if self.ranker is None
            else dataclasses.replace(self.ranker, store=self.ranker.store.with_published(placed.frame)))

    @classmethod
    def build(
        cls,
        dataset: Dataset,
        history: pd.DataFrame,
        two_tower: TwoTowerArtifacts,
        ranker: RankerArtifacts | None,
        config: OrganicSettings,
    ) -> "OrganicModels":
        """Serving state as of `history`: engagement logs, neighbours, index, fresh user embeddings."""
        from app.retrieval.engagement import EngagementLog, ItemNeighbours
        from app.retrieval.index import AnnIndex
        from app.retrieval.sources import SocialGraph

        sources = config.retrieval.sources
        two_tower = two_tower.with_histories(history)
        return cls(
            dataset=dataset,
            catalog=Catalog.from_dataset(dataset),
            two_tower=two_tower,
            index=AnnIndex.build(two_tower.item_ids, two_tower.item_embeddings, config.retrieval.index),
            engagements=EngagementLog(history),
            neighbours=ItemNeighbours.build(history, sources.coengagement_neighbours, sources.coengagement_shrink),
            social=SocialGraph(dataset.friend_lists),
            ranker=ranker,  # None while the ranker is being trained
        )

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.two_tower.save(directory / "two_tower")
        self.index.save(directory / "ann.index")
        self.ranker.save(directory / "ranker")
        self.engagements.interactions().to_parquet(directory / "engagements.parquet", index=False)
        self.engagements.save(directory / ENGAGEMENT_LOG_DIR)
        self.neighbours.save(directory / NEIGHBOURS_DIR)
        (directory / "organic.json").write_text(json.dumps(self.meta, default=str))

    @classmethod
    def load(cls, directory: Path, dataset: Dataset, config: OrganicSettings, with_ranker: bool = True) -> "OrganicModels":
        """`with_ranker=False`: retrieval alone (the Retrieval replica), whose process then holds
        no ranker (its DCN and feature tables are the Ranking replica's)."""
        from app.retrieval.engagement import EngagementLog, ItemNeighbours
        from app.retrieval.index import AnnIndex
        from app.retrieval.sources import SocialGraph
        from app.retrieval.two_tower_serving import TwoTowerArtifacts

        ranker = None
        if with_ranker:  # imported only here: the ranker's modules import torch, which Retrieval never needs
            from app.ranking.artifacts import RankerArtifacts

            ranker = RankerArtifacts.load(directory / "ranker", config.ranking)
        two_tower = TwoTowerArtifacts.load(directory / "two_tower")
        sources = config.retrieval.sources
        # The log and the neighbours are saved with the artifact and mapped (shared by a node's
        # replicas); built from engagements.parquet for an artifact saved before they were, or
        # when the serving config asks for other neighbours than were built.
        log = EngagementLog.load(directory / ENGAGEMENT_LOG_DIR)
        neighbours = ItemNeighbours.load(directory / NEIGHBOURS_DIR, sources.coengagement_neighbours,
                                         sources.coengagement_shrink)
        if log is None or neighbours is None:
            engagements = pd.read_parquet(directory / "engagements.parquet")
            log = log if log is not None else EngagementLog(engagements)
            if neighbours is None:
                neighbours = ItemNeighbours.build(engagements, sources.coengagement_neighbours,
                                                  sources.coengagement_shrink)
        return cls(
            dataset=dataset,
            catalog=Catalog.from_dataset(dataset),
            two_tower=two_tower,
            index=AnnIndex.load(directory / "ann.index", config.retrieval.index),
            engagements=log,
            neighbours=neighbours,
            social=SocialGraph(dataset.friend_lists),
            ranker=ranker,
            meta=json.loads((directory / "organic.json").read_text()),
        )

    def for_retrieval(self) -> "OrganicModels":
        """These models as a Retrieval replica keeps them once its catalogue is built: the
        dataset's items frame cut to its ids (`Dataset.with_item_ids_only`), ≈ 80 MiB a replica
        at 1M items. Load it `with_ranker=False`."""
        return dataclasses.replace(self, dataset=self.dataset.with_item_ids_only())

    def query(
        self,
        user_id: int,
        now: float,
        limit: int,
        request_id: str = "",
        served_item_ids: frozenset[int] = frozenset(),
        hidden_item_ids: frozenset[int] = frozenset(),
        hidden_creator_ids: frozenset[int] = frozenset(),
        user_embedding: np.ndarray | None = None,
        fresh_item_ids: tuple[int, ...] = (),
        session_item_ids: tuple[int, ...] = (),
        taken_down_item_ids: frozenset[int] = frozenset(),
        taken_down_creator_ids: frozenset[int] = frozenset(),
    ) -> FeedQuery:
        """Hydrate the query: profile, consumed history + already served, friends."""
        profile = self.dataset.user_row(user_id)
        history = self.engagements.user_items(user_id)
        return FeedQuery(
            user_id=user_id,
            limit=limit,
            now=now,
            user_features={} if profile is None else {"age": profile["age"], "gender": profile["gender"]},
            seen_item_ids=frozenset(history.tolist()) | served_item_ids,
            hidden_item_ids=hidden_item_ids,
            hidden_creator_ids=hidden_creator_ids,
            friend_ids=tuple(int(f) for f in self.dataset.friends_of(user_id)),
            close_friend_ids=frozenset(int(f) for f in self.dataset.close_friends_of(user_id)),
            user_embedding=user_embedding,
            fresh_item_ids=fresh_item_ids,
            session_item_ids=session_item_ids,
            taken_down_item_ids=taken_down_item_ids,
            taken_down_creator_ids=taken_down_creator_ids,
            request_id=request_id,
            cold_start=profile is None or len(history) == 0,
        )
