"""Observability for rayfeed: traces (tracing), metrics (metric_names, metrics), monitors,
alert rules (alert_rules, alerts/), dashboards and the offline monitor report.

app/ never imports this package; deployments wire it in (see each module's docstring).
"""
