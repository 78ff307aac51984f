"""Ranking: the declared ranking part (app/organic.py) over every candidate, batched ACROSS
concurrent requests.

`rank` (one call per request) opens the request's `ranking` span and queues its entry on
`_rank_batch`, which `@serve.batch` gathers up to `max_batch_size` requests at a time (it only
fills when the deployment's max_ongoing_requests is at least that). The part's runner scores all
of their candidates in ONE tensor pass, on CUDA when the replica was given a GPU (ray_actor_options
num_gpus; `ranking.device: auto`), else on the CPU, then runs the rest of the list per request.
The runner records each request's wait for its batch, its share of the pass and its own stages.

With the live monitor on, the scorer hands each pass's inputs and outputs to a feature sampler:
logged requests carry that sample to the ingress, which logs it with the page.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from ray import serve

from app.data.ids import IdMaps
from app.freshness.published import ItemBase, PublishedItems
from app.organic import OrganicWork, RankingPart
from app.pipeline import BatchEntry, PipelineResult
from app.ranking.artifacts import RankerArtifacts
from app.ranking.config import HEAD_COLUMNS
from config import RayfeedConfig
from deployments.batching import each_request
from deployments.common import DeploymentSettings, Loaded, ReloadableDeployment, load_once, resolve_version, stage_hook
from deployments.messages import check_deadline
from observability.live_monitor import CandidateSample, FeatureSampler, is_sampled


class MonitorSamples:
    """The live monitor's feature sample of each logged request, taken from the model pass's own
    inputs (the scorer's `on_scored`), kept until its request collects it."""

    def __init__(self, sampler: FeatureSampler, rate: float) -> None:
        self.sampler, self.rate = sampler, rate
        self.by_request: dict[str, CandidateSample] = {}

    def __call__(self, requests, features, columns: list[dict[str, np.ndarray]]) -> None:
        bounds = np.cumsum([0] + [len(candidates) for _, candidates in requests])
        for (query, _), lo, hi, scores in zip(requests, bounds[:-1], bounds[1:], columns):
            if is_sampled(query.request_id, self.rate):
                self.by_request[query.request_id] = self.sampler.sample(
                    features.dense[lo:hi], {h: scores[c] for h, c in HEAD_COLUMNS.items() if c in scores})

    def take(self, request_id: str) -> CandidateSample | None:
        return self.by_request.pop(request_id, None)


@dataclass(frozen=True)
class RankingState:
    config: RayfeedConfig
    version: str
    artifacts: Loaded[RankerArtifacts]
    part: RankingPart
    samples: MonitorSamples | None  # live monitor on: the feature sample of logged requests
    ids: Loaded[IdMaps | None]  # the dataset's own ids: where published items go (app/freshness/published.py)


@serve.deployment(name="Ranking")
class Ranking(ReloadableDeployment[RankingState]):
    stage_name = "ranking"
    follows_items = True  # published items: their content features

    def __init__(self) -> None:
        super().__init__()
        torch.set_num_threads(1)  # one core per replica: Ray's num_cpus is the parallelism

    def build_state(self, config: RayfeedConfig, settings: DeploymentSettings,
                    previous: RankingState | None) -> RankingState:
        version = resolve_version(config)
        # weights and the item-table refresh are serving settings: changing them keeps the loaded artifact
        model_config = config.ranking.model_dump(exclude={"weights", "item_feature_refresh_s"})
        artifacts = load_once(previous.artifacts if previous else None,
                              (str(version.root), version.version, model_config),
                              lambda: RankerArtifacts.load(version.path / "organic" / "ranker", config.ranking))
        live = config.observability.live_monitor
        samples = None
        if live.enabled:
            schema = artifacts.value.model.schema
            samples = MonitorSamples(FeatureSampler(schema.dense, live.features, live.feature_rows), live.sample_rate)
        part = RankingPart(artifacts.value, config, stage_hook("ranking", config, version.version), version.version,
                           on_scored=samples)
        ids = load_once(previous.ids if previous else None, (str(version.root), version.version),
                        lambda: IdMaps.load(version.path / "ids"))
        return RankingState(config, version.version, artifacts, part, samples, ids)

    def with_published(self, state: RankingState, published: PublishedItems) -> RankingState:
        ranker = state.artifacts.value
        store = ranker.store
        placed = published.place(ItemBase.of(store.item_creator >= 0, store.item_creator, state.ids.value))
        serving = dataclasses.replace(ranker, store=store.with_published(placed.frame))
        part = RankingPart(serving, state.config, state.part.hook, state.version, on_scored=state.samples)
        return dataclasses.replace(state, part=part)

    def after_swap(self, state: RankingState, settings: DeploymentSettings) -> None:
        self._rank_batch.set_max_batch_size(settings.max_batch_size)
        self._rank_batch.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)

    async def rank_batch(self, works: list[OrganicWork | Exception]) -> list[OrganicWork | Exception]:
        """The ingress's batched call: its requests enter `_rank_batch` together, so they share
        one model pass (with whatever else is queued there)."""
        return await each_request(works, self.rank, concurrently=True)

    async def rank(self, work: OrganicWork) -> OrganicWork:
        state = await self.state()
        check_deadline(work.request.deadline, "ranking")
        with state.part.traced(work) as entry:
            result = await self._rank_batch(entry)
            work = state.part.finish(work, result)
        if state.samples is not None:
            work.monitor_sample = state.samples.take(work.request.request_id)
        return work

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def _rank_batch(self, entries: list[BatchEntry]) -> list[PipelineResult]:
        return (await self.state()).part.run_batch(entries)

    async def device(self) -> str:
        """Where the model runs ("cuda:0" / "cpu"): for `serve status`-style checks and tests."""
        return str((await self.state()).part.scorer.device)
