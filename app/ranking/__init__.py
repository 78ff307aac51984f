"""Ranking: feature tables and assembly, the cascade's pre-ranker, the multi-task DCN, and the
batched scorer stage.

    store = FeatureStore.build(history, ds.items, ds.users, RankingFeatureConfig())
    artifacts = RankerArtifacts.load("artifacts/ranker")     # written by training/ranker.py
    scorer = MultiTaskScorer.from_artifacts(artifacts)
    per_request = scorer.score_batch([(query, candidates), ...])   # one tensor pass

No Ray imports here: training/ranker.py owns the Ray Train job.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from app.lazy_exports import lazy_exports

# Lazy: processes that never score (the ingress, the auction, the CLI) do not import torch.
_EXPORTS = {
    "RankerArtifacts": "artifacts", "build_model": "artifacts",
    "HEAD_COLUMNS": "config", "HEADS": "config", "DCNConfig": "config", "RankerTrainingConfig": "config", "RankingConfig": "config",
    "RankingFeatureConfig": "config", "ScoreWeights": "config",
    "CascadeConfig": "config", "MultiTaskDCN": "dcn",
    "CascadeCut": "prerank", "PreRanker": "prerank", "PreRankerNet": "prerank",
    "FeatureBatch": "features", "FeatureDef": "features", "FeatureSchema": "features", "FeatureStore": "features",
    "RankingFeatureAssembler": "features", "declare_features": "features",
    "SCORE_COLUMNS": "scorer", "MultiTaskScorer": "scorer", "combine_heads": "scorer",
    "top_k_all_items": "scorer",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from app.ranking.artifacts import RankerArtifacts, build_model
    from app.ranking.config import (
        CascadeConfig, HEAD_COLUMNS, HEADS, DCNConfig, RankerTrainingConfig, RankingConfig, RankingFeatureConfig, ScoreWeights,
    )
    from app.ranking.dcn import MultiTaskDCN
    from app.ranking.prerank import CascadeCut, PreRanker, PreRankerNet
    from app.ranking.features import (
        FeatureBatch, FeatureDef, FeatureSchema, FeatureStore, RankingFeatureAssembler, declare_features,
    )
    from app.ranking.scorer import SCORE_COLUMNS, MultiTaskScorer, combine_heads, top_k_all_items
