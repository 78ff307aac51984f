"""The live monitor against the real Redis: prediction records and events in, the join, the
graded window, the gauges and the retrain requests out. Time is a fake clock (windows, label
windows, rate limits advance with it); only stream ids carry Redis' own wall time."""
from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
import redis
import redis.asyncio as aioredis

from app.state.events import EventStream, StreamEvent
from app.state.local_redis import free_port
from app.state.sessions import FeedStateStore, StreamAppend
from observability import metric_names as m
from observability.config import ObservabilityConfig
from observability.live_monitor import (
    EVENTS_KEY,
    CandidateSample,
    FeatureSampler,
    LiveMonitor,
    PredictionRecord,
    is_sampled,
)
from observability.metrics import InMemoryMetrics
from observability.monitors import MonitorResult, RetrainRequest, Severity, TrainingBaseline
from observability.retrain_requests import RETRAIN_REQUESTS_KEY, RetrainRequestStream

FEATURES = ("user_age", "cf_score")


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def config(**live) -> ObservabilityConfig:
    return ObservabilityConfig.model_validate({
        "monitor_window_seconds": 600, "retrain_min_interval_seconds": 3600,
        "live_monitor": {"features": list(FEATURES), "feature_rows": 4, "label_window_seconds": 60,
                         "publish_seconds": 10, **live},
    })


def baseline(rng: np.random.Generator) -> TrainingBaseline:
    return TrainingBaseline.fit(
        {"user_age": rng.normal(35, 10, 5000), "cf_score": rng.normal(0, 1, 5000)},
        {"click": rng.beta(2, 8, 5000)},
    )


def record(request_id: str, user: str, items: list[int], p_click: list[float], ages: list[float],
           creators: list[int] | None = None) -> PredictionRecord:
    n = len(items)
    return PredictionRecord(
        request_id, user, "v1", time.time(), tuple(items), tuple(range(1, n + 1)), tuple(creators or items),
        {"click": p_click, "like": [p / 2 for p in p_click]},
        CandidateSample({"user_age": ages, "cf_score": [0.0] * len(ages)}, {"click": p_click}),
    )


def run(coro):
    return asyncio.run(coro)


async def _xadd(client, records: list[PredictionRecord], key: str = "rf:predictions") -> None:
    for r in records:
        await client.xadd(key, r.to_fields())


def _event(i: int, request_id: str, item: int, kind: str) -> StreamEvent:
    return StreamEvent(event_id=f"e{i}", user_id=1, type=kind, ts=0.0, item_id=item, request_id=request_id)


# -- serving side ----------------------------------------------------------------------------------

def test_sampling_is_by_request_id_and_near_the_rate():
    ids = [f"{i:032x}" for i in range(20_000)]
    assert all(is_sampled(i, 1.0) for i in ids[:100]) and not any(is_sampled(i, 0.0) for i in ids[:100])
    picked = [is_sampled(i, 0.1) for i in ids]
    assert 0.09 < np.mean(picked) < 0.11
    assert picked == [is_sampled(i, 0.1) for i in ids]  # every stage decides the same


def test_feature_sampler_even_stride_and_nulls():
    dense = np.arange(40, dtype=np.float32).reshape(10, 4)
    dense[9, 2] = np.nan
    sampler = FeatureSampler(["a", "b", "c", "d"], ["c", "a"], rows=4)
    sample = sampler.sample(dense, {"click": np.linspace(0, 0.9, 10)})
    assert sample.features["a"] == [0.0, 12.0, 24.0, 36.0]  # rows 0, 3, 6, 9
    assert sample.features["c"][-1] is None  # NaN travels as JSON null
    assert sample.scores["click"] == [0.0, 0.3, 0.6, 0.9]
    assert sampler.sample(dense[:0], {}) == CandidateSample()
    with pytest.raises(ValueError, match="not dense ranking features"):
        FeatureSampler(["a"], ["user_agee"], rows=4)


def test_record_for_page_keeps_the_served_items_predictions_and_round_trips():
    rec = PredictionRecord.for_page(
        "r1", "u", "v1", 1.0, [(30, 1, 7), (10, 3, 8)], [10, 20, 30],
        {"click": [0.1, 0.2, 0.3], "watch": [1.0, 2.0, 3.0]}, CandidateSample({"user_age": [20.0]}, {}),
    )
    assert rec.item_ids == (30, 10) and rec.positions == (1, 3) and rec.creator_ids == (7, 8)
    assert rec.predictions == {"click": [0.3, 0.1], "watch": [3.0, 1.0]}
    fields = {k.encode(): v.encode() for k, v in rec.to_fields().items()}  # as redis-py returns them
    assert PredictionRecord.from_fields(fields) == rec


