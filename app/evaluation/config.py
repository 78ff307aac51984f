"""Every tunable of offline evaluation, declared once with its default and bounds."""
from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from app._config_base import Section

# The metric families the harness knows; column names are `f"{family}@{k}"` (see metrics.py).
METRIC_FAMILIES = ("recall", "ndcg", "hit_rate", "mrr", "coverage", "popularity", "gini")


class SplitConfig(Section):
    """Per-user temporal split fractions (see split.temporal_split for the rounding rule)."""

    train_fraction: float = Field(0.8, gt=0, lt=1, description="oldest share of each user's interactions")
    valid_fraction: float = Field(0.1, gt=0, lt=1, description="next share: model selection")
    test_fraction: float = Field(0.1, gt=0, lt=1, description="newest share: the reported figures")

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitConfig:
        total = self.train_fraction + self.valid_fraction + self.test_fraction
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total:.6f}")
        return self


class EASEConfig(Section):
    """EASE (Steck 2019): closed-form item-item regression, B = I - P / diag(P), P = (XᵀX + λI)⁻¹."""

    l2: float = Field(
        100.0, gt=0, le=1e7,
        description="λ, the L2 penalty; default: best of l2_grid on the ML-100k validation split (ndcg@10)",
    )
    l2_grid: tuple[float, ...] = Field(
        (50.0, 100.0, 200.0, 300.0, 500.0, 1000.0, 2000.0),
        min_length=1, description="λ values tried by tune_ease on the validation split",
    )

    @field_validator("l2_grid")
    @classmethod
    def _positive(cls, grid: tuple[float, ...]) -> tuple[float, ...]:
        if any(v <= 0 for v in grid):
            raise ValueError("every λ in l2_grid must be > 0")
        return grid


class ItemKNNConfig(Section):
    """Item-item cosine on the binary interaction matrix, top-k neighbours per target item."""

    k: int = Field(100, ge=1, le=100_000, description="neighbours kept per target item")
    shrink: float = Field(
        10.0, ge=0, le=1e5, description="added to the cosine denominator: damps pairs seen by few users"
    )
    k_grid: tuple[int, ...] = Field(
        (10, 20, 50, 100, 200, 400), min_length=1, description="k values tried by tune_itemknn"
    )
    column_chunk: int = Field(
        2048, ge=1, le=1_000_000, description="target items densified at once when fitting (memory bound)"
    )

    @field_validator("k_grid")
    @classmethod
    def _positive(cls, grid: tuple[int, ...]) -> tuple[int, ...]:
        if any(v < 1 for v in grid):
            raise ValueError("every k in k_grid must be >= 1")
        return grid


class MetricsConfig(Section):
    """Which cut-offs each metric family is reported at, and what model selection optimises."""

    ks: dict[str, tuple[int, ...]] = Field(
        default_factory=lambda: {
            "recall": (10, 20, 50),
            "ndcg": (10, 20),
            "hit_rate": (10,),
            "mrr": (10,),
            "coverage": (10,),
            "popularity": (10,),
            "gini": (10,),
        },
        description="metric family -> cut-offs; families: " + ", ".join(METRIC_FAMILIES),
    )
    tuning_metric: str = Field("ndcg@10", description="validation metric maximised by the tuning helpers")

    @field_validator("ks")
    @classmethod
    def _known_families(cls, ks: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        unknown = sorted(set(ks) - set(METRIC_FAMILIES))
        if unknown:
            raise ValueError(f"unknown metric families {unknown}; known: {list(METRIC_FAMILIES)}")
        if any(k < 1 for cut_offs in ks.values() for k in cut_offs):
            raise ValueError("every cut-off must be >= 1")
        return ks

    @model_validator(mode="after")
    def _tuning_metric_is_reported(self) -> MetricsConfig:
        if self.tuning_metric not in self.column_names():
            raise ValueError(f"tuning_metric {self.tuning_metric!r} is not among {self.column_names()}")
        return self

    def column_names(self) -> list[str]:
        """Metric names in report order, e.g. ["recall@10", ..., "gini@10"]."""
        return [f"{family}@{k}" for family in METRIC_FAMILIES for k in self.ks.get(family, ())]

    @property
    def max_k(self) -> int:
        return max((k for cut_offs in self.ks.values() for k in cut_offs), default=1)


class EvaluationConfig(Section):
    """Offline evaluation: split, baselines and metrics."""

    split: SplitConfig = Field(default_factory=SplitConfig)
    ease: EASEConfig = Field(default_factory=EASEConfig)
    itemknn: ItemKNNConfig = Field(default_factory=ItemKNNConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    score_batch_users: int = Field(
        2048, ge=1, le=1_000_000, description="users scored per dense (users x items) block in recommend"
    )
