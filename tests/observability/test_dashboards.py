"""Dashboards: committed JSON is current, well-formed, and queries only registered metrics."""
from __future__ import annotations

import json

from observability.dashboards import DASHBOARD_DIR, render_dashboards
from observability.metric_names import exported_series, promql_metric_names


def test_committed_dashboards_match_generation():
    rendered = render_dashboards()
    assert sorted(p.name for p in DASHBOARD_DIR.glob("*.json")) == sorted(rendered)
    for name, text in rendered.items():
        assert (DASHBOARD_DIR / name).read_text() == text, f"run `python -m observability.dashboards` ({name})"


def test_four_layers_with_expected_panels():
    dashboards = {json.loads(t)["uid"]: json.loads(t) for t in render_dashboards().values()}
    titles = {uid: {p["title"] for p in d["panels"]} for uid, d in dashboards.items()}
    assert {"Requests per second", "Error rate", "Feed latency", "Healthy replicas"} <= titles["rayfeed-infrastructure"]
    assert {"Feature-store coverage", "Feature freshness", "Null rate", "Feature PSI"} <= titles["rayfeed-features"]
    assert {"Calibration: predicted / observed", "Score distribution", "Score PSI"} <= titles["rayfeed-model"]
    assert {"CTR", "Engagement rate", "Hide rate", "Diversity per page", "Ad load", "Revenue per hour",
            "Budget utilisation"} <= titles["rayfeed-business"]


def test_panels_lint():
    known = exported_series()
    for text in render_dashboards().values():
        dashboard = json.loads(text)
        assert dashboard["templating"]["list"][0]["type"] == "datasource"
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids))
        cells = set()
        for panel in dashboard["panels"]:
            g = panel["gridPos"]
            assert g["x"] + g["w"] <= 24
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                    cells.add((x, y))
            assert panel["datasource"]["uid"] == "${datasource}"
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                names = promql_metric_names(target["expr"])
                assert names and names <= known, f"{panel['title']}: {sorted(names - known)}"
