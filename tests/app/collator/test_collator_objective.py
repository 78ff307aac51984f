"""CollatorScore against a naive reference, and both solvers against the one evaluation function."""
from __future__ import annotations

import pytest
from collator_factories import ad, notification, organic, page_of

from app.collator.allocation import AllocationProblem, PageLayout, build_slots, placement_score
from app.collator.config import CollatorConfig
from app.collator.exact import solve_exact
from app.collator.greedy import solve_greedy
from app.collator.objective import ObjectiveModel, collator_score
from app.collator.types import BlendingRules
from app.collator.types import CollatorWeights, SessionSignals

WEIGHTS = CollatorWeights(alpha=1.0, beta=2.0, gamma=0.5)


def naive_score(spec, org, ads, decay, base, cat, fatigue, crowd, weights):
    """Written from the docstring formula, independently of objective.py."""
    organic_value = revenue = penalty = 0.0
    oi = ai = 0
    for pos, letter in enumerate(spec, start=1):
        w = decay ** (pos - 1)
        if letter == "o":
            organic_value += org[oi].value * w
            oi += 1
        elif letter == "a":
            revenue += ads[ai].price * w
            penalty += base * cat.get(ads[ai].category, 1.0) * fatigue * w
            ai += 1
    penalty += crowd * ai * (ai - 1) / 2
    return weights.alpha * organic_value + weights.beta * revenue - weights.gamma * penalty


def test_collator_score_matches_naive_reference():
    config = CollatorConfig(position_decay=0.8, ad_penalty_base=0.3, session_fatigue_per_ad=0.1,
                            page_crowding_penalty=0.2, category_penalty={"alcohol": 3.0})
    session = SessionSignals(ads_shown_in_session=4)
    model = ObjectiveModel.from_config(config, session)
    org = organic(10, value=0.7)
    ads = [ad(1, price=1.5), ad(2, price=0.9, category="alcohol")]
    spec = "ooonaoooaoo"
    got = collator_score(page_of(spec, org, ads, [notification()]), model, WEIGHTS)
    expected = naive_score(spec, org, ads, 0.8, 0.3, {"alcohol": 3.0}, 1.4, 0.2, WEIGHTS)
    assert got.total == pytest.approx(expected)
    assert got.total == pytest.approx(WEIGHTS.alpha * got.organic_value + WEIGHTS.beta * got.ad_revenue
                                      - WEIGHTS.gamma * got.experience_penalty)


def test_penalty_grows_with_session_fatigue_category_and_crowding():
    config = CollatorConfig()
    fresh = ObjectiveModel.from_config(config, SessionSignals())
    tired = ObjectiveModel.from_config(config, SessionSignals(ads_shown_in_session=10))
    assert tired.ad_penalty_unit(ad()) > fresh.ad_penalty_unit(ad())
    assert fresh.ad_penalty_unit(ad(category="political")) > fresh.ad_penalty_unit(ad(category="general"))
    assert fresh.crowding(3) - fresh.crowding(2) > fresh.crowding(2) - fresh.crowding(1) > 0


def _problem(org, ads, notifs=(), limit=20, **config_overrides):
    config = CollatorConfig(**config_overrides)
    session = SessionSignals()
    layout, _ = PageLayout.plan(notifs, config.notification_positions, limit, len(org))
    rules = BlendingRules.from_config(config, limit, len(layout.notifications))
    model = ObjectiveModel.from_config(config, session)
    return AllocationProblem.build(org, ads, layout, rules, model, WEIGHTS)


@pytest.mark.parametrize("limit", [8, 20, 40])
def test_solvers_are_scored_by_the_same_function(limit):
    org = organic(limit + 3, value=0.2)
    ads = [ad(1, price=2.0), ad(2, price=1.0, category="political"), ad(3, price=0.5)]
    problem = _problem(org, ads, [notification()], limit=limit, engagement_floor=0.0)
    model = problem.model
    exact = solve_exact(problem)
    for placement in (solve_greedy(problem), exact.placement):
        slots = build_slots(placement, org, ads, problem, "test")
        assert placement_score(problem, placement) == pytest.approx(collator_score(slots, model, WEIGHTS).total)
        assert sum(s.score for s in slots) - WEIGHTS.gamma * model.crowding(len(placement)) == pytest.approx(
            collator_score(slots, model, WEIGHTS).total)
    assert exact.optimal
    assert exact.objective == pytest.approx(placement_score(problem, exact.placement))


def test_ads_push_organic_down_and_the_solvers_weigh_that_cost():
    # High organic value: the organic cost of any ad outweighs its revenue, so no ads.
    org = organic(30, value=5.0)
    problem = _problem(org, [ad(1, price=0.1)], engagement_floor=0.0)
    assert solve_greedy(problem) == ()
    assert solve_exact(problem).placement == ()
    # Low organic value: the ad pays, and it goes to the first allowed position.
    problem = _problem(organic(30, value=0.01), [ad(1, price=3.0)], engagement_floor=0.0, notification_positions=())
    assert solve_greedy(problem) == ((0, 2),)
    assert solve_exact(problem).placement == ((0, 2),)
