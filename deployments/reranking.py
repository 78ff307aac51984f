"""Reranking: the declared reranking part (app/organic.py): MMR diversity and the creator cap
(~500 → 100), then the collator's view of the items and the user's notifications.

Its state is the catalogue only (`CatalogModels`), not the organic artifact: the replica imports
neither torch nor FAISS and a replacement starts in a few seconds."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ray import serve

from app.data import load_dataset_for
from app.freshness.published import ItemBase, PublishedItems
from app.organic import CatalogModels, OrganicPage, OrganicWork, RerankingPart
from config import RayfeedConfig
from deployments.batching import each_request
from deployments.common import DeploymentSettings, Loaded, ReloadableDeployment, load_once, resolve_version, stage_hook
from deployments.messages import check_deadline


@dataclass(frozen=True)
class RerankingState:
    config: RayfeedConfig
    version: str
    models: Loaded[CatalogModels]
    part: RerankingPart


@serve.deployment(name="Reranking")
class Reranking(ReloadableDeployment[RerankingState]):
    stage_name = "reranking"
    follows_items = True  # published items: MMR's topics, the creator cap, the collator's brand safety

    def with_published(self, state: RerankingState, published: PublishedItems) -> RerankingState:
        models = state.models.value
        placed = published.place(ItemBase.of(models.catalog.known, models.catalog.creator_id, models.dataset.ids))
        part = RerankingPart(models.with_published(placed), state.config, state.part.hook, state.version)
        return dataclasses.replace(state, part=part)

    def build_state(
        self, config: RayfeedConfig, settings: DeploymentSettings, previous: RerankingState | None,
    ) -> RerankingState:
        artifact = resolve_version(config)  # reported with each page; the catalogue is the dataset's
        version = artifact.version
        models = load_once(previous.models if previous else None, (config.data, artifact.path),
                           lambda: CatalogModels.from_dataset(load_dataset_for(config.data, artifact.path).for_serving()))
        part = RerankingPart(models.value, config, stage_hook("reranking", config, version), version)
        return RerankingState(config, version, models, part)

    async def rerank_batch(self, works: list[OrganicWork | Exception]) -> list[OrganicPage | Exception]:
        """The ingress's batched call: one page (or that request's exception) per entry."""
        return await each_request(works, self.rerank)

    async def rerank(self, work: OrganicWork) -> OrganicPage:
        state = await self.state()
        check_deadline(work.request.deadline, "reranking")
        return state.part.run(work, keep_candidates=False)  # the ingress needs only the entries
