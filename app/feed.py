"""A feed page end to end, in one process: organic pipeline, ads, notifications, collator.

The serving layer splits the same steps across deployments; the CLI, the simulator and the
tests use `FeedService` directly. The collator's verdict drives the ads' budget state: ads it
did not place have their reservations released here; placed ones are committed when the
impression event arrives.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from app.ads.server import AdServer
from app.ads.types import AdCandidate, AdResult, AdUser
from app.collator.collator import Collator
from app.collator.config import NotificationConfig
from app.collator.inputs import notifications_for, organic_entries
from app.collator.types import CollatedPage, SessionSignals
from app.organic import OrganicPipeline
from app.pipeline import Candidates, FeedQuery, Removal, StageRecord
from app.pipeline.runner import RemovalBatch
from app.state.errors import StoreUnavailable

log = logging.getLogger(__name__)


@dataclass
class FeedPage:
    query: FeedQuery
    page: CollatedPage
    organic: Candidates  # the reranked organic candidates with every column (explain mode)
    ads: AdResult | None
    removal_batches: list[RemovalBatch] = field(default_factory=list)
    records: list[StageRecord] = field(default_factory=list)

    @property
    def removals(self) -> list[Removal]:
        return [r for batch in self.removal_batches for r in batch.expand()]


class FeedService:
    def __init__(
        self,
        organic: OrganicPipeline,
        collator: Collator,
        ads: AdServer | None,
        ad_users: dict[int, AdUser],
        notification_config: NotificationConfig,
        seed: int,
    ) -> None:
        self.organic = organic
        self.collator = collator
        self.ads = ads
        self.ad_users = ad_users
        self.notification_config = notification_config
        self.seed = seed

    def page(self, query: FeedQuery, session: SessionSignals, session_id: str | None = None) -> FeedPage:
        result = self.organic.run(query)
        organic = result.candidates
        ad_result = self.serve_ads(query, session_id)
        notifications = notifications_for(query, self.organic.models.dataset, self.notification_config, self.seed)
        page = self.collator.collate(
            organic_entries(organic, self.organic.models.catalog),
            ad_result.ads if ad_result else (),
            notifications,
            session,
            query.limit,
        )
        self.release_unplaced(query.request_id, page.unplaced_ads)
        removals = [b for part in result.parts.values() for b in part.removal_batches]
        records = [r for part in result.parts.values() for r in part.records]
        return FeedPage(query, page, organic, ad_result, removals, records)

    def serve_ads(self, query: FeedQuery, session_id: str | None) -> AdResult | None:
        user = self.ad_users.get(query.user_id)
        if self.ads is None or user is None:
            return None
        return self.ads.serve(
            user.hiding_creators(query.hidden_creator_ids), query.request_id,
            self.collator.config.ad_slots(query.limit), now=query.now, session_id=session_id,
        )

    def release_unplaced(self, request_id: str, unplaced: Sequence[AdCandidate]) -> None:
        if self.ads is None or not unplaced:
            return
        try:
            self.ads.release(request_id, [a.ad_id for a in unplaced])
        except StoreUnavailable:
            # Nothing is lost: unreleased reservations expire after `reservation_ttl_s`.
            log.warning("could not release %d unplaced ads of %s: store unavailable", len(unplaced), request_id)
