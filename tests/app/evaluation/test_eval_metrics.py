"""Metrics against naive per-user reference implementations, plus properties (hypothesis)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.evaluation import metrics as m
from app.evaluation.sets import PAD, RaggedItems


# ---- naive references: one user at a time, straight from the textbook definitions ----------

def ref_recall(row, rel, k):
    return len([i for i in row[:k] if i in rel]) / len(rel)


def ref_ndcg(row, rel, k):
    dcg = sum(1 / math.log2(pos + 2) for pos, i in enumerate(row[:k]) if i in rel)
    idcg = sum(1 / math.log2(pos + 2) for pos in range(min(k, len(rel))))
    return dcg / idcg


def ref_hit(row, rel, k):
    return float(any(i in rel for i in row[:k]))


def ref_mrr(row, rel, k):
    for pos, i in enumerate(row[:k]):
        if i in rel:
            return 1 / (pos + 1)
    return 0.0


def ref_gini(counts):
    x = [float(c) for c in counts]
    mean = sum(x) / len(x)
    return sum(abs(a - b) for a in x for b in x) / (2 * len(x) ** 2 * mean)


@st.composite
def ranking_problems(draw):
    n_items = draw(st.integers(1, 25))
    k_cols = draw(st.integers(1, 12))
    n_users = draw(st.integers(1, 6))
    rows, truth = [], []
    for _ in range(n_users):
        ranked = draw(st.permutations(range(n_items)))
        length = draw(st.integers(0, min(k_cols, n_items)))
        rows.append(list(ranked[:length]) + [PAD] * (k_cols - length))
        truth.append(sorted(draw(st.sets(st.integers(0, n_items - 1), min_size=1))))
    return np.array(rows, dtype=np.int64), truth, n_items


@settings(max_examples=150, deadline=None)
@given(ranking_problems(), st.integers(1, 14))
def test_accuracy_metrics_match_reference_and_lie_in_unit_interval(problem, k):
    topk, truth, _ = problem
    hits = m.hit_matrix(topk, RaggedItems.from_lists(truth))
    n_rel = np.array([len(t) for t in truth])
    got = {
        "recall": m.recall_at_k(hits, n_rel, k), "ndcg": m.ndcg_at_k(hits, n_rel, k),
        "hit": m.hit_rate_at_k(hits, k), "mrr": m.mrr_at_k(hits, k),
    }
    refs = {"recall": ref_recall, "ndcg": ref_ndcg, "hit": ref_hit, "mrr": ref_mrr}
    for name, values in got.items():
        expected = [refs[name](list(row), set(rel), k) for row, rel in zip(topk, truth)]
        np.testing.assert_allclose(values, expected, rtol=1e-12, atol=1e-12, err_msg=name)
        assert ((values >= 0) & (values <= 1 + 1e-12)).all()
    # A longer cut-off never lowers recall or hit rate.
    assert (m.recall_at_k(hits, n_rel, k + 1) >= got["recall"]).all()
    assert (m.hit_rate_at_k(hits, k + 1) >= got["hit"]).all()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sets(st.integers(0, 40), min_size=1, max_size=15), min_size=1, max_size=5), st.integers(1, 20))
def test_perfect_ranking_scores_one(truth_sets, k):
    truth = [sorted(t) for t in truth_sets]
    width = max(len(t) for t in truth) + 3
    # Relevant items first, then irrelevant ones.
    topk = np.array([t + [100 + j for j in range(width - len(t))] for t in truth], dtype=np.int64)
    hits = m.hit_matrix(topk, RaggedItems.from_lists(truth))
    n_rel = np.array([len(t) for t in truth])
    np.testing.assert_allclose(m.ndcg_at_k(hits, n_rel, k), 1.0)
    np.testing.assert_allclose(m.hit_rate_at_k(hits, k), 1.0)
    np.testing.assert_allclose(m.mrr_at_k(hits, k), 1.0)
    # Denominator |rel|: recall@k is capped at k / |rel| when more items are relevant than fit.
    np.testing.assert_allclose(m.recall_at_k(hits, n_rel, k), np.minimum(k, n_rel) / n_rel)


def test_worked_example():
    topk = np.array([[5, 3, 9, PAD]])
    truth = RaggedItems.from_lists([[3, 7]])
    hits = m.hit_matrix(topk, truth)
    assert hits.tolist() == [[False, True, False, False]]
    assert m.recall_at_k(hits, np.array([2]), 2)[0] == 0.5
    assert m.mrr_at_k(hits, 10)[0] == 0.5
    assert m.ndcg_at_k(hits, np.array([2]), 10)[0] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))


def test_users_without_relevant_items_are_rejected():
    hits = np.zeros((1, 3), dtype=bool)
    with pytest.raises(ValueError, match="relevant"):
        m.recall_at_k(hits, np.array([0]), 3)
    with pytest.raises(ValueError, match="shape"):
        m.hit_matrix(np.zeros((2, 3), np.int64), RaggedItems.from_lists([[1]]))


@settings(max_examples=100, deadline=None)
@given(ranking_problems(), st.integers(1, 14))
def test_beyond_accuracy_metrics_match_reference(problem, k):
    topk, _, n_items = problem
    catalogue = np.arange(n_items + 2)  # two items nobody can be shown
    shown = [i for row in topk for i in row[:k] if i != PAD]
    assert m.coverage_at_k(topk, k, catalogue) == pytest.approx(len(set(shown)) / len(catalogue))
    counts = [shown.count(i) for i in catalogue]
    assert m.exposure_counts(topk, k, catalogue).tolist() == counts
    g = m.gini_at_k(topk, k, catalogue)
    if shown:
        assert g == pytest.approx(ref_gini(counts))
        assert 0 <= g <= (len(catalogue) - 1) / len(catalogue) + 1e-12
    else:
        assert math.isnan(g)
    pop_ids = np.arange(0, n_items, 2)  # odd items have no training count
    pop_counts = pop_ids * 3 + 1
    lookup = dict(zip(pop_ids.tolist(), pop_counts.tolist()))
    got = m.mean_log_popularity(topk, k, pop_ids, pop_counts)
    if shown:
        assert got == pytest.approx(sum(math.log1p(lookup.get(i, 0)) for i in shown) / len(shown))
    else:
        assert math.isnan(got)


def test_gini_extremes():
    assert m.gini(np.array([4, 4, 4, 4])) == 0.0
    assert m.gini(np.array([0, 0, 0, 8])) == pytest.approx(3 / 4)
    assert math.isnan(m.gini(np.zeros(3)))


def test_metric_names_come_from_one_place():
    assert m.metric_name("ndcg", 10) == "ndcg@10"
