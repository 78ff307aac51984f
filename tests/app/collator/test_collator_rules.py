"""Each blending rule, checked by the validator on hand-built pages."""
from __future__ import annotations

import dataclasses

import pytest
from collator_factories import ad, notification, organic, page_of

from app.ads.types import BrandSafety
from app.collator.config import CollatorConfig
from app.collator.types import BlendingRules
from app.collator.rules import is_brand_safe, page_engagement, page_violations
from app.collator.types import OrganicEntry

RULES = BlendingRules(limit=12, max_ads=2, min_gap=3, no_ads_before=3, organic_per_ad=3,
                      notification_positions=(5,), min_page_engagement=0.0, position_decay=0.9)
ORG = organic(20)
ADS = [ad(1), ad(2), ad(3)]


def violations(spec, rules=RULES, org=ORG, ads=ADS, notifs=(notification(0),)):
    return page_violations(page_of(spec, org, ads, notifs), rules, org)


def test_valid_page_has_no_violations():
    assert violations("oooaoooaoooo") == []
    assert violations("oooanoooaooo") == []  # notification at reserved 5; 3 organic between ads


def test_no_ads_in_first_positions():
    assert any("position 2 < 3" in v for v in violations("oaoooooooooo"))


def test_min_gap_counts_organic_only():
    assert any("fewer than 3 organic" in v for v in violations("oooaooaooooo"))
    # A notification between does not count as organic: 2 organic + 1 notification is too few.
    assert any("fewer than 3 organic" in v for v in violations("oooanooaoooo"))


def test_max_ads_and_ratio():
    rules = dataclasses.replace(RULES, max_ads=1)
    assert any("max_ads" in v for v in violations("oooaoooaoooo", rules=rules))
    short = dataclasses.replace(RULES, limit=7, organic_per_ad=7)
    assert any("more than 1 ad per 7" in v for v in violations("oooaooo", rules=short, notifs=()))


def test_notifications_only_at_reserved_positions_and_no_ad_there():
    assert any("unreserved" in v for v in violations("ooooonoooooo"))
    assert any("reserved notification position 5" in v for v in violations("ooooaooooooo", notifs=()))


def test_organic_order_is_the_reranked_prefix():
    swapped = [ORG[1], ORG[0]] + ORG[2:]
    assert any("prefix" in v for v in page_violations(page_of("oooooooooooo", swapped), RULES, ORG))
    assert any("content allows" in v for v in violations("ooooo", notifs=()))
    assert any("positions are not" in v for v in page_violations(
        [dataclasses.replace(s, position=s.position + 1) for s in page_of("oo", ORG)], RULES, ORG))
    assert any("limit is" in v for v in page_violations(page_of("o" * 13, ORG), RULES, ORG))


def test_duplicate_ad_is_a_violation():
    assert any("twice" in v for v in violations("oooaoooaoooo", ads=[ad(1), ad(1)]))


def test_close_friend_may_be_pushed_down_not_off():
    org = organic(20, **{"10": {"close_friend": True}})
    # Ad-free page of 12 regular positions shows items 0..11; one ad pushes item 11 off: fine.
    assert violations("oooaoooooooo", org=org, notifs=()) == []
    # Close friend at index 11 would be pushed off by one ad.
    org = organic(20, **{"11": {"close_friend": True}})
    assert any("close-friend item 11" in v for v in violations("oooaoooooooo", org=org, notifs=()))


@pytest.mark.parametrize("entry_fields, safety", [
    ({"min_age": 18}, BrandSafety(max_adjacent_min_age=13)),
    ({"topics": ("politics",)}, BrandSafety(blocked_topics=frozenset({"politics"}))),
    ({"creator_id": 7}, BrandSafety(blocked_creator_ids=frozenset({7}))),
])
def test_brand_safety_before_and_after(entry_fields, safety):
    unsafe_ad = ad(9, brand_safety=safety)
    for idx in ("2", "3"):  # the organic item just before (index 2) or after (index 3) the ad
        org = organic(20, **{idx: entry_fields})
        assert not is_brand_safe(unsafe_ad, org[int(idx)])
        assert any("brand-unsafe item" in v for v in violations("oooaoooooooo", org=org, ads=[unsafe_ad], notifs=()))
    org = organic(20, **{"6": entry_fields})  # far from the ad
    assert violations("oooaoooooooo", org=org, ads=[unsafe_ad], notifs=()) == []


def test_brand_safety_neighbour_skips_notifications():
    org = organic(20, **{"3": {"min_age": 18}})
    unsafe_ad = ad(9, brand_safety=BrandSafety(max_adjacent_min_age=13))
    rules = dataclasses.replace(RULES, notification_positions=(6,))
    # o o o o a n o ...: the ad's next organic (index 4) is safe, previous (index 3) is not.
    assert any("brand-unsafe item 3" in v for v in violations("ooooanoooooo", rules=rules, org=org, ads=[unsafe_ad]))
    org = organic(20, **{"4": {"min_age": 18}})
    assert any("brand-unsafe item 4" in v for v in violations("ooooanoooooo", rules=rules, org=org, ads=[unsafe_ad]))


def test_page_engagement_against_hand_computation():
    org = organic(5, p_engage=0.5)
    page = page_of("oooao", org, [ad(1, pctr=0.1)])
    rules = dataclasses.replace(RULES, limit=5, notification_positions=())
    w = [0.9 ** k for k in range(5)]
    expected = (0.5 * (w[0] + w[1] + w[2] + w[4]) + 0.1 * w[3]) / sum(w)
    assert page_engagement(page, rules, n_organic=5) == pytest.approx(expected)
    assert page_violations(page, dataclasses.replace(rules, organic_per_ad=1, min_page_engagement=0.42), org) == []
    low = page_violations(page, dataclasses.replace(rules, organic_per_ad=1, min_page_engagement=0.44), org)
    assert any("below floor" in v for v in low)


def test_rules_from_config_start_at_structural_maximum():
    config = CollatorConfig(organic_per_ad=5, max_ads_per_page=10)
    assert BlendingRules.from_config(config, limit=50, n_notifications=1).max_ads == 49 // 6
    assert BlendingRules.from_config(config, limit=200, n_notifications=0).max_ads == 10


def test_is_brand_safe_is_the_ads_brand_safety_rule():
    """The collator checks adjacency with the ad's own rule (`BrandSafety.allows`): one definition."""
    safeties = [BrandSafety(), BrandSafety(max_adjacent_min_age=13), BrandSafety(blocked_topics=frozenset({"news"})),
                BrandSafety(blocked_creator_ids=frozenset({3}))]
    entries = [OrganicEntry(item_id=0, value=1, p_engage=0.1, creator_id=c, topics=t, min_age=m)
               for c in (3, 4) for t in ((), ("news",), ("music",)) for m in (0, 18)]
    verdicts = {(i, j): is_brand_safe(ad(1, brand_safety=safety), entry)
                for i, safety in enumerate(safeties) for j, entry in enumerate(entries)}
    assert all(verdicts[(0, j)] for j in range(len(entries)))  # no restriction: all allowed
    assert [verdicts[(1, j)] for j in range(len(entries))] == [e.min_age <= 13 for e in entries]
    assert [verdicts[(2, j)] for j in range(len(entries))] == ["news" not in e.topics for e in entries]
    assert [verdicts[(3, j)] for j in range(len(entries))] == [e.creator_id != 3 for e in entries]
