"""Windowed model and data monitors: pure functions, a suite that grades them, a retrain trigger.

Everything here is plain NumPy over arrays the caller collected for one window (a
`SlidingWindow` helps in-process; the offline report passes whole files). Nothing reads a clock
except through an injected one, so tests advance time instead of sleeping.

Conventions:
- Null means None or NaN. Nulls are excluded from distributions (PSI, calibration) and counted by
  `null_rate`/`coverage`.
- PSI uses *fixed* bins cut at baseline (training) quantiles; an empty bin's fraction is floored
  at `eps` (default 1e-4) in both distributions before the log, so PSI stays finite. Each term
  (a - e)·ln(a / e) is ≥ 0, hence PSI ≥ 0, and PSI(x, x) = 0 exactly.
- Calibration compares mean prediction with observed rate (`ratio` = predicted / observed;
  `deviation` = |ratio - 1|) and gives ECE over equal-width bins of [0, 1].
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from observability.config import MonitorThresholds, ObservabilityConfig, Threshold

log = logging.getLogger(__name__)

PSI_EPSILON = 1e-4


# -- pure functions --------------------------------------------------------------------------

def _numeric(values) -> np.ndarray:
    """Values as a flat float64 array; None becomes NaN."""
    return np.asarray(values, dtype=np.float64).ravel()


def _non_null(values) -> np.ndarray:
    array = _numeric(values)
    return array[~np.isnan(array)]


def null_rate(values) -> float:
    """Fraction of values that are None or NaN; NaN for an empty window (no evidence)."""
    array = _numeric(values)
    return float(np.isnan(array).mean()) if len(array) else float("nan")


def coverage(values) -> float:
    """Fraction of values present (1 - null rate); NaN for an empty window."""
    return 1.0 - null_rate(values)


def lookup_coverage(hits: int, misses: int) -> float:
    """Fraction of feature-store lookups that found a row; NaN without lookups."""
    total = hits + misses
    return hits / total if total else float("nan")


def feature_freshness(update_timestamps, now: float) -> float:
    """Age in seconds of the newest update; +inf when nothing was ever updated."""
    stamps = _non_null(update_timestamps)
    return float(now - stamps.max()) if len(stamps) else float("inf")


@dataclass(frozen=True)
class PSIBaseline:
    """Fixed bins cut at baseline quantiles and the baseline's fraction in each bin.

    Bins are (-inf, e0], (e0, e1], ..., (e_last, +inf) with `edges` the distinct interior
    quantiles, so discrete features with ties get fewer, still well-defined bins.
    """

    edges: tuple[float, ...]
    fractions: tuple[float, ...]

    @classmethod
    def fit(cls, baseline, n_bins: int = 10) -> "PSIBaseline":
        values = _non_null(baseline)
        if len(values) == 0:
            raise ValueError("cannot fit a PSI baseline on no (non-null) values")
        quantiles = np.quantile(values, np.arange(1, n_bins) / n_bins)
        edges = np.unique(quantiles)
        return cls(tuple(float(e) for e in edges), tuple(float(f) for f in bin_fractions(values, edges)))

    def psi(self, current, eps: float = PSI_EPSILON) -> float:
        """PSI of `current` against this baseline; NaN when `current` has no non-null values."""
        values = _non_null(current)
        if len(values) == 0:
            return float("nan")
        return psi_from_fractions(np.array(self.fractions), bin_fractions(values, np.array(self.edges)), eps)


def bin_fractions(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Fraction of `values` in each bin (-inf, e0], (e0, e1], ..., (e_last, inf)."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def psi_from_fractions(expected: np.ndarray, actual: np.ndarray, eps: float = PSI_EPSILON) -> float:
    """Σ (a - e)·ln(a / e) with both fractions floored at `eps` (empty bins)."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), eps)
    a = np.maximum(np.asarray(actual, dtype=np.float64), eps)
    return float(np.sum((a - e) * np.log(a / e)))


def psi(baseline, current, n_bins: int = 10, eps: float = PSI_EPSILON) -> float:
    """Population stability index of `current` against `baseline` (bins from the baseline)."""
    return PSIBaseline.fit(baseline, n_bins).psi(current, eps)


@dataclass(frozen=True)
class ReliabilityBin:
    lower: float
    upper: float
    count: int
    mean_predicted: float
    observed_rate: float


