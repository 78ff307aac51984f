"""Reranking: MMR diversity, policy filters and creator frequency caps. Pure stages."""
from app.reranking.config import RerankingConfig
from app.reranking.filters import (
    ContentRatingFilter,
    HiddenCreatorFilter,
    HiddenItemFilter,
    TakedownFilter,
    UnknownItemFilter,
)
from app.reranking.mmr import MMRSelector
from app.reranking.selectors import CreatorCapSelector, TopKSelector

__all__ = [
    "RerankingConfig",
    "ContentRatingFilter",
    "CreatorCapSelector",
    "HiddenCreatorFilter",
    "HiddenItemFilter",
    "MMRSelector",
    "TakedownFilter",
    "TopKSelector",
    "UnknownItemFilter",
]
