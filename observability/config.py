"""Observability tunables, declared once. Wired into config.RayfeedConfig as `observability`.

Tracing follows OpenTelemetry's standard environment variables first (OTEL_EXPORTER_OTLP_ENDPOINT,
OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER[_ARG], OTEL_SDK_DISABLED); the fields here are the
defaults used when those are unset. Thresholds feed both the in-process monitors
(observability.monitors.MonitorSuite) and the generated alert rules (observability.alert_rules).
"""
from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from app._config_base import Section


MonitorKind = Literal[
    "feature_psi", "score_psi", "calibration", "coverage", "null_rate", "freshness", "business_drop", "diversity"
]


class Threshold(Section):
    """Warn and critical levels of one monitored quantity; `higher_is_worse` says which way."""

    warn: float
    critical: float
    higher_is_worse: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> "Threshold":
        worse = self.critical >= self.warn if self.higher_is_worse else self.critical <= self.warn
        if not worse:
            raise ValueError(f"critical ({self.critical}) must be at least as bad as warn ({self.warn})")
        return self


def _t(warn: float, critical: float, higher_is_worse: bool = True):
    return Field(default_factory=lambda: Threshold(warn=warn, critical=critical, higher_is_worse=higher_is_worse))


class MonitorThresholds(Section):
    """Levels at which a monitor warns or turns critical."""

    psi: Threshold = _t(0.1, 0.25)
    # |mean predicted / observed rate - 1|, per head.
    calibration_deviation: Threshold = _t(0.05, 0.10)
    # Fraction of values (or lookups) present; lower is worse.
    coverage: Threshold = _t(0.99, 0.95, higher_is_worse=False)
    null_rate: Threshold = _t(0.01, 0.05)
    freshness_seconds: Threshold = _t(3600.0, 6 * 3600.0)
    # Relative drop of a business metric (CTR, engagement, sessions) versus its baseline.
    business_drop: Threshold = _t(0.10, 0.20)
    # Relative drop of mean per-user diversity versus baseline.
    diversity_drop: Threshold = _t(0.05, 0.20)


# Dense ranking features the live monitor samples and the training baseline covers: who the users
# are (age, history), what is offered (popularity, rating, freshness) and how it matches (affinity,
# collaborative score, source agreement). Names must be dense features of app.ranking.features.
DEFAULT_MONITORED_FEATURES = (
    "user_age", "user_log_count", "item_log_count_asof", "item_mean_rating", "item_log_idle_days",
    "genre_affinity", "cooc_mean", "cf_score", "n_sources",
)


class LiveMonitorConfig(Section):
    """The live monitor: prediction logging on the serving path and the Monitor deployment."""

    enabled: bool = Field(True, description="log served predictions and run the Monitor loop")
    sample_rate: float = Field(
        0.1, ge=0.0, le=1.0,
        description="fraction of feed requests logged (decided by request id, so every stage agrees); a tenth keeps "
                    "PSI and calibration well fed at serving rates for a tenth of the logging cost (Ranking's feature "
                    "sample, the stream entry, the Monitor's join); 1.0 logs every feed",
    )
    stream_key: str = Field("rf:predictions", min_length=1, description="Redis stream of logged predictions")
    stream_maxlen: int = Field(
        20_000, ge=100, le=10_000_000,
        description="approximate MAXLEN of the predictions stream (~3 kB an entry; a restarted Monitor re-reads it)",
    )
    feature_rows: int = Field(
        16, ge=0, le=512, description="candidates per logged request whose features and scores are sampled (even stride)"
    )
    features: tuple[str, ...] = Field(DEFAULT_MONITORED_FEATURES, description="dense ranking features monitored (PSI, nulls)")
    publish_seconds: float = Field(30.0, gt=0, le=3600, description="how often the Monitor grades its window and publishes gauges")
    poll_seconds: float = Field(0.5, gt=0, le=60, description="how often the Monitor reads the prediction and event streams")
    label_window_seconds: float = Field(
        1800.0, gt=0, description="how long after serving an impression's clicks/likes/shares/hides still count (calibration)"
    )
    read_count: int = Field(1000, ge=1, le=100_000, description="stream entries read per call")
    consumer_group: str = Field("rayfeed-monitor", min_length=1, description="consumer group of the Monitor on the event stream")
    baseline_users: int = Field(200, ge=10, le=100_000, description="users whose served candidates form the training baseline")
    redis_timeout_s: float = Field(5.0, gt=0, le=60, description="socket timeout of the Monitor's Redis reads (batches of entries)")


class ObservabilityConfig(Section):
    """Tracing, metrics, monitors, alerts and the retraining trigger."""

    service_name: str = Field("rayfeed", min_length=1, description="OTel service.name when OTEL_SERVICE_NAME is unset")
    sampling_ratio: float = Field(
        1.0, ge=0.0, le=1.0,
        description="parent-based trace-id ratio sampling when OTEL_TRACES_SAMPLER is unset",
    )
    user_id_hash_salt: str = Field(
        "rayfeed", min_length=1, description="salt of the user-id hash put on spans (raw ids never are); set a secret"
    )
    batch_span_mode: str = Field(
        "per_request", pattern="^(per_request|linked)$",
        description="@serve.batch spans: one per request under its own parent, or one span linking every parent",
    )
    metrics_flush_s: float = Field(
        1.0, ge=0, le=60,
        description="counters and histograms are aggregated in each process and handed to Ray this often (0: per record)",
    )
    max_score_observations: int = Field(
        64, ge=1, le=10_000, description="scores per head per request observed into the score histogram (even stride)"
    )
    psi_bins: int = Field(10, ge=2, le=100, description="quantile bins of a PSI baseline")
    psi_epsilon: float = Field(1e-4, gt=0, le=0.01, description="floor for empty-bin fractions in PSI")
    calibration_bins: int = Field(10, ge=2, le=100, description="equal-width bins of reliability diagrams and ECE")
    monitor_window_seconds: float = Field(3600.0, gt=0, description="window the in-process monitors evaluate")
    thresholds: MonitorThresholds = Field(default_factory=MonitorThresholds)
    live_monitor: LiveMonitorConfig = Field(default_factory=LiveMonitorConfig)
    sla_p99_ms: float = Field(150.0, gt=0, le=60_000, description="feed P99 latency SLA (alert)")
    error_rate_max: float = Field(0.01, gt=0, le=1, description="5xx fraction above which the error alert fires")
    empty_feed_rate_max: float = Field(0.01, gt=0, le=1, description="empty-feed fraction above which the alert fires")
    business_baseline_offset: str = Field(
        "7d", description="PromQL offset of the business baseline (same hour last week: weekly seasonality)"
    )
    retrain_min_interval_seconds: float = Field(
        6 * 3600.0, ge=0, description="at most one retrain request per this interval"
    )
    retrain_on: tuple[MonitorKind, ...] = Field(
        ("feature_psi", "score_psi", "calibration"),
        description="monitors whose critical result requests retraining",
    )

    @field_validator("business_baseline_offset")
    @classmethod
    def _duration(cls, value: str) -> str:
        if not re.fullmatch(r"(\d+[smhdwy])+", value):
            raise ValueError(f"{value!r} is not a Prometheus duration such as 7d or 1d12h")
        return value
