"""Retrieval: hydrates the query, runs the retrieval stage list (~5000 → ~1500 candidates).

Each replica also follows the event stream (XREAD BLOCK, a broadcast: every replica needs every
event) into `LiveEngagement`: a user's next request gets their dynamic (static+dynamic ensemble)
embedding and fresh items within milliseconds of the event being acknowledged. On start the
replica replays the retained stream, so a restarted or added replica catches up by itself.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass

from ray import serve

from app.data import load_dataset_for
from app.freshness.live import LiveEngagement
from app.freshness.published import ItemBase, PublishedItems
from app.organic import OrganicModels, OrganicRequest, OrganicWork, RetrievalPart
from config import RayfeedConfig
from deployments.batching import each_request
from app.state.takedowns import TakedownFollower
from deployments.common import (
    DeploymentSettings, Loaded, ReloadableDeployment, follow_takedowns, load_once, resolve_version, stage_hook,
)
from deployments.messages import TakedownsUnknown, check_deadline

log = logging.getLogger("rayfeed.serve")


@dataclass(frozen=True)
class RetrievalState:
    config: RayfeedConfig
    version: str
    models: Loaded[OrganicModels]
    part: RetrievalPart


@serve.deployment(name="Retrieval")
class Retrieval(ReloadableDeployment[RetrievalState]):
    stage_name = "retrieval"
    follows_items = True  # published items: catalogue rows, the fresh index, the fresh lane

    def __init__(self) -> None:
        super().__init__()
        self._live: LiveEngagement | None = None
        self._follower: asyncio.Task | None = None
        self._stream_position = "0-0"
        self.takedowns = TakedownFollower()
        self._takedown_task: asyncio.Task | None = None

    def build_state(self, config: RayfeedConfig, settings: DeploymentSettings,
                    previous: RetrievalState | None) -> RetrievalState:
        version = resolve_version(config)
        models = load_once(previous.models if previous else None, (str(version.root), version.version, config.data),
                           lambda: OrganicModels.load(version.path / "organic",
                                                      load_dataset_for(config.data, version.path).for_serving(),
                                                      config, with_ranker=False).for_retrieval())
        part = RetrievalPart(models.value, config, stage_hook("retrieval", config, version.version), version.version)
        return RetrievalState(config, version.version, models, part)

    def with_published(self, state: RetrievalState, published: PublishedItems) -> RetrievalState:
        models = state.models.value
        placed = published.place(ItemBase.of(models.catalog.known, models.catalog.creator_id, models.dataset.ids))
        serving = models.with_published(placed, state.config.retrieval.fresh.retention_s)
        part = RetrievalPart(serving, state.config, state.part.hook, state.version)
        return dataclasses.replace(state, part=part)

    def after_swap(self, state: RetrievalState, settings: DeploymentSettings) -> None:
        if self._takedown_task is None:
            self._takedown_task = asyncio.get_running_loop().create_task(follow_takedowns(
                state.config.redis_url, self.takedowns, lambda: self.config.api.takedown_poll_s, "retrieval"))
        dynamic = state.config.retrieval.dynamic
        if not dynamic.enabled or not state.config.redis_url:
            self._live = None
            return
        if self._live is None or self._live.config != dynamic:
            self._live = LiveEngagement(state.models.value.two_tower, dynamic)
            self._stream_position = "0-0"  # a new follower state replays the retained stream
        self._live.attach(state.models.value)  # a newly loaded artifact gets the engagements since
        if self._follower is None:
            self._follower = asyncio.get_running_loop().create_task(self._follow(state.config.redis_url))

    async def _follow(self, url: str) -> None:
        from app.state._redis import async_fail_fast_client
        from app.state.events import EventStream

        client = None
        while True:
            state, live = self._state, self._live
            if state is None or live is None:
                await asyncio.sleep(1.0)
                continue
            dynamic = state.config.retrieval.dynamic
            try:
                if client is None:
                    client = async_fail_fast_client(url, dynamic.read_block_ms / 1000 + 2.0, max_connections=1)
                stream = EventStream(client, state.config.api.event_stream_maxlen, state.config.api.event_dedup_ttl_s,
                                     partitions=state.config.api.event_stream_partitions)
                batch = await stream.follow(self._stream_position, dynamic.read_count, dynamic.read_block_ms)
                if batch and live is self._live:
                    self._stream_position = stream.position_after(self._stream_position, batch)
                    live.observe([event for _, event in batch])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis trouble: serve stored embeddings, retry
                log.warning("retrieval: event stream follow failed: %s", exc)
                await asyncio.sleep(1.0)

    async def freshness(self) -> dict[str, float | str | int | bool]:
        """How far this replica has followed the event stream (tests, operators)."""
        live = self._live
        return {"position": self._stream_position, "applied": live.applied if live else 0,
                "last_applied_ts": live.last_applied_ts if live else 0.0, "enabled": live is not None}

    async def retrieve_batch(self, requests: list[OrganicRequest]) -> list[OrganicWork | Exception]:
        """The ingress's batched call (deployments/batching.py): one entry per request."""
        return await each_request(requests, self.retrieve)

    async def loaded_version(self) -> str:
        """Ready only once the takedowns are read: before that nothing may be served."""
        if not self.takedowns.current.loaded:
            raise TakedownsUnknown("retrieval")
        return await super().loaded_version()

    async def retrieve(self, request: OrganicRequest) -> OrganicWork:
        state = await self.state()
        check_deadline(request.deadline, "retrieval")
        if not self.takedowns.current.loaded:
            raise TakedownsUnknown("retrieval")
        return state.part.run(request, self._live, self.takedowns.current)
