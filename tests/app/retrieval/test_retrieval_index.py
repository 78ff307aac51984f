"""AnnIndex: every kind against a brute-force reference written here."""
from __future__ import annotations

import numpy as np
import pytest

from app.retrieval.config import AnnIndexConfig
from app.retrieval.index import AnnIndex


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute_force(items: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ items.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, 1)


# Sizes small enough that each approximate kind, at these settings, must be exact.
EXACT_SETTINGS = {
    "exact": AnnIndexConfig(kind="exact"),
    "hnsw": AnnIndexConfig(kind="hnsw", hnsw_m=16, hnsw_ef_construction=200, hnsw_ef_search=400),
    "ivf": AnnIndexConfig(kind="ivf", ivf_nlist=4, ivf_nprobe=4),
}


@pytest.mark.parametrize("kind", sorted(EXACT_SETTINGS))
def test_tiny_index_returns_exact_neighbours_mapped_to_item_ids(kind: str) -> None:
    rng = np.random.default_rng(0)
    items, queries = _unit(rng, 300, 8), _unit(rng, 20, 8)
    item_ids = np.arange(300, dtype=np.int64) * 7 + 1000  # non-contiguous ids
    index = AnnIndex.build(item_ids, items, EXACT_SETTINGS[kind])

    ids, scores = index.search(queries, k=10)

    rows, expected_scores = _brute_force(items, queries, 10)
    assert ids.shape == scores.shape == (20, 10)
    np.testing.assert_array_equal(ids, item_ids[rows])
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-5)


def test_hnsw_recall_is_high_on_random_data() -> None:
    rng = np.random.default_rng(1)
    items, queries = _unit(rng, 5000, 32), _unit(rng, 100, 32)
    config = AnnIndexConfig(kind="hnsw", hnsw_m=16, hnsw_ef_construction=64, hnsw_ef_search=64)
    ids, _ = AnnIndex.build(np.arange(5000), items, config).search(queries, k=20)
    truth, _ = _brute_force(items, queries, 20)
    recall = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(ids, truth)])
    assert recall >= 0.95


def test_hnsw_search_with_k_above_ef_search_still_returns_k() -> None:
    rng = np.random.default_rng(2)
    items = _unit(rng, 500, 8)
    index = AnnIndex.build(np.arange(500), items, AnnIndexConfig(kind="hnsw", hnsw_ef_search=16))
    ids, _ = index.search(_unit(rng, 3, 8), k=200)
    assert (ids >= 0).all() and all(len(set(row)) == 200 for row in ids)


def test_k_beyond_catalogue_pads_with_minus_one_and_minus_inf() -> None:
    rng = np.random.default_rng(3)
    index = AnnIndex.build(np.array([5, 6, 7]), _unit(rng, 3, 4), AnnIndexConfig(kind="exact"))
    ids, scores = index.search(_unit(rng, 2, 4), k=5)
    assert (ids[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    assert sorted(ids[0, :3]) == [5, 6, 7]


def test_bad_inputs_are_rejected() -> None:
    rng = np.random.default_rng(4)
    index = AnnIndex.build(np.arange(10), _unit(rng, 10, 4), AnnIndexConfig(kind="exact"))
    with pytest.raises(ValueError, match="dimension"):
        index.search(_unit(rng, 1, 5), k=3)
    with pytest.raises(ValueError, match="k must be"):
        index.search(_unit(rng, 1, 4), k=0)
    with pytest.raises(ValueError, match="vectors for"):
        AnnIndex.build(np.arange(3), _unit(rng, 4, 4))
    with pytest.raises(ValueError, match="no items"):
        AnnIndex.build(np.zeros(0, np.int64), np.zeros((0, 4), np.float32))


@pytest.mark.parametrize("kind", sorted(EXACT_SETTINGS))
def test_save_load_round_trip(kind: str, tmp_path) -> None:
    rng = np.random.default_rng(5)
    items, queries = _unit(rng, 400, 8), _unit(rng, 5, 8)
    index = AnnIndex.build(np.arange(400) + 1, items, EXACT_SETTINGS[kind])
    index.save(tmp_path / "index")

    loaded = AnnIndex.load(tmp_path / "index")

    assert loaded.config == index.config and len(loaded) == 400
    for a, b in zip(index.search(queries, 7), loaded.search(queries, 7)):
        np.testing.assert_array_equal(a, b)


def test_load_applies_search_time_settings_and_rejects_another_kind(tmp_path) -> None:
    rng = np.random.default_rng(6)
    built = AnnIndex.build(np.arange(400), _unit(rng, 400, 8), AnnIndexConfig(kind="ivf", ivf_nlist=8, ivf_nprobe=1))
    built.save(tmp_path)
    loaded = AnnIndex.load(tmp_path, AnnIndexConfig(kind="ivf", ivf_nlist=8, ivf_nprobe=8))
    queries = _unit(rng, 10, 8)
    rows, _ = _brute_force(_unit(np.random.default_rng(6), 400, 8), queries, 5)
    np.testing.assert_array_equal(loaded.search(queries, 5)[0], rows)  # nprobe = nlist: exact
    with pytest.raises(ValueError, match="holds a ivf index"):
        AnnIndex.load(tmp_path, AnnIndexConfig(kind="hnsw"))


def test_search_params_change_in_place() -> None:
    rng = np.random.default_rng(7)
    items, queries = _unit(rng, 2000, 8), _unit(rng, 30, 8)
    index = AnnIndex.build(np.arange(2000), items, AnnIndexConfig(kind="ivf", ivf_nlist=32, ivf_nprobe=1))
    truth, _ = _brute_force(items, queries, 10)
    coarse = np.mean([len(set(a) & set(b)) for a, b in zip(index.search(queries, 10)[0], truth)])
    index.set_search_params(ivf_nprobe=32)
    np.testing.assert_array_equal(index.search(queries, 10)[0], truth)
    assert coarse < 10 and index.config.ivf_nprobe == 32
