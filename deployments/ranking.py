"""Ranking: the multi-task DCN over every candidate, batched ACROSS concurrent requests.

`@serve.batch` gathers up to `max_batch_size` requests (it only fills when the deployment's
max_ongoing_requests is at least that) and `MultiTaskScorer.score_batch` scores all their
candidates in ONE tensor pass, on CUDA when the replica was given a GPU (ray_actor_options
num_gpus; `ranking.device: auto`), else on the CPU. Then each request keeps its top K.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from ray import serve

from app.artifacts import ArtifactVersion
from app.config import RayfeedConfig
from app.pipeline import PipelineRunner, StageRecord
from app.ranking.artifacts import RankerArtifacts
from app.ranking.scorer import MultiTaskScorer
from app.reranking import TopKSelector
from deployments.common import DeploymentSettings, ReloadableDeployment, ms, observability, resolve_version
from deployments.messages import OrganicWork
from observability.metrics import ObservabilityHook
from observability.tracing import ATTR_MODEL_VERSION, batch_span


@dataclass(frozen=True)
class RankingState:
    config: RayfeedConfig
    key: tuple[str, str]
    version: str
    artifacts: RankerArtifacts
    scorer: MultiTaskScorer
    top_k: PipelineRunner
    hook: ObservabilityHook


def _load(config: RayfeedConfig, version: ArtifactVersion) -> RankerArtifacts:
    return RankerArtifacts.load(version.path / "organic" / "ranker", config.ranking)


@serve.deployment(name="Ranking")
class Ranking(ReloadableDeployment[RankingState]):
    stage_name = "ranking"

    def __init__(self) -> None:
        super().__init__()
        torch.set_num_threads(1)  # one core per replica: Ray's num_cpus is the parallelism

    def build_state(self, config: RayfeedConfig, settings: DeploymentSettings, previous: RankingState | None) -> RankingState:
        version = resolve_version(config)
        key = (str(version.root), version.version)
        if previous is not None and previous.key == key and previous.config.ranking.model_dump(exclude={"weights"}) == config.ranking.model_dump(exclude={"weights"}):
            artifacts = previous.artifacts
        else:
            artifacts = _load(config, version)
        scorer = MultiTaskScorer.from_artifacts(artifacts)
        scorer.reconfigure(config.ranking.weights)  # weights come from config, not the artifact
        hook = ObservabilityHook("ranking", observability(config), model_version=version.version)
        top_k = PipelineRunner("ranking", sources=[], stages=[TopKSelector(config.ranking.output_size, name="ranked_top_k")], hook=hook)
        return RankingState(config, key, version.version, artifacts, scorer, top_k, hook)

    def after_swap(self, state: RankingState, settings: DeploymentSettings) -> None:
        self.rank.set_max_batch_size(settings.max_batch_size)
        self.rank.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def rank(self, works: list[OrganicWork]) -> list[OrganicWork]:
        state = await self.state()
        started = time.perf_counter()
        with batch_span("ranking.multitask_ranker", [w.request.trace for w in works],
                        attributes={ATTR_MODEL_VERSION: state.version}) as spans:
            columns = state.scorer.score_batch([(w.query, w.candidates) for w in works])
            spans.set_attribute("rayfeed.candidates.in", int(sum(len(w.candidates) for w in works)))
        model_seconds = time.perf_counter() - started
        n_total = max(sum(len(w.candidates) for w in works), 1)
        for work, scores in zip(works, columns):
            share = model_seconds * len(work.candidates) / n_total  # this request's share of the pass
            state.hook.metrics.record_stage(
                StageRecord("multitask_ranker", "scorer", share, len(work.candidates), len(work.candidates)), "ranking")
            t = time.perf_counter()
            result = state.top_k.run(work.query, work.candidates.with_scores(scores))
            work.candidates = result.candidates
            work.timings_ms["ranking"] = ms(model_seconds + time.perf_counter() - t)
            work.timings_ms["ranking_batch_size"] = float(len(works))
            work.versions["ranking"] = state.version
            if work.request.explain:
                for reason, n in result.removal_counts().items():
                    work.removed[reason] = work.removed.get(reason, 0) + n
        return works

    async def device(self) -> str:
        """Where the model runs ("cuda:0" / "cpu"): for `serve status`-style checks and tests."""
        return str((await self.state()).scorer.device)
