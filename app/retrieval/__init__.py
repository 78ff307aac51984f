"""Retrieval: two-tower model, ANN index (FAISS CPU/GPU), candidate sources and their merge.

Ray-free: training/two_tower.py runs `two_tower.fit` under Ray Train; everything here also
runs in-process (unit tests, notebooks).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from app.lazy_exports import lazy_exports

# Lazy: processes that only read configuration (the ingress, the auction) import neither torch nor FAISS.
_EXPORTS = {
    "AnnIndexConfig": "config", "RetrievalConfig": "config", "SourcesConfig": "config", "TwoTowerConfig": "config",
    "EngagementLog": "engagement", "ItemNeighbours": "engagement", "RecentEngagements": "engagement",
    "TrendingCounts": "engagement",
    "TowerFeatures": "features",
    "AnnIndex": "index",
    "CoEngagementSource": "sources", "EmbeddingAnnSource": "sources", "SeenItemFilter": "sources",
    "SocialGraph": "sources", "SocialSource": "sources", "SourceFeatureHydrator": "sources",
    "SourceMerger": "sources", "TrendingSource": "sources", "merge_candidates": "sources",
    "TwoTowerArtifacts": "two_tower_serving", "TwoTowerModel": "two_tower", "train_two_tower_in_process": "two_tower",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from app.retrieval.config import AnnIndexConfig, RetrievalConfig, SourcesConfig, TwoTowerConfig
    from app.retrieval.engagement import EngagementLog, ItemNeighbours, RecentEngagements, TrendingCounts
    from app.retrieval.features import TowerFeatures
    from app.retrieval.index import AnnIndex
    from app.retrieval.sources import (
        CoEngagementSource, EmbeddingAnnSource, SeenItemFilter, SocialGraph, SocialSource, SourceFeatureHydrator,
        SourceMerger, TrendingSource, merge_candidates,
    )
    from app.retrieval.two_tower import TwoTowerModel, train_two_tower_in_process
    from app.retrieval.two_tower_serving import TwoTowerArtifacts
