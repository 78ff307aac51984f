"""The simulator's aggregates follow its declared models (fixed seeds, tolerances)."""
from __future__ import annotations

import numpy as np
import pytest

from app.collator.config import CollatorConfig
from tuning.audits import randomised_click_log
from tuning.config import ChoiceModelConfig, SimulationConfig
from tuning.simulator import PositionBasedChoiceModel, _poisson_from_uniform, long_term_objective, simulate


def test_examination_curve_is_the_declared_power_law():
    theta = ChoiceModelConfig(position_power=0.7).examination(5)
    np.testing.assert_allclose(theta, np.arange(1, 6) ** -0.7)
    assert theta[0] == 1.0 and np.all(np.diff(theta) < 0)


def test_click_through_by_position_follows_theta(world, sim_config):
    # Randomised order: relevance is independent of position, so CTR_p ∝ θ_p.
    log = randomised_click_log(world, sim_config, n_lists=20_000, list_len=8, seed=1)
    ctr = log.groupby("position")["click"].mean().to_numpy()
    theta = PositionBasedChoiceModel(sim_config.choice).examination(8)
    np.testing.assert_allclose(ctr / ctr[0], theta / theta[0], atol=0.05)


def test_same_seed_same_result_and_seeds_differ(world, sim_config):
    a = simulate(world, CollatorConfig(), sim_config, seed=4, days=3)
    b = simulate(world, CollatorConfig(), sim_config, seed=4, days=3)
    c = simulate(world, CollatorConfig(), sim_config, seed=5, days=3)
    assert a.objective == b.objective
    assert a.objective != c.objective


def test_churn_and_disengagement_increase_with_ad_load(world, sim_config):
    heavy = CollatorConfig(beta=100, gamma=0, ad_load_target=0.4, min_gap=1, no_ads_before=1, organic_per_ad=2)
    runs = {name: [simulate(world, c, sim_config, seed=s).objective for s in range(3)]
            for name, c in (("none", CollatorConfig(beta=0)), ("default", CollatorConfig()), ("heavy", heavy))}
    mean = {n: {k: np.mean([r[k] for r in rs]) for k in rs[0]} for n, rs in runs.items()}
    assert mean["none"]["ads_per_page"] == 0 < mean["default"]["ads_per_page"] < mean["heavy"]["ads_per_page"]
    assert mean["none"]["retained_share"] > mean["default"]["retained_share"] > mean["heavy"]["retained_share"]
    assert mean["none"]["sessions"] > mean["heavy"]["sessions"]
    # Short term, the heavy ad load earns the most: it is the myopic choice.
    assert mean["heavy"]["day1_revenue"] > mean["default"]["day1_revenue"] > 0


def test_interest_drifts_toward_consumption(world, sim_config):
    result = simulate(world, CollatorConfig(beta=0), sim_config, seed=0, days=5)
    moved = 1 - np.sum(result.final_latent * result.initial_latent, axis=1)
    assert np.all(np.abs(np.linalg.norm(result.final_latent, axis=1) - 1) < 1e-6)
    assert moved.mean() > 0.01


def test_without_drift_interests_stay(world, sim_config):
    config = SimulationConfig.model_validate({**sim_config.model_dump(), "user": {**sim_config.user.model_dump(), "interest_drift": 0.0}})
    result = simulate(world, CollatorConfig(beta=0), config, seed=0, days=3)
    np.testing.assert_allclose(result.final_latent, result.initial_latent)


def test_weekly_rows_and_creator_tracking(world, sim_config):
    result = simulate(world, CollatorConfig(), sim_config, seed=0, days=7)
    assert len(result.weeks) == 1
    week = result.weeks[0]
    assert week["unique_topics_consumed"] > 0 and week["interest_entropy"] > 0
    assert sum(result.creator_exposure.values()) == pytest.approx(result.item_exposure.sum())


def test_long_term_value_is_the_sum_of_its_components():
    days = [{"revenue": 2.0, "clicks": 10.0, "active_users": 9.0, "pages": 4.0, "ads_examined": 2.0, "sessions": 3.0}]
    o = long_term_objective(days, 10, SimulationConfig())
    assert o["long_term_value"] == pytest.approx(o["revenue"] + o["engagement_value"] + o["retention_value"])
    assert o["retained_share"] == 0.9


@pytest.mark.parametrize("rate", [0.5, 1.2, 3.0])
def test_poisson_inverse_cdf_has_the_right_mean(rate):
    u = np.random.default_rng(0).random(20_000)
    draws = np.array([_poisson_from_uniform(rate, x) for x in u])
    assert abs(draws.mean() - rate) < 0.05 and abs(draws.var() - rate) < 0.1
