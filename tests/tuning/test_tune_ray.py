"""One small Ray Tune search end to end (Optuna, 3 trials, tiny simulation)."""
from __future__ import annotations

from tuning.search import TUNED_FIELDS, run_search


def test_tiny_search_returns_best_trial(world, sim_config, tmp_path):
    lines = []
    result = run_search(world, sim_config, samples=3, seeds=[0], days=2, storage=tmp_path / "ray", progress=lines.append)
    assert len(result.trials) == 3
    assert set(result.best_params) == set(TUNED_FIELDS)
    best = max(t["long_term_value"] for t in result.trials)
    assert any(t["long_term_value"] == best and all(t[k] == result.best_params[k] for k in TUNED_FIELDS) for t in result.trials)
    assert sum("trial" in line for line in lines) == 3
