"""Ranking: the multi-task DCN over every candidate, batched ACROSS concurrent requests.

`rank` (one call per request) waits on `_score`, which `@serve.batch` gathers up to
`max_batch_size` requests at a time (it only fills when the deployment's max_ongoing_requests is
at least that); `MultiTaskScorer.score_batch` scores all their candidates in ONE tensor pass, on
CUDA when the replica was given a GPU (ray_actor_options num_gpus; `ranking.device: auto`), else
on the CPU. Back in `rank`, each request keeps its top K.

Tracing: each request gets a `ranking` span (child of the ingress span) holding
`ranking.batch_wait` (time queued for the batch), `ranking.multitask_ranker` (the shared model
pass, with the batch size) and `ranking.ranked_top_k`. Inside the batch handler the ambient
context is whichever request started the batch, so its spans are parented explicitly on each
request's carrier.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from ray import serve

from app.artifacts import ArtifactVersion
from app.config import RayfeedConfig
from app.pipeline import PipelineRunner, StageRecord
from app.ranking.artifacts import RankerArtifacts
from app.ranking.config import HEAD_COLUMNS
from app.ranking.scorer import MultiTaskScorer
from app.ranking.session import SessionInterestScorer
from app.reranking import TopKSelector
from deployments.batching import each_request
from deployments.common import DeploymentSettings, ReloadableDeployment, ms, observability, resolve_version
from deployments.messages import OrganicWork, check_deadline
from observability.live_monitor import CandidateSample, FeatureSampler, is_sampled
from observability.metrics import ObservabilityHook
from observability.tracing import (
    ATTR_BATCH_SIZE, ATTR_MODEL_VERSION, ATTR_N_IN, ATTR_N_OUT, batch_span, continue_trace, inject_context, record_span,
)


@dataclass(frozen=True)
class RankingState:
    config: RayfeedConfig
    key: tuple[str, str]
    version: str
    artifacts: RankerArtifacts
    scorer: MultiTaskScorer
    top_k: PipelineRunner
    hook: ObservabilityHook
    sampler: FeatureSampler | None  # live monitor on: the feature sample of logged requests


@dataclass(frozen=True)
class _ScoreCall:
    """One request's entry in a batch: its work, its `ranking` span's context, when it queued."""

    work: OrganicWork
    trace: dict[str, str]
    queued_ns: int


@dataclass(frozen=True)
class _Scored:
    scores: dict[str, np.ndarray]
    model_seconds: float  # the whole batch's pass (shared)
    batch_size: int
    version: str
    sample: CandidateSample | None = None


def _load(config: RayfeedConfig, version: ArtifactVersion) -> RankerArtifacts:
    return RankerArtifacts.load(version.path / "organic" / "ranker", config.ranking)


def _monitor_samples(state: RankingState, calls: list[_ScoreCall], dense: np.ndarray,
                     columns: list[dict[str, np.ndarray]]) -> list[CandidateSample | None]:
    """The live monitor's feature sample of each logged request (None for the others)."""
    rate = state.config.observability.live_monitor.sample_rate
    bounds = np.cumsum([0] + [len(c.work.candidates) for c in calls])
    out: list[CandidateSample | None] = []
    for call, lo, hi, scores in zip(calls, bounds[:-1], bounds[1:], columns):
        if state.sampler is None or not is_sampled(call.work.request.request_id, rate):
            out.append(None)
            continue
        out.append(state.sampler.sample(dense[lo:hi], {h: scores[c] for h, c in HEAD_COLUMNS.items() if c in scores}))
    return out


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
        top_k = PipelineRunner("ranking", sources=[], stages=[
            SessionInterestScorer(artifacts.store.item_topics, config.ranking.session_interest),
            TopKSelector(config.ranking.output_size, name="ranked_top_k"),
        ], hook=hook)
        live = config.observability.live_monitor
        sampler = FeatureSampler(scorer.schema.dense, live.features, live.feature_rows) if live.enabled else None
        return RankingState(config, key, version.version, artifacts, scorer, top_k, hook, sampler)

    def after_swap(self, state: RankingState, settings: DeploymentSettings) -> None:
        self._score.set_max_batch_size(settings.max_batch_size)
        self._score.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)

    async def rank_batch(self, works: list[OrganicWork | Exception]) -> list[OrganicWork | Exception]:
        """The ingress's batched call: its requests enter `_score` together, so they share one
        model pass (with whatever else is queued there)."""
        return await each_request(works, self.rank, concurrently=True)

    async def rank(self, work: OrganicWork) -> OrganicWork:
        state = await self.state()
        check_deadline(work.request.deadline, "ranking")
        with continue_trace("ranking", work.request.trace, attributes={ATTR_MODEL_VERSION: state.version}) as span:
            scored = await self._score(_ScoreCall(work, inject_context(), time.time_ns()))
            t = time.perf_counter()
            result = state.top_k.run(work.query, work.candidates.with_scores(scored.scores))
            span.set_attribute(ATTR_N_IN, len(work.candidates))
            span.set_attribute(ATTR_N_OUT, len(result.candidates))
            span.set_attribute(ATTR_BATCH_SIZE, scored.batch_size)
        work.timings_ms["ranking"] = ms(scored.model_seconds + time.perf_counter() - t)
        work.timings_ms["ranking_batch_size"] = float(scored.batch_size)
        work.versions["ranking"] = scored.version
        work.monitor_sample = scored.sample
        if work.request.explain:
            for reason, n in result.removal_counts().items():
                work.removed[reason] = work.removed.get(reason, 0) + n
        work.candidates = result.candidates
        return work

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def _score(self, calls: list[_ScoreCall]) -> list[_Scored]:
        state = await self.state()
        began_ns, started = time.time_ns(), time.perf_counter()
        for call in calls:
            record_span("ranking.batch_wait", call.trace, call.queued_ns, began_ns,
                        attributes={ATTR_BATCH_SIZE: len(calls)})
            state.hook.metrics.record_stage(StageRecord(
                "batch_wait", "wait", (began_ns - call.queued_ns) / 1e9, len(call.work.candidates),
                len(call.work.candidates)), "ranking")
        with batch_span("ranking.multitask_ranker", [c.trace for c in calls],
                        mode=state.config.observability.batch_span_mode,
                        attributes={ATTR_MODEL_VERSION: state.version}) as spans:
            requests = [(c.work.query, c.work.candidates) for c in calls]
            features = state.scorer.features_for(requests)
            columns = state.scorer.score_batch(requests, features)
            spans.set_attribute("rayfeed.batch.candidates", int(sum(len(c.work.candidates) for c in calls)))
            if spans.per_request:
                for i, call in enumerate(calls):
                    spans.span_for(i).set_attribute(ATTR_N_IN, len(call.work.candidates))
                    spans.span_for(i).set_attribute(ATTR_N_OUT, len(call.work.candidates))
        model_seconds = time.perf_counter() - started
        n_total = max(sum(len(c.work.candidates) for c in calls), 1)
        for call in calls:
            n = len(call.work.candidates)
            share = model_seconds * n / n_total  # this request's share of the pass
            state.hook.metrics.record_stage(StageRecord("multitask_ranker", "scorer", share, n, n), "ranking")
        samples = _monitor_samples(state, calls, features.dense, columns)
        return [_Scored(scores, model_seconds, len(calls), state.version, sample)
                for scores, sample in zip(columns, samples)]

    async def device(self) -> str:
        """Where the model runs ("cuda:0" / "cpu"): for `serve status`-style checks and tests."""
        return str((await self.state()).scorer.device)
