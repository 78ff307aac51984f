"""The live monitor inside the served app: feeds are logged to `rf:predictions` by the ingress, the
Monitor deployment joins them with the events posted to /v1/events, and its gauges reach Ray's
metrics export; a shifted population (only users aged 50+) makes it request retraining on
`rf:retrain:requests`.

Nothing is injected: the feature shift is real traffic from a sub-population the training
baseline under-represents. The session's app runs with the live monitor off (conftest); each test
turns it on with short windows through the user_config (an in-place reconfigure of every
deployment) and puts the session's configuration back afterwards.
"""
from __future__ import annotations

import copy
import time

import numpy as np
import pytest
import redis

from observability import metric_names as m
from observability.retrain_requests import RETRAIN_REQUESTS_KEY
from tests.integration.conftest import ServedApp
from tests.integration.test_fault_alerts import _exported, _scrape_values, _serve_and_engage

pytestmark = pytest.mark.integration

HEAD = "click"
FAST = {"publish_seconds": 0.5, "poll_seconds": 0.2, "label_window_seconds": 15.0, "sample_rate": 1.0}


def _monitor_handle():
    from ray import serve

    return serve.get_deployment_handle("Monitor", app_name="rayfeed")


def _with_live_monitor(served: ServedApp, window_s: float, **observability) -> dict:
    """The session's app config (live monitor off) with it on, fast, and `observability` settings:
    Ranking samples, the ingress logs, the Monitor reads (every deployment reconfigures in place)."""
    config = copy.deepcopy(served.config)
    for deployment in config["applications"][0]["deployments"]:
        obs = deployment["user_config"]["rayfeed"].setdefault("observability", {})
        obs["live_monitor"] = {**obs.get("live_monitor", {}), **FAST, "enabled": True}
        obs.update({"monitor_window_seconds": window_s, **observability})
    return config


def _stats() -> dict:
    return _monitor_handle().stats.remote().result(timeout_s=30)


def _wait(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _wait_quiet(since: float) -> None:
    """Until a publish after `since` saw an empty window: earlier tests' traffic has aged out."""
    _wait(lambda: (s := _stats())["last_publish"] and s["last_publish"] > since
          and s["window_pages"] == 0 and s["window_events"] == 0, 60, "an empty monitor window")


def _serve(served: ServedApp, users: list[int]) -> list[dict]:
    with served.client() as c:
        out = []
        for user in users:
            response = c.get("/v1/feed", params={"user_id": user, "limit": 20, "explain": "true"})
            assert response.status_code == 200, response.text
            out.append(response.json())
        return out


def _sum(found: dict, spec: m.MetricSpec, **labels: str) -> float:
    return sum(_exported(found, spec.series(), labels))


def test_monitor_exports_calibration_and_ctr_from_served_traffic(served_app: ServedApp):
    original = served_app.config
    served_app.deploy(_with_live_monitor(served_app, window_s=3.0))
    try:
        _wait_quiet(time.time())
        before = _scrape_values()
        rng = np.random.default_rng(11)
        # Feeds with scores, impressions for every organic item, clicks numbering the predictions' sum.
        pages = _serve_and_engage(served_app, [int(u) for u in rng.choice(np.arange(1, 900), 5, replace=False)])
        served = [item for body in pages for item in body["items"] if item["type"] == "organic"]
        p = np.array([item["provenance"]["scores"]["p_click"] for item in served])
        clicks = int(round(p.sum()))

        want = {"predicted": float(p.sum()), "observed": float(clicks), "ctr": clicks / len(served)}

        def exported():
            found = _scrape_values()
            got = {
                "predicted": _sum(found, m.CALIBRATION_PREDICTED, head=HEAD) - _sum(before, m.CALIBRATION_PREDICTED, head=HEAD),
                "observed": _sum(found, m.CALIBRATION_OBSERVED, head=HEAD) - _sum(before, m.CALIBRATION_OBSERVED, head=HEAD),
                "ctr": _sum(found, m.BUSINESS_RATE, metric="ctr"),
            }
            matched = all(np.isclose(got[k], want[k], rtol=1e-4) for k in want)
            ece = _exported(found, m.CALIBRATION_ECE.series(), {"head": HEAD})
            return (found, got) if matched and ece else None

        found, got = _wait(exported, 90, f"the Monitor's calibration counters, CTR and ECE to reach {want}")
        assert _exported(found, m.USER_DIVERSITY.series(), {"dimension": "creator"})
        psi = {lab["feature"] for lab, _ in found.get(m.FEATURE_PSI.series(), [])}
        assert {"user_age", "cf_score"} <= psi  # the artifact's training baseline is loaded
        assert {lab["head"] for lab, _ in found.get(m.SCORE_PSI.series(), [])} >= {"click", "like"}
        assert _exported(found, m.FEATURE_LAST_UPDATE.series(), {"table": "ranking_features"})
        assert _stats()["impressions_read"] >= len(served)
    finally:
        served_app.deploy(original)


def test_shifted_population_requests_retraining(served_app: ServedApp, tmp_path):
    from app.data import load_dataset
    from tests.integration.artifacts import reduced_config

    users = load_dataset(reduced_config(tmp_path).data).users
    old = [int(u) for u in users.loc[users["age"] >= 50, "user_id"]]
    client = redis.Redis.from_url(served_app.redis_url, decode_responses=True)
    last = client.xrevrange(RETRAIN_REQUESTS_KEY, count=1)
    after = last[0][0] if last else "0-0"
    original = served_app.config
    served_app.deploy(_with_live_monitor(served_app, window_s=3.0, retrain_min_interval_seconds=0))
    try:
        _wait_quiet(time.time())
        deadline = time.monotonic() + 60
        found = None
        for k in range(200):  # traffic from users aged 50+ only, until the Monitor asks for retraining
            _serve(served_app, [old[k % len(old)]])
            rows = client.xrange(RETRAIN_REQUESTS_KEY, min=f"({after}")
            found = next((f for _, f in rows if "feature_psi[user_age]" in f["monitors"].split(",")), None)
            if found or time.monotonic() > deadline:
                break
        assert found is not None, "no retrain request naming feature_psi[user_age]"
        assert "user_age" in found["reasons"] and "critical" in found["reasons"]
        assert float(found["requested_at"]) == pytest.approx(time.time(), abs=120)
        assert found["model_version"] == served_app.first.version
        graded = {(r["monitor"], r["subject"]): r for r in _stats()["last_results"]}
        assert graded[("feature_psi", "user_age")]["value"] > 0.25
    finally:
        served_app.deploy(original)
        client.close()
