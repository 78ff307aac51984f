"""The organic pipeline, declared in one place: retrieval → ranking → reranking.

Three stage lists, each run by its own PipelineRunner, so the serving layer can put each part
in its own deployment and the in-process service runs all three in one process. Both run the
parts below (`RetrievalPart`, `RankingPart`, `RerankingPart`); a deployment adds only transport:

    retrieval   query hydration → sources → cross-source features → cheap filters → quota merge (~5000)
    ranking     multi-task DCN scores (one pass per batch of requests) → session interest → top-K (~500)
    reranking   MMR diversity → creator frequency cap → the collator's entries + notifications (~100)

What travels between parts is typed here too: `OrganicRequest` (what the page asks for) →
`OrganicWork` (query and candidates so far) → `OrganicPage` (what the page assembly needs).
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.catalog import CatalogHydrator
from app.collator.inputs import notifications_for, organic_entries
from app.collator.types import Notification, OrganicEntry
from app.organic_models import CatalogModels, OrganicModels
from app.pipeline import BatchEntry, Candidates, FeedQuery, PipelineResult, PipelineRunner, StageHook, timed_step
from app.pipeline.runner import NullHook, ms
from app.ranking.config import HEAD_COLUMNS
from app.reranking import (
    ContentRatingFilter,
    CreatorCapSelector,
    HiddenCreatorFilter,
    HiddenItemFilter,
    MMRSelector,
    TakedownFilter,
    TopKSelector,
    UnknownItemFilter,
)
from app.reranking.exploration import ExplorationPicker, ExplorationSlot, KeepingExplored
from app.settings import OrganicSettings
from app.state.takedowns import TakedownSet

# The model stack (torch, FAISS) is imported where it is used: the Reranking replica needs
# only the catalogue, and a replacement replica that skips those imports starts seconds sooner.
if TYPE_CHECKING:
    from app.freshness.live import LiveEngagement
    from app.ranking.artifacts import RankerArtifacts

__all__ = [
    "CatalogModels", "OrganicModels", "OrganicPage", "OrganicPipeline", "OrganicRequest", "OrganicWork",
    "RankingPart", "RerankingPart", "RetrievalPart", "organic_provenance", "ranking_pipeline",
    "reranking_pipeline", "retrieval_pipeline",
]


# -- the declared stage lists ----------------------------------------------------------------

def retrieval_pipeline(models: OrganicModels, config: OrganicSettings, hook: StageHook | None = None) -> PipelineRunner:
    from app.retrieval.fresh import FreshIndex, FreshItemsSource, PublishedItemHydrator
    from app.retrieval.sources import (
        CoEngagementSource, EmbeddingAnnSource, SeenItemFilter, SocialSource, SourceFeatureHydrator, SourceMerger,
        TrendingSource,
    )

    sources_config = config.retrieval.sources
    fresh = models.fresh if models.fresh is not None else FreshIndex.empty(models.two_tower.dim)
    return PipelineRunner(
        "retrieval",
        sources=[
            EmbeddingAnnSource(models.index, models.two_tower.user_embedding, sources_config, fresh),
            CoEngagementSource(models.neighbours, models.engagements, sources_config),
            SocialSource(models.social, models.engagements, sources_config),
            TrendingSource(models.engagements, sources_config),
            FreshItemsSource(fresh, models.two_tower.user_embedding, config.retrieval.fresh),
        ],
        stages=[
            # Per-item features across sources first: the filters below drop rows, not evidence.
            SourceFeatureHydrator(),
            # Cheap filters before the quota merge, so quotas are not spent on dropped items.
            SeenItemFilter(),
            UnknownItemFilter(models.catalog),
            HiddenItemFilter(),
            CatalogHydrator(models.catalog),
            PublishedItemHydrator(models.published_at, models.engagements),
            HiddenCreatorFilter(),
            TakedownFilter(),
            ContentRatingFilter(config.reranking.unknown_user_age),
            SourceMerger(sources_config),
        ],
        hook=hook,
    )


def ranking_pipeline(
    ranker: RankerArtifacts, config: OrganicSettings, hook: StageHook | None = None,
    on_scored: Callable[..., None] | None = None,
) -> PipelineRunner:
    """`on_scored(requests, features, columns)`: called after each model pass with its inputs and
    outputs (the live monitor's feature sample); the weights come from config, not the artifact."""
    from app.ranking.features import RankingFeatureAssembler, RankingFeatureRows
    from app.ranking.prerank import CascadeCut, PreRanker
    from app.ranking.scorer import MultiTaskScorer
    from app.ranking.session import SessionInterestScorer

    scorer = MultiTaskScorer.from_artifacts(ranker)
    scorer.reconfigure(config.ranking.weights)
    scorer.on_scored = on_scored
    picker = ExplorationPicker(config.reranking.exploration)  # young, unproven items survive the cuts
    assembler = RankingFeatureAssembler(ranker.store, config.ranking.item_feature_refresh_s)
    before_dcn: list = []
    after_dcn: list = [picker]
    if cascade_state(ranker, config) == "on":
        # Batch-aware like the DCN; the cut leaves `keep` candidates (and their feature rows) per
        # request for the DCN.
        before_dcn = [PreRanker(ranker.pre_ranker, assembler), picker,
                      KeepingExplored(CascadeCut(config.ranking.cascade.keep))]
        after_dcn = []
    return PipelineRunner(
        "ranking",
        sources=[],
        stages=[
            RankingFeatureRows(assembler),  # every queued request's model inputs, assembled once
            *before_dcn,
            scorer,  # batch-aware: run_batch scores every queued request in one tensor pass
            SessionInterestScorer(ranker.store.topics_by_item, config.ranking.session_interest),
            *after_dcn,
            KeepingExplored(TopKSelector(config.ranking.output_size, name="ranked_top_k")),
        ],
        hook=hook,
    )


def cascade_state(ranker: RankerArtifacts, config: OrganicSettings) -> str:
    """"on", or why the DCN scores every candidate (explain mode shows it as `notes.cascade`)."""
    if not config.ranking.cascade.enabled:
        return "off: ranking.cascade.enabled is false"
    if ranker.pre_ranker is None:
        return "off: the ranker artifact has no pre-ranker (trained before the cascade; retrain to add one)"
    return "on"


def reranking_pipeline(
    models: CatalogModels | OrganicModels, config: OrganicSettings, hook: StageHook | None = None,
) -> PipelineRunner:
    rerank = config.reranking
    return PipelineRunner(
        "reranking",
        sources=[],
        stages=[
            KeepingExplored(MMRSelector(models.catalog, rerank.output_size, rerank.mmr_lambda,
                                        rerank.mmr_creator_similarity)),
            # After MMR: the cap removes a creator's lowest-placed items, not its best.
            CreatorCapSelector(rerank.max_items_per_creator),
            # Last: young, unproven items lifted into the band of the page that is served.
            ExplorationSlot(rerank.exploration),
        ],
        hook=hook,
    )


# -- what travels between the parts ----------------------------------------------------------

@dataclass(frozen=True)
class OrganicRequest:
    """What a page asks of the organic pipeline. `trace` (a W3C carrier) and `deadline` (unix
    seconds) travel with it so each part's spans join the request's trace and a part reached too
    late does no work; in one process both may stay empty."""

    user_id: int
    now: float
    limit: int
    request_id: str
    served_item_ids: frozenset[int] = frozenset()
    hidden_item_ids: frozenset[int] = frozenset()
    hidden_creator_ids: frozenset[int] = frozenset()
    explain: bool = False
    trace: dict[str, str] = field(default_factory=dict)
    deadline: float | None = None
    external_user_id: object = None  # the user as the request named them (the dataset's own id)


@dataclass
class OrganicWork:
    """Retrieval → Ranking → Reranking: the query and the candidates so far."""

    request: OrganicRequest
    query: FeedQuery
    candidates: Candidates
    timings_ms: dict[str, float] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)  # explain mode: "<stage>: <reason>" -> n
    versions: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # explain mode: how a part ran (e.g. the cascade)
    monitor_sample: object | None = None  # the live monitor's feature sample (logged requests only)

    def advance(self, part: str, result: PipelineResult, version: str, seconds: float) -> OrganicWork:
        """Take a part's result: its candidates, its time, its version, its removals (explain)."""
        self.candidates = result.candidates
        self.timings_ms[part] = ms(seconds)
        self.versions[part] = version
        if self.request.explain:
            for reason, n in result.removal_counts().items():
                self.removed[reason] = self.removed.get(reason, 0) + n
        return self


