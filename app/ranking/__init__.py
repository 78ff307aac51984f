"""Ranking: feature tables and assembly, the multi-task DCN, and the batched scorer stage.

    store = FeatureStore.build(history, ds.items, ds.users, RankingFeatureConfig())
    artifacts = RankerArtifacts.load("artifacts/ranker")     # written by training/ranker.py
    scorer = MultiTaskScorer.from_artifacts(artifacts)
    per_request = scorer.score_batch([(query, candidates), ...])   # one tensor pass

No Ray imports here: training/ranker.py owns the Ray Train job.
"""
from app.ranking.artifacts import RankerArtifacts, build_model
from app.ranking.config import (
    HEADS,
    DCNConfig,
    RankerTrainingConfig,
    RankingConfig,
    RankingFeatureConfig,
    ScoreWeights,
)
from app.ranking.dcn import MultiTaskDCN
from app.ranking.features import (
    FeatureBatch,
    FeatureDef,
    FeatureSchema,
    FeatureStore,
    RankingFeatureAssembler,
    declare_features,
)
from app.ranking.scorer import HEAD_COLUMNS, SCORE_COLUMNS, MultiTaskScorer, combine_heads, top_k_all_items

__all__ = [
    "HEADS", "HEAD_COLUMNS", "SCORE_COLUMNS", "DCNConfig", "FeatureBatch", "FeatureDef", "FeatureSchema",
    "FeatureStore", "MultiTaskDCN", "MultiTaskScorer", "RankerArtifacts", "RankerTrainingConfig",
    "RankingConfig", "RankingFeatureAssembler", "RankingFeatureConfig", "ScoreWeights", "build_model",
    "combine_heads", "declare_features", "top_k_all_items",
]
