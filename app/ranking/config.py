"""Every tunable of the ranking stage, declared once with its default, bounds and meaning.

Sections: `features` (what the FeatureStore computes), `model` (the multi-task DCN), `training`
(optimisation and example building) and `weights` (how the heads combine into the final score).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from app._config_base import Section

HEADS = ("click", "like", "share", "hide", "watch")
# The candidate score column of each head (what MultiTaskScorer writes, what monitors read).
HEAD_COLUMNS = {"click": "p_click", "like": "p_like", "share": "p_share", "hide": "p_hide", "watch": "e_watch"}


class RankingFeatureConfig(Section):
    """What the feature tables hold; the windows are measured back from each request's time."""

    window_days: tuple[float, ...] = Field(
        (1.0, 7.0, 30.0), min_length=1, max_length=6,
        description="item popularity windows (days before the request time) counted as features",
    )
    rating_prior_count: float = Field(
        10.0, ge=0, le=1e4, description="pseudo-ratings shrinking an item's mean rating and like rate to the global ones"
    )
    cooc_neighbours: int = Field(
        200, ge=1, le=10_000, description="co-occurrence neighbours kept per item (sparse item-item table)"
    )
    cooc_shrink: float = Field(10.0, ge=0, le=1e5, description="added to the cosine denominator of co-occurrence")
    cf_l2: float = Field(
        200.0, gt=0, le=1e7, description="L2 penalty of the item-item regression (EASE-style) score feature"
    )
    cf_max_items: int = Field(
        20_000, ge=0, le=200_000,
        description="catalogues larger than this skip the dense item-item regression (its feature is 0)",
    )
    recent_items: int = Field(
        10, ge=1, le=1000, description="latest history items behind the 'recent co-occurrence' feature"
    )
    max_position: int = Field(
        50, ge=1, le=10_000, description="positions above this share the last position bucket"
    )
    source_names: tuple[str, ...] = Field(
        ("ann", "social", "trending", "coengagement"),
        description="retrieval sources whose `src_<name>` score columns are model inputs (0 when absent)",
    )
    item_id_embedding: bool = Field(
        True, description="learn an embedding per item id (index 0 = unknown / not in the tables)"
    )


class DCNConfig(Section):
    """The multi-task DCN-v2: embeddings + normalised dense → cross ∥ deep → MMoE or shared bottom."""

    embedding_dim: int = Field(8, ge=1, le=256, description="width of each categorical embedding")
    item_embedding_dim: int = Field(16, ge=1, le=512, description="width of the item-id embedding")
    cross_layers: int = Field(2, ge=0, le=8, description="DCN-v2 cross layers")
    cross_rank: int = Field(
        0, ge=0, le=1024, description="low-rank cross factorisation rank; 0 = full-rank cross matrices"
    )
    deep_layers: tuple[int, ...] = Field((128, 64), min_length=1, description="hidden widths of the deep MLP")
    combination: Literal["parallel", "stacked"] = Field(
        "parallel", description="parallel: concat(cross(x), deep(x)); stacked: deep(cross(x))"
    )
    bottom: Literal["shared", "mmoe"] = Field("mmoe", description="shared bottom or multi-gate mixture of experts")
    experts: int = Field(4, ge=1, le=64, description="MMoE experts")
    expert_dim: int = Field(64, ge=1, le=4096, description="MMoE expert output width")
    tower_dim: int = Field(32, ge=1, le=4096, description="hidden width of each head's tower")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout in the deep MLP and experts")


class RankerTrainingConfig(Section):
    """Optimisation and example building (see training/ranker.py)."""

    epochs: int = Field(2, ge=1, le=1000, description="passes over the training examples")
    batch_size: int = Field(2048, ge=8, le=1_000_000, description="examples per optimiser step")
    lr: float = Field(3e-3, gt=0, le=1.0, description="Adam learning rate")
    weight_decay: float = Field(1e-6, ge=0, le=1.0, description="Adam L2 penalty")
    negatives_per_positive: int = Field(
        20, ge=1, le=10_000, description="unlabelled candidates sampled per positive (uniform over non-history items)"
    )
    extra_label_windows: int = Field(
        1, ge=0, le=5,
        description="extra earlier label windows (each one validation-sized, cut from the end of the "
        "training history) added as training examples",
    )
    position_dropout: float = Field(
        0.1, ge=0, le=1, description="share of training rows whose position is replaced by 'unknown'"
    )
    item_id_dropout: float = Field(
        0.1, ge=0, le=1,
        description="share of training rows whose item id is replaced by 'unknown' (code 0): the row a "
                    "published item is scored with is learned, so a new item is ranked on its content")
    loss_weights: dict[str, float] = Field(
        default_factory=lambda: {"click": 1.0, "like": 0.5, "share": 0.25, "hide": 0.25, "watch": 0.5},
        description="per-head weight in the training loss",
    )
    seed: int = Field(0, description="seed of sampling, initialisation and shuffling")
    threads: int = Field(2, ge=1, le=256, description="torch intra-op threads of the training loop")

    @model_validator(mode="after")
    def _known_heads(self) -> RankerTrainingConfig:
        if set(self.loss_weights) != set(HEADS):
            raise ValueError(f"loss_weights needs exactly the heads {list(HEADS)}, got {sorted(self.loss_weights)}")
        if any(w < 0 for w in self.loss_weights.values()):
            raise ValueError("loss_weights must be >= 0")
        return self


