"""Retrieval: hydrates the query, runs the retrieval stage list (~5000 → ~1500 candidates)."""
from __future__ import annotations

import time
from dataclasses import dataclass

from ray import serve

from app.config import RayfeedConfig
from app.data import load_dataset
from app.organic import OrganicModels, retrieval_pipeline
from app.pipeline import PipelineRunner, timed_step
from deployments.common import DeploymentSettings, ReloadableDeployment, ms, observability, resolve_version
from deployments.messages import OrganicRequest, OrganicWork, check_deadline
from observability.metrics import ObservabilityHook
from observability.tracing import ATTR_MODEL_VERSION, ATTR_N_OUT, continue_trace


@dataclass(frozen=True)
class OrganicState:
    """Shared by Retrieval and Reranking: the loaded organic artifact and one runner over it."""

    config: RayfeedConfig
    key: tuple[str, str]
    version: str
    models: OrganicModels
    runner: PipelineRunner


def load_organic_state(config: RayfeedConfig, previous: OrganicState | None, pipeline: str, build_runner) -> OrganicState:
    version = resolve_version(config)
    key = (str(version.root), version.version)
    if previous is not None and previous.key == key and previous.config.data == config.data:
        models = previous.models  # same artifact: only tunables changed
    else:
        models = OrganicModels.load(version.path / "organic", load_dataset(config.data), config)
    hook = ObservabilityHook(pipeline, observability(config), model_version=version.version)
    return OrganicState(config, key, version.version, models, build_runner(models, config, hook))


@serve.deployment(name="Retrieval")
class Retrieval(ReloadableDeployment[OrganicState]):
    stage_name = "retrieval"

    def build_state(self, config: RayfeedConfig, settings: DeploymentSettings, previous: OrganicState | None) -> OrganicState:
        return load_organic_state(config, previous, "retrieval", retrieval_pipeline)

    async def retrieve(self, request: OrganicRequest) -> OrganicWork:
        state = await self.state()
        check_deadline(request.deadline, "retrieval")
        started = time.perf_counter()
        with continue_trace("retrieval", request.trace, attributes={ATTR_MODEL_VERSION: state.version}) as span:
            with timed_step(state.runner.hook, "query_hydration", "hydrator") as figures:
                query = state.models.query(
                    request.user_id, now=request.now, limit=request.limit, request_id=request.request_id,
                    served_item_ids=request.served_item_ids, hidden_item_ids=request.hidden_item_ids,
                    hidden_creator_ids=request.hidden_creator_ids,
                )
                figures.update(seen_items=len(query.seen_item_ids), friends=len(query.friend_ids),
                               cold_start=query.cold_start)
            result = state.runner.run(query)
            span.set_attribute(ATTR_N_OUT, len(result.candidates))
        work = OrganicWork(request, query, result.candidates, {"retrieval": ms(time.perf_counter() - started)},
                           versions={"retrieval": state.version})
        if request.explain:
            work.removed = result.removal_counts()
        return work
