"""The collator's entry point: layout, notifications, unplaced ads, solver choice, fallbacks, errors."""
from __future__ import annotations

import dataclasses

import pydantic
import pytest
from collator_factories import ad, notification, organic

import app.collator.collator as collator_module
from app.ads.types import BrandSafety
from app.collator import (
    Allocation,
    Collator,
    CollatorConfig,
    CollatorWeights,
    OrganicEntry,
    SessionSignals,
    page_violations,
)
from app.collator.exact import ExactResult


def collate(org, ads=(), notifs=(), limit=20, session=SessionSignals(), weights=None, **config):
    return Collator(CollatorConfig(**config)).collate(org, ads, notifs, session, limit, weights)


def test_organic_only_page_keeps_reranker_order():
    page = collate(organic(30))
    assert [s.ref_id for s in page.slots] == list(range(20))
    assert [s.position for s in page.slots] == list(range(1, 21))
    assert page.unplaced_ads == () and page.fallback == ""


def test_notification_takes_reserved_slot_else_organic():
    page = collate(organic(30), notifs=[notification(0, 1.0), notification(1, 5.0)])
    assert page.slots[3].kind == "notification" and page.slots[3].ref_id == "n1"  # highest priority
    assert [n.notification_id for n in page.unplaced_notifications] == ["n0"]
    assert [s.ref_id for s in page.slots if s.kind == "organic"] == list(range(19))
    assert collate(organic(30)).slots[3].kind == "organic"


def test_short_organic_list_gives_a_short_page_without_holes():
    page = collate(organic(2), notifs=[notification()])
    assert [s.kind for s in page.slots] == ["organic", "organic"]
    assert len(page.unplaced_notifications) == 1
    page = collate(organic(3), notifs=[notification()])
    assert [s.kind for s in page.slots] == ["organic"] * 3 + ["notification"]


@pytest.mark.parametrize("solver", ["greedy", "exact"])
def test_profitable_ads_placed_unprofitable_returned(solver):
    org = organic(40, value=0.05)
    ads = [ad(1, price=3.0), ad(2, price=0.0)]
    page = collate(org, ads, limit=30, solver=solver)
    placed = [s.ref_id for s in page.slots if s.kind == "ad"]
    assert placed == [1]
    assert [a.ad_id for a in page.unplaced_ads] == [2]
    assert page.solver == solver
    slot = next(s for s in page.slots if s.kind == "ad")
    assert slot.position >= 3 and slot.provenance["reservation_id"] == "r1" and slot.score > 0


def test_weights_trade_revenue_against_experience():
    org = organic(40, value=0.05)
    ads = [ad(i, price=1.0) for i in range(6)]
    many = collate(org, ads, limit=40, weights=CollatorWeights(alpha=1.0, beta=5.0, gamma=0.0))
    none = collate(org, ads, limit=40, weights=CollatorWeights(alpha=1.0, beta=0.1, gamma=10.0))
    assert sum(s.kind == "ad" for s in many.slots) > 1
    assert sum(s.kind == "ad" for s in none.slots) == 0


def test_brand_unsafe_ad_is_moved_away_from_unsafe_content():
    org = organic(30, value=0.01, **{"2": {"min_age": 18}})
    unsafe = ad(1, price=3.0, brand_safety=BrandSafety(max_adjacent_min_age=13))
    for solver in ("greedy", "exact"):
        page = collate(org, [unsafe], notification_positions=(), solver=solver)
        pos = next(s.position for s in page.slots if s.kind == "ad")
        # Item 2 is unsafe: an ad at 3 would precede it, at 4 follow it; 5 is the first safe position.
        assert pos == 5
        assert page_violations(page.slots, page.rules, org) == []


class _BrokenAllocator:
    name = "broken"

    def allocate(self, problem):
        return Allocation(((0, 0),), "broken")  # an ad in position 1


