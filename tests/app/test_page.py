"""assemble_page: the rules about a whole page, for the served and the in-process feed alike."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "collator"))
from collator_factories import ad, notification, organic  # noqa: E402

from app.ads.types import AdResult, WithheldReason  # noqa: E402
from app.collator import Collator, CollatorConfig, SessionSignals  # noqa: E402
from app.organic import OrganicPage, OrganicRequest  # noqa: E402
from app.page import AdsOutcome, PageState, assemble_page, withheld_reason  # noqa: E402
from app.pipeline import Candidates  # noqa: E402

COLLATOR = Collator(CollatorConfig())


def organic_page(n: int, notifications=(), explain: bool = False) -> OrganicPage:
    entries = organic(n)
    return OrganicPage(entries, list(notifications), cold_start=False, timings_ms={"retrieval": 1.0},
                       versions={"ranking": "v-rank"},
                       candidates=Candidates.from_source("ann", np.arange(n), np.ones(n)),
                       provenance={e.item_id: {"source": "ann"} for e in entries} if explain else None,
                       removed={"seen_items: seen": 3} if explain else None)


def request(limit: int = 10, explain: bool = False) -> OrganicRequest:
    return OrganicRequest(user_id=7, now=1234.5, limit=limit, request_id="r1", explain=explain)


def assemble(page: OrganicPage, ads: AdsOutcome, state: PageState, limit: int = 10, explain: bool = False,
             max_pages: int = 50):
    return assemble_page(request(limit, explain), page, ads, state, COLLATOR, max_pages, "v-default")


def test_notifications_are_shown_on_the_first_page_of_a_chain_only():
    page = organic_page(40, [notification(0)])
    first = assemble(page, AdsOutcome(), PageState("s"))
    later = assemble(page, AdsOutcome(), PageState("s", page_number=2, first_position=11))
    assert [i["type"] for i in first.body["items"]].count("notification") == 1
    assert "notification" not in [i["type"] for i in later.body["items"]]
    assert [i["position"] for i in later.body["items"]] == list(range(11, 21))  # positions continue


@pytest.mark.parametrize("ads, store_ok, expected", [
    (AdsOutcome(AdResult([], WithheldReason.OPTED_OUT), None), False, "store_unavailable"),  # Redis down wins
    (AdsOutcome(AdResult([], WithheldReason.OPTED_OUT), None), True, "opted_out"),  # the auction's own reason
    (AdsOutcome(None, "deadline"), True, "deadline"),  # a late auction
    (AdsOutcome(AdResult([ad(1)]), None), True, None),  # ads came
    (AdsOutcome(None, None), True, None),  # a user without an ad profile: nothing withheld
])
def test_which_reason_for_missing_ads_wins(ads, store_ok, expected):
    assert withheld_reason(ads, store_ok) == expected
    body = assemble(organic_page(30), ads, PageState("s", store_ok=store_ok)).body
    assert body.get("ads_withheld") == expected


def test_more_pages_exist_while_items_remain_the_store_answers_and_the_chain_is_short_enough():
    assert assemble(organic_page(30), AdsOutcome(), PageState("s")).has_more
    assert not assemble(organic_page(10), AdsOutcome(), PageState("s")).has_more  # nothing left
    assert not assemble(organic_page(30), AdsOutcome(), PageState("s", store_ok=False)).has_more  # no served set
    assert not assemble(organic_page(30), AdsOutcome(), PageState("s", page_number=3), max_pages=3).has_more


def test_ads_are_placed_and_the_unplaced_ones_are_handed_back():
    ads = AdsOutcome(AdResult([ad(1, price=50.0), ad(2, price=40.0), ad(3, price=30.0)]))
    page = assemble(organic_page(40), ads, PageState("s"), limit=10)
    placed = [i["ad_id"] for i in page.body["items"] if i["type"] == "ad"]
    assert placed and page.n_ads == len(placed)
    assert {a.ad_id for a in page.unplaced_ads} == {1, 2, 3} - set(placed)
    assert page.organic_item_ids == [i["item_id"] for i in page.body["items"] if i["type"] == "organic"]


def test_the_body_and_its_explain_block():
    page = assemble(organic_page(30, explain=True), AdsOutcome(AdResult([], None, {"cap": 2})),
                    PageState("s", served_item_ids=frozenset({1, 2})), explain=True)
    body = page.body
    assert body["user_id"] == 7 and body["request_id"] == "r1" and body["page"] == 1 and body["cursor"] is None
    assert body["model_version"] == "v-rank" and body["world_time"] == 1234.5
    assert body["timings_ms"]["retrieval"] == 1.0
    assert all(i["provenance"]["source"] == "ann" for i in body["items"] if i["type"] == "organic")
    explain = body["explain"]
    assert explain["removed"] == {"seen_items: seen": 3} and explain["ads_removed"] == {"cap": 2}
    assert explain["served_before"] == 2 and explain["versions"] == {"ranking": "v-rank"}
    assert set(explain["collator_score"]) == {"organic_value", "ad_revenue", "experience_penalty", "total"}
    plain = assemble(organic_page(30), AdsOutcome(), PageState("s")).body
    assert "explain" not in plain and all("provenance" not in i for i in plain["items"])


def test_the_session_reaches_the_collator():
    ads = AdsOutcome(AdResult([ad(1, price=50.0), ad(2, price=40.0)]))
    calm = assemble(organic_page(40), ads, PageState("s"), limit=20)
    tired = assemble(organic_page(40), ads, PageState("s", session=SessionSignals(
        impressions_in_session=200, ads_in_session_impressions=80, quick_bounces=30, hides_in_session=10,
        scroll_velocity=9.0, ads_shown_in_session=80)), limit=20)
    assert tired.n_ads <= calm.n_ads and tired.collated.guardrails_fired


def test_a_takedown_newer_than_retrieval_is_applied_again_at_assembly():
    from app.state.takedowns import TakedownSet

    page = organic_page(30, explain=True)
    gone = TakedownSet(3, frozenset({0, 1}), frozenset({105}))  # items 0 and 1, creator of item 5
    assembled = assemble(page, AdsOutcome(), PageState("s", takedowns=gone), explain=True)
    shown = {i["item_id"] for i in assembled.body["items"] if i["type"] == "organic"}
    assert shown and not shown & {0, 1, 5}
    assert assembled.body["explain"]["removed"]["page_assembly: taken down"] == 3