class ScoreWeights(Section):
    """final = click·P(click) + like·P(like) + share·P(share) − hide·P(hide) + watch·E(watch).

    P(like) etc. are unconditional (like implies click), so they re-weight clicks towards the ones
    users enjoy. The defaults keep P(click) dominant — it is what Recall@K measures — and give the
    satisfaction heads a tie-breaking share (measured on ML-100k: see benchmarks/ranking.py).
    """

    click: float = Field(1.0, ge=0, le=100, description="weight of P(click)")
    like: float = Field(0.1, ge=0, le=100, description="weight of P(like)")
    share: float = Field(0.05, ge=0, le=100, description="weight of P(share)")
    hide: float = Field(0.1, ge=0, le=100, description="penalty on P(hide) (subtracted)")
    watch: float = Field(0.1, ge=0, le=100, description="weight of E(watch fraction)")


class SessionInterestConfig(Section):
    """The dynamic half of the static+dynamic ensemble at ranking: the ranker (trained on the
    long-term history) is blended with the topics of what the user engaged with in the active
    session, final' = final + weight · cos(item topics, session topics) · |final|."""

    weight: float = Field(1.0, ge=0, le=100, description="0 turns the session term off; 1 doubles a perfect match")
    max_items: int = Field(20, ge=1, le=1000, description="newest session engagements that define the interest")


class CascadeConfig(Section):
    """The ranking cascade: a light pre-ranker scores every merged candidate and only its best
    `keep` reach the DCN. Distilled from the DCN's final score at training time (training/pre_ranker.py)."""

    enabled: bool = Field(
        True, description="off (or an artifact without a pre-ranker): the DCN scores every candidate"
    )
    keep: int = Field(
        500, ge=1, le=100_000,
        description="candidates the pre-ranker passes to the DCN (fewer candidates than this: all pass)",
    )
    hidden: tuple[int, ...] = Field(
        (64,), max_length=4, description="hidden widths of the pre-ranker's MLP over the dense features"
    )
    epochs: int = Field(16, ge=1, le=1000, description="distillation passes over the distillation examples")
    batch_size: int = Field(1024, ge=8, le=1_000_000, description="anchor examples per distillation step")
    distill_negatives_per_positive: int = Field(
        50, ge=1, le=10_000,
        description="the distillation set: the ranker's label window with this many unlabelled candidates per "
        "positive (retrieval candidates when training has them); the teacher labels them all, so more is cheap",
    )
    lr: float = Field(3e-3, gt=0, le=1.0, description="Adam learning rate of the distillation")
    temperature: float = Field(
        0.1, gt=0, le=100,
        description="pairwise distillation: teacher score differences divided by this times their standard deviation",
    )


class RankingConfig(Section):
    """The ranking stage: feature tables, model, training and score combination."""

    features: RankingFeatureConfig = Field(default_factory=RankingFeatureConfig)
    model: DCNConfig = Field(default_factory=DCNConfig)
    training: RankerTrainingConfig = Field(default_factory=RankerTrainingConfig)
    weights: ScoreWeights = Field(default_factory=ScoreWeights)
    session_interest: SessionInterestConfig = Field(default_factory=SessionInterestConfig)
    cascade: CascadeConfig = Field(default_factory=CascadeConfig)
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="scoring device; auto = cuda when available"
    )
    score_chunk: int = Field(
        65_536, ge=1, le=10_000_000, description="rows per forward pass when scoring many pairs offline"
    )
    output_size: int = Field(500, ge=1, le=100_000, description="candidates kept after ranking (reference: 500)")
    item_feature_refresh_s: float = Field(
        60.0, ge=0, le=86_400,
        description="serving: the item-only features (window counts, age, rating means) are read from a table "
        "of every item rebuilt in the background every this many seconds of request time, so they are as of a "
        "moment up to twice this before the request; 0 computes them per candidate, exactly",
    )
