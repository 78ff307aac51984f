"""Candidate sources, engagement state, the merge and the seen-item filter, on small worked examples."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.pipeline import Candidates, FeedQuery, PipelineRunner
from app.retrieval.config import AnnIndexConfig, SourcesConfig
from app.retrieval.engagement import EngagementLog, ItemNeighbours, decay
from app.retrieval.index import AnnIndex
from app.retrieval.sources import (
    SOURCE_NAMES,
    CoEngagementSource,
    EmbeddingAnnSource,
    SeenItemFilter,
    SocialGraph,
    SocialSource,
    SourceFeatureHydrator,
    SourceMerger,
    TrendingSource,
    merge_candidates,
    select_with_quotas,
    source_candidates,
)

DAY = 86_400.0
NOW = 100 * DAY


def _events(rows: list[tuple[int, int, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def _assert_tagged(cands: Candidates, source: str) -> None:
    assert len(cands) > 0
    assert (cands.sources == source).all()
    assert np.isfinite(cands.source_scores).all()
    assert list(cands.features) == ["close_friend"]
    assert (np.diff(cands.source_scores) <= 0).all(), "best first"


# ----------------------------------------------------------------------------- engagement state


def test_engagement_log_reads_as_of_now_and_updates_live() -> None:
    log = EngagementLog(_events([(1, 10, 1 * DAY), (1, 11, 2 * DAY), (1, 12, 5 * DAY)]))
    items, ts = log.recent_items(1, now=3 * DAY, window_s=None, limit=10)
    np.testing.assert_array_equal(items, [11, 10])  # newest first, nothing after now
    np.testing.assert_array_equal(log.recent_items(1, 3 * DAY, window_s=1.5 * DAY, limit=10)[0], [11])
    np.testing.assert_array_equal(log.recent_items(1, 9 * DAY, None, limit=1)[0], [12])

    assert log.add(_events([(1, 13, 0.5 * DAY), (2, 10, 6 * DAY)])) == 2  # one late event
    np.testing.assert_array_equal(log.recent_items(1, 9 * DAY, None, 10)[0], [12, 11, 10, 13])
    assert len(log) == 5 and len(log.interactions()) == 5
    assert log.recent_items(3, NOW, None, 10)[0].size == 0


def test_trending_is_decayed_count_as_of_now() -> None:
    half_life = 2 * DAY
    log = EngagementLog(_events([(1, 7, NOW), (2, 7, NOW - 2 * DAY), (3, 8, NOW - 1 * DAY), (4, 9, NOW + DAY)]))
    items, counts = log.trending(NOW, half_life, horizon_s=20 * DAY, k=10)
    np.testing.assert_array_equal(items, [7, 8])  # item 9 is in the future
    np.testing.assert_allclose(counts, [1.0 + 0.5, 2 ** -0.5], rtol=1e-6)
    log.add(_events([(5, 8, NOW), (6, 8, NOW)]))  # live update invalidates the cached result
    assert log.trending(NOW, half_life, 20 * DAY, 1)[0].tolist() == [8]


def test_trending_on_a_moving_clock_equals_a_fresh_computation() -> None:
    """The incremental window moves with the clock (forward and back): events enter as time
    passes them (or by add) and leave as the horizon passes them; every answer is a fresh log's."""
    rng = np.random.default_rng(0)
    rows = [(int(u), int(i), float(t)) for u, i, t in
            zip(rng.integers(1, 30, 400), rng.integers(1, 60, 400), rng.uniform(NOW - 30 * DAY, NOW + 5 * DAY, 400))]
    log = EngagementLog(_events(rows))
    half_life, horizon = 3 * DAY, 10 * DAY
    for now in (NOW, NOW + 1.0, NOW + 60.0, NOW - 0.5 * DAY, NOW + 2 * DAY, NOW + 2 * DAY + 1.0, NOW + 40 * DAY):
        fresh = EngagementLog(_events(rows)).trending(now, half_life, horizon, 25)
        items, counts = log.trending(now, half_life, horizon, 25)
        np.testing.assert_array_equal(items, fresh[0])
        np.testing.assert_allclose(counts, fresh[1], rtol=1e-5)
        assert counts.dtype == np.float32
    log.add(_events([(1, 59, NOW + 40 * DAY)] * 3))
    assert log.trending(NOW + 40 * DAY, half_life, horizon, 1)[0].tolist() == [59]


