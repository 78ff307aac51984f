"""Fault injection on the real metric path: a feature goes null then shifts, the model's
calibration drifts, and the alert rules fire on what Ray's Prometheus endpoint exported, feature
alert first.

The path exercised for real: feed requests served by the app (request ids, items, per-head
scores via explain) → a monitor job (this test's driver process, a Ray driver like
`rayfeed monitor` would be) that counts served feature values and nulls, grades the feature
window with `MonitorSuite` against a training baseline, logs the served predictions in a
`PredictionLog`, reads the events the app accepted on POST /v1/events back from the Redis event
stream and joins them by request id → `RayMetrics` → Ray's metrics export → a scrape of the
node's metrics port → `promtool test rules` on the committed rule file.

What is injected, not real: the corrupted feature column (the user's `age`, as the monitor sees
it; nulls, then +25 years) and the calibration drift (the served p_click logged ×1.5, as if a
model version over-predicted; clicks stay what the true scores predict).

Time compression (stated plainly): each phase takes a few seconds of wall time but stands for
PHASE_MINUTES of Prometheus time. The scraped value of every series at the end of a phase is
real; between phases, counters are interpolated linearly and gauges held, so a rule's rate()
sees each phase's real increment spread over the phase, and `for:` durations (5m, 15m, 30m) run
on the simulated clock.
"""
from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from observability import metric_names as m
from observability.alert_rules import RULES_PATH
from observability.config import ObservabilityConfig
from observability.monitors import MonitorSuite, MonitorWindow, PredictionLog, TrainingBaseline
from tests.integration.conftest import ServedApp

pytestmark = pytest.mark.integration

PHASE_MINUTES = 60
FEATURE = "age"
HEAD = "click"
# (name, null fraction, age shift in years, calibration factor on logged p_click)
PHASES = [
    ("clean", 0.0, 0.0, 1.0),
    ("nulls", 0.2, 0.0, 1.5),  # the feature store starts serving nulls; the model, fed defaults, drifts
    ("shift", 0.0, 25.0, 1.5),  # nulls fixed, but the feature now arrives shifted
    ("shift", 0.0, 25.0, 1.5),
]
REQUESTS_PER_PHASE = 6


class MonitorJob:
    """The monitor loop, one tick per phase: feature window → counters + graded gauges;
    served predictions + streamed events → calibration counters."""

    def __init__(self, served: ServedApp, baseline_ages: np.ndarray) -> None:
        from observability.metrics import RayMetrics

        self.served = served
        self.metrics = RayMetrics()
        self.suite = MonitorSuite(TrainingBaseline.fit({FEATURE: baseline_ages}, {}), ObservabilityConfig())
        self.predictions = PredictionLog(ttl_seconds=3600)
        self.stream_after = "0-0"
        self.expected: dict[str, float] = {}  # series key -> cumulative value this job exported
        # What other recorders of the same series (an earlier test's Monitor) exported before this job.
        self.before = _scrape_series()

    def tick(self, ages: np.ndarray, responses: list[dict], calibration_factor: float) -> None:
        self.metrics.record_feature_nulls({FEATURE: ages})
        self._add("values", ages.size)
        self._add("nulls", int(np.isnan(ages).sum()))
        results = self.suite.evaluate(MonitorWindow(features={FEATURE: ages}))
        self.metrics.publish_monitor_results(results)
        self.psi = next(r.value for r in results if r.monitor == "feature_psi")

        for body in responses:
            organic = [i for i in body["items"] if i["type"] == "organic"]
            self.predictions.log(body["request_id"], [i["item_id"] for i in organic],
                                 {HEAD: [calibration_factor * i["provenance"]["scores"]["p_click"] for i in organic]})
        joined = self.predictions.join(self._streamed_events())
        self.metrics.record_calibration(HEAD, joined.predicted_sum.get(HEAD, 0.0), joined.observed.get(HEAD, 0))
        self._add("predicted", joined.predicted_sum.get(HEAD, 0.0))
        self._add("observed", joined.observed.get(HEAD, 0))

    def _streamed_events(self) -> list[tuple[str, int, str]]:
        """What the app accepted, read back from its Redis event stream (oldest first)."""
        import redis.asyncio as aioredis

        from app.state.events import EventStream

        async def read() -> list:
            client = aioredis.Redis.from_url(self.served.redis_url)
            try:
                rows = await EventStream(client, 100_000, 60).read(self.stream_after, count=10_000)
            finally:
                await client.aclose()
            return rows

        rows = asyncio.run(read())
        if rows:
            self.stream_after = rows[-1][0]
        return [(e.request_id, int(e.item_id), e.type) for _, e in rows if e.item_id is not None and e.request_id]

    def _add(self, key: str, value: float) -> None:
        self.expected[key] = self.expected.get(key, 0.0) + float(value)


