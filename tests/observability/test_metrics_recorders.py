"""Metric recorders: the domain API over the in-memory backend, the hook, and Ray's export."""
from __future__ import annotations

import time
import urllib.request

import numpy as np
import pytest

from app.pipeline.candidates import Candidates, FeedQuery
from app.pipeline.runner import PipelineRunner, StageRecord
from observability import metric_names as m
from observability.metrics import InMemoryMetrics, NullMetrics, ObservabilityHook, RayMetrics, status_class
from observability.monitors import MonitorResult, Severity


class Source:
    name = "trending"

    def fetch(self, query):
        return Candidates.from_source("trending", np.arange(6), np.ones(6))


class BrokenFilter:
    name = "broken"

    def keep(self, query, candidates):
        raise RuntimeError("down")


def test_stage_records_and_hook_with_runner():
    metrics = InMemoryMetrics()
    runner = PipelineRunner("organic", [Source()], [BrokenFilter()], hook=ObservabilityHook("organic", metrics, model_version="v1"))
    runner.run(FeedQuery(user_id=1))
    assert len(metrics.observations(m.STAGE_LATENCY, pipeline="organic", stage="trending", kind="source")) == 1
    assert metrics.counter(m.STAGE_CANDIDATES_OUT, pipeline="organic", stage="trending") == 6
    assert metrics.counter(m.STAGE_CANDIDATES_IN, pipeline="organic", stage="broken") == 6
    assert metrics.counter(m.STAGE_ERRORS, pipeline="organic", stage="broken", kind="filter") == 1
    assert metrics.counter(m.STAGE_ERRORS, pipeline="organic", stage="trending", kind="source") == 0


def test_domain_methods():
    metrics = InMemoryMetrics(max_score_observations=10)
    metrics.record_request(200, 0.05)
    metrics.record_request(503, 0.2)
    metrics.record_request("4xx", 0.01, route="events")
    assert metrics.counter(m.REQUESTS, route="feed", status="5xx") == 1
    assert metrics.observations(m.REQUEST_LATENCY, route="feed") == [0.05, 0.2]
    metrics.count_sources(np.array(["ann", "ann", "social"], dtype=object))
    assert metrics.counter(m.CANDIDATES, source="ann") == 2
    metrics.observe_scores("click", np.linspace(0, 1, 500))
    observed = metrics.observations(m.SCORES, head="click")
    assert len(observed) == 10 and observed[0] == 0.0 and observed[-1] == 1.0
    metrics.record_feature_nulls({"age": np.array([1.0, np.nan, 3.0, np.nan])})
    assert (metrics.counter(m.FEATURE_VALUES, feature="age"), metrics.counter(m.FEATURE_NULLS, feature="age")) == (4, 2)
    metrics.record_feature_lookups("item", hits=9, misses=0)
    assert metrics.counter(m.FEATURE_LOOKUPS, table="item", result="hit") == 9
    metrics.record_event("click", 3)
    metrics.record_page(["organic", "organic", "ad"], creator_ids=[1, 1, 2], topic_ids=[5, 6, 7])
    metrics.record_page([])
    assert metrics.counter(m.PAGE_ITEMS, type="ad") == 1
    assert metrics.observations(m.PAGE_DIVERSITY, dimension="creator") == [2.0]
    assert metrics.counter(m.EMPTY_FEEDS, route="feed") == 1
    metrics.record_calibration("click", 1.5, 2)
    metrics.redis_error("incr")
    metrics.set_budget_utilisation(0.4)
    assert metrics.gauge(m.BUDGET_UTILISATION) == 0.4
    metrics.publish_monitor_results([
        MonitorResult("feature_psi", "age", 0.3, Severity.CRITICAL, 0.1, 0.25),
        MonitorResult("null_rate", "age", 0.02, Severity.WARN, 0.01, 0.05),
        MonitorResult("score_psi", "click", float("nan"), Severity.NO_DATA, 0.1, 0.25),
    ])
    assert metrics.gauge(m.FEATURE_PSI, feature="age") == 0.3
    assert metrics.gauge(m.FEATURE_COVERAGE, feature="age") == pytest.approx(0.98)
    assert metrics.gauge(m.MONITOR_STATUS, monitor="score_psi", subject="click") == -1
    assert metrics.gauge(m.SCORE_PSI, head="click") is None


def test_misuse_is_rejected_by_every_backend():
    for metrics in (InMemoryMetrics(), NullMetrics(), RayMetrics()):  # RayMetrics validates before touching Ray
        with pytest.raises(ValueError):
            metrics.inc(m.REQUESTS, route="feed")  # missing status
        with pytest.raises(ValueError):
            metrics.set(m.REQUESTS, 1.0, route="feed", status="2xx")  # a counter
        with pytest.raises(ValueError):
            metrics.record_event("purchase")
        with pytest.raises(ValueError):
            metrics.inc(m.SESSIONS, -1)
        with pytest.raises(ValueError):
            metrics.set(m.SERVE_REPLICA_HEALTHY, 1, deployment="d", replica="r", application="a")
    with pytest.raises(ValueError):
        status_class(42)


