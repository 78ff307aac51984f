"""Reranking: MMR diversity and the creator cap (~500 → 100), then the collator's view of the
items and the user's notifications (both need the catalogue and the friend graph held here).

Its state is the catalogue only (`CatalogModels`), not the organic artifact: the replica imports
neither torch nor FAISS and a replacement starts in a few seconds."""
from __future__ import annotations

import time
from dataclasses import dataclass

from ray import serve

from app.api.responses import organic_provenance
from app.collator.inputs import notifications_for, organic_entries
from app.config import RayfeedConfig
from app.data import load_dataset
from app.organic import CatalogModels, reranking_pipeline
from app.pipeline import PipelineRunner, timed_step
from app.ranking.config import HEAD_COLUMNS
from deployments.batching import each_request
from deployments.common import DeploymentSettings, ReloadableDeployment, ms, observability, resolve_version
from deployments.messages import OrganicPage, OrganicWork, check_deadline
from observability.metrics import ObservabilityHook
from observability.tracing import ATTR_MODEL_VERSION, ATTR_N_IN, ATTR_N_OUT, continue_trace


@dataclass(frozen=True)
class RerankingState:
    config: RayfeedConfig
    version: str
    models: CatalogModels
    runner: PipelineRunner


@serve.deployment(name="Reranking")
class Reranking(ReloadableDeployment[RerankingState]):
    stage_name = "reranking"

    def build_state(
        self, config: RayfeedConfig, settings: DeploymentSettings, previous: RerankingState | None,
    ) -> RerankingState:
        version = resolve_version(config).version  # reported with each page; the catalogue is the dataset's
        if previous is not None and previous.config.data == config.data:
            models = previous.models
        else:
            models = CatalogModels.from_dataset(load_dataset(config.data))
        hook = ObservabilityHook("reranking", observability(config), model_version=version)
        return RerankingState(config, version, models, reranking_pipeline(models, config, hook))

    async def rerank_batch(self, works: list[OrganicWork | Exception]) -> list[OrganicPage | Exception]:
        """The ingress's batched call: one page (or that request's exception) per entry."""
        return await each_request(works, self.rerank)

    async def rerank(self, work: OrganicWork) -> OrganicPage:
        state = await self.state()
        check_deadline(work.request.deadline, "reranking")
        started = time.perf_counter()
        request = work.request
        with continue_trace("reranking", request.trace, attributes={ATTR_MODEL_VERSION: state.version}) as span:
            result = state.runner.run(work.query, work.candidates)
            candidates = result.candidates
            entries = organic_entries(candidates, state.models.catalog)
            with timed_step(state.runner.hook, "notifications", "source") as figures:
                notifications = notifications_for(
                    work.query, state.models.dataset, state.config.collator.notifications, state.config.data.seed)
                figures.update(n_out=len(notifications))
            span.set_attribute(ATTR_N_IN, len(work.candidates))
            span.set_attribute(ATTR_N_OUT, len(candidates))
        timings = {**work.timings_ms, "reranking": ms(time.perf_counter() - started)}
        page = OrganicPage(entries, notifications, work.query.cold_start, timings,
                           {**work.versions, "reranking": state.version})
        if work.monitor_sample is not None:  # a request the live monitor logs
            page.monitor_sample = work.monitor_sample
            page.head_scores = {head: candidates.scores[column].tolist()
                                for head, column in HEAD_COLUMNS.items() if column in candidates.scores}
        if request.explain:
            page.provenance = organic_provenance(candidates)
            removed = dict(work.removed)
            for reason, n in result.removal_counts().items():
                removed[reason] = removed.get(reason, 0) + n
            page.removed = removed
        return page