def test_item_neighbours_cosine_with_shrink() -> None:
    inter = _events([(1, 1, 0), (1, 2, 0), (2, 1, 0), (2, 2, 0), (3, 1, 0), (3, 3, 0)])
    nb = ItemNeighbours.build(inter, n_neighbours=5, shrink=1.0)
    ids, sims = nb.of(1)
    np.testing.assert_array_equal(ids, [2, 3])
    np.testing.assert_allclose(sims, [2 / (np.sqrt(3 * 2) + 1), 1 / (np.sqrt(3 * 1) + 1)], rtol=1e-6)
    assert nb.of(42)[0].size == 0


def test_saved_neighbours_load_mapped_and_only_for_the_settings_they_were_built_with(tmp_path) -> None:
    rng = np.random.default_rng(6)
    inter = _events([(int(u), int(i), 0) for u, i in zip(rng.integers(0, 40, 600), rng.integers(0, 90, 600))])
    built = ItemNeighbours.build(inter, n_neighbours=7, shrink=2.0)
    built.save(tmp_path)
    loaded = ItemNeighbours.load(tmp_path, 7, 2.0)
    for name in ("item_ids", "indptr", "neighbours", "similarities"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(built, name))
        assert not getattr(loaded, name).flags.writeable  # mapped read-only: shared by a node's replicas
    for item in (0, 5, 89, 1000):
        for a, b in zip(loaded.of(item), built.of(item)):
            np.testing.assert_array_equal(a, b)
    assert ItemNeighbours.load(tmp_path, 8, 2.0) is None  # other settings: the caller rebuilds
    assert ItemNeighbours.load(tmp_path, 7, 1.0) is None
    assert ItemNeighbours.load(tmp_path / "absent", 7, 2.0) is None  # an artifact from before


# ----------------------------------------------------------------------------- sources


def test_ann_source_uses_query_embedding_over_stored_and_overfetches_seen() -> None:
    vectors = np.eye(4, dtype=np.float32)
    index = AnnIndex.build(np.array([10, 20, 30, 40]), vectors, AnnIndexConfig(kind="exact"))
    stored = {1: vectors[0]}
    source = EmbeddingAnnSource(index, stored.get, SourcesConfig(ann_k=1))

    _assert_tagged(source.fetch(FeedQuery(user_id=1)), "ann")
    assert source.fetch(FeedQuery(user_id=1)).item_ids.tolist() == [10]
    dynamic = FeedQuery(user_id=1, user_embedding=vectors[2])
    assert source.fetch(dynamic).item_ids.tolist() == [30]
    assert len(source.fetch(FeedQuery(user_id=1, seen_item_ids=frozenset({10})))) == 2
    assert len(source.fetch(FeedQuery(user_id=2))) == 0  # no embedding: no candidates


def test_social_source_scores_weight_times_decay_and_flags_close_friends() -> None:
    edges = pd.DataFrame(
        {"user_id": [1, 1], "friend_id": [2, 3], "weight": [0.5, 1.0], "close": [True, False]}
    )
    log = EngagementLog(_events([
        (2, 100, NOW), (3, 100, NOW - 7 * DAY), (3, 200, NOW),
        (3, 300, NOW - 90 * DAY),  # outside the window
        (4, 400, NOW),  # not a friend
    ]))
    config = SourcesConfig(social_window_s=30 * DAY, social_half_life_s=7 * DAY)
    cands = SocialSource(SocialGraph(edges), log, config).fetch(FeedQuery(user_id=1, now=NOW))

    _assert_tagged(cands, "social")
    got = dict(zip(cands.item_ids.tolist(), cands.source_scores.tolist()))
    assert got == pytest.approx({100: 0.5 + 0.5, 200: 1.0})
    close = dict(zip(cands.item_ids.tolist(), cands.features["close_friend"].tolist()))
    assert close == {100: True, 200: False}
    # The query may mark more close friends than the graph (session knowledge).
    more = SocialSource(SocialGraph(edges), log, config).fetch(FeedQuery(1, now=NOW, close_friend_ids=frozenset({3})))
    assert more.features["close_friend"].all()
    assert len(SocialSource(SocialGraph(edges), log, config).fetch(FeedQuery(user_id=9, now=NOW))) == 0


