from pydantic import Field

from app._config_base import Section


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
