"""The live monitor: served predictions and user events in, graded monitors and retrain requests out.

Serving side (cheap, per request, no I/O of its own):
- `is_sampled(request_id, rate)`: the one decision, by request id, so Ranking and the ingress agree
  on which requests are logged without a message saying so.
- `FeatureSampler`: in Ranking, picks `feature_rows` of a request's scored candidates at an even
  stride (the population the training baseline was fitted on: every candidate retrieval hands to
  the ranker) and keeps their monitored features and head scores — a `CandidateSample`.
- `PredictionRecord`: built by the ingress for a served page: request id, keyed user hash, model
  version, organic items with their positions, creators and per-head predictions, plus the sample;
  one JSON field of one XADD on `rf:predictions` (sent in the same Redis round trip as the page's
  other writes, `FeedStateStore.record_page(append=...)`).

Monitor side (`LiveMonitor`, run by the Monitor deployment; testable with a plain Redis):
- `poll()` reads new prediction records (XRANGE from its own position; at start it re-reads the
  last label window, so a restart rebuilds the join state) and new events (a consumer group on
  `rf:events`: a restart resumes where it acknowledged), joins events to predictions by
  (request_id, item_id) in a `PredictionLog`, and counts the calibration counters, served feature
  values/nulls and score histograms as it goes.
- `publish()` grades the window with `MonitorSuite` against the `TrainingBaseline` (PSI per
  monitored feature and per head, null rates/coverage, calibration of finalised outcomes,
  freshness of the feature tables and of the event stream), sets the gauges (PSI, coverage, ECE,
  monitor status, CTR/engagement/hide rates, creator diversity, last-update times) and hands the
  critical results to `RetrainTrigger`, whose requests go to `rf:retrain:requests`.

Why one replica: the join needs a request's prediction record and its events in one process. The
consumer group would let replicas share the events, but each would then miss the predictions
another one read; scaling out needs partitioning by request id first (not built).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.state.sessions import StreamAppend
from observability.config import ObservabilityConfig
from observability.metrics import FeedMetrics
from observability.monitors import (
    MonitorResult,
    MonitorSuite,
    MonitorWindow,
    PredictionLog,
    RetrainQueue,
    RetrainTrigger,
    SlidingWindow,
    TrainingBaseline,
    business_rates,
    calibration,
    diversity,
)
from observability.retrain_requests import RetrainRequestStream

log = logging.getLogger(__name__)

EVENTS_KEY = "rf:events"  # app.state.events.STREAM_KEY (not imported: the monitor needs no app.state)
BASELINE_FILE = "monitor_baseline.json"  # in <artifact version>/organic/
FEATURE_TABLES = "ranking_features"  # freshness subject: the ranker's feature tables (artifact publish time)
EVENTS_TABLE = "events"  # freshness subject: the newest event on the event stream
BUSINESS_MONITORED = ("ctr", "engagement_rate")  # graded against the baseline when it has them (a drop is bad)


def is_sampled(request_id: str, rate: float) -> bool:
    """Whether a request's predictions are logged: a hash of its id below `rate` (uniform, stable)."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < rate


def _rounded(values, digits: int = 5) -> list[float | None]:
    """JSON-safe floats (NaN → null), rounded: the stream holds thousands of them."""
    array = np.round(np.asarray(values, dtype=np.float64).ravel(), digits)
    out = array.tolist()
    return [None if v != v else v for v in out] if np.isnan(array).any() else out


@dataclass(frozen=True)
class CandidateSample:
    """Monitored features and head scores of a few of a request's scored candidates."""

    features: Mapping[str, Sequence[float | None]] = field(default_factory=dict)
    scores: Mapping[str, Sequence[float | None]] = field(default_factory=dict)


class FeatureSampler:
    """Picks `rows` of a request's candidates at an even stride and keeps the monitored features.

    `dense_names` is the model's dense feature order (FeatureSchema.dense); every monitored name
    must be one of them, checked here so a typo fails when the deployment is built.
    """

    def __init__(self, dense_names: Sequence[str], features: Sequence[str], rows: int) -> None:
        missing = [f for f in features if f not in dense_names]
        if missing:
            raise ValueError(f"monitored features {missing} are not dense ranking features")
        self.features = tuple(features)
        self.columns = np.array([list(dense_names).index(f) for f in features], dtype=np.int64)
        self.rows = rows

    def sample(self, dense: np.ndarray, scores: Mapping[str, np.ndarray]) -> CandidateSample:
        """`dense`: this request's (n, d) dense inputs; `scores`: head → n scores (same order)."""
        n = len(dense)
        if n == 0 or self.rows == 0:
            return CandidateSample()
        pick = np.unique(np.linspace(0, n - 1, min(self.rows, n)).astype(np.int64))
        block = dense[np.ix_(pick, self.columns)]
        return CandidateSample(
            {name: _rounded(block[:, j]) for j, name in enumerate(self.features)},
            {head: _rounded(np.asarray(values)[pick]) for head, values in scores.items()},
        )