def test_trending_source_respects_k_and_now() -> None:
    log = EngagementLog(_events([(u, 1 + u % 3, NOW - u * 3600) for u in range(30)]))
    source = TrendingSource(log, SourcesConfig(trending_k=2, trending_half_life_s=DAY))
    cands = source.fetch(FeedQuery(user_id=1, now=NOW))
    _assert_tagged(cands, "trending")
    assert len(cands) == 2
    assert len(source.fetch(FeedQuery(user_id=1, now=0.0))) == 0  # nothing had happened yet


def test_coengagement_source_sums_neighbour_similarity_of_recent_items() -> None:
    inter = _events([(1, 1, 0), (1, 2, 0), (2, 1, 0), (2, 2, 0), (2, 3, 0), (3, 3, 0), (3, 4, 0)])
    nb = ItemNeighbours.build(inter, n_neighbours=10, shrink=0.0)
    log = EngagementLog(_events([(9, 1, NOW - 10), (9, 3, NOW - 5)]))
    cands = CoEngagementSource(nb, log, SourcesConfig()).fetch(FeedQuery(user_id=9, now=NOW))

    _assert_tagged(cands, "coengagement")
    assert set(cands.item_ids.tolist()) == {2, 4}  # seeds 1 and 3 are not candidates
    expected_2 = nb.of(1)[1][nb.of(1)[0] == 2][0] + nb.of(3)[1][nb.of(3)[0] == 2][0]
    assert cands.source_scores[cands.item_ids == 2][0] == pytest.approx(expected_2, rel=1e-6)
    assert len(CoEngagementSource(nb, log, SourcesConfig()).fetch(FeedQuery(user_id=8, now=NOW))) == 0


# ----------------------------------------------------------------------------- merge


def _parts() -> list[Candidates]:
    return [
        source_candidates("ann", np.array([1, 2, 3, 4]), np.array([0.9, 0.8, 0.7, 0.6])),
        source_candidates("social", np.array([3, 5]), np.array([2.0, 1.0]), np.array([True, False])),
        source_candidates("trending", np.array([6, 1, 7]), np.array([30.0, 20.0, 10.0])),
    ]


def test_merge_dedupes_and_records_every_source() -> None:
    config = SourcesConfig(quotas={"ann": 10, "social": 10, "trending": 10}, total_candidates=100)
    merged = merge_candidates(_parts(), config)

    assert sorted(merged.item_ids.tolist()) == [1, 2, 3, 4, 5, 6, 7]
    row = {int(i): k for k, i in enumerate(merged.item_ids)}
    assert merged.features["n_sources"][row[3]] == 2 and merged.features["n_sources"][row[2]] == 1
    assert merged.features["src_ann"][row[3]] == pytest.approx(0.7)
    assert merged.features["src_social"][row[3]] == pytest.approx(2.0)
    assert merged.features["src_trending"][row[3]] == 0.0  # not produced: filled with 0
    assert merged.features["src_coengagement"].sum() == 0.0
    assert merged.features["close_friend"][row[3]]  # carried over even if the kept row is ann's
    assert merged.sources[row[3]] == "social"  # its best row: top of social, third of ann
    assert merged.sources[row[1]] == "ann"  # top of ann beats second of trending


def test_merge_applies_quotas_total_seen_and_backfill() -> None:
    strict = SourcesConfig(quotas={"ann": 2, "social": 1, "trending": 1}, total_candidates=100, backfill=False)
    merged = merge_candidates(_parts(), strict, seen_item_ids=frozenset({6}))
    assert 6 not in merged.item_ids
    counts = pd.Series(merged.sources).value_counts().to_dict()
    assert counts == {"ann": 2, "social": 1, "trending": 1}

    backfilled = merge_candidates(_parts(), strict.model_copy(update={"backfill": True}))
    assert sorted(backfilled.item_ids.tolist()) == [1, 2, 3, 4, 5, 6, 7]
    assert len(merge_candidates(_parts(), strict.model_copy(update={"total_candidates": 3}))) == 3


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.tuples(st.sampled_from(["ann", "social", "trending", "other"]), st.integers(0, 30),
                            st.floats(-5, 5)), max_size=60),
    quota=st.integers(0, 10),
    total=st.integers(1, 40),
    backfill=st.booleans(),
)
def test_quota_selection_properties(rows, quota, total, backfill) -> None:
    cands = Candidates(
        np.array([r[1] for r in rows], np.int64), np.array([r[0] for r in rows], object),
        np.array([r[2] for r in rows], np.float32),
    )
    quotas = {"ann": quota, "social": quota, "trending": quota}
    chosen = select_with_quotas(cands, quotas, total, backfill)
    items = cands.item_ids[chosen]
    assert len(set(items.tolist())) == len(items) <= total  # no duplicates, bounded size
    if not backfill:
        for source, limit in quotas.items():
            assert (cands.sources[chosen] == source).sum() <= limit
    if backfill:
        assert len(items) == min(total, len(set(cands.item_ids.tolist())))  # every slot used when possible


