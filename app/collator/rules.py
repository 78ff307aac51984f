"""The blending rules as one value, and the validator every collated page must pass.

`BlendingRules` (app/collator/types.py) is computed from `CollatorConfig` for a page
(`BlendingRules.from_config`) and then tightened by the guardrails. `page_violations` is the single definition of "a page that obeys the
rules": the tests check every page with it, and the collator runs it on its own output.

Definitions (the solvers implement exactly these):
- Regular positions are the page positions that hold no notification; ads and organic items fill
  them in order. Organic items appear in the reranker's order, as a prefix of the organic list, and
  the page is as full as its content allows.
- Reserved notification positions never hold an ad (an unused one goes to organic content).
- "At least `min_gap` organic between ads" counts organic items only (notifications don't count).
- "At most 1 ad per `organic_per_ad` organic" is page-level: ads·organic_per_ad <= organic on page.
- Close friends: an organic entry with close_friend=True that the page would show without any ads
  must still be on the page (ads may push it down, never off the page).
- Brand safety: the nearest organic item before and after an ad (notifications are skipped, which
  is stricter than plain adjacency) must be safe for the ad (`is_brand_safe`).
- Engagement floor: a page with ads must keep a position-weighted mean predicted engagement of at
  least `min_page_engagement` (see `page_engagement`).
"""
from __future__ import annotations

from typing import Sequence

from app.ads.types import AdCandidate
from app.collator.types import BlendingRules, OrganicEntry, Slot

_EPS = 1e-9


def is_brand_safe(ad: AdCandidate, entry: OrganicEntry) -> bool:
    """Whether `ad` may be shown next to `entry` (the rule is `BrandSafety.allows`)."""
    return ad.brand_safety.allows(entry)


def ad_free_organic_positions(
    limit: int, notification_positions: Sequence[int], n_organic: int
) -> list[int]:
    """Page positions the organic items would take on the same page without ads."""
    taken = set(notification_positions)
    regular = [p for p in range(1, limit + 1) if p not in taken]
    return regular[:n_organic]


def engagement_reference(rules: BlendingRules, notification_positions: Sequence[int], n_organic: int) -> float:
    """Σ w(p) over the organic positions of the ad-free page: the denominator of page engagement."""
    return sum(rules.examination(p) for p in ad_free_organic_positions(rules.limit, notification_positions, n_organic))


def page_engagement(slots: Sequence[Slot], rules: BlendingRules, n_organic: int) -> float:
    """Position-weighted mean predicted engagement of a page.

    E = Σ_{organic and ad slots} w(p)·e / Σ_{p in ad-free organic positions} w(p), with e the
    organic entry's p_engage or the ad's pCTR. The denominator is the ad-free page's, so the
    measure is linear in the placement (the exact solver uses it as a constraint) and an ad that
    pushes engaging organic content down lowers it.
    """
    notif_positions = [s.position for s in slots if s.kind == "notification"]
    reference = engagement_reference(rules, notif_positions, n_organic)
    if reference <= 0:
        return 0.0
    total = 0.0
    for s in slots:
        if s.kind == "organic":
            total += rules.examination(s.position) * s.item.p_engage
        elif s.kind == "ad":
            total += rules.examination(s.position) * s.item.pctr
    return total / reference


def page_violations(slots: Sequence[Slot], rules: BlendingRules, organic: Sequence[OrganicEntry]) -> list[str]:
    """Every rule the page breaks, as readable messages; empty when the page is valid."""
    out: list[str] = []
    positions = [s.position for s in slots]
    if positions != list(range(1, len(slots) + 1)):
        out.append(f"positions are not 1..{len(slots)}: {positions}")
    if len(slots) > rules.limit:
        out.append(f"page has {len(slots)} slots, limit is {rules.limit}")

    ads = [s for s in slots if s.kind == "ad"]
    org = [s for s in slots if s.kind == "organic"]
    notifs = [s for s in slots if s.kind == "notification"]

    reserved = set(rules.notification_positions)
    for s in notifs:
        if s.position not in reserved:
            out.append(f"notification at unreserved position {s.position}")
    for s in ads:
        if s.position in reserved:
            out.append(f"ad {s.ref_id} at reserved notification position {s.position}")
        if s.position < rules.no_ads_before:
            out.append(f"ad {s.ref_id} at position {s.position} < {rules.no_ads_before}")

    ad_ids = [s.ref_id for s in ads]
    if len(set(ad_ids)) != len(ad_ids):
        out.append(f"an ad appears twice: {ad_ids}")
    if len(ads) > rules.max_ads:
        out.append(f"{len(ads)} ads > max_ads {rules.max_ads}")
    if len(ads) * rules.organic_per_ad > len(org):
        out.append(f"{len(ads)} ads for {len(org)} organic: more than 1 ad per {rules.organic_per_ad}")

    # Organic items: a prefix of the reranked list, in order, as many as fit.
    shown = [s.item for s in org]
    expected = list(organic[: len(shown)])
    if [e.item_id for e in shown] != [e.item_id for e in expected]:
        out.append("organic items are not the reranked list's prefix in order")
    should_show = min(len(organic), rules.limit - len(notifs) - len(ads))
    if len(shown) != should_show:
        out.append(f"page shows {len(shown)} organic items, content allows {should_show}")

    # Close friends shown by the ad-free page stay on the page.
    free_capacity = min(len(organic), rules.limit - len(notifs))
    for j, entry in enumerate(organic[:free_capacity]):
        if entry.close_friend and j >= len(shown):
            out.append(f"close-friend item {entry.item_id} pushed off the page by ads")

    # Gaps, counted in organic items between consecutive ads, and brand safety of neighbours.
    kinds = [s.kind for s in slots]
    last_ad_organic_count: int | None = None
    organic_seen = 0
    for idx, s in enumerate(slots):
        if s.kind == "organic":
            organic_seen += 1
            continue
        if s.kind != "ad":
            continue
        if last_ad_organic_count is not None and organic_seen - last_ad_organic_count < rules.min_gap:
            out.append(f"ad {s.ref_id} at {s.position}: fewer than {rules.min_gap} organic since the previous ad")
        last_ad_organic_count = organic_seen
        for step in (-1, 1):
            k = idx + step
            while 0 <= k < len(slots) and kinds[k] == "notification":
                k += step
            if 0 <= k < len(slots) and kinds[k] == "organic" and not is_brand_safe(s.item, slots[k].item):
                out.append(f"ad {s.ref_id} at {s.position} next to brand-unsafe item {slots[k].ref_id}")

    if ads and rules.min_page_engagement > 0:
        e = page_engagement(slots, rules, len(organic))
        if e < rules.min_page_engagement - _EPS:
            out.append(f"page engagement {e:.4f} below floor {rules.min_page_engagement}")
    return out
