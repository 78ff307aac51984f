from __future__ import annotations

from pydantic import Field, model_validator

from app._config_base import Section


class ExplorationConfig(Section):
    """The exploration slot (app/reranking/exploration.py): young, little-engaged items lifted
    into a band of organic positions, so new posts get impressions to learn from."""

    max_items: int = Field(1, ge=0, le=10, description="items lifted per page (0: off)")
    first_position: int = Field(3, ge=1, le=100, description="first organic position (1-based) of the band")
    last_position: int = Field(8, ge=1, le=100, description="last organic position of the band")
    max_age_s: float = Field(86_400.0, gt=0, le=30 * 86_400, description="an item published within this is young")
    max_engagements: int = Field(20, ge=0, le=1_000_000, description="an item engaged with at most this often is unproven")

    @model_validator(mode="after")
    def _band_is_ordered(self) -> ExplorationConfig:
        if self.last_position < self.first_position:
            raise ValueError(f"last_position {self.last_position} is before first_position {self.first_position}")
        return self


class RerankingConfig(Section):
    """Diversity, policy and per-page caps applied after ranking."""

    mmr_lambda: float = Field(0.7, ge=0.0, le=1.0, description="1 = pure relevance, 0 = pure diversity")
    mmr_creator_similarity: float = Field(
        0.5, ge=0.0, le=1.0, description="similarity added when two items share a creator"
    )
    output_size: int = Field(100, ge=1, le=5000, description="candidates kept after MMR (reference: 100)")
    max_items_per_creator: int = Field(2, ge=1, le=100, description="per-page creator frequency cap")
    unknown_user_age: int = Field(
        13, ge=0, le=120, description="age assumed for users without one: the content filter fails safe"
    )
    exploration: ExplorationConfig = Field(default_factory=ExplorationConfig)
