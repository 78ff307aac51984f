"""The one configuration object. Flows one way: YAML (serve_config.yaml user_config or a
rayfeed YAML file) and RAYFEED_* environment variables → these pydantic models → constructors.

Every section rejects unknown keys; errors name the file and the key at fault.
Environment overrides use `RAYFEED_<SECTION>__<FIELD>`, e.g. RAYFEED_RERANKING__MMR_LAMBDA=0.5.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from app._config_base import Section
from app.ads.config import AdsConfig
from app.api.config import ApiConfig
from app.collator.config import CollatorConfig
from app.data.config import DataConfig
from app.evaluation.config import EvaluationConfig
from app.freshness.config import FreshnessConfig
from app.ranking.config import RankingConfig
from app.reranking.config import RerankingConfig
from app.retrieval.config import RetrievalConfig
from observability.config import ObservabilityConfig


class ArtifactsConfig(Section):
    root: Path = Field(Path("artifacts"), description="directory of versioned artifacts")
    version: str | None = Field(None, description="pinned version; None follows LATEST")


class FineTuneJobConfig(Section):
    """Fine-tuning the serving artifact on recent events (training/fine_tune.py) and when to do it
    (training/retrain_runner.py: on a monitor's retrain request, or on a schedule)."""

    window_days: float = Field(30.0, gt=0, le=3650, description="the recent window the models continue on")
    start_from: Literal["base", "parent"] = Field(
        "base",
        description="continue the fully trained ancestor (stable: docs/freshness.md replay) or the serving version",
    )
    two_tower_epochs: int = Field(1, ge=1, le=100, description="passes of the two-tower over the window")
    two_tower_lr: float = Field(1e-3, gt=0, le=1, description="learning rate while fine-tuning the two-tower")
    anchor_l2: float = Field(
        1e-3, ge=0, le=1e6,
        description="L2-SP weight pulling fine-tuned weights toward the starting model's (1e-3: the replay's choice)"
    )
    ranker_epochs: int = Field(1, ge=0, le=100, description="passes of the ranker over the window (0: keep its weights)")
    ranker_lr: float = Field(3e-4, gt=0, le=1, description="learning rate while fine-tuning the ranker")
    implied_ratings: dict[str, float] = Field(
        default_factory=lambda: {"like": 5.0, "share": 5.0, "conversion": 5.0, "click": 4.0, "watch": 4.0},
        description="rating given to an engagement event when it joins the training history (others are dropped)",
    )
    holdout_fraction: float = Field(
        0.1, gt=0, lt=0.5, description="the window's newest share of interactions, held out for the offline gate"
    )
    gate_k: int = Field(20, ge=1, le=1000, description="the gate compares Recall@k on the held-out interactions")
    gate_tolerance: float = Field(
        0.01, ge=0, le=1, description="a candidate may trail the serving model's Recall@k by at most this much"
    )
    min_interval_s: float = Field(600.0, ge=0, le=30 * 86_400, description="at most one fine-tune job per interval")
    schedule_s: float | None = Field(
        None, gt=0, le=30 * 86_400, description="also fine-tune on this period when new events arrived (None: triggers only)"
    )
    min_new_events: int = Field(1, ge=0, le=10_000_000, description="a scheduled job needs at least this many new engagements")
    consumer_group: str = Field("trainer", min_length=1, max_length=64, description="event-stream group of the job runner")


class TrainingConfig(Section):
    num_workers: int = Field(1, ge=1, le=64, description="Ray Train workers per job")
    use_gpu: bool | None = Field(None, description="None: use a GPU when torch sees one")
    storage_dir: Path = Field(Path("runs/train"), description="Ray Train checkpoints and results")
    refit_retrieval: bool = Field(
        True,
        description=(
            "after the ranker is trained, retrain the two-tower on history + labels for serving "
            "(the ranker learned from a two-tower that had not seen the labels; serving uses all data)"
        ),
    )
    label_fraction: float = Field(
        0.1, gt=0, lt=0.5, description="each user's newest share of interactions the ranker learns to predict"
    )
    fine_tune: FineTuneJobConfig = Field(default_factory=FineTuneJobConfig)


class RayfeedConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RAYFEED_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("REDIS_URL", "redis_url"),
        description="Redis for caps, budgets, sessions and events; the main command starts one when unset",
    )
    data: DataConfig = Field(default_factory=DataConfig)
    artifacts: ArtifactsConfig = Field(default_factory=ArtifactsConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    ranking: RankingConfig = Field(default_factory=RankingConfig)
    reranking: RerankingConfig = Field(default_factory=RerankingConfig)
    ads: AdsConfig = Field(default_factory=AdsConfig)
    collator: CollatorConfig = Field(default_factory=CollatorConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)
    freshness: FreshnessConfig = Field(default_factory=FreshnessConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the file and key."""


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RayfeedConfig:
    """Build the configuration from an optional YAML file, then explicit overrides.

    Environment variables (RAYFEED_*) apply beneath the file and overrides.
    """
    values: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{source}: cannot read configuration: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: expected a mapping of sections, got {type(loaded).__name__}")
        values = loaded
    return config_from_mapping(_deep_merge(values, overrides or {}), source)


def config_from_mapping(values: dict[str, Any], source: str = "<mapping>") -> RayfeedConfig:
    try:
        return RayfeedConfig(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise ConfigError(f"{source}: invalid configuration: {problems}") from exc


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