def test_record_page_sends_the_log_entry_in_the_same_round_trip(redis_client, redis_url):
    async def scenario():
        client = aioredis.Redis.from_url(redis_url)
        store = FeedStateStore(client, 60, 60, 60, 3)
        ok = await store.record_page(1, "s1", [5, 6], 0, append=StreamAppend("rf:predictions", {"r": "{}"}, 1000))
        redis_client.set("rf:broken", "not a stream")  # the XADD fails (WRONGTYPE), the page's writes do not
        failed = await store.record_page(1, "s2", [7], 0, append=StreamAppend("rf:broken", {"r": "{}"}, 1000))
        await client.aclose()
        return ok, failed

    ok, failed = run(scenario())
    assert ok is True and failed is False
    assert redis_client.xlen("rf:predictions") == 1
    assert redis_client.smembers("rf:feed:served:s2") == {b"7"}


# -- monitor side ----------------------------------------------------------------------------------

def _monitor(redis_url: str, clock: Clock, metrics: InMemoryMetrics, cfg: ObservabilityConfig | None = None,
             base: TrainingBaseline | None = None) -> LiveMonitor:
    client = aioredis.Redis.from_url(redis_url)
    return LiveMonitor(client, cfg or config(), metrics, base, model_version="v1", tables_updated_at=clock() - 120,
                       clock=clock)


def test_join_counts_calibration_against_a_naive_reference_and_grades_the_window(redis_client, redis_url):
    rng = np.random.default_rng(0)
    clock, metrics = Clock(), InMemoryMetrics()
    pages = []
    for r in range(20):
        items = list(range(r * 10, r * 10 + 5))
        pages.append(record(f"r{r}", f"user{r % 4}", items, rng.uniform(0.05, 0.5, 5).round(5).tolist(),
                            rng.normal(35, 10, 4).tolist(), creators=[i % 3 for i in items]))
    # Impressions for every item of 15 pages, clicks on the first two of each, a like on one.
    events, n = [], 0
    for page in pages[:15]:
        for item in page.item_ids:
            events.append(_event(n, page.request_id, item, "impression"))
            n += 1
        for item in page.item_ids[:2]:
            events.append(_event(n, page.request_id, item, "click"))
            n += 1
    events.append(_event(n, pages[0].request_id, pages[0].item_ids[0], "like"))
    events.append(_event(n + 1, "unknown-request", 1, "click"))  # joins nothing; still a click in the CTR
    predicted_click = sum(sum(p.predictions["click"]) for p in pages[:15])

    async def scenario():
        monitor = _monitor(redis_url, clock, metrics, base=baseline(rng))
        await monitor.start()  # the group starts at "$": it sees what arrives after it
        client = aioredis.Redis.from_url(redis_url)
        await _xadd(client, pages)
        await EventStream(client, 10_000, 60).append(events)
        read = await monitor.poll()
        first = await monitor.publish()
        clock.advance(61)  # the label window closes: outcomes are final, ECE is graded
        second = await monitor.publish()
        await client.aclose()
        return read, first, second, monitor

    read, first, second, monitor = run(scenario())
    assert read == len(pages) + len(events)
    assert metrics.counter(m.CALIBRATION_PREDICTED, head="click") == pytest.approx(predicted_click)
    assert metrics.counter(m.CALIBRATION_OBSERVED, head="click") == 30
    assert metrics.counter(m.CALIBRATION_OBSERVED, head="like") == 1
    impressions, clicks = 75, 31
    assert metrics.gauge(m.BUSINESS_RATE, metric="ctr") == pytest.approx(clicks / impressions)
    assert metrics.gauge(m.BUSINESS_RATE, metric="engagement_rate") == pytest.approx((clicks + 1) / impressions)
    assert metrics.gauge(m.BUSINESS_RATE, metric="hide_rate") == 0.0
    # 4 users, each shown creators {0, 1, 2}: 3 distinct per user.
    assert metrics.gauge(m.USER_DIVERSITY, dimension="creator") == pytest.approx(3.0)
    assert metrics.gauge(m.FEATURE_PSI, feature="user_age") < 0.25
    assert metrics.gauge(m.FEATURE_COVERAGE, feature="user_age") == 1.0
    assert metrics.counter(m.FEATURE_VALUES, feature="user_age") == 80
    assert metrics.gauge(m.FEATURE_LAST_UPDATE, table="ranking_features") == pytest.approx(clock() - 61 - 120)
    assert metrics.gauge(m.FEATURE_LAST_UPDATE, table="events") == pytest.approx(time.time(), abs=30)
    assert "calibration" not in {r.monitor for r in first}  # outcomes are not final yet
    calib = {r.subject: r for r in second if r.monitor == "calibration"}
    # The naive reference: finalised pairs of impressed items, clicked = 1.
    p = np.concatenate([pg.predictions["click"] for pg in pages[:15]])
    y = np.tile([1.0, 1.0, 0.0, 0.0, 0.0], 15)
    assert calib["click"].value == pytest.approx(abs(p.mean() / y.mean() - 1.0))
    assert metrics.gauge(m.CALIBRATION_ECE, head="click") is not None
    assert monitor.stats.impressions_read == 75


