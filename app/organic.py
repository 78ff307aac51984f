"""The organic pipeline, declared in one place: retrieval → ranking → reranking.

Three stage lists, each run by its own PipelineRunner, so the serving layer can put each part
in its own deployment and the offline path can run all three in one process:

    retrieval   sources → cross-source features → cheap filters → quota merge   (~5000)
    ranking     multi-task DCN scores → top-K                                    (~500)
    reranking   MMR diversity → creator frequency cap                            (~100)

`OrganicModels` holds everything the stages read (models, index, engagement state, catalogue);
it is built by training/organic.py, saved as one artifact version and loaded by deployments.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from app.catalog import Catalog, CatalogHydrator
from app.config import RayfeedConfig
from app.data.tables import Dataset
from app.pipeline import Candidates, FeedQuery, PipelineResult, PipelineRunner, StageHook
from app.reranking import (
    ContentRatingFilter,
    CreatorCapSelector,
    HiddenCreatorFilter,
    HiddenItemFilter,
    MMRSelector,
    TopKSelector,
    UnknownItemFilter,
)

# The model stack (torch, FAISS) is imported where it is used: the Reranking replica needs
# only the catalogue, and a replacement replica that skips those imports starts seconds sooner.
if TYPE_CHECKING:
    from app.ranking.artifacts import RankerArtifacts
    from app.retrieval.engagement import EngagementLog, ItemNeighbours
    from app.retrieval.index import AnnIndex
    from app.retrieval.sources import SocialGraph
    from app.retrieval.two_tower import TwoTowerArtifacts


@dataclass(frozen=True)
class CatalogModels:
    """What reranking and the notifications read: the dataset and its catalogue, no models."""

    dataset: Dataset
    catalog: Catalog

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> "CatalogModels":
        return cls(dataset, Catalog.from_dataset(dataset))


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
    ranker: RankerArtifacts
    meta: dict[str, object] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        dataset: Dataset,
        history: pd.DataFrame,
        two_tower: TwoTowerArtifacts,
        ranker: RankerArtifacts | None,
        config: RayfeedConfig,
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
            social=SocialGraph(dataset.social_edges),
            ranker=ranker,  # type: ignore[arg-type]  # None only while the ranker is being trained
        )

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.two_tower.save(directory / "two_tower")
        self.index.save(directory / "ann.index")
        self.ranker.save(directory / "ranker")
        self.engagements.interactions().to_parquet(directory / "engagements.parquet", index=False)
        (directory / "organic.json").write_text(json.dumps(self.meta, default=str))

    @classmethod
    def load(cls, directory: Path, dataset: Dataset, config: RayfeedConfig) -> "OrganicModels":
        from app.ranking.artifacts import RankerArtifacts
        from app.retrieval.engagement import EngagementLog, ItemNeighbours
        from app.retrieval.index import AnnIndex
        from app.retrieval.sources import SocialGraph
        from app.retrieval.two_tower import TwoTowerArtifacts

        two_tower = TwoTowerArtifacts.load(directory / "two_tower")
        engagements = pd.read_parquet(directory / "engagements.parquet")
        sources = config.retrieval.sources
        return cls(
            dataset=dataset,
            catalog=Catalog.from_dataset(dataset),
            two_tower=two_tower,
            index=AnnIndex.load(directory / "ann.index", config.retrieval.index),
            engagements=EngagementLog(engagements),
            neighbours=ItemNeighbours.build(engagements, sources.coengagement_neighbours, sources.coengagement_shrink),
            social=SocialGraph(dataset.social_edges),
            ranker=RankerArtifacts.load(directory / "ranker", config.ranking),
            meta=json.loads((directory / "organic.json").read_text()),
        )

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
            request_id=request_id,
            cold_start=profile is None or len(history) == 0,
        )


def retrieval_pipeline(models: OrganicModels, config: RayfeedConfig, hook: StageHook | None = None) -> PipelineRunner:
    from app.retrieval.sources import (
        CoEngagementSource, EmbeddingAnnSource, SeenItemFilter, SocialSource, SourceFeatureHydrator, SourceMerger,
        TrendingSource,
    )

    sources_config = config.retrieval.sources
    return PipelineRunner(
        "retrieval",
        sources=[
            EmbeddingAnnSource(models.index, models.two_tower.user_embedding, sources_config),
            CoEngagementSource(models.neighbours, models.engagements, sources_config),
            SocialSource(models.social, models.engagements, sources_config),
            TrendingSource(models.engagements, sources_config),
        ],
        stages=[
            # Per-item features across sources first: the filters below drop rows, not evidence.
            SourceFeatureHydrator(),
            # Cheap filters before the quota merge, so quotas are not spent on dropped items.
            SeenItemFilter(),
            UnknownItemFilter(models.catalog),
            HiddenItemFilter(),
            CatalogHydrator(models.catalog),
            HiddenCreatorFilter(),
            ContentRatingFilter(config.reranking.unknown_user_age),
            SourceMerger(sources_config),
        ],
        hook=hook,
    )


def ranking_pipeline(models: OrganicModels, config: RayfeedConfig, hook: StageHook | None = None) -> PipelineRunner:
    from app.ranking.scorer import MultiTaskScorer
    from app.ranking.session import SessionInterestScorer

    return PipelineRunner(
        "ranking",
        sources=[],
        stages=[
            MultiTaskScorer.from_artifacts(models.ranker),
            SessionInterestScorer(models.ranker.store.item_topics, config.ranking.session_interest),
            TopKSelector(config.ranking.output_size, name="ranked_top_k"),
        ],
        hook=hook,
    )


def reranking_pipeline(
    models: CatalogModels | OrganicModels, config: RayfeedConfig, hook: StageHook | None = None,
) -> PipelineRunner:
    rerank = config.reranking
    return PipelineRunner(
        "reranking",
        sources=[],
        stages=[
            MMRSelector(models.catalog, rerank.output_size, rerank.mmr_lambda, rerank.mmr_creator_similarity),
            # After MMR: the cap removes a creator's lowest-placed items, not its best.
            CreatorCapSelector(rerank.max_items_per_creator),
        ],
        hook=hook,
    )


@dataclass
class OrganicResult:
    candidates: Candidates
    parts: dict[str, PipelineResult]


class OrganicPipeline:
    """All three parts in one process: the CLI, offline evaluation and the simulator use it."""

    def __init__(self, models: OrganicModels, config: RayfeedConfig, hook: StageHook | None = None) -> None:
        self.models = models
        self.parts = {
            "retrieval": retrieval_pipeline(models, config, hook),
            "ranking": ranking_pipeline(models, config, hook),
            "reranking": reranking_pipeline(models, config, hook),
        }

    def run(self, query: FeedQuery, through: str = "reranking") -> OrganicResult:
        """Run the parts in order, stopping after `through` (e.g. "ranking" for top-K evaluation)."""
        results: dict[str, PipelineResult] = {}
        candidates: Candidates | None = None
        for name, runner in self.parts.items():
            results[name] = runner.run(query, candidates)
            candidates = results[name].candidates
            if name == through:
                break
        assert candidates is not None
        return OrganicResult(candidates, results)
