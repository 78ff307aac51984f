"""Alert rules: generated file is current, promtool accepts it, and its unit tests pass."""
from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from observability.alert_rules import RULES_PATH, build_rules, render_rules
from observability.config import ObservabilityConfig, MonitorThresholds, Threshold
from observability.dashboards import render_dashboards
from observability.metric_names import exported_series, promql_metric_names

TESTS_DIR = RULES_PATH.parent / "tests"


def test_committed_rules_match_generation():
    assert RULES_PATH.read_text() == render_rules(), "run `python -m observability.alert_rules`"


def test_rules_reference_registered_metrics_only():
    known = exported_series()
    for rule in build_rules():
        names = promql_metric_names(rule.expr)
        assert names, rule.name
        assert names <= known, f"{rule.name}: {sorted(names - known)}"


def test_rules_follow_thresholds_from_config():
    config = ObservabilityConfig(
        sla_p99_ms=200,
        thresholds=MonitorThresholds(psi=Threshold(warn=0.2, critical=0.3)),
        business_baseline_offset="1d",
    )
    exprs = {r.name: r.expr for r in build_rules(config)}
    assert exprs["RayfeedLatencyP99OverSLA"].endswith("> 0.2")
    assert exprs["RayfeedFeatureDriftCritical"].endswith("> 0.3")
    assert "offset 1d" in exprs["RayfeedCTRDrop"]


def test_every_rule_has_severity_layer_and_a_unit_test():
    document = yaml.safe_load(RULES_PATH.read_text())
    rules = [r for group in document["groups"] for r in group["rules"]]
    tested = set()
    for path in TESTS_DIR.glob("*.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                tested.add((check["alertname"], bool(check["exp_alerts"])))
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert (rule["alert"], True) in tested, f"{rule['alert']} never tested firing"
        assert (rule["alert"], False) in tested, f"{rule['alert']} never tested not firing"


def test_promtool_check_rules(promtool):
    result = subprocess.run([promtool, "check", "rules", str(RULES_PATH)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules(promtool):
    files = sorted(str(p) for p in TESTS_DIR.glob("*.yml"))
    result = subprocess.run([promtool, "test", "rules", *files], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_are_valid_promql(promtool, tmp_path: Path):
    """promtool parses every dashboard query when it is wrapped as a recording rule."""
    import json

    rules = []
    for name, text in render_dashboards().items():
        for panel in json.loads(text)["panels"]:
            for target in panel["targets"]:
                expr = target["expr"].replace("$__rate_interval", "5m")
                rules.append({"record": f"dashboard:{len(rules)}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}, width=10_000))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
