"""Every metric rayfeed exports, declared once: name, type, labels, help text, buckets.

Recorders (observability.metrics), alert rules (observability.alert_rules) and dashboards
(observability.dashboards) take names from here, and a test checks that every PromQL
expression they contain uses only names this registry exports.

Names as exported: Ray's Prometheus export prefixes every metric with ``ray_``; a counter is
exported as ``<name>_total`` (so counters are declared with a ``_total`` suffix, which Ray keeps
as is), a histogram as ``<name>_bucket``, ``<name>_sum`` and ``<name>_count``. Use
`MetricSpec.series` (one exported name) or `exported_series` (all) rather than spelling them.

Caveat (Ray 2.60, OpenTelemetry recorder): a histogram's ``_sum`` is approximated from bucket
midpoints, so ``_sum/_count`` means are bucket-resolution estimates; quantiles and counts are exact
up to bucket resolution anyway.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

EXPORT_PREFIX = "ray_"


class MetricType(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class MetricSpec:
    """One metric. `external` metrics are exported by Ray Serve itself; rayfeed never creates them."""

    name: str
    type: MetricType
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    external: bool = False

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", self.name):
            raise ValueError(f"metric name {self.name!r} is not snake_case")
        if self.type is MetricType.COUNTER and not self.name.endswith("_total"):
            raise ValueError(f"counter {self.name!r} must end in _total (Ray appends it otherwise)")
        if (self.type is MetricType.HISTOGRAM) != bool(self.buckets):
            raise ValueError(f"{self.name!r}: buckets are required for histograms and only for them")
        if list(self.buckets) != sorted(set(self.buckets)) or any(b <= 0 for b in self.buckets):
            raise ValueError(f"{self.name!r}: buckets must be positive and strictly increasing")

    @property
    def exported(self) -> str:
        """The base name as Prometheus sees it (``ray_`` prefix)."""
        return EXPORT_PREFIX + self.name

    def series(self, suffix: str = "") -> str:
        """An exported series name: ``series()`` for counters/gauges, ``series("bucket")`` etc."""
        if self.type is MetricType.HISTOGRAM:
            if suffix not in ("bucket", "sum", "count"):
                raise ValueError(f"histogram {self.name!r} series need a bucket/sum/count suffix")
            return f"{self.exported}_{suffix}"
        if suffix:
            raise ValueError(f"{self.type} {self.name!r} has no {suffix!r} series")
        return self.exported

    def all_series(self) -> tuple[str, ...]:
        if self.type is MetricType.HISTOGRAM:
            return tuple(self.series(s) for s in ("bucket", "sum", "count"))
        return (self.exported,)


# Bucket sets, shared where the quantity is the same kind of thing.
LATENCY_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0,
)
# Probabilities for the classification heads, then seconds for the watch-time head.
SCORE_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)
DIVERSITY_BUCKETS = (1.0, 2.0, 3.0, 5.0, 8.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0)

C, G, H = MetricType.COUNTER, MetricType.GAUGE, MetricType.HISTOGRAM

# -- infrastructure --------------------------------------------------------------------------
REQUESTS = MetricSpec("rayfeed_requests_total", C, "HTTP requests by route and status class (2xx/4xx/5xx).", ("route", "status"))
REQUEST_LATENCY = MetricSpec(
    "rayfeed_request_latency_seconds", H, "End-to-end request latency at the ingress.", ("route",), LATENCY_BUCKETS_S
)
STAGE_LATENCY = MetricSpec(
    "rayfeed_stage_latency_seconds", H, "Latency of one pipeline stage for one request.",
    ("pipeline", "stage", "kind"), LATENCY_BUCKETS_S,
)
STAGE_CANDIDATES_IN = MetricSpec("rayfeed_stage_candidates_in_total", C, "Candidates entering a stage.", ("pipeline", "stage"))
STAGE_CANDIDATES_OUT = MetricSpec("rayfeed_stage_candidates_out_total", C, "Candidates leaving a stage.", ("pipeline", "stage"))
STAGE_ERRORS = MetricSpec("rayfeed_stage_errors_total", C, "Stage failures (fail-open or fail-closed).", ("pipeline", "stage", "kind"))
EMPTY_FEEDS = MetricSpec("rayfeed_empty_feeds_total", C, "Feed responses with no items.", ("route",))
REDIS_ERRORS = MetricSpec("rayfeed_redis_errors_total", C, "Redis operations that failed.", ("op",))
REDIS_BREAKER_STATE = MetricSpec(
    "rayfeed_redis_breaker_state", G, "Ingress Redis circuit breaker: 0 closed, 1 half-open, 2 open (degraded mode)."
)
REDIS_SKIPPED = MetricSpec(
    "rayfeed_redis_skipped_total", C, "Redis calls skipped because the circuit breaker was open.", ("op",)
)
ADMISSION_LIMIT = MetricSpec(
    "rayfeed_admission_limit", G, "Feeds one ingress replica admits at once now (adaptive; more are shed with 503).",
)
REQUESTS_SHED = MetricSpec(
    "rayfeed_requests_shed_total", C, "Requests refused or cut short: rate_limited (429), overloaded or unavailable (503), deadline (504).",
    ("route", "reason"),
)
SERVE_REPLICA_HEALTHY = MetricSpec(
    "serve_deployment_replica_healthy", G, "Ray Serve: 1 per healthy replica (exported by Ray Serve).",
    ("deployment", "replica", "application"), external=True,
)

# -- feature pipeline ------------------------------------------------------------------------
CANDIDATES = MetricSpec("rayfeed_candidates_total", C, "Candidates retrieved, by source.", ("source",))
FEATURE_LOOKUPS = MetricSpec(
    "rayfeed_feature_lookups_total", C, "Feature-store lookups by table and result (hit/miss): coverage.",
    ("table", "result"),
)
FEATURE_VALUES = MetricSpec("rayfeed_feature_values_total", C, "Feature values served, per feature.", ("feature",))
FEATURE_NULLS = MetricSpec("rayfeed_feature_nulls_total", C, "Feature values served null/NaN, per feature.", ("feature",))
FEATURE_LAST_UPDATE = MetricSpec(
    "rayfeed_feature_last_update_timestamp_seconds", G, "Unix time of the newest update of a feature table.", ("table",)
)
FEATURE_PSI = MetricSpec("rayfeed_feature_psi", G, "PSI of a feature against its training baseline.", ("feature",))
FEATURE_COVERAGE = MetricSpec(
    "rayfeed_feature_coverage", G, "Windowed non-null fraction of a feature (monitor).", ("feature",)
)

# -- model -----------------------------------------------------------------------------------
MODEL_INFO = MetricSpec("rayfeed_model_info", G, "1 for the model version a replica serves.", ("model", "version"))
SCORES = MetricSpec("rayfeed_score", H, "Model outputs per head (sampled per request).", ("head",), SCORE_BUCKETS)
SCORE_PSI = MetricSpec("rayfeed_score_psi", G, "PSI of a head's scores against the training baseline.", ("head",))
CALIBRATION_PREDICTED = MetricSpec(
    "rayfeed_calibration_predicted_total", C, "Sum of predicted probabilities over joined impressions.", ("head",)
)
CALIBRATION_OBSERVED = MetricSpec(
    "rayfeed_calibration_observed_total", C, "Observed positive events joined to a logged prediction.", ("head",)
)
CALIBRATION_ECE = MetricSpec("rayfeed_calibration_ece", G, "Windowed expected calibration error (monitor).", ("head",))
MONITOR_STATUS = MetricSpec(
    "rayfeed_monitor_status", G, "Monitor severity: 0 ok, 1 warn, 2 critical, -1 no data.", ("monitor", "subject")
)
RETRAIN_REQUESTS = MetricSpec("rayfeed_retrain_requests_total", C, "Retraining requests emitted by monitors.", ("monitor",))

# -- business --------------------------------------------------------------------------------
EVENTS = MetricSpec("rayfeed_events_total", C, "User events accepted by /v1/events, by type.", ("type",))
SESSIONS = MetricSpec("rayfeed_sessions_total", C, "User sessions started.")
PAGE_ITEMS = MetricSpec("rayfeed_page_items_total", C, "Items served, by type (organic/ad/notification).", ("type",))
PAGE_DIVERSITY = MetricSpec(
    "rayfeed_page_diversity", H, "Distinct creators/topics on one served page.", ("dimension",), DIVERSITY_BUCKETS
)
BUSINESS_RATE = MetricSpec(
    "rayfeed_business_rate", G, "Windowed organic event rate per impression (monitor): ctr, engagement_rate, hide_rate.",
    ("metric",),
)
USER_DIVERSITY = MetricSpec(
    "rayfeed_user_diversity", G, "Windowed mean distinct creators shown per user across pages (monitor).", ("dimension",)
)
AD_REVENUE = MetricSpec("rayfeed_ad_revenue_total", C, "Ad revenue charged (currency units).")
BUDGET_UTILISATION = MetricSpec("rayfeed_budget_utilisation", G, "Fraction of today's total ad budget spent.")

REGISTRY: dict[str, MetricSpec] = {}
for _spec in [v for v in dict(globals()).values() if isinstance(v, MetricSpec)]:
    if _spec.name in REGISTRY:
        raise ValueError(f"metric {_spec.name!r} declared twice")
    REGISTRY[_spec.name] = _spec
del _spec


def exported_series(registry: dict[str, MetricSpec] = REGISTRY) -> frozenset[str]:
    """Every series name Prometheus can see from rayfeed (and the Ray Serve ones we use)."""
    return frozenset(s for spec in registry.values() for s in spec.all_series())


# PromQL words that look like identifiers but are not metric names.
_PROMQL_WORDS = frozenset(
    "by without on ignoring group_left group_right offset bool and or unless inf nan le".split()
)


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (best effort, enough for our own expressions).

    Strips strings, label matchers, ranges/durations, grouping clauses, Grafana variables and
    function calls, and returns the identifiers that remain.

    >>> sorted(promql_metric_names('sum by (le) (rate(ray_x_bucket{a="b"}[5m])) / ray_y'))
    ['ray_x_bucket', 'ray_y']
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    text = re.sub(r"\boffset\s+\w+", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        word, is_call = match.group(1), match.group(2)
        if is_call or word.lower() in _PROMQL_WORDS:
            continue
        names.add(word)
    return names