def _serve_and_engage(served: ServedApp, users: list[int]) -> list[dict]:
    """Feed pages with scores (explain), then impressions for every organic item and clicks on
    as many items as the (true) p_click predicts, posted to /v1/events."""
    responses, events = [], []
    with served.client() as c:
        for user in users:
            response = c.get("/v1/feed", params={"user_id": user, "limit": 20, "explain": "true"})
            assert response.status_code == 200, response.text
            responses.append(response.json())
        served_items = [(body, item) for body in responses for item in body["items"] if item["type"] == "organic"]
        p = np.array([item["provenance"]["scores"]["p_click"] for _, item in served_items])
        # Calibrated users: the phase's clicks number what its predictions sum to (largest p first).
        clicks = set(np.argsort(-p)[: int(round(p.sum()))].tolist())
        for k, (body, item) in enumerate(served_items):
            base = {"user_id": body["user_id"], "item_id": item["item_id"], "request_id": body["request_id"],
                    "position": item["position"]}
            events.append({**base, "type": "impression"})
            if k in clicks:
                events.append({**base, "type": "click"})
        ack = c.post("/v1/events", json=events)
        assert ack.status_code == 200 and ack.json()["accepted"] == len(events), ack.text
    return responses


def _exported(found: dict, series: str, labels: dict[str, str]) -> list[float]:
    return [v for lab, v in found.get(series, []) if all(lab.get(k) == x for k, x in labels.items())]


def _scrape_values() -> dict[str, list[tuple[dict[str, str], float]]]:
    import httpx

    from tests.integration.test_observability import _LABEL, _SAMPLE, metrics_url

    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in httpx.get(metrics_url(), timeout=10).text.splitlines():
        match = _SAMPLE.match(line)
        if match and not line.startswith("#"):
            out.setdefault(match.group(1), []).append((dict(_LABEL.findall(match.group(3) or "")), float(match.group(4))))
    return out


SERIES = {  # what the rules read: key -> (exported series, labels that identify ours)
    "values": (m.FEATURE_VALUES.series(), {"feature": FEATURE}),
    "nulls": (m.FEATURE_NULLS.series(), {"feature": FEATURE}),
    "psi": (m.FEATURE_PSI.series(), {"feature": FEATURE}),
    "predicted": (m.CALIBRATION_PREDICTED.series(), {"head": HEAD}),
    "observed": (m.CALIBRATION_OBSERVED.series(), {"head": HEAD}),
}


def _scrape_series() -> dict[str, float]:
    found = _scrape_values()
    return {key: sum(_exported(found, series, labels)) for key, (series, labels) in SERIES.items()}


def _wait_for_export(job: MonitorJob, timeout_s: float = 30.0) -> dict[str, float]:
    """Scrape until every series shows what the job recorded (Ray exports on its report interval)."""
    want = {**job.expected, "psi": job.psi}
    deadline = time.monotonic() + timeout_s
    while True:
        found = _scrape_values()
        got = {key: sum(_exported(found, series, labels)) - (job.before[key] if key != "psi" else 0.0)
               for key, (series, labels) in SERIES.items()}
        if all(np.isclose(got[k], want[k], rtol=1e-6, atol=1e-6) for k in want) or time.monotonic() > deadline:
            assert all(np.isclose(got[k], want[k], rtol=1e-6, atol=1e-6) for k in want), (got, want)
            return got
        time.sleep(0.25)


def _promtool_input(snapshots: list[dict[str, float]]) -> list[dict[str, str]]:
    """Scraped values at phase ends -> one-minute samples: counters interpolated across each
    phase, gauges held for it. Sample 0 is before anything was recorded (counters at 0)."""
    minutes = PHASE_MINUTES * len(snapshots)
    out = []
    for key, (series, labels) in SERIES.items():
        is_gauge = key == "psi"
        points = []
        for t in range(minutes + 1):
            phase, into = divmod(t, PHASE_MINUTES)
            if is_gauge:
                points.append(snapshots[min(phase, len(snapshots) - 1)][key] if t else snapshots[0][key])
                continue
            before = snapshots[phase - 1][key] if phase >= 1 else 0.0
            if phase >= len(snapshots):
                points.append(snapshots[-1][key])
            else:
                points.append(before + (snapshots[phase][key] - before) * into / PHASE_MINUTES)
        selector = series + "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
        out.append({"series": selector, "values": " ".join(f"{v:.6g}" for v in points)})
    return out


