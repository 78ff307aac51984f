import numpy as np
import pytest

from app.pipeline import Candidates, FeedQuery, PipelineRunner


class FixedSource:
    def __init__(self, name, ids, fail=False):
        self.name, self.ids, self.fail = name, ids, fail

    def fetch(self, query):
        if self.fail:
            raise RuntimeError("backend down")
        return Candidates.from_source(self.name, np.array(self.ids), np.ones(len(self.ids)))


class EvenFilter:
    name = "even_filter"

    def keep(self, query, candidates):
        return candidates.item_ids % 2 == 0, "odd"


class IdScorer:
    name = "id_scorer"

    def score(self, query, candidates):
        return {"final": candidates.item_ids.astype(np.float32)}


class BrokenScorer:
    name = "broken_scorer"

    def score(self, query, candidates):
        raise RuntimeError("model missing")


class ReverseSelector:
    name = "reverse_selector"

    def select(self, query, candidates):
        return np.argsort(-candidates.scores["final"])[:2]


class Recorder:
    def __init__(self):
        self.records, self.spans = [], []

    def span(self, name, kind):
        import contextlib

        @contextlib.contextmanager
        def cm():
            attributes = {}
            yield attributes
            self.spans.append((name, kind, attributes))

        return cm()

    def record(self, record):
        self.records.append(record)


def test_runner_runs_stages_in_order_and_records_removals():
    hook = Recorder()
    runner = PipelineRunner(
        "t", [FixedSource("a", [1, 2, 3, 4]), FixedSource("b", [6])], [EvenFilter(), IdScorer(), ReverseSelector()], hook
    )
    result = runner.run(FeedQuery(user_id=1))
    assert result.candidates.item_ids.tolist() == [6, 4]
    assert result.candidates.sources.tolist() == ["b", "a"]
    reasons = {(r.item_id, r.stage, r.reason) for r in result.removals}
    assert (1, "even_filter", "odd") in reasons and (2, "reverse_selector", "not selected") in reasons
    assert [(r.name, r.n_in, r.n_out) for r in result.records] == [
        ("a", 0, 4), ("b", 0, 1), ("even_filter", 5, 3), ("id_scorer", 3, 3), ("reverse_selector", 3, 2)
    ]
    assert [s[0] for s in hook.spans] == ["a", "b", "even_filter", "id_scorer", "reverse_selector"]
    assert hook.spans[2][2] == {"n_in": 5, "n_out": 3}


def test_a_failing_source_fails_open_and_is_recorded():
    runner = PipelineRunner("t", [FixedSource("a", [2]), FixedSource("down", [4], fail=True)], [IdScorer()])
    result = runner.run(FeedQuery(user_id=1))
    assert result.candidates.item_ids.tolist() == [2]
    assert "backend down" in result.records[1].error


def test_a_failing_scorer_fails_closed():
    runner = PipelineRunner("t", [FixedSource("a", [2])], [BrokenScorer()])
    with pytest.raises(RuntimeError, match="model missing"):
        runner.run(FeedQuery(user_id=1))


def test_pipeline_declaration_errors_fail_at_build_time():
    with pytest.raises(ValueError, match="duplicate"):
        PipelineRunner("t", [FixedSource("a", [1]), FixedSource("a", [2])], [])
    with pytest.raises(TypeError, match="source"):
        PipelineRunner("t", [IdScorer()], [])
    with pytest.raises(TypeError, match="not a pipeline stage"):
        PipelineRunner("t", [], [object()])


def test_candidates_reject_misaligned_columns():
    with pytest.raises(ValueError, match="rows"):
        Candidates(np.array([1, 2]), np.array(["a", "a"], dtype=object), np.ones(2), features={"x": np.ones(3)})


