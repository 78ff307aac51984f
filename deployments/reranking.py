"""Reranking: MMR diversity and the creator cap (~500 → 100), then the collator's view of the
items and the user's notifications (both need the catalogue and the friend graph held here)."""
from __future__ import annotations

import time

from ray import serve

from app.api.responses import organic_provenance
from app.config import RayfeedConfig
from app.feed import notifications_for, organic_entries
from app.organic import reranking_pipeline
from app.pipeline import timed_step
from app.ranking.scorer import HEAD_COLUMNS
from deployments.batching import each_request
from deployments.common import DeploymentSettings, ReloadableDeployment, ms
from deployments.messages import OrganicPage, OrganicWork, check_deadline
from deployments.retrieval import OrganicState, load_organic_state
from observability.tracing import ATTR_MODEL_VERSION, ATTR_N_IN, ATTR_N_OUT, continue_trace


@serve.deployment(name="Reranking")
class Reranking(ReloadableDeployment[OrganicState]):
    stage_name = "reranking"

    def build_state(self, config: RayfeedConfig, settings: DeploymentSettings, previous: OrganicState | None) -> OrganicState:
        return load_organic_state(config, previous, "reranking", reranking_pipeline)

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
                    work.query, state.models, state.config.collator.notifications, state.config.data.seed)
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