def test_shifted_feature_writes_one_rate_limited_retrain_request(redis_client, redis_url):
    rng = np.random.default_rng(1)
    clock, metrics = Clock(), InMemoryMetrics()
    old_users = [record(f"r{i}", "u", [i], [0.2], (rng.normal(35, 10, 4) + 30).tolist()) for i in range(30)]

    async def scenario():
        monitor = _monitor(redis_url, clock, metrics, base=baseline(rng))
        client = aioredis.Redis.from_url(redis_url)
        await monitor.poll()
        await _xadd(client, old_users)
        await monitor.poll()
        results = await monitor.publish()
        clock.advance(60)
        await monitor.publish()  # still critical, but within the rate limit
        requests = await RetrainRequestStream(client).read()
        # A restarted monitor takes the rate limit from the stream, not from zero.
        restarted = _monitor(redis_url, clock, InMemoryMetrics(), base=monitor.baseline)
        await restarted.start()
        again = restarted.trigger.consider(results)
        await client.aclose()
        return results, requests, monitor, restarted, again

    results, requests, monitor, restarted, again = run(scenario())
    psi = next(r for r in results if r.monitor == "feature_psi" and r.subject == "user_age")
    assert psi.severity is Severity.CRITICAL
    assert len(requests) == 1 and monitor.trigger.suppressed == 1
    entry_id, fields = requests[0]
    assert "feature_psi[user_age]" in fields["monitors"].split(",")
    assert "user_age" in fields["reasons"] and fields["model_version"] == "v1"
    assert float(fields["requested_at"]) == pytest.approx(clock() - 60)
    assert metrics.counter(m.RETRAIN_REQUESTS, monitor="feature_psi") == 1
    assert metrics.gauge(m.MONITOR_STATUS, monitor="feature_psi", subject="user_age") == 2
    assert again is None and restarted.trigger.suppressed == 1


def test_consumer_group_resumes_after_a_restart(redis_client, redis_url):
    clock = Clock()

    async def scenario():
        client = aioredis.Redis.from_url(redis_url)
        stream = EventStream(client, 10_000, 60)
        first = _monitor(redis_url, clock, InMemoryMetrics())
        await first.start()
        await _xadd(client, [record("r1", "u", [1, 2], [0.1, 0.2], [30.0])])
        await stream.append([_event(1, "r1", 1, "impression")])
        await first.poll()
        # Delivered to the consumer but never acknowledged (a crash mid-batch): re-delivered on restart.
        await stream.append([_event(2, "r1", 2, "impression")])
        await client.xreadgroup("rayfeed-monitor", "monitor-0", {EVENTS_KEY: ">"}, count=10)
        second = _monitor(redis_url, clock, InMemoryMetrics())
        await second.poll()
        pending = await client.xpending(EVENTS_KEY, "rayfeed-monitor")
        await client.aclose()
        return first, second, pending

    first, second, pending = run(scenario())
    assert first.stats.events_read == 1
    assert second.stats.events_read == 1  # only the unacknowledged one, not the first again
    assert second.stats.predictions_read == 1  # predictions are re-read for the label window
    assert second.stats.impressions_read == 1
    assert pending["pending"] == 0


