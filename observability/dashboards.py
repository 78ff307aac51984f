"""Grafana dashboards for the four layers, generated from the metric registry.

    python -m observability.dashboards        # rewrites observability/dashboards/*.json

One dashboard per layer: infrastructure (latency, QPS, errors, replicas), feature pipeline
(coverage, freshness, null rate, PSI), model (calibration, score distributions, score PSI) and
business (CTR, engagement, hide rate, diversity, ad load, revenue, budget utilisation). Each takes
a Prometheus data source variable, so the files import into any Grafana as they are. A test
checks the committed files equal a fresh generation and that every expression uses registered
metric names only.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from observability import metric_names as m
from observability.config import ObservabilityConfig

DASHBOARD_DIR = Path(__file__).parent / "dashboards"
RI = "$__rate_interval"
_DS = {"type": "prometheus", "uid": "${datasource}"}


@dataclass(frozen=True)
class Panel:
    title: str
    targets: tuple[tuple[str, str], ...]  # (expr, legend)
    unit: str = "short"
    description: str = ""
    thresholds: tuple[float, ...] = ()  # drawn as red lines (warn, critical ...)
    type: str = "timeseries"


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)


def _lbl(**labels: str) -> str:
    """A label matcher block: {k="v", ...}."""
    return "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def _rate(series: str, by: str = "", window: str = RI, sel: str = "", offset: str = "") -> str:
    group = f" by ({by}) " if by else ""
    off = f" offset {offset}" if offset else ""
    return f"sum{group}(rate({series}{sel}[{window}]{off}))"


def _quantile(q: float, spec: m.MetricSpec, by: str = "", sel: str = "") -> str:
    group = ", ".join([*(g for g in by.split(",") if g.strip()), "le"]).replace(" ", "")
    return f"histogram_quantile({q}, sum by ({group}) (rate({spec.series('bucket')}{sel}[{RI}])))"


def build_dashboards(config: ObservabilityConfig | None = None) -> list[Dashboard]:
    c = config or ObservabilityConfig()
    t = c.thresholds
    off = c.business_baseline_offset
    req, ev = m.REQUESTS.series(), m.EVENTS.series()
    imp = _lbl(type="impression")
    feed = _lbl(route="feed")

    def per_impression(sel: str, offset: str = "") -> str:
        return f"{_rate(ev, sel=sel, offset=offset)} / {_rate(ev, sel=imp, offset=offset)}"

    infrastructure = Dashboard("rayfeed-infrastructure", "rayfeed / infrastructure", "Latency, traffic, errors, replicas.", (
        Panel("Requests per second", ((_rate(req, "route, status"), "{{route}} {{status}}"),), "reqps"),
        Panel("Error rate", (
            (f"{_rate(req, sel=_lbl(status='5xx'))} / {_rate(req)}", "5xx"),
            (f"{_rate(req, sel=_lbl(status='4xx'))} / {_rate(req)}", "4xx"),
        ), "percentunit", thresholds=(c.error_rate_max,)),
        Panel("Feed latency", tuple(
            (_quantile(q, m.REQUEST_LATENCY, sel=feed), f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99)
        ), "s", "End-to-end /v1/feed latency; the red line is the P99 SLA.", (c.sla_p99_ms / 1000,)),
        Panel("Stage latency p99", (
            (_quantile(0.99, m.STAGE_LATENCY, "pipeline, stage"), "{{pipeline}}.{{stage}}"),
        ), "s"),
        Panel("Candidates kept per stage", (
            (f"{_rate(m.STAGE_CANDIDATES_OUT.series(), 'pipeline, stage')} / "
             f"{_rate(m.STAGE_CANDIDATES_IN.series(), 'pipeline, stage')}", "{{pipeline}}.{{stage}}"),
        ), "percentunit", "Fraction of candidates a stage passes on (sources have no input and are omitted)."),
        Panel("Stage failures", ((_rate(m.STAGE_ERRORS.series(), "pipeline, stage, kind"), "{{pipeline}}.{{stage}}"),), "ops"),
        Panel("Healthy replicas", ((f"sum by (deployment) ({m.SERVE_REPLICA_HEALTHY.series()})", "{{deployment}}"),), "short"),
        Panel("Redis errors", ((_rate(m.REDIS_ERRORS.series(), "op"), "{{op}}"),), "ops"),
        Panel("Empty feeds", ((f"{_rate(m.EMPTY_FEEDS.series(), sel=feed)} / {_rate(req, sel=feed)}", "empty"),),
              "percentunit", thresholds=(c.empty_feed_rate_max,)),
    ))
    lookups = m.FEATURE_LOOKUPS.series()
    features = Dashboard("rayfeed-features", "rayfeed / feature pipeline", "Coverage, freshness, nulls, drift.", (
        Panel("Feature-store coverage", (
            (f"{_rate(lookups, 'table', sel=_lbl(result='hit'))} / {_rate(lookups, 'table')}", "{{table}}"),
        ), "percentunit", "Lookups that found a row.", (t.coverage.warn,)),
        Panel("Feature freshness", (
            (f"time() - max by (table) ({m.FEATURE_LAST_UPDATE.series()})", "{{table}}"),
        ), "s", "Age of the newest update per table.", (t.freshness_seconds.warn, t.freshness_seconds.critical)),
        Panel("Null rate", (
            (f"{_rate(m.FEATURE_NULLS.series(), 'feature')} / {_rate(m.FEATURE_VALUES.series(), 'feature')}", "{{feature}}"),
        ), "percentunit", thresholds=(t.null_rate.warn, t.null_rate.critical)),
        Panel("Feature coverage (monitor window)", (
            (f"min by (feature) ({m.FEATURE_COVERAGE.series()})", "{{feature}}"),
        ), "percentunit", thresholds=(t.coverage.warn,)),
        Panel("Feature PSI", ((f"max by (feature) ({m.FEATURE_PSI.series()})", "{{feature}}"),), "short",
              "Against the training baseline.", (t.psi.warn, t.psi.critical)),
        Panel("Candidates per source", ((_rate(m.CANDIDATES.series(), "source"), "{{source}}"),), "ops"),
    ))
    model = Dashboard("rayfeed-model", "rayfeed / model", "Calibration, score distributions, drift.", (
        Panel("Calibration: predicted / observed", (
            (f"{_rate(m.CALIBRATION_PREDICTED.series(), 'head', '1h')} / {_rate(m.CALIBRATION_OBSERVED.series(), 'head', '1h')}",
             "{{head}}"),
        ), "short", "1 is calibrated; the lines are ±deviation bounds.",
            (1 - t.calibration_deviation.warn, 1 + t.calibration_deviation.warn)),
        Panel("Expected calibration error", ((f"max by (head) ({m.CALIBRATION_ECE.series()})", "{{head}}"),), "short"),
        Panel("Score median and p90", tuple(
            (_quantile(q, m.SCORES, "head"), f"{{{{head}}}} p{int(q * 100)}") for q in (0.5, 0.9)
        ), "short"),
        Panel("Mean score", (
            (f"{_rate(m.SCORES.series('sum'), 'head')} / {_rate(m.SCORES.series('count'), 'head')}", "{{head}}"),
        ), "short", "Bucket-resolution estimate (Ray approximates histogram sums)."),
        Panel("Score distribution", (
            (f"sum by (le) (increase({m.SCORES.series('bucket')}{{head=\"click\"}}[{RI}]))", "{{le}}"),
        ), "short", "P(click) histogram buckets.", type="heatmap"),
        Panel("Score PSI", ((f"max by (head) ({m.SCORE_PSI.series()})", "{{head}}"),), "short",
              thresholds=(t.psi.warn, t.psi.critical)),
        Panel("Monitor status", ((f"max by (monitor, subject) ({m.MONITOR_STATUS.series()})", "{{monitor}} {{subject}}"),),
              "short", "0 ok, 1 warn, 2 critical, -1 no data."),
        Panel("Retrain requests", ((f"sum by (monitor) (increase({m.RETRAIN_REQUESTS.series()}[1h]))", "{{monitor}}"),), "short"),
        Panel("Model versions", ((f"max by (model, version) ({m.MODEL_INFO.series()})", "{{model}} {{version}}"),), "short",
              type="table"),
    ))
    items = m.PAGE_ITEMS.series()
    business = Dashboard("rayfeed-business", "rayfeed / business", f"Outcomes, with the baseline {off} ago.", (
        Panel("CTR", ((per_impression('{type="click"}'), "now"), (per_impression('{type="click"}', off), f"{off} ago")),
              "percentunit"),
        Panel("Engagement rate", (
            (per_impression('{type=~"click|like|share|watch"}'), "now"),
            (per_impression('{type=~"click|like|share|watch"}', off), f"{off} ago"),
        ), "percentunit"),
        Panel("Hide rate", ((per_impression('{type="hide"}'), "now"), (per_impression('{type="hide"}', off), f"{off} ago")),
              "percentunit"),
        Panel("Sessions per second", (
            (_rate(m.SESSIONS.series()), "now"), (_rate(m.SESSIONS.series(), offset=off), f"{off} ago"),
        ), "ops"),
        Panel("Diversity per page", (
            (f"{_rate(m.PAGE_DIVERSITY.series('sum'), 'dimension')} / {_rate(m.PAGE_DIVERSITY.series('count'), 'dimension')}",
             "{{dimension}}"),
        ), "short", "Distinct creators/topics per served page."),
        Panel("Live monitor rates (joined to served predictions)", (
            (f"max by (metric) ({m.BUSINESS_RATE.series()})", "{{metric}}"),
        ), "percentunit", "The Monitor deployment's window: events per impression of logged pages."),
        Panel("Distinct creators per user (live monitor)", (
            (f"max by (dimension) ({m.USER_DIVERSITY.series()})", "{{dimension}}"),
        ), "short", "Across a user's pages in the monitor window."),
        Panel("Ad load", ((f"{_rate(items, sel=_lbl(type='ad'))} / {_rate(items)}", "ads"),),
              "percentunit"),
        Panel("Revenue per hour", ((f"{_rate(m.AD_REVENUE.series())} * 3600", "revenue"),), "currencyUSD"),
        Panel("Budget utilisation", ((f"max({m.BUDGET_UTILISATION.series()})", "spent / budget"),), "percentunit"),
        Panel("Events per second", ((_rate(ev, "type"), "{{type}}"),), "ops"),
    ))
    return [infrastructure, features, model, business]


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict:
    steps = [{"color": "green", "value": None}] + [
        {"color": "orange" if i == 0 and len(panel.thresholds) > 1 else "red", "value": v}
        for i, v in enumerate(panel.thresholds)
    ]
    body = {
        "id": panel_id,
        "type": panel.type,
        "title": panel.title,
        "description": panel.description,
        "datasource": _DS,
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {
            "defaults": {
                "unit": panel.unit,
                "thresholds": {"mode": "absolute", "steps": steps},
                "custom": {"thresholdsStyle": {"mode": "line" if panel.thresholds else "off"}},
            },
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": _DS, "expr": expr, "legendFormat": legend, "range": True}
            for i, (expr, legend) in enumerate(panel.targets)
        ],
    }
    return body


def dashboard_json(dashboard: Dashboard) -> dict:
    panels = [_panel_json(p, i + 1, 12 * (i % 2), 8 * (i // 2)) for i, p in enumerate(dashboard.panels)]
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["rayfeed"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [{
            "name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0,
        }]},
        "annotations": {"list": []},
        "panels": panels,
    }


def render_dashboards(config: ObservabilityConfig | None = None) -> dict[str, str]:
    """File name → JSON text."""
    return {
        f"{d.uid}.json": json.dumps(dashboard_json(d), indent=2, sort_keys=False) + "\n"
        for d in build_dashboards(config)
    }


def main(argv: list[str] | None = None) -> int:
    out = Path(argv[0]) if argv else DASHBOARD_DIR
    out.mkdir(parents=True, exist_ok=True)
    for name, text in render_dashboards().items():
        (out / name).write_text(text)
        print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