def test_feature_alert_fires_before_the_calibration_alert(served_app: ServedApp, promtool, tmp_path: Path):
    from app.data import load_dataset
    from tests.integration.artifacts import reduced_config

    users = load_dataset(reduced_config(tmp_path).data).users
    ages = users["age"].to_numpy(dtype=np.float64)
    job = MonitorJob(served_app, ages)
    rng = np.random.default_rng(7)
    snapshots = []
    for name, nulls, shift, factor in PHASES:
        window = rng.choice(ages, size=400) + shift
        window[rng.random(window.size) < nulls] = np.nan
        phase_users = [int(u) for u in rng.choice(users["user_id"].to_numpy(), REQUESTS_PER_PHASE, replace=False)]
        job.tick(window, _serve_and_engage(served_app, phase_users), factor)
        snapshots.append(_wait_for_export(job))

    # The scrape saw each injected fault: nulls only in the null phase, PSI only after the shift,
    # predicted clicks ~1.5x observed after the drift.
    steps = [{k: s[k] - (snapshots[i - 1][k] if i and k != "psi" else 0.0) for k in s} for i, s in enumerate(snapshots)]
    assert steps[0]["nulls"] == 0 and steps[1]["nulls"] > 0 and steps[2]["nulls"] == 0
    assert snapshots[0]["psi"] < 0.1 and snapshots[2]["psi"] > 0.25
    assert 0.8 < steps[0]["predicted"] / steps[0]["observed"] < 1.2 < steps[1]["predicted"] / steps[1]["observed"]

    rules = {r["alert"]: r for g in yaml.safe_load(RULES_PATH.read_text())["groups"] for r in g["rules"]}
    severity = {name: rule["labels"] for name, rule in rules.items()}

    def at(minute: int, alert: str, firing: bool, labels: dict[str, str]) -> dict:
        annotations = {k: v.replace("{{ $labels.feature }}", FEATURE).replace("{{ $labels.head }}", HEAD)
                       for k, v in rules[alert]["annotations"].items()}
        expected = [{"exp_labels": labels, "exp_annotations": annotations}] if firing else []
        return {"eval_time": f"{minute}m", "alertname": alert, "exp_alerts": expected}
    null_labels = {**severity["RayfeedFeatureNullRate"], "feature": FEATURE}
    drift_labels = {**severity["RayfeedFeatureDriftCritical"], "feature": FEATURE}
    calib_labels = {**severity["RayfeedCalibrationDeviation"], "head": HEAD}
    p = PHASE_MINUTES
    expectations = [
        # Clean: nothing fires.
        at(p - 5, "RayfeedFeatureNullRate", False, null_labels), at(p - 5, "RayfeedCalibrationDeviation", False, calib_labels),
        at(p - 5, "RayfeedFeatureDriftCritical", False, drift_labels),
        # Nulls and drift start together at p: the feature alert (10m rate, for 5m) fires first ...
        at(p + 20, "RayfeedFeatureNullRate", True, null_labels), at(p + 20, "RayfeedCalibrationDeviation", False, calib_labels),
        # ... the calibration alert (1h rate, for 30m) later, while the null alert still fires.
        at(p + 50, "RayfeedFeatureNullRate", True, null_labels), at(p + 50, "RayfeedCalibrationDeviation", True, calib_labels),
        # The shifted feature raises the PSI alert (for 15m) once the shift has lasted long enough.
        at(2 * p + 10, "RayfeedFeatureDriftCritical", False, drift_labels),
        at(2 * p + 20, "RayfeedFeatureDriftCritical", True, drift_labels),
        at(2 * p + 20, "RayfeedFeatureNullRate", False, null_labels),
        at(2 * p + 20, "RayfeedCalibrationDeviation", True, calib_labels),
    ]
    test_file = tmp_path / "fault_injection.yml"
    test_file.write_text(yaml.safe_dump({
        "rule_files": [str(RULES_PATH)], "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": _promtool_input(snapshots), "alert_rule_test": expectations}],
    }, sort_keys=False, width=100_000))
    result = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