@dataclass(frozen=True)
class CalibrationReport:
    """Predicted versus observed for one head over one window."""

    head: str
    n: int
    mean_predicted: float
    observed_rate: float
    ratio: float  # mean predicted / observed rate; inf when nothing was observed but something predicted
    deviation: float  # |ratio - 1|
    ece: float
    bins: tuple[ReliabilityBin, ...]


def calibration(predicted, observed, n_bins: int = 10, head: str = "") -> CalibrationReport:
    """Calibration of probabilities `predicted` against 0/1 outcomes `observed` (same order).

    Pairs where either side is null are dropped. Predictions are clipped to [0, 1] for binning.
    """
    p, y = _numeric(predicted), _numeric(observed)
    if p.shape != y.shape:
        raise ValueError(f"predicted has {len(p)} values, observed {len(y)}")
    keep = ~(np.isnan(p) | np.isnan(y))
    p, y = p[keep], y[keep]
    n = len(p)
    if n == 0:
        nan = float("nan")
        return CalibrationReport(head, 0, nan, nan, nan, nan, nan, ())
    mean_p, rate = float(p.mean()), float(y.mean())
    if rate > 0:
        ratio = mean_p / rate
    else:
        ratio = float("inf") if mean_p > 0 else 1.0
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # floor(p * n_bins), the textbook ECE binning: searching the linspace edges put values that sit
    # on an edge (0.3 vs edges[3] = 0.30000000000000004) one bin lower.
    index = np.minimum((np.clip(p, 0.0, 1.0) * n_bins).astype(np.int64), n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        mask = index == b
        count = int(mask.sum())
        if count == 0:
            bins.append(ReliabilityBin(float(edges[b]), float(edges[b + 1]), 0, float("nan"), float("nan")))
            continue
        mp, orate = float(p[mask].mean()), float(y[mask].mean())
        ece += count / n * abs(mp - orate)
        bins.append(ReliabilityBin(float(edges[b]), float(edges[b + 1]), count, mp, orate))
    return CalibrationReport(head, n, mean_p, rate, ratio, abs(ratio - 1.0), ece, tuple(bins))


@dataclass(frozen=True)
class ScoreShift:
    psi: float
    ks: float  # max |ECDF_baseline - ECDF_current|
    mean_shift: float  # (mean_current - mean_baseline) / std_baseline (0 when std is 0 and means equal)


def score_shift(baseline, current, n_bins: int = 10, eps: float = PSI_EPSILON) -> ScoreShift:
    """How far a score distribution moved from its baseline: PSI, KS statistic, mean in baseline stds."""
    b, c = _non_null(baseline), _non_null(current)
    if len(b) == 0 or len(c) == 0:
        nan = float("nan")
        return ScoreShift(nan, nan, nan)
    grid = np.union1d(b, c)
    ks = float(np.max(np.abs(
        np.searchsorted(np.sort(b), grid, side="right") / len(b)
        - np.searchsorted(np.sort(c), grid, side="right") / len(c)
    )))
    delta, std = float(c.mean() - b.mean()), float(b.std())
    mean_shift = delta / std if std > 0 else (0.0 if delta == 0 else float(np.sign(delta)) * float("inf"))
    return ScoreShift(psi(b, c, n_bins, eps), ks, mean_shift)


def relative_drop(current: float, baseline: float) -> float:
    """(baseline - current) / baseline: positive when the metric fell. NaN for a non-positive baseline."""
    if not baseline > 0 or np.isnan(current):
        return float("nan")
    return (baseline - current) / baseline


def rate(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")


ENGAGEMENT_TYPES = ("click", "like", "share", "watch")


def business_rates(event_types: Sequence[str] | np.ndarray) -> dict[str, float]:
    """CTR, engagement rate and hide rate of one window of events, all per impression."""
    types = np.asarray(event_types, dtype=object)
    impressions = float(np.sum(types == "impression"))
    return {
        "ctr": rate(float(np.sum(types == "click")), impressions),
        "engagement_rate": rate(float(np.isin(types, ENGAGEMENT_TYPES).sum()), impressions),
        "hide_rate": rate(float(np.sum(types == "hide")), impressions),
    }


def diversity(user_ids, attribute_values) -> float:
    """Mean over users of the number of distinct attribute values (creators, topics) they were shown.

    Null attributes are ignored; NaN for an empty window.
    """
    users, values = np.asarray(user_ids), _numeric(attribute_values)
    if users.shape != values.shape:
        raise ValueError(f"{len(users)} user ids but {len(values)} attribute values")
    keep = ~np.isnan(values)
    users, values = users[keep], values[keep]
    if len(users) == 0:
        return float("nan")
    pairs = np.unique(np.stack([users.astype(np.float64), values]), axis=1)
    return float(pairs.shape[1] / len(np.unique(users)))


# -- windows ---------------------------------------------------------------------------------

T = TypeVar("T")


class SlidingWindow(Generic[T]):
    """Items stamped with a time, keeping those newer than `seconds` before the clock's now.

    Bounded by `max_items` too (oldest dropped first) so a burst cannot exhaust memory.
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.time, max_items: int = 1_000_000) -> None:
        self.seconds, self._clock = seconds, clock
        self._items: deque[tuple[float, T]] = deque(maxlen=max_items)
        self._lock = threading.Lock()

    def add(self, item: T, ts: float | None = None) -> None:
        with self._lock:
            self._items.append((self._clock() if ts is None else ts, item))

    def extend(self, items: Iterable[T], ts: float | None = None) -> None:
        stamp = self._clock() if ts is None else ts
        with self._lock:
            self._items.extend((stamp, item) for item in items)

    def items(self) -> list[T]:
        cutoff = self._clock() - self.seconds
        with self._lock:
            while self._items and self._items[0][0] <= cutoff:
                self._items.popleft()
            return [item for _, item in self._items]

    def __len__(self) -> int:
        return len(self.items())


# -- grading -----------------------------------------------------------------------------------

class Severity(StrEnum):
    OK = "ok"
    WARN = "warn"
    CRITICAL = "critical"
    NO_DATA = "no_data"

    @property
    def level(self) -> int:
        """Numeric level for the monitor-status gauge."""
        return {"ok": 0, "warn": 1, "critical": 2, "no_data": -1}[self.value]


def grade(value: float, threshold: Threshold) -> Severity:
    if value is None or np.isnan(value):
        return Severity.NO_DATA
    worse = (lambda v, t: v > t) if threshold.higher_is_worse else (lambda v, t: v < t)
    if worse(value, threshold.critical):
        return Severity.CRITICAL
    if worse(value, threshold.warn):
        return Severity.WARN
    return Severity.OK


@dataclass(frozen=True)
class MonitorResult:
    """One graded measurement: monitor kind, what it measured (feature/head/metric), value, severity."""

    monitor: str
    subject: str
    value: float
    severity: Severity
    warn: float
    critical: float

    @property
    def message(self) -> str:
        return (
            f"{self.monitor}[{self.subject}] = {self.value:.4g} ({self.severity}; "
            f"warn {self.warn:g}, critical {self.critical:g})"
        )


@dataclass(frozen=True)
class TrainingBaseline:
    """What the current window is compared with: PSI bins per feature and per score head,
    plus baseline business metrics and diversity (name → value). Saved next to model artifacts."""

    features: Mapping[str, PSIBaseline] = field(default_factory=dict)
    scores: Mapping[str, PSIBaseline] = field(default_factory=dict)
    business: Mapping[str, float] = field(default_factory=dict)
    diversity: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def fit(
        cls,
        features: Mapping[str, np.ndarray],
        scores: Mapping[str, np.ndarray],
        n_bins: int = 10,
        business: Mapping[str, float] | None = None,
        diversity: Mapping[str, float] | None = None,
    ) -> "TrainingBaseline":
        return cls(
            {k: PSIBaseline.fit(v, n_bins) for k, v in features.items()},
            {k: PSIBaseline.fit(v, n_bins) for k, v in scores.items()},
            dict(business or {}),
            dict(diversity or {}),
        )

    def to_json(self) -> str:
        return json.dumps({
            "features": {k: asdict(v) for k, v in self.features.items()},
            "scores": {k: asdict(v) for k, v in self.scores.items()},
            "business": dict(self.business),
            "diversity": dict(self.diversity),
        }, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainingBaseline":
        raw = json.loads(text)

        def bins(d):
            return {k: PSIBaseline(tuple(v["edges"]), tuple(v["fractions"])) for k, v in d.items()}

        return cls(bins(raw["features"]), bins(raw["scores"]), raw.get("business", {}), raw.get("diversity", {}))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "TrainingBaseline":
        return cls.from_json(Path(path).read_text())


@dataclass
class MonitorWindow:
    """One window of observations. Every field is optional; monitors without data are skipped.

    features: feature name → values served (nulls included); scores: head → model outputs;
    outcomes: head → (predicted, observed 0/1) joined by request id; lookups: table → (hits, misses);
    last_updates: table → unix time of newest update; business: metric → current value;
    diversity: dimension → current mean distinct values per user.
    """

    features: Mapping[str, np.ndarray] = field(default_factory=dict)
    scores: Mapping[str, np.ndarray] = field(default_factory=dict)
    outcomes: Mapping[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    lookups: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    last_updates: Mapping[str, float] = field(default_factory=dict)
    business: Mapping[str, float] = field(default_factory=dict)
    diversity: Mapping[str, float] = field(default_factory=dict)


class MonitorSuite:
    """Evaluates every applicable monitor on a window against a baseline and grades the results.

    Example:
        suite = MonitorSuite(baseline, ObservabilityConfig())
        results = suite.evaluate(MonitorWindow(features={"age": ages}), now=clock())
        critical = [r for r in results if r.severity is Severity.CRITICAL]
    """

    def __init__(self, baseline: TrainingBaseline, config: ObservabilityConfig | None = None) -> None:
        self.baseline = baseline
        self.config = config or ObservabilityConfig()

    @property
    def thresholds(self) -> MonitorThresholds:
        return self.config.thresholds

    def evaluate(self, window: MonitorWindow, now: float | None = None) -> list[MonitorResult]:
        t, eps, out = self.thresholds, self.config.psi_epsilon, []

        def add(monitor: str, subject: str, value: float, threshold: Threshold) -> None:
            out.append(MonitorResult(monitor, subject, float(value), grade(value, threshold), threshold.warn, threshold.critical))

        for name, values in sorted(window.features.items()):
            add("null_rate", name, null_rate(values), t.null_rate)
            if name in self.baseline.features:
                add("feature_psi", name, self.baseline.features[name].psi(values, eps), t.psi)
        for table, (hits, misses) in sorted(window.lookups.items()):
            add("coverage", table, lookup_coverage(hits, misses), t.coverage)
        for head, values in sorted(window.scores.items()):
            if head in self.baseline.scores:
                add("score_psi", head, self.baseline.scores[head].psi(values, eps), t.psi)
        for head, (predicted, observed) in sorted(window.outcomes.items()):
            report = calibration(predicted, observed, self.config.calibration_bins, head)
            add("calibration", head, report.deviation, t.calibration_deviation)
        if window.last_updates:
            if now is None:
                raise ValueError("freshness needs `now`")
            for table, stamp in sorted(window.last_updates.items()):
                add("freshness", table, feature_freshness([stamp], now), t.freshness_seconds)
        for metric, value in sorted(window.business.items()):
            add("business_drop", metric, relative_drop(value, self.baseline.business.get(metric, float("nan"))), t.business_drop)
        for dimension, value in sorted(window.diversity.items()):
            add("diversity", dimension, relative_drop(value, self.baseline.diversity.get(dimension, float("nan"))), t.diversity_drop)
        return out


# -- retraining ------------------------------------------------------------------------------

@dataclass(frozen=True)
class RetrainRequest:
    """Ask for retraining, with the critical results that caused it."""

    requested_at: float
    reasons: tuple[MonitorResult, ...]

    @property
    def summary(self) -> str:
        return "; ".join(r.message for r in self.reasons)


class RetrainQueue:
    """A small thread-safe bounded queue of retrain requests; consumers `drain` it.

    The freshness/training side polls it (or replaces it with any callable sink).
    """

    def __init__(self, maxlen: int = 100) -> None:
        self._items: deque[RetrainRequest] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def __call__(self, request: RetrainRequest) -> None:
        with self._lock:
            self._items.append(request)

    def drain(self) -> list[RetrainRequest]:
        with self._lock:
            items = list(self._items)
            self._items.clear()
            return items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


class RetrainTrigger:
    """Turns critical results of the configured monitors into at most one retrain request per
    `min_interval_seconds` (the first request goes out at once). Suppressed ones are logged and counted.
    """

    def __init__(
        self,
        sink: Callable[[RetrainRequest], None],
        min_interval_seconds: float,
        monitors: Iterable[str] = ("feature_psi", "score_psi", "calibration"),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sink, self.min_interval, self.monitors, self._clock = sink, min_interval_seconds, frozenset(monitors), clock
        self._last: float | None = None
        self.suppressed = 0
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, sink, config: ObservabilityConfig, clock: Callable[[], float] = time.time) -> "RetrainTrigger":
        return cls(sink, config.retrain_min_interval_seconds, config.retrain_on, clock)

    def resume(self, last_requested_at: float) -> None:
        """Keep the rate limit of an earlier process: `last_requested_at` is its last request's time."""
        with self._lock:
            self._last = last_requested_at if self._last is None else max(self._last, last_requested_at)

    def consider(self, results: Iterable[MonitorResult]) -> RetrainRequest | None:
        """Emit a request if any relevant monitor is critical and the interval has passed."""
        reasons = tuple(r for r in results if r.severity is Severity.CRITICAL and r.monitor in self.monitors)
        if not reasons:
            return None
        with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last < self.min_interval:
                self.suppressed += 1
                log.info("retrain request suppressed (%.0fs since last): %s", now - self._last, reasons[0].message)
                return None
            self._last = now
        request = RetrainRequest(now, reasons)
        log.warning("requesting retraining: %s", request.summary)
        self.sink(request)
        return request


# -- joining predictions with events (calibration) --------------------------------------------

POSITIVE_EVENT_HEADS = ("click", "like", "share", "hide")


@dataclass
class _Logged:
    logged_at: float
    predictions: dict[str, float]
    impressed: bool = False
    positives: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class JoinedCounts:
    """What one batch of events adds to the calibration counters, per head."""

    predicted_sum: dict[str, float]
    observed: dict[str, int]


class PredictionLog:
    """Served predictions kept by (request_id, item_id) so /v1/events can be joined to them.

    - `join(events)` gives the increments of the streaming calibration counters: an impression adds
      its predictions to predicted_sum, a click/like/share/hide on a logged item adds 1 to observed
      (each counted once per item). Ratio of their rates is Prometheus' calibration.
    - `pop_finalised()` returns (predicted, observed 0/1) pairs of impressed items whose label
      window (`ttl_seconds`) has closed: the input of `calibration()`/ECE and MonitorWindow.outcomes.
    Entries older than the TTL are evicted; at most `max_entries` are kept (oldest dropped).
    """

    def __init__(self, ttl_seconds: float = 3600.0, clock: Callable[[], float] = time.time, max_entries: int = 1_000_000) -> None:
        self.ttl, self._clock, self.max_entries = ttl_seconds, clock, max_entries
        self._entries: dict[tuple[str, int], _Logged] = {}  # insertion-ordered = time-ordered
        self._lock = threading.Lock()

    def log(self, request_id: str, item_ids: Sequence[int], predictions: Mapping[str, Sequence[float]]) -> None:
        now = self._clock()
        heads = {h: np.asarray(v, dtype=np.float64) for h, v in predictions.items() if h in POSITIVE_EVENT_HEADS}
        with self._lock:
            for i, item in enumerate(item_ids):
                self._entries[(request_id, int(item))] = _Logged(now, {h: float(v[i]) for h, v in heads.items()})
            while len(self._entries) > self.max_entries:
                self._entries.pop(next(iter(self._entries)))

    def join(self, events: Iterable[tuple[str, int, str]]) -> JoinedCounts:
        """`events` as (request_id, item_id, type); unknown requests are ignored."""
        predicted: dict[str, float] = defaultdict(float)
        observed: dict[str, int] = defaultdict(int)
        with self._lock:
            for request_id, item_id, kind in events:
                entry = self._entries.get((request_id, int(item_id)))
                if entry is None:
                    continue
                if kind == "impression" and not entry.impressed:
                    entry.impressed = True
                    for head, p in entry.predictions.items():
                        predicted[head] += p
                elif kind in entry.predictions and kind not in entry.positives:
                    entry.positives.add(kind)
                    observed[kind] += 1
        return JoinedCounts(dict(predicted), dict(observed))

    def pop_finalised(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        cutoff = self._clock() - self.ttl
        pairs: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
        with self._lock:
            while self._entries:
                key = next(iter(self._entries))
                entry = self._entries[key]
                if entry.logged_at > cutoff:
                    break
                del self._entries[key]
                if entry.impressed:
                    for head, p in entry.predictions.items():
                        pairs[head][0].append(p)
                        pairs[head][1].append(1.0 if head in entry.positives else 0.0)
        return {h: (np.array(p), np.array(y)) for h, (p, y) in pairs.items()}

    def __len__(self) -> int:
        return len(self._entries)
