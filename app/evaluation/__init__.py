"""Offline evaluation: temporal split, ranking metrics, CF baselines and the harness.

    split = temporal_split(interactions)                         # per user, 80/10/10 by time
    table = evaluate_all([("EASE", EASERecommender), ("Pop", PopularityRecommender)], split)

Protocol: "valid" fits on train and scores valid; "test" fits on train+valid and scores test;
history (never recommended) is always the fit data. No Ray imports here.
"""
from app.evaluation.config import EASEConfig, EvaluationConfig, ItemKNNConfig, MetricsConfig, SplitConfig
from app.evaluation.harness import (
    TuningResult,
    check_topk,
    evaluate,
    evaluate_all,
    to_markdown,
    tune_ease,
    tune_itemknn,
    tune_on_validation,
)
from app.evaluation.recommenders import (
    EASERecommender,
    ItemKNNRecommender,
    PopularityRecommender,
    Recommender,
    RecommenderFactory,
    ScoringRecommender,
)
from app.evaluation.sets import PAD, RaggedItems, TopKLists, UserItemSets
from app.evaluation.split import Phase, Split, split_sizes, temporal_split
from app.evaluation.topk_export import (
    InputFileError,
    default_recommender_factory,
    read_interactions_csv,
    read_users_file,
    recommend_topk,
    write_topk,
)

__all__ = [
    "EASEConfig", "EvaluationConfig", "ItemKNNConfig", "MetricsConfig", "SplitConfig",
    "TuningResult", "check_topk", "evaluate", "evaluate_all", "to_markdown", "tune_ease", "tune_itemknn",
    "tune_on_validation", "EASERecommender", "ItemKNNRecommender", "PopularityRecommender", "Recommender",
    "RecommenderFactory", "ScoringRecommender", "PAD", "RaggedItems", "TopKLists", "UserItemSets", "Phase",
    "Split", "split_sizes", "temporal_split", "InputFileError", "default_recommender_factory",
    "read_interactions_csv", "read_users_file", "recommend_topk", "write_topk",
]
