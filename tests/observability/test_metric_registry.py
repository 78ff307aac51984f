"""The metric registry: declarations are consistent, and the PromQL name extractor works."""
from __future__ import annotations

import pytest

from observability import metric_names as m
from observability.metric_names import MetricSpec, MetricType, promql_metric_names


def test_registry_exported_names():
    assert m.REQUESTS.series() == "ray_rayfeed_requests_total"
    assert m.STAGE_LATENCY.all_series() == (
        "ray_rayfeed_stage_latency_seconds_bucket",
        "ray_rayfeed_stage_latency_seconds_sum",
        "ray_rayfeed_stage_latency_seconds_count",
    )
    assert "ray_serve_deployment_replica_healthy" in m.exported_series()
    with pytest.raises(ValueError):
        m.STAGE_LATENCY.series()
    with pytest.raises(ValueError):
        m.REQUESTS.series("sum")


def test_every_rayfeed_metric_is_prefixed_and_has_help():
    for spec in m.REGISTRY.values():
        assert spec.help
        assert spec.external or spec.name.startswith("rayfeed_")


@pytest.mark.parametrize("kwargs", [
    dict(name="Bad-Name", type=MetricType.GAUGE, help="x"),
    dict(name="rayfeed_x", type=MetricType.COUNTER, help="x"),  # counters end in _total
    dict(name="rayfeed_h", type=MetricType.HISTOGRAM, help="x"),  # no buckets
    dict(name="rayfeed_h", type=MetricType.HISTOGRAM, help="x", buckets=(2.0, 1.0)),
    dict(name="rayfeed_g", type=MetricType.GAUGE, help="x", buckets=(1.0,)),
])
def test_invalid_specs_rejected(kwargs):
    with pytest.raises(ValueError):
        MetricSpec(**kwargs)


@pytest.mark.parametrize("expr, names", [
    ('histogram_quantile(0.99, sum by (le) (rate(ray_a_bucket{route="feed"}[5m]))) > 0.15', {"ray_a_bucket"}),
    ("abs(sum by (head) (rate(ray_p[1h])) / sum by (head) (rate(ray_o[1h])) - 1) > 0.05", {"ray_p", "ray_o"}),
    ('sum(rate(ray_e{type=~"click|like"}[$__rate_interval] offset 7d)) / ray_f', {"ray_e", "ray_f"}),
    ("time() - max by (table) (ray_ts) > 3600", {"ray_ts"}),
    ("a and on (x) b unless ignoring (y) c", {"a", "b", "c"}),
])
def test_promql_metric_names(expr, names):
    assert promql_metric_names(expr) == names