def test_hook_survives_broken_metrics():
    class Exploding(InMemoryMetrics):
        def _observe(self, spec, values, tags):
            raise RuntimeError("exporter down")

    hook = ObservabilityHook("organic", Exploding())
    with hook.span("s", "filter") as attrs:
        attrs.update(n_in=1, n_out=1)
    hook.record(StageRecord("s", "filter", 0.01, 1, 1))  # logged, not raised


def test_ray_metrics_are_exported_with_registered_names():
    """One real Ray driver: RayMetrics' objects appear on the metrics port under registry names."""
    ray = pytest.importorskip("ray")
    # In a full run the integration suite's session Ray (same 1 s report interval) is still up.
    started = not ray.is_initialized()
    if started:
        ray.init(
            address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False,
            _system_config={"metrics_report_interval_ms": 1000},  # export within ~1s, not 10s
        )
    try:
        metrics = RayMetrics()
        metrics.record_request(200, 0.03)
        metrics.record_event("impression", 2)
        metrics.set_budget_utilisation(0.5)
        port = ray._private.worker.global_worker.node.metrics_export_port
        wanted = {m.REQUESTS.series(), m.REQUEST_LATENCY.series("bucket"), m.EVENTS.series(), m.BUDGET_UTILISATION.series()}
        deadline, seen = time.monotonic() + 60, set()
        while time.monotonic() < deadline and not wanted <= seen:
            time.sleep(1)
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            seen = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line.startswith("ray_rayfeed_")}
        assert wanted <= seen, f"missing {wanted - seen}"
        assert seen <= m.exported_series()
    finally:
        if started:
            ray.shutdown()


class _RecordingRayMetrics(RayMetrics):
    """RayMetrics with the Ray objects replaced by recorders of the calls they get (no Ray)."""

    calls: list[tuple[str, str, float, dict]]

    @staticmethod
    def _sink_running() -> bool:
        return True

    def _create(self, spec):
        calls = self.calls

        class Recorder:
            def inc(self, value, tags):
                calls.append(("inc", spec.name, value, tags))

            def observe(self, value, tags):
                calls.append(("observe", spec.name, value, tags))

            def set(self, value, tags):
                calls.append(("set", spec.name, value, tags))
        return Recorder()


def test_ray_metrics_aggregate_in_process_and_reach_ray_once_per_series_per_flush():
    metrics = _RecordingRayMetrics(flush_s=60.0)  # the thread would flush in a minute; flush() does now
    metrics.calls = []
    for seconds in (0.01, 0.02, float("nan")):
        metrics.record_stage(StageRecord("mmr", "reranker", seconds, 100, 40), "organic")
    metrics.record_stage(StageRecord("dedup", "filter", 0.001, 0, 0), "organic")  # zero counts: no increment
    metrics.set_admission_limit(4)
    assert metrics.calls == [("set", m.ADMISSION_LIMIT.name, 4.0, {})]  # gauges go at once
    metrics.flush()
    incs = {(name, tuple(sorted(tags.items()))): value for kind, name, value, tags in metrics.calls if kind == "inc"}
    stage = (("pipeline", "organic"), ("stage", "mmr"))
    assert incs == {(m.STAGE_CANDIDATES_IN.name, stage): 300.0, (m.STAGE_CANDIDATES_OUT.name, stage): 120.0}
    observed = [(value, tags) for kind, name, value, tags in metrics.calls
                if kind == "observe" and name == m.STAGE_LATENCY.name]
    mmr = {"pipeline": "organic", "stage": "mmr", "kind": "reranker"}
    assert observed == [(0.01, mmr), (0.02, mmr), (0.001, {"pipeline": "organic", "stage": "dedup", "kind": "filter"})]
    metrics.calls.clear()
    metrics.flush()
    assert metrics.calls == []  # nothing twice
    metrics.record_stage(StageRecord("mmr", "reranker", 0.01, 1, 1, error="boom"), "organic")
    metrics.flush()
    assert ("inc", m.STAGE_ERRORS.name, 1.0, mmr) in metrics.calls

    direct = _RecordingRayMetrics(flush_s=0)
    direct.calls = []
    direct.record_request(200, 0.05)
    assert [kind for kind, *_ in direct.calls] == ["inc", "observe"]  # flush_s = 0: handed over at once
    with pytest.raises(ValueError):
        RayMetrics(flush_s=-1)


def test_the_flusher_stops_at_close_and_never_hands_records_to_a_stopped_ray():
    class Stopped(_RecordingRayMetrics):
        running = True

        def _sink_running(self) -> bool:
            return self.running

    metrics = Stopped(flush_s=0.05)
    metrics.calls = []
    metrics.record_stage(StageRecord("mmr", "reranker", 0.01, 3, 1), "organic")
    metrics.running = False  # Ray shut down before the flusher woke: the records stay buffered
    time.sleep(0.2)
    assert metrics.calls == [] and metrics._flusher.is_alive()
    metrics.running = True
    metrics.close()
    assert not metrics._flusher.is_alive() and any(kind == "inc" for kind, *_ in metrics.calls)