def test_a_page_breaking_a_rule_is_never_served():
    collator = Collator(CollatorConfig(solver="greedy"), allocators={"greedy": _BrokenAllocator()})
    page = collator.collate(organic(30), [ad(1)], [], SessionSignals(), limit=20)
    assert page.fallback.startswith("rule violations: ad 1 at position 1")
    assert all(s.kind == "organic" for s in page.slots)
    assert [a.ad_id for a in page.unplaced_ads] == [1]


def test_exact_falls_back_to_greedy_without_a_solution(monkeypatch):
    monkeypatch.setattr(collator_module, "solve_exact", lambda p, t: ExactResult(None, False, None, "time limit"))
    page = collate(organic(40, value=0.05), [ad(1, price=3.0)], limit=30, solver="exact")
    assert page.solver == "greedy (exact: no solution in time)"
    assert sum(s.kind == "ad" for s in page.slots) == 1


def test_exact_unproven_solution_kept_only_if_not_worse(monkeypatch):
    monkeypatch.setattr(collator_module, "solve_exact", lambda p, t: ExactResult((), False, None, "time limit"))
    page = collate(organic(40, value=0.05), [ad(1, price=3.0)], limit=30, solver="exact")
    assert page.solver == "greedy (exact: not proven optimal, worse)"
    page = collate(organic(40, value=5.0), [ad(1, price=0.1)], limit=30, solver="exact")
    assert page.solver == "exact (not proven optimal)"


def test_invalid_inputs_are_rejected():
    with pytest.raises(ValueError, match="limit"):
        collate(organic(3), limit=0)
    with pytest.raises(ValueError, match="duplicate ad_id"):
        collate(organic(30), [ad(1), ad(1)])
    with pytest.raises(ValueError, match="solver"):
        Collator(CollatorConfig(), allocators={})
    with pytest.raises(ValueError, match="alpha"):
        CollatorWeights(alpha=-1, beta=1, gamma=1)
    with pytest.raises(ValueError, match="p_engage"):
        OrganicEntry(item_id=1, value=1, p_engage=1.5, creator_id=1)
    with pytest.raises(ValueError, match="min_age"):
        OrganicEntry(item_id=1, value=1, p_engage=0.5, creator_id=1, min_age=-1)
    with pytest.raises(ValueError, match="kind"):
        dataclasses.replace(notification(), kind="poke")
    with pytest.raises(ValueError, match="scroll_velocity"):
        SessionSignals(scroll_velocity=-1)
    with pytest.raises(ValueError, match="quick_bounces"):
        SessionSignals(quick_bounces=-1)
    with pytest.raises(ValueError, match="exceeds"):
        SessionSignals(impressions_in_session=1, ads_in_session_impressions=2)


def test_config_declares_bounds_and_rejects_unknown_keys():
    fields = CollatorConfig.model_fields
    for name in ("alpha", "beta", "gamma"):
        bounds = {type(m).__name__: m for m in fields[name].metadata}
        assert bounds["Ge"].ge == 0 and bounds["Le"].le >= 10 and fields[name].description
    assert all(f.description for f in fields.values())
    with pytest.raises(pydantic.ValidationError):
        CollatorConfig(unknown=1)
    with pytest.raises(pydantic.ValidationError):
        CollatorConfig(alpha=11)
    with pytest.raises(pydantic.ValidationError):
        CollatorConfig(beta=101)
    with pytest.raises(pydantic.ValidationError):
        CollatorConfig(notification_positions=(4, 2))
    with pytest.raises(pydantic.ValidationError):
        CollatorConfig(category_penalty={"x": -1.0})
    with pytest.raises(pydantic.ValidationError):
        CollatorConfig(notifications={"milestone_thresholds": (10, 5)})


def test_docstring_examples_run():
    import doctest

    import app.collator.collator
    import app.collator.notifications

    for module in (app.collator.collator, app.collator.notifications):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0


def test_ad_slots_follow_the_ratio_rule():
    config = CollatorConfig(organic_per_ad=5)
    assert [config.ad_slots(n) for n in (1, 5, 20, 23)] == [1, 1, 4, 4]