def test_concat_keeps_columns_aligned():
    a = Candidates.from_source("a", np.array([1, 2]), np.array([0.1, 0.2])).with_features({"f": np.array([1.0, 2.0])})
    b = Candidates.from_source("b", np.array([3]), np.array([0.3])).with_features({"f": np.array([3.0])})
    both = Candidates.concat([a, b])
    assert both.item_ids.tolist() == [1, 2, 3] and both.features["f"].tolist() == [1.0, 2.0, 3.0]
    assert both.take(np.array([2, 0])).sources.tolist() == ["b", "a"]


class CountingBatchScorer:
    """A batch-aware scorer: score = item id × the request's user id; counts its calls."""

    name = "batch_scorer"

    def __init__(self):
        self.batch_calls, self.batch_sizes = 0, []

    def score(self, query, candidates):
        return self.score_batch([(query, candidates)])[0]

    def score_batch(self, requests):
        self.batch_calls += 1
        self.batch_sizes.append(len(requests))
        return [{"final": (c.item_ids * q.user_id).astype(np.float32)} for q, c in requests]


class BatchRecorder(Recorder):
    def __init__(self):
        super().__init__()
        self.batch_spans, self.waits, self.within_traces = [], [], []

    def batch_span(self, name, kind, traces, sizes):
        import contextlib

        self.batch_spans.append((name, kind, list(traces), list(sizes)))
        return contextlib.nullcontext()

    def within(self, trace):
        import contextlib

        self.within_traces.append(dict(trace))
        return contextlib.nullcontext()

    def wait(self, name, trace, start_ns, end_ns, batch_size):
        self.waits.append((name, dict(trace), end_ns - start_ns, batch_size))


def test_run_batch_scores_every_request_in_one_call_and_matches_plain_runs():
    from app.pipeline import BATCH_WAIT, BatchEntry

    scorer, hook = CountingBatchScorer(), BatchRecorder()
    runner = PipelineRunner("ranking", [], [EvenFilter(), scorer, ReverseSelector()], hook)
    requests = [(FeedQuery(user_id=u), Candidates.from_source("s", np.arange(1, 9), np.ones(8))) for u in (1, 2, 3)]
    entries = [BatchEntry(q, c, {"traceparent": f"t{q.user_id}"}, queued_ns=0) for q, c in requests]
    results = runner.run_batch(entries)
    assert scorer.batch_calls == 1 and scorer.batch_sizes == [3]
    for (query, candidates), result in zip(requests, results):
        alone = runner.run(query, candidates)
        assert result.candidates.item_ids.tolist() == alone.candidates.item_ids.tolist() == [8, 6]
        assert [(r.name, r.kind) for r in result.records] == [(BATCH_WAIT, "wait"), ("even_filter", "filter"),
                                                                  ("batch_scorer", "scorer"), ("reverse_selector", "selector")]
        assert result.batch_size == 3 and result.removal_counts() == alone.removal_counts()
        assert result.seconds == pytest.approx(sum(r.seconds for r in result.records[1:]))
    # The pass's time is shared by candidate count: equal candidates, equal shares.
    shares = [r.records[2].seconds for r in results]
    assert shares[0] == pytest.approx(shares[1]) == pytest.approx(shares[2])
    assert hook.batch_spans == [("batch_scorer", "scorer", [e.trace for e in entries], [4, 4, 4])]
    assert [w[1] for w in hook.waits] == [e.trace for e in entries] and all(w[3] == 3 for w in hook.waits)
    # Per-request stages run under their request's trace.
    assert hook.within_traces.count({"traceparent": "t2"}) == 2


def test_a_failing_batched_scorer_fails_the_whole_batch():
    from app.pipeline import BatchEntry

    class Broken(CountingBatchScorer):
        def score_batch(self, requests):
            raise RuntimeError("model missing")

    runner = PipelineRunner("ranking", [], [Broken()], BatchRecorder())
    entry = BatchEntry(FeedQuery(user_id=1), Candidates.from_source("s", np.arange(3), np.ones(3)))
    with pytest.raises(RuntimeError, match="model missing"):
        runner.run_batch([entry, entry])
