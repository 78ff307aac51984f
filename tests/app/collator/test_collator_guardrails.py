"""Each guardrail on its own, their order, and their effect through the collator."""
from __future__ import annotations

import dataclasses

import pytest
from collator_factories import ad, organic

from app.collator import Collator, CollatorConfig, SessionSignals
from app.collator.guardrails import (
    AdLoadTarget,
    EngagementFloor,
    FastScrollGuardrail,
    GuardrailContext,
    SessionDisengagementGuardrail,
    SessionPacing,
    apply_guardrails,
    guardrails_from_config,
)
from app.collator.types import BlendingRules

RULES = BlendingRules(limit=50, max_ads=8, min_gap=3, no_ads_before=3, organic_per_ad=5,
                      notification_positions=(4,), min_page_engagement=0.05, position_decay=0.95)


def ctx(org=None, **session) -> GuardrailContext:
    return GuardrailContext(SessionSignals(**session), org if org is not None else organic(60), ())


def test_session_pacing_halves_ads_after_n_ads():
    g = SessionPacing(after_ads=20, factor=0.5)
    assert g.adjust(RULES, ctx(ads_shown_in_session=19)) == RULES
    assert g.adjust(RULES, ctx(ads_shown_in_session=20)).max_ads == 4


def test_fast_scrollers_see_fewer_ads():
    g = FastScrollGuardrail(threshold=4.0, factor=0.5)
    assert g.adjust(RULES, ctx(scroll_velocity=3.9)) == RULES
    assert g.adjust(RULES, ctx(scroll_velocity=4.0)).max_ads == 4


def test_disengagement_on_bounces_or_hides_lasts_for_the_session():
    g = SessionDisengagementGuardrail(bounce_threshold=3, hide_threshold=2, factor=0.25)
    assert g.adjust(RULES, ctx(quick_bounces=2, hides_in_session=1)) == RULES
    assert g.adjust(RULES, ctx(quick_bounces=3)).max_ads == 2
    assert g.adjust(RULES, ctx(hides_in_session=2)).max_ads == 2
    # Counters are cumulative: later pages of the session (more impressions) are still reduced.
    assert g.adjust(RULES, ctx(hides_in_session=2, impressions_in_session=500)).max_ads == 2


def test_ad_load_target_caps_session_ad_share():
    g = AdLoadTarget(target=0.15)
    assert g.adjust(RULES, ctx()) == dataclasses.replace(RULES, max_ads=7)  # floor(0.15 * 50)
    assert g.adjust(RULES, ctx(impressions_in_session=100, ads_in_session_impressions=20)).max_ads == 2
    assert g.adjust(RULES, ctx(impressions_in_session=100, ads_in_session_impressions=30)).max_ads == 0
    assert g.adjust(RULES, ctx(impressions_in_session=1000, ads_in_session_impressions=0)) == RULES


def test_engagement_floor_removes_ads_only_when_the_ad_free_page_is_below_it():
    g = EngagementFloor(floor=0.2)
    assert g.adjust(RULES, ctx(org=organic(60, p_engage=0.3))) == RULES
    assert g.adjust(RULES, ctx(org=organic(60, p_engage=0.1))).max_ads == 0
    assert g.adjust(RULES, ctx(org=[])).max_ads == 0
    assert EngagementFloor(floor=0.0).adjust(RULES, ctx(org=organic(60, p_engage=0.0))) == RULES


def test_guardrails_run_in_declared_order_and_report_what_fired():
    config = CollatorConfig()
    names = [g.name for g in guardrails_from_config(config)]
    assert names == ["session_pacing", "fast_scroll", "session_disengagement", "ad_load_target", "engagement_floor"]
    rules, fired = apply_guardrails(RULES, ctx(ads_shown_in_session=30, scroll_velocity=9.0),
                                    guardrails_from_config(config))
    assert fired == ("session_pacing", "fast_scroll")
    assert rules.max_ads == 2  # 8 -> 4 -> 2; ad-load cap of 7 no longer binds


def _page_ads(**session) -> int:
    org = organic(60, value=0.05, p_engage=0.3)
    ads = [ad(i, price=2.0) for i in range(10)]
    page = Collator(CollatorConfig()).collate(org, ads, [], SessionSignals(**session), limit=50)
    return sum(s.kind == "ad" for s in page.slots)


def test_guardrails_reduce_ad_load_end_to_end():
    baseline = _page_ads()
    assert baseline >= 4
    assert _page_ads(scroll_velocity=10.0) < baseline
    assert _page_ads(quick_bounces=5) < baseline
    assert _page_ads(ads_shown_in_session=50) < baseline


def test_engagement_floor_binds_inside_the_allocation():
    """With the ad-free page above the floor, ads are added only while the page stays above it."""
    org = organic(60, value=0.01, p_engage=0.1)
    ads = [ad(i, price=2.0, pctr=0.0) for i in range(10)]
    free = Collator(CollatorConfig(engagement_floor=0.0)).collate(org, ads, [], SessionSignals(), limit=50)
    floored = Collator(CollatorConfig(engagement_floor=0.095)).collate(org, ads, [], SessionSignals(), limit=50)
    n_free = sum(s.kind == "ad" for s in free.slots)
    n_floored = sum(s.kind == "ad" for s in floored.slots)
    assert 0 < n_floored < n_free
    assert "engagement_floor" not in floored.guardrails_fired


@pytest.mark.parametrize("solver", ["greedy", "exact"])
def test_close_friend_never_displaced(solver):
    # Without protection the best page would carry many ads; the close friend at the page's last
    # organic position allows none before it to push it off.
    org = organic(60, value=0.01, **{"48": {"close_friend": True}})
    ads = [ad(i, price=2.0) for i in range(10)]
    page = Collator(CollatorConfig(solver=solver, notification_positions=())).collate(
        org, ads, [], SessionSignals(), limit=50)
    assert 48 in [s.ref_id for s in page.slots if s.kind == "organic"]
    assert sum(s.kind == "ad" for s in page.slots) == 1
