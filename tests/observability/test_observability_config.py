from __future__ import annotations

import pytest
from pydantic import ValidationError

from observability.config import ObservabilityConfig, Threshold


def test_defaults_match_the_issue():
    c = ObservabilityConfig()
    t = c.thresholds
    assert (t.psi.warn, t.psi.critical) == (0.1, 0.25)
    assert t.calibration_deviation.warn == 0.05
    assert t.coverage.warn == 0.99 and not t.coverage.higher_is_worse
    assert t.business_drop.warn == 0.10
    assert c.sla_p99_ms == 150


@pytest.mark.parametrize("kwargs", [
    {"sampling_ratio": 1.5},
    {"unknown": 1},
    {"business_baseline_offset": "a week"},
    {"retrain_on": ["not_a_monitor"]},
    {"batch_span_mode": "sometimes"},
    {"thresholds": {"psi": {"warn": 0.3, "critical": 0.2}}},
])
def test_invalid_values_rejected(kwargs):
    with pytest.raises(ValidationError):
        ObservabilityConfig(**kwargs)


def test_lower_is_worse_threshold_ordering():
    Threshold(warn=0.99, critical=0.95, higher_is_worse=False)
    with pytest.raises(ValidationError):
        Threshold(warn=0.95, critical=0.99, higher_is_worse=False)
