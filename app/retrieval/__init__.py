"""Retrieval: two-tower model, ANN index (FAISS CPU/GPU), candidate sources and their merge.

Ray-free: training/two_tower.py runs `two_tower.fit` under Ray Train; everything here also
runs in-process (unit tests, notebooks).
"""
from app.retrieval.config import AnnIndexConfig, RetrievalConfig, SourcesConfig, TwoTowerConfig
from app.retrieval.engagement import EngagementLog, ItemNeighbours, RecentEngagements, TrendingCounts
from app.retrieval.features import TowerFeatures
from app.retrieval.index import AnnIndex
from app.retrieval.sources import (
    CoEngagementSource,
    EmbeddingAnnSource,
    SeenItemFilter,
    SocialGraph,
    SocialSource,
    SourceFeatureHydrator,
    SourceMerger,
    TrendingSource,
    merge_candidates,
)
from app.retrieval.two_tower import TwoTowerArtifacts, TwoTowerModel, train_two_tower_in_process

__all__ = [
    "AnnIndex",
    "AnnIndexConfig",
    "CoEngagementSource",
    "EmbeddingAnnSource",
    "EngagementLog",
    "ItemNeighbours",
    "RecentEngagements",
    "RetrievalConfig",
    "SeenItemFilter",
    "SocialGraph",
    "SocialSource",
    "SourceFeatureHydrator",
    "SourceMerger",
    "SourcesConfig",
    "TowerFeatures",
    "TrendingCounts",
    "TrendingSource",
    "TwoTowerArtifacts",
    "TwoTowerConfig",
    "TwoTowerModel",
    "merge_candidates",
    "train_two_tower_in_process",
]
