"""Runs a declared pipeline: sources in parallel-safe order, then post-stages in order.

The runner, not the stage, times stages, counts what they kept and removed, records removal
reasons and applies the failure policy. Observability plugs in through `StageHook`.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from app.pipeline.candidates import Candidates, FeedQuery, Removal
from app.pipeline.stages import CandidateSource, Filter, Hydrator, Scorer, Selector

log = logging.getLogger(__name__)

PostStage = Hydrator | Filter | Scorer | Selector


@dataclass(frozen=True)
class StageRecord:
    """What one stage did to one request: the figures behind metrics and span attributes."""

    name: str
    kind: str
    seconds: float
    n_in: int
    n_out: int
    error: str | None = None
    batch_size: int = 1  # requests that shared the call (a batched stage, a batch queue)


@dataclass(frozen=True)
class BatchEntry:
    """One request of a batched run: its query and candidates, the carrier of its part span
    (where its stage spans go) and, when it queued for the batch, since when (time.time_ns)."""

    query: FeedQuery
    candidates: Candidates
    trace: Mapping[str, str] = field(default_factory=dict)
    queued_ns: int | None = None


BATCH_WAIT = "batch_wait"  # the record and span of the time a request queued for its batch
# A stage of these kinds with this method takes every queued request in one call (run_batch).
BATCHED = {"scorer": "score_batch", "hydrator": "hydrate_batch"}


Trace = Mapping[str, str]  # a W3C trace-context carrier (e.g. {"traceparent": ...}); opaque here


@dataclass
class PartSpan:
    """An open span of one pipeline part: `carrier` names it (children made elsewhere, e.g. in a
    batch, attach to it); `figures` become its attributes when it closes (n_in, n_out, ...)."""

    carrier: dict[str, str] = field(default_factory=dict)
    figures: dict[str, object] = field(default_factory=dict)


class StageHook(Protocol):
    """Observability's view of the runner (observability.metrics.ObservabilityHook implements it).
    The runner calls it; stages never do."""

    def span(self, name: str, kind: str) -> contextlib.AbstractContextManager[dict[str, object]]:
        """A stage's span, child of the current context."""

    def record(self, record: StageRecord) -> None:
        """A stage's figures (metrics; the end of its span)."""

    def part(self, name: str, trace: Trace | None) -> contextlib.AbstractContextManager[PartSpan]:
        """The span of one pipeline part, continuing `trace` (None: the current context), current
        for the block."""

    def within(self, trace: Trace) -> contextlib.AbstractContextManager[None]:
        """Make `trace` the current context (a per-request stage run inside a batch handler, whose
        ambient context is whichever request started the batch)."""

    def batch_span(
        self, name: str, kind: str, traces: Sequence[Trace], sizes: Sequence[int],
    ) -> contextlib.AbstractContextManager[None]:
        """One batched stage call serving len(traces) requests (sizes[i] candidates each): a span
        under each request's part."""

    def wait(self, name: str, trace: Trace, start_ns: int, end_ns: int, batch_size: int) -> None:
        """A finished interval measured before its span could exist (time queued for a batch)."""


class NullHook:
    @contextlib.contextmanager
    def span(self, name: str, kind: str) -> Iterator[dict[str, object]]:
        yield {}

    def record(self, record: StageRecord) -> None:
        return None

    @contextlib.contextmanager
    def part(self, name: str, trace: Trace | None) -> Iterator[PartSpan]:
        yield PartSpan(dict(trace or {}))

    @contextlib.contextmanager
    def within(self, trace: Trace) -> Iterator[None]:
        yield None

    @contextlib.contextmanager
    def batch_span(self, name: str, kind: str, traces: Sequence[Trace], sizes: Sequence[int]) -> Iterator[None]:
        yield None

    def wait(self, name: str, trace: Trace, start_ns: int, end_ns: int, batch_size: int) -> None:
        return None