@dataclass(frozen=True)
class PredictionRecord:
    """One served page as the monitor needs it. `user` is the keyed hash of the user id
    (observability.tracing.hash_user_id), never the id; `predictions` maps a head (click, like,
    share, hide, watch) to one value per item, in `item_ids` order."""

    request_id: str
    user: str
    model_version: str
    served_at: float
    item_ids: tuple[int, ...]
    positions: tuple[int, ...]
    creator_ids: tuple[int, ...]
    predictions: Mapping[str, Sequence[float | None]]
    sample: CandidateSample = field(default_factory=CandidateSample)

    FIELD = "r"

    @classmethod
    def for_page(
        cls,
        request_id: str,
        user: str,
        model_version: str,
        served_at: float,
        slots: Sequence[tuple[int, int, int]],
        ranked_item_ids: Sequence[int],
        head_scores: Mapping[str, Sequence[float]],
        sample: CandidateSample | None = None,
    ) -> "PredictionRecord":
        """`slots`: the page's organic (item id, position, creator id); `head_scores`: head → one
        prediction per item of `ranked_item_ids` (the reranker's output, a superset of the page)."""
        row = {int(item): i for i, item in enumerate(ranked_item_ids)}
        index = [row[item] for item, _, _ in slots]
        return cls(
            request_id, user, model_version, served_at,
            tuple(int(s[0]) for s in slots), tuple(int(s[1]) for s in slots), tuple(int(s[2]) for s in slots),
            {head: _rounded(np.asarray(values, dtype=np.float64)[index]) for head, values in head_scores.items()},
            sample or CandidateSample(),
        )

    def to_fields(self) -> dict[str, str]:
        # By hand, not dataclasses.asdict: its recursive deep copy cost more than the JSON itself.
        data = {
            "request_id": self.request_id, "user": self.user, "model_version": self.model_version,
            "served_at": self.served_at, "item_ids": self.item_ids, "positions": self.positions,
            "creator_ids": self.creator_ids, "predictions": self.predictions,
            "sample": {"features": self.sample.features, "scores": self.sample.scores},
        }
        return {self.FIELD: json.dumps(data, separators=(",", ":"))}

    @classmethod
    def from_fields(cls, fields: Mapping) -> "PredictionRecord":
        raw = fields.get(cls.FIELD, fields.get(cls.FIELD.encode()))
        data = json.loads(raw)
        data["sample"] = CandidateSample(**data.get("sample", {}))
        for name in ("item_ids", "positions", "creator_ids"):
            data[name] = tuple(data[name])
        return cls(**data)


def prediction_log_entry(config: ObservabilityConfig, user_id: int, request_id: str, slots: Sequence[Any],
                         first_position: int, page: Any, version: str) -> StreamAppend | None:
    """The live monitor's record of a served page, for requests Ranking sampled (it attached the
    per-head scores to `page`, an app.organic.OrganicPage); sent with the page's other Redis
    writes. Never raises: monitoring never fails a feed."""
    from observability.tracing import hash_user_id

    live = config.live_monitor
    if not live.enabled or page.head_scores is None:
        return None
    try:
        organic = [(int(s.ref_id), first_position + s.position - 1, int(s.item.creator_id))
                   for s in slots if s.kind == "organic"]
        record = PredictionRecord.for_page(
            request_id, hash_user_id(user_id, config.user_id_hash_salt), page.versions.get("ranking", version),
            time.time(), organic, [e.item_id for e in page.entries], page.head_scores, page.monitor_sample)
        return StreamAppend(live.stream_key, record.to_fields(), live.stream_maxlen)
    except Exception:  # noqa: BLE001 - monitoring never fails a feed
        log.exception("prediction log record failed")
        return None


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _stream_ms(entry_id: str) -> float:
    """Wall time (unix seconds) Redis stamped on a stream entry id."""
    return int(entry_id.split("-", 1)[0]) / 1000.0