@dataclass
class OrganicPage:
    """The organic part of a page: what the page assembly needs, plus explain details."""

    entries: list[OrganicEntry]
    notifications: list[Notification]
    cold_start: bool
    timings_ms: dict[str, float]
    versions: dict[str, str]
    candidates: Candidates | None = None  # the reranked candidates with every column (in-process callers)
    provenance: dict[int, dict[str, object]] | None = None
    removed: dict[str, int] | None = None
    notes: dict[str, str] | None = None
    # Logged requests only: Ranking's feature sample, and head -> prediction per entry (entries' order).
    monitor_sample: object | None = None
    head_scores: dict[str, list[float]] | None = None


def organic_provenance(candidates: Candidates) -> dict[int, dict[str, object]]:
    """Per reranked item: the source that kept it, every source that produced it, per-head
    scores and the final score, and its rank after reranking."""
    out: dict[int, dict[str, object]] = {}
    source_columns = [c for c in candidates.features if c.startswith("src_")]
    score_columns = [h for h in (*HEAD_COLUMNS.values(), "final") if h in candidates.scores]
    for row, item in enumerate(candidates.item_ids.tolist()):
        out[int(item)] = {
            "source": str(candidates.sources[row]),
            "also_from": [c.removeprefix("src_") for c in source_columns if candidates.features[c][row] > 0],
            "scores": {h: round(float(candidates.scores[h][row]), 5) for h in score_columns},
            "rerank_position": row + 1,
        }
        if "explored" in candidates.features and candidates.features["explored"][row] > 0:
            out[int(item)]["explored"] = True  # lifted by the exploration slot
    return out