def ms(seconds: float) -> float:
    """Seconds as the milliseconds a page's `timings_ms` reports."""
    return round(seconds * 1000.0, 3)


def ms_since(started: float) -> float:
    """Milliseconds since `started` (a time.perf_counter() reading)."""
    return ms(time.perf_counter() - started)


@contextlib.contextmanager
def timed_step(hook: StageHook, name: str, kind: str) -> Iterator[dict[str, object]]:
    """A step that is not a declared stage (query hydration, the ads funnel, collation), timed,
    counted and traced through the same hook as the runner's stages.

    The block puts `n_in`/`n_out` (and any extra figures) into the yielded dict. An exception
    propagates (fail closed) after the hook's span has recorded it; no record is emitted then,
    as for a stage that fails closed in the runner.

        with timed_step(hook, "query_hydration", "hydrator") as figures:
            query = models.query(user_id, ...)
            figures.update(n_in=0, n_out=len(query.seen_item_ids))
    """
    start = time.perf_counter()
    with hook.span(name, kind) as figures:
        yield figures
    hook.record(StageRecord(name, kind, time.perf_counter() - start,
                            int(figures.get("n_in", 0)), int(figures.get("n_out", 0))))  # type: ignore[arg-type]


def record_wait(hook: StageHook, name: str, trace: Trace, queued_ns: int, sent_ns: int, batch_size: int) -> float:
    """A request's time queued for a batched call (a span and a `wait` record); its seconds."""
    seconds = max(sent_ns - queued_ns, 0) / 1e9
    hook.wait(name, trace, queued_ns, sent_ns, batch_size)
    hook.record(StageRecord(name, "wait", seconds, 1, 1, batch_size=batch_size))
    return seconds


@dataclass(frozen=True)
class RemovalBatch:
    """The candidates one stage removed, kept as columns: building a `Removal` object per
    dropped candidate (thousands per request) cost more than the stages themselves, and only
    explain mode and tests ever look at them."""

    stage: str
    item_ids: np.ndarray
    reasons: np.ndarray | str

    def __len__(self) -> int:
        return len(self.item_ids)

    def expand(self) -> list[Removal]:
        if isinstance(self.reasons, str):
            return [Removal(int(i), self.stage, self.reasons) for i in self.item_ids.tolist()]
        return [Removal(int(i), self.stage, str(r)) for i, r in zip(self.item_ids.tolist(), self.reasons)]

    def counts(self) -> dict[str, int]:
        """Removed candidates per reason."""
        if isinstance(self.reasons, str):
            return {self.reasons: len(self.item_ids)} if len(self.item_ids) else {}
        names, n = np.unique(np.asarray(self.reasons, dtype=str), return_counts=True)
        return {str(k): int(v) for k, v in zip(names, n)}


@dataclass
class PipelineResult:
    candidates: Candidates
    removal_batches: list[RemovalBatch] = field(default_factory=list)
    records: list[StageRecord] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        """Time the stages spent on this request (a batched stage's share included, waits not)."""
        return sum(r.seconds for r in self.records if r.kind != "wait")

    @property
    def batch_size(self) -> int:
        """Requests that shared this run's batched stages (1 for a plain run)."""
        return max((r.batch_size for r in self.records), default=1)

    @property
    def removals(self) -> list[Removal]:
        """Every removal, one object per removed candidate (materialised on access)."""
        return [r for batch in self.removal_batches for r in batch.expand()]

    def removal_counts(self) -> dict[str, int]:
        """"<stage>: <reason>" -> candidates removed, without materialising removals."""
        out: dict[str, int] = {}
        for batch in self.removal_batches:
            for reason, n in batch.counts().items():
                key = f"{batch.stage}: {reason}"
                out[key] = out.get(key, 0) + n
        return out