def test_every_partition_of_the_event_stream_is_read_on_a_redis_cluster(redis_cluster_client, redis_cluster_url):
    """Events spread over three hash-tagged partitions (by user) on a real Redis Cluster: the
    monitor's group reads and acknowledges each partition in its own slot."""
    from app.state._redis import async_fail_fast_client
    from app.state.events import EventPartitions

    clock = Clock()

    async def scenario():
        client = async_fail_fast_client(redis_cluster_url, 2.0)
        stream = EventStream(client, 10_000, 60, partitions=3)
        keys = EventPartitions.of(client, 3).keys()
        monitor = LiveMonitor(client, config(), InMemoryMetrics(), None, event_keys=keys, model_version="v1",
                              clock=clock)
        await monitor.start()
        await client.xadd("rf:predictions", record("r1", "u", [1, 2, 3], [0.1, 0.2, 0.3], [30.0] * 3).to_fields())
        events = [StreamEvent(event_id=f"e{u}", user_id=u, type="impression", ts=0.0, item_id=u, request_id="r1")
                  for u in (1, 2, 3)]
        await stream.append(events)
        await monitor.poll()
        pending = [(await client.xpending(key, "rayfeed-monitor"))["pending"] for key in keys]
        lengths = [await client.xlen(key) for key in keys]
        await client.aclose()
        return monitor, pending, lengths

    monitor, pending, lengths = run(scenario())
    assert lengths == [1, 1, 1]  # one user per partition
    assert monitor.stats.events_read == 3 and monitor.stats.impressions_read == 3
    assert pending == [0, 0, 0]


def test_redis_down_is_counted_and_the_loop_goes_on():
    clock, metrics = Clock(), InMemoryMetrics()

    async def scenario():
        client = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
        monitor = LiveMonitor(client, config(publish_seconds=1), metrics, None, clock=clock)
        await monitor.step()
        clock.advance(2)
        await monitor.step()  # publishes from what it has (nothing), then its retrain queue is empty
        return monitor

    monitor = run(scenario())
    assert metrics.counter(m.REDIS_ERRORS, op="monitor_read") == 2
    assert monitor.stats.errors == 2 and monitor.stats.publishes == 1


def test_retrain_request_stream_round_trip(redis_client, redis_url):
    reasons = (MonitorResult("feature_psi", "user_age", 3.1, Severity.CRITICAL, 0.1, 0.25),
               MonitorResult("calibration", "click", 0.3, Severity.CRITICAL, 0.05, 0.1))

    async def scenario():
        client = aioredis.Redis.from_url(redis_url)
        stream = RetrainRequestStream(client)
        first = await stream.append(RetrainRequest(100.0, reasons), "v7")
        await stream.append(RetrainRequest(200.0, reasons[:1]))
        everything = await stream.read()
        after_first = await stream.read(after=first)
        last = await stream.last_requested_at()
        await client.aclose()
        return first, everything, after_first, last

    first, everything, after_first, last = run(scenario())
    assert [e for e, _ in everything][0] == first and len(after_first) == 1
    assert everything[0][1] == {
        "requested_at": "100.0", "monitors": "feature_psi[user_age],calibration[click]", "model_version": "v7",
        "reasons": "feature_psi[user_age] = 3.1 (critical; warn 0.1, critical 0.25); "
                   "calibration[click] = 0.3 (critical; warn 0.05, critical 0.1)",
    }
    assert last == 200.0 and redis_client.exists(RETRAIN_REQUESTS_KEY)


def test_monitored_features_are_dense_ranking_features():
    from app.ranking.config import RankingFeatureConfig
    from app.ranking.features import declare_features

    dense = {d.name for d in declare_features(RankingFeatureConfig()) if d.kind == "dense"}
    assert set(ObservabilityConfig().live_monitor.features) <= dense


def test_prediction_record_json_is_small():
    rec = PredictionRecord.for_page(
        "0" * 32, "0" * 16, "v20261123-075114-14587-835081", time.time(),
        [(i, i + 1, i) for i in range(20)], list(range(100)),
        {h: np.random.default_rng(0).uniform(0, 1, 100) for h in ("click", "like", "share", "hide", "watch")},
        CandidateSample({f: [0.123456] * 16 for f in ObservabilityConfig().live_monitor.features},
                        {h: [0.123456] * 16 for h in ("click", "like", "share", "hide", "watch")}),
    )
    assert len(json.dumps(rec.to_fields())) < 4000
