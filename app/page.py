"""One page, assembled the same way wherever it is made: the served ingress and the in-process
`FeedService` both call `assemble_page`.

Given the organic part (`OrganicPage`), the ads answer or the reason it is missing
(`AdsOutcome`) and where the page sits in its cursor chain (`PageState`), it collates the page
under the blending rules and renders the response body. Every rule about a page lives here, so
what the CLI, the benchmarks and the simulator measure is what users are served:

- notifications are shown on the first page of a chain only;
- which reason wins when there are no ads: Redis down (no cap or budget can be checked) over the
  auction's own reason over a late or failed auction;
- whether more pages exist (more reranked items than placed, under `api.max_pages`, and a
  served set could be kept);
- what explain mode shows.

Pure: no I/O. The caller reads the page state before and writes the page's items, the ads'
releases and the cursor after (the cursor token needs the shared secret).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from app.ads.types import AdCandidate, AdResult, WithheldReason
from app.api.cursor import Cursor
from app.api.ids import ApiIds
from app.api.responses import page_items
from app.collator.collator import Collator
from app.collator.types import CollatedPage, SessionSignals
from app.organic import OrganicPage, OrganicRequest
from app.pipeline import StageHook, timed_step
from app.pipeline.runner import NullHook
from app.state.sessions import FeedState
from app.state.takedowns import TakedownSet


@dataclass(frozen=True)
class PageState:
    """The user's state read before the page, and its place in the cursor chain."""

    session_id: str
    page_number: int = 1
    first_position: int = 1
    served_item_ids: frozenset[int] = frozenset()
    hidden_item_ids: frozenset[int] = frozenset()
    hidden_creator_ids: frozenset[int] = frozenset()
    session: SessionSignals = field(default_factory=SessionSignals)
    store_ok: bool = True  # the state store answered: ads may be served and a cursor issued
    takedowns: TakedownSet = field(default_factory=TakedownSet)  # checked again here, after retrieval

    @classmethod
    def from_store(cls, cursor: Cursor | None, state: FeedState, new_session: str) -> PageState:
        """The state a store read found: a cursor continues its chain, no cursor starts one."""
        return cls(
            session_id=cursor.session_id if cursor else new_session,
            page_number=cursor.page if cursor else 1,
            first_position=cursor.next_position if cursor else 1,
            served_item_ids=state.served_item_ids, hidden_item_ids=state.hidden_item_ids,
            hidden_creator_ids=state.hidden_creator_ids, session=state.session)

    def with_takedowns(self, takedowns: TakedownSet) -> PageState:
        return replace(self, takedowns=takedowns)


@dataclass(frozen=True)
class AdsOutcome:
    """The auction's answer (None: none came, or the user has no ad profile) and, when none
    came, why: "deadline", "overloaded" or "auction_unavailable"."""

    result: AdResult | None = None
    missing: str | None = None

    @property
    def ads(self) -> Sequence[AdCandidate]:
        return self.result.ads if self.result is not None else ()


@dataclass(frozen=True)
class AssembledPage:
    collated: CollatedPage
    body: dict[str, Any]  # the response body; "cursor" is None until the caller signs one
    has_more: bool  # a next page exists (issue a cursor if the page's items were recorded)
    organic_item_ids: list[int]
    n_ads: int

    @property
    def unplaced_ads(self) -> Sequence[AdCandidate]:
        """Ads reserved for this page but not placed: their reservations must be released."""
        return self.collated.unplaced_ads


def withheld_reason(ads: AdsOutcome, store_ok: bool) -> str | None:
    """Why a page carries no ads, when it carries none for a reason."""
    if not store_ok:
        return WithheldReason.STORE_UNAVAILABLE.value
    if ads.result is not None and ads.result.withheld_reason is not None:
        return ads.result.withheld_reason.value
    return ads.missing


def assemble_page(
    request: OrganicRequest,
    organic: OrganicPage,
    ads: AdsOutcome,
    state: PageState,
    collator: Collator,
    max_pages: int,
    version: str,
    hook: StageHook | None = None,
    timings_ms: Mapping[str, float] | None = None,
    ids: ApiIds | None = None,
) -> AssembledPage:
    """Collate and render one page. `version` stands in for the ranking version when the organic
    part reports none; `timings_ms` are the caller's own timings, added to the organic ones;
    `ids` renders items in the dataset's own ids."""
    hook = hook or NullHook()
    notifications = organic.notifications if state.page_number == 1 else []  # shown once per chain
    entries = organic.entries
    gone = state.takedowns
    if gone.items or gone.creators:  # a takedown newer than the one retrieval applied
        entries = [e for e in entries if e.item_id not in gone.items and e.creator_id not in gone.creators]
    with timed_step(hook, "collator", "selector") as figures:
        collated = collator.collate(entries, ads.ads, notifications, state.session, request.limit)
        figures.update(n_in=len(entries) + len(ads.ads) + len(notifications), n_out=len(collated.slots))
    organic_ids = [int(s.ref_id) for s in collated.slots if s.kind == "organic"]
    n_ads = sum(1 for s in collated.slots if s.kind == "ad")
    has_more = state.store_ok and len(entries) > len(organic_ids) and state.page_number < max_pages
    item_ids = None
    if ids is not None and ids.renames_items:
        internal = [int(s.ref_id) for s in collated.slots if s.kind == "organic"]
        item_ids = dict(zip(internal, ids.items_out(internal)))
    body: dict[str, Any] = {
        "user_id": request.user_id if request.external_user_id is None else request.external_user_id,
        "items": page_items(collated, state.first_position, request.explain, organic.provenance, item_ids),
        "cursor": None,
        "request_id": request.request_id,
        "cold_start": organic.cold_start,
        "page": state.page_number,
        "model_version": organic.versions.get("ranking", version),
        "world_time": request.now,
        "timings_ms": {**(timings_ms or {}), **organic.timings_ms},
    }
    withheld = withheld_reason(ads, state.store_ok)
    if withheld:
        body["ads_withheld"] = withheld
    if request.explain:
        body["explain"] = explain_block(organic, ads, collated, state)
        if len(entries) < len(organic.entries):
            body["explain"]["removed"] = {**body["explain"]["removed"],
                                          "page_assembly: taken down": len(organic.entries) - len(entries)}
    return AssembledPage(collated, body, has_more, organic_ids, n_ads)


def explain_block(organic: OrganicPage, ads: AdsOutcome, collated: CollatedPage, state: PageState) -> dict[str, Any]:
    """Why the page is what it is: removals per stage and reason, guardrails, the collator's
    score and solver, the versions that made it."""
    return {
        "removed": organic.removed or {},
        "notes": organic.notes or {},
        "ads_removed": dict(ads.result.removed) if ads.result else {},
        "guardrails_fired": list(collated.guardrails_fired),
        "rules": {"max_ads": collated.rules.max_ads},
        "collator_score": {"organic_value": collated.score.organic_value, "ad_revenue": collated.score.ad_revenue,
                           "experience_penalty": collated.score.experience_penalty, "total": collated.score.total},
        "solver": collated.solver,
        "fallback": collated.fallback,
        "versions": organic.versions,
        "served_before": len(state.served_item_ids),
    }