def _greedy_quota_reference(sources, items, scores, quotas, total, backfill) -> list[int]:
    """select_with_quotas written plainly: rank within source, order by depth, greedy pass."""
    n = len(items)
    rank = [0] * n
    for source in set(sources):
        rows = sorted((i for i in range(n) if sources[i] == source), key=lambda i: (-scores[i], items[i], i))
        for r, i in enumerate(rows):
            rank[i] = r
    quota = [quotas.get(s, total) for s in sources]
    tie = [SOURCE_NAMES.index(s) if s in SOURCE_NAMES else len(SOURCE_NAMES) for s in sources]
    depth = [rank[i] / max(quota[i], 1) if quota[i] > 0 else float("inf") for i in range(n)]
    order = sorted(range(n), key=lambda i: (depth[i], rank[i], tie[i], items[i], i))
    chosen, taken, used = [], set(), {}
    for i in order:
        if len(chosen) == total:
            break
        if items[i] not in taken and used.get(sources[i], 0) < quota[i]:
            chosen.append(i)
            taken.add(items[i])
            used[sources[i]] = used.get(sources[i], 0) + 1
    for i in order if backfill else []:
        if len(chosen) < total and items[i] not in taken:
            chosen.append(i)
            taken.add(items[i])
    return chosen


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(st.tuples(st.sampled_from(["ann", "social", "trending", "other"]), st.integers(0, 30),
                            st.sampled_from([-1.0, 0.0, 0.5, 2.0, 3.25])), max_size=60),
    quota=st.one_of(st.integers(0, 10), st.integers(60, 100)),  # binding, or never binding
    total=st.one_of(st.integers(1, 40), st.just(200)),
    backfill=st.booleans(),
)
def test_quota_selection_matches_the_greedy_reference(rows, quota, total, backfill) -> None:
    sources, items, scores = [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
    cands = Candidates(np.array(items, np.int64), np.array(sources, object), np.array(scores, np.float32))
    quotas = {"ann": quota, "social": quota, "trending": quota}
    chosen = select_with_quotas(cands, quotas, total, backfill).tolist()
    assert chosen == _greedy_quota_reference(sources, items, scores, quotas, total, backfill)


def test_seen_filter_and_merge_stages_run_in_the_pipeline_runner() -> None:
    class Fixed:
        def __init__(self, cands: Candidates) -> None:
            self.cands, self.name = cands, str(cands.sources[0])

        def fetch(self, query: FeedQuery) -> Candidates:
            return self.cands

    config = SourcesConfig(quotas={"ann": 3, "social": 3, "trending": 3}, total_candidates=5)
    runner = PipelineRunner(
        "retrieval",
        sources=[Fixed(p) for p in _parts()],
        stages=[SourceFeatureHydrator(), SeenItemFilter(), SourceMerger(config)],
    )
    result = runner.run(FeedQuery(user_id=1, seen_item_ids=frozenset({1, 2})))

    assert len(result.candidates) == 5
    assert not set(result.candidates.item_ids.tolist()) & {1, 2}
    assert {r.reason for r in result.removals if r.stage == "seen_items"} == {"seen"}
    assert {"n_sources", "src_ann", "src_social", "src_trending", "close_friend"} <= set(result.candidates.features)


def test_decay_halves_per_half_life() -> None:
    np.testing.assert_allclose(decay(np.array([0.0, 1.0, 2.0, -1.0]), 1.0), [1.0, 0.5, 0.25, 1.0])