# -- the parts: a declared stage list and the bookkeeping every runner of it does ---------------

class RetrievalPart:
    """Hydrates the query (profile, history, friends, live engagement) and runs retrieval."""

    name = "retrieval"

    def __init__(self, models: OrganicModels, config: OrganicSettings, hook: StageHook | None = None,
                 version: str = "") -> None:
        self.models, self.version = models, version
        self.hook: StageHook = hook or NullHook()
        self.runner = retrieval_pipeline(models, config, self.hook)

    def run(self, request: OrganicRequest, live: LiveEngagement | None = None,
            takedowns: TakedownSet | None = None) -> OrganicWork:
        """`takedowns`: what this replica holds taken down (filtered before the quota merge)."""
        started = time.perf_counter()
        takedowns = takedowns or TakedownSet()
        with self.hook.part(self.name, request.trace or None) as span:
            with timed_step(self.hook, "query_hydration", "hydrator") as figures:
                query = self.models.query(
                    request.user_id, now=request.now, limit=request.limit, request_id=request.request_id,
                    served_item_ids=request.served_item_ids, hidden_item_ids=request.hidden_item_ids,
                    hidden_creator_ids=request.hidden_creator_ids,
                    user_embedding=live.embedding(request.user_id, request.now) if live else None,
                    fresh_item_ids=live.fresh_items(request.user_id) if live else (),
                    session_item_ids=live.session_items(request.user_id, request.now) if live else (),
                    taken_down_item_ids=takedowns.items, taken_down_creator_ids=takedowns.creators,
                )
                figures.update(seen_items=len(query.seen_item_ids), friends=len(query.friend_ids),
                               cold_start=query.cold_start)
            result = self.runner.run(query)
            span.figures.update(n_out=len(result.candidates))
        work = OrganicWork(request, query, result.candidates)
        return work.advance(self.name, result, self.version, time.perf_counter() - started)


class RankingPart:
    """The multi-task DCN over every candidate, then the session-interest term and the top K.

    Many requests share one model pass: each enters through `traced` (its `ranking` span stays
    open while it waits for its batch), `run_batch` runs the declared list over the batch, and
    `finish` takes each request's result. `run` is the same path for a batch of one."""

    name = "ranking"

    def __init__(self, ranker: RankerArtifacts, config: OrganicSettings, hook: StageHook | None = None,
                 version: str = "", on_scored: Callable[..., None] | None = None) -> None:
        self.ranker, self.version = ranker, version
        self.hook: StageHook = hook or NullHook()
        self.runner = ranking_pipeline(ranker, config, self.hook, on_scored)
        self.cascade = cascade_state(ranker, config)

    @property
    def scorer(self):
        """The multi-task DCN stage (its device, its weights, the live monitor's hook)."""
        return next(s for s in self.runner.stages if s.name == "multitask_ranker")

    @contextlib.contextmanager
    def traced(self, work: OrganicWork) -> Iterator[BatchEntry]:
        """This request's entry into a batch, with its `ranking` span open around the wait."""
        with self.hook.part(self.name, work.request.trace or None) as span:
            yield BatchEntry(work.query, work.candidates, span.carrier, time.time_ns())
            span.figures.update(n_in=len(work.candidates), n_out=len(work.candidates))

    def run_batch(self, entries: Sequence[BatchEntry]) -> list[PipelineResult]:
        return self.runner.run_batch(entries)

    def finish(self, work: OrganicWork, result: PipelineResult) -> OrganicWork:
        from app.ranking.features import CATEGORICAL_ROWS, DENSE_ROWS

        # The model inputs stay here: the ranked candidates travel on without them.
        result.candidates = result.candidates.without_features((DENSE_ROWS, CATEGORICAL_ROWS))
        work.timings_ms[f"{self.name}_batch_size"] = float(result.batch_size)
        if work.request.explain:
            cut = next((r for r in result.records if r.name == "cascade_cut"), None)
            work.notes["cascade"] = (self.cascade if cut is None
                                     else f"on: the pre-ranker passed {cut.n_out} of {cut.n_in} candidates to the DCN")
        return work.advance(self.name, result, self.version, result.seconds)

    def run(self, work: OrganicWork) -> OrganicWork:
        with self.traced(work) as entry:
            result = self.run_batch([BatchEntry(entry.query, entry.candidates, entry.trace)])[0]
        return self.finish(work, result)


