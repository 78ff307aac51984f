"""Every tunable of the offline freshness strategies and the prequential replay, declared once.

`FreshnessConfig` is the `freshness` section of RayfeedConfig: how the timeline is cut (base
prefix, window length, validation windows), how each update strategy fine-tunes, and how the
static+dynamic ensemble weighs its members per context bucket.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from app._config_base import Section

DAY = 86_400.0
ContextBucket = Literal["new", "recent", "returning"]
CONTEXT_BUCKETS: tuple[ContextBucket, ...] = ("new", "recent", "returning")
DynamicMember = Literal["naive_incremental", "microbatch_regularised", "dynamic_embeddings"]


class FineTuneConfig(Section):
    """One fine-tune of the two-tower on a batch of events (warm-started from a previous model)."""

    epochs: int = Field(3, ge=1, le=1000, description="passes over the fine-tune rows")
    lr: float = Field(3e-3, gt=0, le=1.0, description="Adam learning rate of the fine-tune")
    batch_size: int = Field(
        256, ge=8, le=1_000_000, description="rows per step (a window holds ~1-3k events on MovieLens-100k)"
    )


class MicrobatchConfig(FineTuneConfig):
    """Regularised microbatching: every window, fine-tune the base on the accumulated events since
    the base (the last `recent_windows` of them) plus a replay sample of the base's own history,
    with an L2-SP anchor toward the base weights."""

    recent_windows: int | None = Field(
        None, ge=1, le=100_000, description="windows of accumulated events fine-tuned on (None: all since the base)"
    )
    replay_sample: int = Field(
        5000, ge=0, le=100_000_000, description="base-period interactions sampled (seeded) into every fine-tune"
    )
    anchor_l2: float = Field(
        1e-3, ge=0, le=1e6, description="weight of Σ||θ − θ_base||² in the fine-tune loss"
    )


class EnsembleConfig(Section):
    """Static + dynamic ensemble: score = (1 − w)·log p_static + w·log p_dynamic, w by context."""

    dynamic_member: DynamicMember = Field(
        "microbatch_regularised",
        description="the frequently updated member blended with the static model by the strategy named "
        "'ensemble' ('ensemble:<member>' names another); chosen on the validation windows (docs/freshness.md)",
    )
    weight_grid: tuple[float, ...] = Field(
        (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
        description="dynamic weights tried per context bucket on the validation windows",
    )
    initial_weights: dict[ContextBucket, float] = Field(
        default_factory=lambda: {"new": 0.5, "recent": 0.5, "returning": 0.5},
        description="dynamic weight per context bucket before (or without) learning",
    )
    learn_weights: bool = Field(True, description="grid-search each bucket's weight on the validation windows")
    learn_metric: Literal["recall", "ndcg"] = Field("ndcg", description="what the weight search maximises")
    recent_activity_s: float = Field(
        4 * DAY, gt=0, le=3650 * DAY,
        description="a user with an event this long before the window start is 'recent' (in an active "
        "session at the replay's window granularity); older history is 'returning', none is 'new'",
    )

    @model_validator(mode="after")
    def _weights_in_unit_interval(self) -> EnsembleConfig:
        bad = [w for w in (*self.weight_grid, *self.initial_weights.values()) if not 0 <= w <= 1]
        if bad or not self.weight_grid:
            raise ValueError(f"ensemble weights must lie in [0, 1] and the grid be non-empty, got {bad}")
        return self


class ReplayConfig(Section):
    """The prequential replay: base prefix, fixed time windows, validation prefix, metrics."""

    base_fraction: float = Field(
        0.55, gt=0, lt=1, description="oldest share of interactions (by time) the base model trains on"
    )
    window_s: float = Field(4 * DAY, gt=0, le=3650 * DAY, description="length of each replay window")
    validation_windows: int = Field(
        6, ge=1, le=10_000, description="first windows used to learn the ensemble weights; reported windows follow"
    )
    max_windows: int | None = Field(None, ge=2, le=100_000, description="stop after this many windows (None: all)")
    min_window_users: int = Field(
        5, ge=1, le=1_000_000, description="windows with fewer evaluable users are observed but not scored"
    )
    k: int = Field(20, ge=1, le=10_000, description="cut-off of Recall@k and NDCG@k")
    bootstrap_samples: int = Field(2000, ge=100, le=1_000_000, description="resamples of the paired CI over windows")
    confidence: float = Field(0.95, gt=0, lt=1, description="level of the bootstrap interval")
    seed: int = Field(0, description="seeds the replay sample and the bootstrap")

    @model_validator(mode="after")
    def _enough_windows(self) -> ReplayConfig:
        if self.max_windows is not None and self.max_windows <= self.validation_windows:
            raise ValueError("max_windows must exceed validation_windows (test windows follow them)")
        return self


class FreshnessConfig(Section):
    """Offline freshness: update strategies and the prequential replay that compares them."""

    replay: ReplayConfig = Field(default_factory=ReplayConfig)
    naive: FineTuneConfig = Field(
        default_factory=FineTuneConfig,
        description="naive incremental: fine-tune the previous model on the latest window only, no anchor",
    )
    microbatch: MicrobatchConfig = Field(default_factory=MicrobatchConfig)
    ensemble: EnsembleConfig = Field(default_factory=EnsembleConfig)
    strategies: tuple[str, ...] = Field(
        ("static", "dynamic_embeddings", "naive_incremental", "microbatch_regularised",
         "ensemble:naive_incremental", "ensemble:microbatch_regularised"),
        description="strategies replayed side by side (the first is the reference of the paired differences); "
        "'ensemble:<member>' blends static with that member, which must be listed before it",
    )
