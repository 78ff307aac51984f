"""Builders and hypothesis strategies for the collator tests."""
from __future__ import annotations

from hypothesis import strategies as st

from app.ads.types import AdCandidate, BrandSafety
from app.collator.types import Notification, OrganicEntry, SessionSignals

TOPICS = ("news", "sports", "music", "politics", "gaming")
CATEGORIES = ("general", "political", "alcohol", "retail")


def organic(n: int, value: float = 1.0, p_engage: float = 0.3, **overrides) -> list[OrganicEntry]:
    """n plain organic entries with ids 0..n−1; `overrides` maps index -> dict of field values."""
    out = []
    for i in range(n):
        fields = dict(item_id=i, value=value, p_engage=p_engage, creator_id=100 + i)
        fields.update(overrides.get(str(i), {}))
        out.append(OrganicEntry(**fields))
    return out


def ad(ad_id: int = 1, price: float = 5.0, pctr: float = 0.05, category: str = "general",
       brand_safety: BrandSafety | None = None) -> AdCandidate:
    return AdCandidate(
        ad_id=ad_id, campaign_id=ad_id, advertiser_id=ad_id, category=category, bid=price, pctr=pctr,
        pcvr=0.1, pacing_multiplier=1.0, ecpm=price, price=price, slot_rank=0,
        brand_safety=brand_safety or BrandSafety(), reservation_id=f"r{ad_id}",
    )


def notification(i: int = 0, priority: float = 1.0, kind: str = "friend_request") -> Notification:
    return Notification(notification_id=f"n{i}", kind=kind, text=f"notification {i}", priority=priority)


@st.composite
def organic_lists(draw, min_size: int = 0, max_size: int = 40) -> list[OrganicEntry]:
    n = draw(st.integers(min_size, max_size))
    values = draw(st.lists(st.floats(0.0, 2.0), min_size=n, max_size=n))
    values.sort(reverse=True)
    return [
        OrganicEntry(
            item_id=i,
            value=values[i] * draw(st.floats(0.7, 1.3)),
            p_engage=draw(st.floats(0.0, 1.0)),
            creator_id=draw(st.integers(0, 8)),
            topics=tuple(draw(st.lists(st.sampled_from(TOPICS), max_size=2, unique=True))),
            min_age=draw(st.sampled_from([0, 0, 0, 13, 18])),
            close_friend=draw(st.integers(0, 5)) == 0,
        )
        for i in range(n)
    ]


@st.composite
def ad_lists(draw, max_size: int = 8) -> list[AdCandidate]:
    n = draw(st.integers(0, max_size))
    out = []
    for a in range(n):
        safety = BrandSafety(
            max_adjacent_min_age=draw(st.sampled_from([13, 18, 200])),
            blocked_topics=frozenset(draw(st.lists(st.sampled_from(TOPICS), max_size=1))),
            blocked_creator_ids=frozenset(draw(st.lists(st.integers(0, 8), max_size=2))),
        )
        out.append(ad(
            ad_id=1000 + a, price=draw(st.floats(0.0, 3.0)), pctr=draw(st.floats(0.0, 0.2)),
            category=draw(st.sampled_from(CATEGORIES)), brand_safety=safety,
        ))
    return out


@st.composite
def notification_lists(draw, max_size: int = 3) -> list[Notification]:
    n = draw(st.integers(0, max_size))
    return [notification(i, draw(st.floats(0, 2)), draw(st.sampled_from(["friend_request", "milestone"])))
            for i in range(n)]


@st.composite
def sessions(draw) -> SessionSignals:
    impressions = draw(st.integers(0, 300))
    return SessionSignals(
        ads_shown_in_session=draw(st.integers(0, 30)),
        impressions_in_session=impressions,
        ads_in_session_impressions=draw(st.integers(0, impressions // 4)),
        scroll_velocity=draw(st.floats(0.0, 6.0)),
        quick_bounces=draw(st.integers(0, 4)),
        hides_in_session=draw(st.integers(0, 3)),
    )


def page_of(spec: str, organic_entries, ads=(), notifications=()) -> list:
    """A hand-built page: spec letters o/a/n take the next organic entry, ad or notification."""
    from app.collator.types import Slot

    it = {"o": iter(organic_entries), "a": iter(ads), "n": iter(notifications)}
    kinds = {"o": "organic", "a": "ad", "n": "notification"}
    slots = []
    for pos, letter in enumerate(spec, start=1):
        item = next(it[letter])
        ref = item.item_id if letter == "o" else item.ad_id if letter == "a" else item.notification_id
        slots.append(Slot(pos, kinds[letter], ref, item))
    return slots