class RerankingPart:
    """MMR and the creator cap, then the collator's view of the items and the notifications."""

    name = "reranking"

    def __init__(self, models: CatalogModels | OrganicModels, config: OrganicSettings, hook: StageHook | None = None,
                 version: str = "") -> None:
        self.models, self.version = models, version
        self.hook: StageHook = hook or NullHook()
        self.runner = reranking_pipeline(models, config, self.hook)
        self.notification_config = config.collator.notifications
        self.seed = config.data.seed

    def run(self, work: OrganicWork, keep_candidates: bool = True) -> OrganicPage:
        """`keep_candidates=False` leaves the reranked columns out of the page (a deployment
        sends the page to the ingress, which needs only the entries)."""
        started = time.perf_counter()
        with self.hook.part(self.name, work.request.trace or None) as span:
            result = self.runner.run(work.query, work.candidates)
            candidates = result.candidates
            entries = organic_entries(candidates, self.models.catalog)
            with timed_step(self.hook, "notifications", "source") as figures:
                notifications = notifications_for(work.query, self.models.dataset, self.notification_config, self.seed)
                figures.update(n_out=len(notifications))
            span.figures.update(n_in=len(work.candidates), n_out=len(candidates))
        work.advance(self.name, result, self.version, time.perf_counter() - started)
        page = OrganicPage(entries, notifications, work.query.cold_start, work.timings_ms, work.versions,
                           candidates if keep_candidates else None)
        if work.monitor_sample is not None:  # a request the live monitor logs
            page.monitor_sample = work.monitor_sample
            page.head_scores = {head: candidates.scores[column].tolist()
                                for head, column in HEAD_COLUMNS.items() if column in candidates.scores}
        if work.request.explain:
            page.provenance = organic_provenance(candidates)
            page.removed = dict(work.removed)
            page.notes = dict(work.notes)
        return page


class OrganicPipeline:
    """All three parts in one process (the in-process service, offline evaluation, the simulator):
    exactly what the Retrieval, Ranking and Reranking deployments run, without the hops."""

    def __init__(self, models: OrganicModels, config: OrganicSettings, hook: StageHook | None = None,
                 version: str = "") -> None:
        self.models = models
        self.retrieval = RetrievalPart(models, config, hook, version)
        self.ranking = RankingPart(models.ranker, config, hook, version)
        self.reranking = RerankingPart(models, config, hook, version)

    @property
    def parts(self) -> dict[str, PipelineRunner]:
        return {"retrieval": self.retrieval.runner, "ranking": self.ranking.runner, "reranking": self.reranking.runner}

    def page(self, request: OrganicRequest, live: LiveEngagement | None = None,
             takedowns: TakedownSet | None = None) -> OrganicPage:
        return self.reranking.run(self.ranking.run(self.retrieval.run(request, live, takedowns)))

    def run(self, query: FeedQuery, through: str = "reranking") -> OrganicResult:
        """The stage lists on a hydrated query, stopping after `through` (e.g. "ranking" for
        top-K evaluation): the offline harness's view, without the page around it."""
        results: dict[str, PipelineResult] = {}
        candidates: Candidates | None = None
        for name, runner in self.parts.items():
            if name == "ranking":
                assert candidates is not None
                results[name] = runner.run_batch([BatchEntry(query, candidates)])[0]
            else:
                results[name] = runner.run(query, candidates)
            candidates = results[name].candidates
            if name == through:
                break
        assert candidates is not None
        return OrganicResult(candidates, results)


@dataclass
class OrganicResult:
    candidates: Candidates
    parts: dict[str, PipelineResult]