def _floats(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _concat(parts: list[Mapping[str, Sequence[float | None]]]) -> dict[str, np.ndarray]:
    out: dict[str, list[np.ndarray]] = {}
    for part in parts:
        for name, values in part.items():
            out.setdefault(name, []).append(_floats(values))
    return {name: np.concatenate(arrays) for name, arrays in out.items()}


@dataclass
class MonitorStats:
    """Counts since start, for logs, tests and the deployment's `stats()`."""

    predictions_read: int = 0
    events_read: int = 0
    impressions_read: int = 0  # organic impressions carrying a request id (joined when their page was logged)
    positives_joined: int = 0
    publishes: int = 0
    retrain_requests: int = 0
    errors: int = 0
    last_publish: float | None = None
    window_pages: int = 0  # prediction records in the window at the last publish
    window_events: int = 0  # organic events in the window at the last publish
    last_results: list[dict[str, Any]] = field(default_factory=list)
    business: dict[str, float] = field(default_factory=dict)
    diversity: dict[str, float] = field(default_factory=dict)


class LiveMonitor:
    """Streams in, graded windows out. One instance per Monitor replica; `run()` is its loop.

    `client` is a redis.asyncio client; `clock` is wall time (stream ids are wall milliseconds, and
    the freshness alert compares with Prometheus' time()). Redis failures are counted
    (`rayfeed_redis_errors_total{op="monitor_*"}`) and retried at the next poll; they never stop the loop.
    """

    def __init__(
        self,
        client,
        config: ObservabilityConfig,
        metrics: FeedMetrics,
        baseline: TrainingBaseline | None = None,
        *,
        consumer: str = "monitor-0",
        event_keys: Sequence[str] = (EVENTS_KEY,),
        model_version: str = "",
        tables_updated_at: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client, self.metrics, self.consumer, self._clock = client, metrics, consumer, clock
        # The event stream's partition keys (app.state.events.EventPartitions.keys()): each read
        # on its own, so on a Redis Cluster every call stays in one slot.
        self.event_keys = tuple(event_keys)
        self.retrain_stream = RetrainRequestStream(client)
        self._queue = RetrainQueue()
        self.stats = MonitorStats()
        self._started = False
        self._pending_events = dict.fromkeys(self.event_keys, True)
        self._poll_lock = asyncio.Lock()
        self._prediction_cursor: str | None = None
        self._last_publish = clock()
        self._last_event_at: float | None = None
        self._versions_seen: set[str] = set()
        self.config = config
        live = config.live_monitor
        window = config.monitor_window_seconds
        self.predictions = PredictionLog(live.label_window_seconds, clock)
        self._features: SlidingWindow[dict] = SlidingWindow(window, clock)
        self._scores: SlidingWindow[dict] = SlidingWindow(window, clock)
        self._events: SlidingWindow[str] = SlidingWindow(window, clock)
        self._pages: SlidingWindow[tuple[str, tuple[int, ...]]] = SlidingWindow(window, clock)
        self._outcomes: SlidingWindow[dict] = SlidingWindow(window, clock)
        self.trigger = RetrainTrigger.from_config(self._queue, config, clock)
        self.reconfigure(config, baseline, model_version, tables_updated_at)

    # -- configuration ---------------------------------------------------------------------------
    def reconfigure(self, config: ObservabilityConfig, baseline: TrainingBaseline | None, model_version: str,
                    tables_updated_at: float | None) -> None:
        """New thresholds, windows, baseline or artifact version; the join state and windows are kept."""
        self.config, self.model_version, self.tables_updated_at = config, model_version, tables_updated_at
        self.baseline = baseline
        self.suite = MonitorSuite(baseline or TrainingBaseline(), config)
        for window in (self._features, self._scores, self._events, self._pages, self._outcomes):
            window.seconds = config.monitor_window_seconds
        self.predictions.ttl = config.live_monitor.label_window_seconds
        self.trigger.min_interval = config.retrain_min_interval_seconds
        self.trigger.monitors = frozenset(config.retrain_on)

    # -- reading -----------------------------------------------------------------------------------
    async def start(self) -> None:
        """Consumer group on the event stream (new events from now on; kept across restarts),
        the prediction position one label window back, the rate limit from the last request."""
        import redis

        live = self.config.live_monitor
        for key in self.event_keys:
            try:
                await self.client.xgroup_create(key, live.consumer_group, id="$", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        since_ms = int((self._clock() - live.label_window_seconds) * 1000)
        self._prediction_cursor = f"{max(since_ms, 0)}-0"
        last = await self.retrain_stream.last_requested_at()
        if last is not None:
            self.trigger.resume(last)  # a restart must not reset the retrain rate limit
        self._pending_events = dict.fromkeys(self.event_keys, True)  # first reads re-deliver the unacknowledged
        self._started = True

    async def poll(self) -> int:
        """Read everything new from both streams (predictions first: a page is logged before its
        events can exist), join, count. Returns the number of entries read."""
        async with self._poll_lock:  # one reader at a time: the stream positions are shared state
            if not self._started:
                await self.start()
            n = await self._read_predictions()
            return n + await self._read_events()

    async def _read_predictions(self) -> int:
        live, total = self.config.live_monitor, 0
        while True:
            rows = await self.client.xrange(live.stream_key, min=f"({self._prediction_cursor}", count=live.read_count)
            for entry_id, fields in rows:
                self._prediction_cursor = _text(entry_id)
                try:
                    record = PredictionRecord.from_fields(fields)
                except (ValueError, TypeError, KeyError) as exc:
                    self.stats.errors += 1
                    log.warning("unreadable prediction record %s: %s", self._prediction_cursor, exc)
                    continue
                self._add_record(record)
            total += len(rows)
            if len(rows) < live.read_count:
                return total

    def _add_record(self, record: PredictionRecord) -> None:
        self.stats.predictions_read += 1
        heads = {h: _floats(v) for h, v in record.predictions.items()}
        self.predictions.log(record.request_id, record.item_ids, heads)
        self._pages.add((record.user, record.creator_ids))
        if record.sample.features:
            features = _concat([record.sample.features])
            self._features.add(features)
            self.metrics.record_feature_nulls(features)
        if record.sample.scores:
            scores = _concat([record.sample.scores])
            self._scores.add(scores)
            for head, values in scores.items():
                self.metrics.observe_scores(head, values)
        if record.model_version and record.model_version not in self._versions_seen:
            self._versions_seen.add(record.model_version)
            self.metrics.set_model_version("ranker", record.model_version)

    async def _read_events(self) -> int:
        total = 0
        for key in self.event_keys:
            total += await self._read_partition(key)
        return total

    async def _read_partition(self, key: str) -> int:
        live, total = self.config.live_monitor, 0
        while True:
            start_id = "0" if self._pending_events[key] else ">"
            reply = await self.client.xreadgroup(live.consumer_group, self.consumer, {key: start_id},
                                                 count=live.read_count)
            rows = reply[0][1] if reply else []
            if self._pending_events[key] and not rows:
                self._pending_events[key] = False
                continue
            if not rows:
                return total
            joinable, ids = [], []
            for entry_id, fields in rows:
                ids.append(entry_id)  # acknowledged even when unreadable: a bad entry must not block the group
                if not fields:
                    continue  # a pending entry trimmed from the stream meanwhile (MAXLEN)
                raw = fields.get(b"event", fields.get("event"))
                try:
                    event = json.loads(raw)
                except (TypeError, ValueError):
                    self.stats.errors += 1
                    continue
                self._last_event_at = _stream_ms(_text(entry_id))
                if event.get("item_id") is None:
                    continue  # ads and other non-organic events: not this model's outcomes
                self._events.add(str(event.get("type")))
                if event.get("request_id"):
                    joinable.append((str(event["request_id"]), int(event["item_id"]), str(event["type"])))
            joined = self.predictions.join(joinable)
            for head, predicted in joined.predicted_sum.items():
                self.metrics.record_calibration(head, predicted, joined.observed.get(head, 0))
            for head, observed in joined.observed.items():
                if head not in joined.predicted_sum:
                    self.metrics.record_calibration(head, 0.0, observed)
            self.stats.impressions_read += sum(1 for *_, kind in joinable if kind == "impression")
            self.stats.positives_joined += sum(joined.observed.values())
            await self.client.xack(key, live.consumer_group, *ids)
            self.stats.events_read += len(rows)
            total += len(rows)
            if len(rows) < live.read_count and not self._pending_events[key]:
                return total

    # -- grading -----------------------------------------------------------------------------------
    def window(self) -> MonitorWindow:
        """The current window as MonitorSuite takes it (finalised outcomes are moved in first)."""
        finalised = self.predictions.pop_finalised()
        if finalised:
            self._outcomes.add(finalised)
        outcomes: dict[str, tuple[list, list]] = {}
        for part in self._outcomes.items():
            for head, (p, y) in part.items():
                outcomes.setdefault(head, ([], []))
                outcomes[head][0].append(p)
                outcomes[head][1].append(y)
        rates = business_rates(self._events.items()) if len(self._events) else {}
        self.stats.business = {k: v for k, v in rates.items() if v == v}
        last_updates = {}
        if self.tables_updated_at is not None:
            last_updates[FEATURE_TABLES] = self.tables_updated_at
        if self._last_event_at is not None:
            last_updates[EVENTS_TABLE] = self._last_event_at
        baseline = self.baseline or TrainingBaseline()
        return MonitorWindow(
            features=_merge(self._features.items()),
            scores=_merge(self._scores.items()),
            outcomes={h: (np.concatenate(p), np.concatenate(y)) for h, (p, y) in outcomes.items()},
            last_updates=last_updates,
            business={k: v for k, v in self.stats.business.items() if k in BUSINESS_MONITORED and k in baseline.business},
            diversity=self._diversity(),
        )

    def _diversity(self) -> dict[str, float]:
        pages = self._pages.items()
        users = [u for u, creators in pages for _ in creators]
        if not users:
            return {}
        _, index = np.unique(np.asarray(users, dtype=object).astype(str), return_inverse=True)
        creators = [c for _, cs in pages for c in cs]
        return {"creator": diversity(index, np.asarray(creators, dtype=np.float64))}

    async def publish(self) -> list[MonitorResult]:
        """Grade the window, export every gauge, request retraining on critical results."""
        now = self._clock()
        window = self.window()
        results = self.suite.evaluate(window, now=now)
        m = self.metrics
        m.publish_monitor_results(results)
        for head, (p, y) in window.outcomes.items():
            report = calibration(p, y, self.config.calibration_bins, head)
            if report.n:
                m.set_calibration_ece(head, report.ece)
        for name, value in self.stats.business.items():
            m.set_business_rate(name, value)
        self.stats.diversity = self._diversity()
        for dimension, value in self.stats.diversity.items():
            m.set_user_diversity(dimension, value)
        for table, stamp in window.last_updates.items():
            m.set_feature_update_time(table, stamp)
        self.trigger.consider(results)
        await self._send_retrain_requests()
        self.stats.publishes += 1
        self.stats.last_publish = now
        self.stats.window_pages, self.stats.window_events = len(self._pages), len(self._events)
        self.stats.last_results = [
            {"monitor": r.monitor, "subject": r.subject, "value": r.value, "severity": str(r.severity)} for r in results
        ]
        self._last_publish = now
        return results

    async def _send_retrain_requests(self) -> None:
        for request in self._queue.drain():
            try:
                entry_id = await self.retrain_stream.append(request, self.model_version)
            except Exception as exc:  # noqa: BLE001 - kept and retried at the next publish
                self._queue(request)
                self.metrics.redis_error("monitor_retrain_request")
                log.warning("could not write a retrain request (kept for the next publish): %s", exc)
                return
            self.stats.retrain_requests += 1
            for monitor in sorted({r.monitor for r in request.reasons}):
                self.metrics.retrain_requested(monitor)
            log.warning("retrain request %s written to %s: %s", entry_id, self.retrain_stream.key, request.summary)

    # -- the loop ----------------------------------------------------------------------------------
    def publish_due(self) -> bool:
        return self._clock() - self._last_publish >= self.config.live_monitor.publish_seconds

    async def step(self) -> None:
        """One iteration: poll, then publish when the publish interval has passed."""
        try:
            await self.poll()
        except Exception as exc:  # noqa: BLE001 - Redis blips must not stop the monitor
            self.stats.errors += 1
            self.metrics.redis_error("monitor_read")
            log.warning("monitor read failed (retried): %s", exc)
        if self.publish_due():
            await self.publish()

    async def run(self) -> None:
        """The loop: one step every `poll_seconds` while `live_monitor.enabled`, idle otherwise.
        It is never cancelled to be switched off (a task cancelled inside a Redis call could
        leave a second loop reading beside a new one); `reconfigure` flips `enabled`."""
        while True:
            if not self.config.live_monitor.enabled:
                await asyncio.sleep(self.config.live_monitor.poll_seconds)
                continue
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a bug in one window must not end monitoring
                self.stats.errors += 1
                self._last_publish = self._clock()
                log.exception("monitor step failed")
            await asyncio.sleep(self.config.live_monitor.poll_seconds)


def _merge(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    out: dict[str, list[np.ndarray]] = {}
    for part in parts:
        for name, values in part.items():
            out.setdefault(name, []).append(values)
    return {name: np.concatenate(arrays) for name, arrays in out.items()}
