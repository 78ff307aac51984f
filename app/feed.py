"""A feed page end to end, in one process: the same parts and page assembly the served app runs.

`FeedService.page` is the served feed without the hops: the organic parts (app/organic.py),
the ads funnel (app/ads/server.py) and `assemble_page` (app/page.py), with the same rules. The
CLI, the benchmarks' in-process baselines, the simulator and the differential test use it.

The collator's verdict drives the ads' budget state: ads it did not place have their
reservations released here; placed ones are committed when the impression event arrives.
"""
from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.ads.server import AdServer, AdsRequest, serve_page_ads
from app.ads.types import AdCandidate, AdUser
from app.api.ids import ApiIds
from app.collator.collator import Collator
from app.organic import OrganicPage, OrganicPipeline, OrganicRequest
from app.page import AdsOutcome, AssembledPage, PageState, assemble_page
from app.pipeline import StageHook, StageRecord
from app.pipeline.runner import NullHook, PartSpan, Trace
from app.state.errors import StoreUnavailable
from app.state.takedowns import TakedownSet

if TYPE_CHECKING:
    from app.freshness.live import LiveEngagement

log = logging.getLogger(__name__)


@dataclass
class FeedPage:
    request: OrganicRequest
    state: PageState
    organic: OrganicPage  # its `candidates` carry every column of the reranked items
    ads: AdsOutcome
    assembled: AssembledPage
    records: list[StageRecord] = field(default_factory=list)  # every stage of this page, in order

    @property
    def body(self) -> dict:
        return self.assembled.body

    @property
    def slots(self):
        return self.assembled.collated.slots


class PageRecorder:
    """Keeps the stage records of the page being made, from every hook it wraps (the organic
    parts' and the ads funnel's): the in-process caller reads them. One page at a time."""

    def __init__(self) -> None:
        self.records: list[StageRecord] = []

    def hook(self, inner: StageHook | None = None) -> RecordingHook:
        return RecordingHook(self, inner or NullHook())

    @contextlib.contextmanager
    def collecting(self) -> Iterator[list[StageRecord]]:
        self.records = []
        yield self.records


class RecordingHook:
    """A StageHook that hands everything to `inner` and keeps the records in its recorder."""

    def __init__(self, recorder: PageRecorder, inner: StageHook) -> None:
        self.recorder, self.inner = recorder, inner

    def span(self, name: str, kind: str):
        return self.inner.span(name, kind)

    def record(self, record: StageRecord) -> None:
        self.recorder.records.append(record)
        self.inner.record(record)

    def part(self, name: str, trace: Trace | None) -> contextlib.AbstractContextManager[PartSpan]:
        return self.inner.part(name, trace)

    def within(self, trace: Trace):
        return self.inner.within(trace)

    def batch_span(self, name: str, kind: str, traces: Sequence[Trace], sizes: Sequence[int]):
        return self.inner.batch_span(name, kind, traces, sizes)

    def wait(self, name: str, trace: Trace, start_ns: int, end_ns: int, batch_size: int) -> None:
        self.inner.wait(name, trace, start_ns, end_ns, batch_size)


class FeedService:
    def __init__(
        self,
        organic: OrganicPipeline,
        collator: Collator,
        ads: AdServer | None,
        ad_users: Mapping[int, AdUser],
        max_pages: int,
        version: str = "",
        recorder: PageRecorder | None = None,
        live: LiveEngagement | None = None,
        ids: ApiIds | None = None,
    ) -> None:
        self.organic = organic
        self.collator = collator
        self.ads = ads
        self.ad_users = ad_users
        self.max_pages = max_pages
        self.version = version
        self.recorder = recorder or PageRecorder()
        self.hook = self.recorder.hook()  # the page assembly's own steps (collation)
        self.live = live  # the event stream's fresh engagement, as a Retrieval replica holds it
        self.ids = ids or ApiIds(None)  # pages speak the dataset's own ids
        self.takedowns = TakedownSet()  # what is taken down (a caller that follows Redis updates it)

    def page(self, request: OrganicRequest, state: PageState | None = None) -> FeedPage:
        """One page for `request` given the user's state (a fresh first page when None)."""
        state = state or PageState(session_id=uuid.uuid4().hex, store_ok=self.ads is not None,
                                   takedowns=self.takedowns)
        with self.recorder.collecting() as records:
            organic = self.organic.page(request, self.live, state.takedowns)
            ads = self.serve_ads(request, state)
            assembled = assemble_page(request, organic, ads, state, self.collator, self.max_pages, self.version,
                                      self.hook, ids=self.ids)
        self.release_unplaced(request.request_id, assembled.unplaced_ads)
        return FeedPage(request, state, organic, ads, assembled, list(records))

    def serve_ads(self, request: OrganicRequest, state: PageState) -> AdsOutcome:
        if not state.store_ok:
            return AdsOutcome()  # no cap or budget could be checked: no auction (fail closed)
        result = serve_page_ads(self.ads, self.ad_users, AdsRequest(
            request.user_id, request.request_id, self.collator.config.ad_slots(request.limit), request.now,
            state.session_id, state.hidden_creator_ids))
        return AdsOutcome(result)

    def release_unplaced(self, request_id: str, unplaced: Sequence[AdCandidate]) -> None:
        if self.ads is None or not unplaced:
            return
        try:
            self.ads.release(request_id, [a.ad_id for a in unplaced])
        except StoreUnavailable:
            # Nothing is lost: unreleased reservations expire after `reservation_ttl_s`.
            log.warning("could not release %d unplaced ads of %s: store unavailable", len(unplaced), request_id)