def stage_kind(stage: object) -> str:
    for kind, method in (
        ("source", "fetch"),
        ("hydrator", "hydrate"),
        ("filter", "keep"),
        ("scorer", "score"),
        ("selector", "select"),
    ):
        if callable(getattr(stage, method, None)):
            return kind
    raise TypeError(f"{type(stage).__name__} is not a pipeline stage (no fetch/hydrate/keep/score/select)")


def _fails_open(stage: object, kind: str) -> bool:
    """Sources and filters fail open by default (a broken source loses its candidates, a broken
    filter keeps everything); hydrators, scorers and selectors fail closed. A stage may override
    with a `fail_open` attribute."""
    return bool(getattr(stage, "fail_open", kind in ("source", "filter")))


class PipelineRunner:
    """Executes `sources` then `stages` for one query.

    Example:
        runner = PipelineRunner("organic", sources=[TrendingSource(...)], stages=[TopKSelector(50)])
        result = runner.run(FeedQuery(user_id=42))
    """

    def __init__(
        self,
        name: str,
        sources: Sequence[CandidateSource],
        stages: Sequence[PostStage],
        hook: StageHook | None = None,
    ) -> None:
        for stage in [*sources, *stages]:
            stage_kind(stage)  # raises for anything that is not a stage
        names = [s.name for s in [*sources, *stages]]
        duplicated = {n for n in names if names.count(n) > 1}
        if duplicated:
            raise ValueError(f"pipeline {name!r} has duplicate stage names: {sorted(duplicated)}")
        for stage in sources:
            if stage_kind(stage) != "source":
                raise TypeError(f"{stage.name!r} is listed as a source but is a {stage_kind(stage)}")
        for stage in stages:
            if stage_kind(stage) == "source":
                raise TypeError(f"{stage.name!r} is a source listed among post-source stages")
        self.name = name
        self.sources = list(sources)
        self.stages = list(stages)
        self.hook: StageHook = hook or NullHook()

    def run(self, query: FeedQuery, candidates: Candidates | None = None) -> PipelineResult:
        """Run every stage. With `candidates` given, sources are skipped (e.g. retrieval ran elsewhere)."""
        result = PipelineResult(Candidates.empty())
        if candidates is None:
            fetched = [self._run_source(source, query, result) for source in self.sources]
            candidates = Candidates.concat(fetched)
        for stage in self.stages:
            candidates = self._run_stage(stage, query, candidates, result)
        result.candidates = candidates
        return result

    def run_batch(self, entries: Sequence[BatchEntry]) -> list[PipelineResult]:
        """Every entry through the post-source stages together, in declared order. A scorer with
        `score_batch(requests)` (a hydrator with `hydrate_batch(requests)`) takes all entries in ONE
        call (each request's record gets its share of the time, by candidate count); every other
        stage runs per entry, under that entry's trace. Results are in entry order."""
        began_ns = time.time_ns()
        results = [PipelineResult(e.candidates) for e in entries]
        for entry, result in zip(entries, results):
            if entry.queued_ns is not None:
                n = len(entry.candidates)
                self.hook.wait(BATCH_WAIT, entry.trace, entry.queued_ns, began_ns, len(entries))
                self._record(result, StageRecord(BATCH_WAIT, "wait", max(began_ns - entry.queued_ns, 0) / 1e9,
                                                 n, n, batch_size=len(entries)))
        current = [e.candidates for e in entries]
        for stage in self.stages:
            kind = stage_kind(stage)
            if kind in BATCHED and callable(getattr(stage, BATCHED[kind], None)):
                current = self._run_batched(stage, kind, entries, current, results)
                continue
            for i, entry in enumerate(entries):
                with self.hook.within(entry.trace):
                    current[i] = self._run_stage(stage, entry.query, current[i], results[i])
        for result, candidates in zip(results, current):
            result.candidates = candidates
        return results

    def _run_batched(
        self, stage: Scorer | Hydrator, kind: str, entries: Sequence[BatchEntry], current: list[Candidates],
        results: list[PipelineResult],
    ) -> list[Candidates]:
        """A batch-aware scorer or hydrator fails closed for the whole batch: one pass has one outcome."""
        sizes = [len(c) for c in current]
        start = time.perf_counter()
        with self.hook.batch_span(stage.name, kind, [e.trace for e in entries], sizes):
            columns = getattr(stage, BATCHED[kind])([(e.query, c) for e, c in zip(entries, current)])
        seconds, total = time.perf_counter() - start, max(sum(sizes), 1)
        out = []
        for candidates, produced, n, result in zip(current, columns, sizes, results):
            out.append(candidates.with_scores(produced) if kind == "scorer" else candidates.with_features(produced))
            self._record(result, StageRecord(stage.name, kind, seconds * n / total, n, n, batch_size=len(entries)))
        return out

    def _run_source(self, source: CandidateSource, query: FeedQuery, result: PipelineResult) -> Candidates:
        start = time.perf_counter()
        error = None
        with self.hook.span(source.name, "source") as attributes:
            try:
                fetched = source.fetch(query)
            except Exception as exc:  # noqa: BLE001 - failure policy decides
                if not _fails_open(source, "source"):
                    raise
                log.warning("source %s failed open: %s", source.name, exc)
                error, fetched = f"{type(exc).__name__}: {exc}", Candidates.empty()
            attributes.update(n_out=len(fetched))
        self._record(result, StageRecord(source.name, "source", time.perf_counter() - start, 0, len(fetched), error))
        return fetched

    def _run_stage(
        self, stage: PostStage, query: FeedQuery, candidates: Candidates, result: PipelineResult
    ) -> Candidates:
        kind = stage_kind(stage)
        start = time.perf_counter()
        error = None
        with self.hook.span(stage.name, kind) as attributes:
            try:
                out = self._apply(stage, kind, query, candidates, result)
            except Exception as exc:  # noqa: BLE001 - failure policy decides
                if not _fails_open(stage, kind):
                    raise
                log.warning("%s %s failed open: %s", kind, stage.name, exc)
                error, out = f"{type(exc).__name__}: {exc}", candidates
            attributes.update(n_in=len(candidates), n_out=len(out))
        self._record(result, StageRecord(stage.name, kind, time.perf_counter() - start, len(candidates), len(out), error))
        return out

    @staticmethod
    def _apply(
        stage: PostStage, kind: str, query: FeedQuery, candidates: Candidates, result: PipelineResult
    ) -> Candidates:
        if kind == "hydrator":
            return candidates.with_features(stage.hydrate(query, candidates))  # type: ignore[union-attr]
        if kind == "scorer":
            return candidates.with_scores(stage.score(query, candidates))  # type: ignore[union-attr]
        if kind == "filter":
            keep, reason = stage.keep(query, candidates)  # type: ignore[union-attr]
            keep = np.asarray(keep, dtype=bool)
            if keep.shape != (len(candidates),):
                raise ValueError(f"filter {stage.name} returned a mask of shape {keep.shape}")
            if not keep.all():
                reasons = reason if isinstance(reason, str) else np.asarray(reason, dtype=object)[~keep]
                result.removal_batches.append(RemovalBatch(stage.name, candidates.item_ids[~keep], reasons))
            return candidates.take(keep)
        chosen = np.asarray(stage.select(query, candidates), dtype=np.int64)  # type: ignore[union-attr]
        dropped_mask = np.ones(len(candidates), dtype=bool)
        dropped_mask[chosen] = False
        if dropped_mask.any():
            reason = str(getattr(stage, "removal_reason", "not selected"))  # a selector may say why
            result.removal_batches.append(RemovalBatch(stage.name, candidates.item_ids[dropped_mask], reason))
        return candidates.take(chosen)

    def _record(self, result: PipelineResult, record: StageRecord) -> None:
        result.records.append(record)
        self.hook.record(record)
