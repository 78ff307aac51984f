"""The search space comes from CollatorConfig's declarations; the chosen weights load back."""
from __future__ import annotations

import numpy as np
import pytest

from app.collator.config import CollatorConfig
from config import load_config
from tuning.search import (
    SEARCH_NARROWING,
    TUNED_FIELDS,
    collator_config,
    declared_bounds,
    mean_ci,
    myopic_config,
    paired_ci,
    search_bounds,
    search_space,
    write_collator_yaml,
)


def _field_bounds(name):
    info = CollatorConfig.model_fields[name]
    lo = next(m.ge for m in info.metadata if getattr(m, "ge", None) is not None)
    hi = next(m.le for m in info.metadata if getattr(m, "le", None) is not None)
    return lo, hi


@pytest.mark.parametrize("name", ["alpha", "beta", "gamma"])
def test_weights_search_the_declared_bounds(name):
    lo, hi = _field_bounds(name)
    space = search_space()
    assert (space[name].lower, space[name].upper) == (lo, hi)
    assert declared_bounds(name).low == lo and declared_bounds(name).high == hi


def test_narrowing_only_shrinks_declared_bounds():
    for name, b in search_bounds().items():
        lo, hi = _field_bounds(name)
        assert lo <= b.low <= b.high <= hi
    assert search_bounds(narrowing={"gamma": (-5.0, 50.0)})["gamma"].low == 0.0
    with pytest.raises(ValueError):
        search_bounds(narrowing={"gamma": (20.0, 30.0)})


def test_hard_blending_rules_are_never_searched():
    from tuning.search import HARD_RULES

    space = search_space()
    assert not set(space) & set(HARD_RULES)
    lo, hi = SEARCH_NARROWING["ad_load_target"]
    samples = [space["ad_load_target"].sample() for _ in range(200)]
    assert all(lo <= s <= hi for s in samples)


def test_unbounded_field_cannot_be_searched():
    with pytest.raises(ValueError):
        declared_bounds("notification_positions")


def test_myopic_is_revenue_maximising_corner():
    m = myopic_config()
    assert m.beta == _field_bounds("beta")[1] and m.gamma == 0


def test_collator_config_validates_bounds():
    with pytest.raises(Exception):
        collator_config({"beta": 1000.0})
    assert collator_config({"min_gap": 2.7}).min_gap == 3


def test_written_yaml_loads_with_load_config(tmp_path):
    chosen = collator_config({"alpha": 1.5, "beta": 7.25, "gamma": 2.0, "ad_load_target": 0.2, "min_gap": 4,
                              "no_ads_before": 3, "organic_per_ad": 5})
    path = write_collator_yaml(tmp_path / "best.yaml", chosen, note="test")
    loaded = load_config(path).collator
    for name in TUNED_FIELDS:
        assert getattr(loaded, name) == pytest.approx(getattr(chosen, name))


def test_t_interval_against_scipy_reference():
    from scipy import stats

    x = [1.0, 2.0, 4.0, 7.0]
    m, lo, hi = mean_ci(x)
    ref = stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
    assert (lo, hi) == pytest.approx(ref)
    d, dlo, dhi = paired_ci([3, 4, 5], [1, 2, 3])
    assert d == 2 and dlo == dhi == 2


def test_myopic_max_load_is_the_most_permissive_corner():
    from tuning.search import myopic_max_load_config

    m, b = myopic_max_load_config(), search_bounds()
    assert (m.beta, m.gamma, m.ad_load_target) == (b["beta"].high, b["gamma"].low, b["ad_load_target"].high)
    base = CollatorConfig()
    assert (m.min_gap, m.no_ads_before, m.organic_per_ad) == (base.min_gap, base.no_ads_before, base.organic_per_ad)


def test_held_out_runs_are_reused_only_for_unchanged_configurations():
    from tuning.config import SimulationConfig
    from tuning.runs import _reusable_runs, comparison_configs

    sim = SimulationConfig(n_users=10, days=3)
    configs = comparison_configs(collator_config({"beta": 5.0}), CollatorConfig())
    previous = {"settings": {"users": 10, "days": 3},
                "held_out": {"seeds": [1, 2], "sim": sim.model_dump(mode="json"),
                             "runs": {"tuned": ["t"], "default": ["d"]},
                             "configs": {"tuned": configs["tuned"].model_dump(mode="json"),
                                         "default": CollatorConfig(beta=1.0).model_dump(mode="json")}}}
    assert _reusable_runs(previous, configs, [1, 2], sim) == {"tuned": ["t"]}
    assert _reusable_runs(previous, configs, [1, 3], sim) == {}
    assert _reusable_runs(previous, configs, [1, 2], SimulationConfig(n_users=10, days=4)) == {}
