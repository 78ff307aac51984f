"""The composition root: the one configuration object and its loaders.

Flows one way: YAML (serve_config.yaml user_config or a rayfeed YAML file) and RAYFEED_*
environment variables → these pydantic models → constructors. Each package declares its own
section (app/<package>/config.py, observability/config.py, training/config.py); this module only
composes them, so it sits above app/ and observability/ and neither of them imports it.

Every section rejects unknown keys; errors name the file and the key at fault.
Environment overrides use `RAYFEED_<SECTION>__<FIELD>`, e.g. RAYFEED_RERANKING__MMR_LAMBDA=0.5.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from app._config_base import merge_mappings as deep_merge
from app.ads.config import AdsConfig
from app.api.config import ApiConfig
from app.artifacts import ArtifactsConfig
from app.collator.config import CollatorConfig
from app.data.config import DataConfig
from app.evaluation.config import EvaluationConfig
from app.freshness.config import FreshnessConfig
from app.ranking.config import RankingConfig
from app.reranking.config import RerankingConfig
from app.retrieval.config import RetrievalConfig
from observability.config import ObservabilityConfig
from training.config import FineTuneJobConfig, TrainingConfig

__all__ = [
    "ConfigError", "FineTuneJobConfig", "RayfeedConfig", "TrainingConfig", "config_from_mapping", "deep_merge",
    "load_config",
]


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
    return config_from_mapping(deep_merge(values, overrides or {}), source)


def config_from_mapping(values: dict[str, Any], source: str = "<mapping>") -> RayfeedConfig:
    try:
        return RayfeedConfig(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise ConfigError(f"{source}: invalid configuration: {problems}") from exc
