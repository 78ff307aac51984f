"""AnnIndex: every kind against a brute-force reference written here."""
from __future__ import annotations

import faiss
import numpy as np
import pytest
from pydantic import ValidationError

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
    # every list probed and a shortlist (k x 64) longer than the catalogue: the re-ranking is exact
    "ivfpq": AnnIndexConfig(kind="ivfpq", ivf_nlist=4, ivf_nprobe=4, ivfpq_m=4, ivfpq_bits=4, ivfpq_k_factor=64),
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


def _clustered(rng: np.random.Generator, n: int, d: int, clusters: int = 50) -> np.ndarray:
    """Unit vectors around random centres: neighbourhoods like learned embeddings, not uniform noise."""
    centres = rng.normal(size=(clusters, d))
    x = (centres[rng.integers(clusters, size=n)] + 0.6 * rng.normal(size=(n, d))).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth)]))


# 20k clustered items in 32-d, 8 sub-quantizers of 4 dimensions; 10k training vectors is FAISS's
# minimum for 256 centroids per codebook without a warning (and keeps each build to about a second).
IVFPQ = AnnIndexConfig(
    kind="ivfpq", ivf_nlist=64, ivf_nprobe=16, ivf_train_sample=10_000, ivfpq_m=8, ivfpq_k_factor=4
)


@pytest.fixture(scope="module")
def ivfpq_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(8)
    items, queries = _clustered(rng, 20_000, 32), _clustered(rng, 50, 32)
    return items, queries, _brute_force(items, queries, 100)[0]


@pytest.fixture(scope="module")
def ivfpq_indexes(ivfpq_data) -> dict[str, AnnIndex]:
    """One index per refine mode, built once (tests must not change their search params)."""
    items = ivfpq_data[0]
    return {
        refine: AnnIndex.build(np.arange(len(items)) + 10, items, IVFPQ.model_copy(update={"ivfpq_refine": refine}))
        for refine in ("flat", "fp16", "sq8", "none")
    }


@pytest.mark.parametrize("refine", ["flat", "fp16", "sq8"])
def test_ivfpq_recall_against_exact_is_high(refine: str, ivfpq_data, ivfpq_indexes) -> None:
    items, queries, truth = ivfpq_data
    ids, scores = ivfpq_indexes[refine].search(queries, k=100)
    assert _recall(ids - 10, truth) >= 0.9
    assert (np.diff(scores, axis=1) <= 0).all()  # best first
    if refine == "flat":  # the scores are the exact inner products of the items returned
        exact = np.einsum("qd,qkd->qk", queries, items[ids - 10])
        np.testing.assert_allclose(scores, exact, rtol=1e-5, atol=1e-5)


def test_ivfpq_re_ranking_beats_pq_scores_alone_and_costs_memory(ivfpq_data, ivfpq_indexes) -> None:
    _, queries, truth = ivfpq_data
    recall = {refine: _recall(ivfpq_indexes[refine].search(queries, 100)[0] - 10, truth) for refine in ivfpq_indexes}
    assert recall["none"] < min(recall["flat"], recall["fp16"], recall["sq8"])
    size = {refine: index.serialized_bytes() for refine, index in ivfpq_indexes.items()}
    # per item: 8 code bytes + 8 id bytes; sq8 adds 32, fp16 64, flat 128
    assert size["none"] < size["sq8"] < size["fp16"] < size["flat"]
    assert (size["flat"] - size["none"]) / 20_000 == pytest.approx(128, abs=1)


def test_ivfpq_search_params_change_nprobe_and_k_factor_in_place(ivfpq_data) -> None:
    items, queries, truth = ivfpq_data
    index = AnnIndex.build(
        np.arange(len(items)), items, IVFPQ.model_copy(update={"ivf_nprobe": 1, "ivfpq_k_factor": 1})
    )
    coarse = _recall(index.search(queries, 100)[0], truth)
    index.set_search_params(ivf_nprobe=64)
    wider = _recall(index.search(queries, 100)[0], truth)
    index.set_search_params(ivfpq_k_factor=8)
    assert index.config.ivf_nprobe == 64 and index.config.ivfpq_k_factor == 8
    assert coarse < wider < _recall(index.search(queries, 100)[0], truth)
    with pytest.raises(ValidationError):
        index.set_search_params(ivfpq_k_factor=0.5)


def test_ivfpq_save_load_keeps_results_and_applies_a_new_k_factor(tmp_path, ivfpq_data, ivfpq_indexes) -> None:
    queries = ivfpq_data[1]
    built = ivfpq_indexes["flat"]
    built.save(tmp_path)
    assert built.serialized_bytes() == (tmp_path / "index.faiss").stat().st_size

    loaded = AnnIndex.load(tmp_path)

    assert loaded.config == built.config
    for a, b in zip(built.search(queries, 100), loaded.search(queries, 100)):
        np.testing.assert_array_equal(a, b)
    wider = AnnIndex.load(tmp_path, IVFPQ.model_copy(update={"ivfpq_k_factor": 16}))
    loaded.set_search_params(ivfpq_k_factor=16)
    assert wider.config.ivfpq_k_factor == 16
    for a, b in zip(loaded.search(queries, 100), wider.search(queries, 100)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(wider.search(queries, 100)[0], built.search(queries, 100)[0])


def test_ivfpq_stays_on_cpu_when_a_gpu_is_asked_for() -> None:
    rng = np.random.default_rng(9)
    config = AnnIndexConfig(kind="ivfpq", ivf_nlist=4, ivfpq_m=4, ivfpq_bits=4, use_gpu=True)
    index = AnnIndex.build(np.arange(1000), _unit(rng, 1000, 8), config)
    assert not index.on_gpu
    assert index.search(_unit(rng, 2, 8), 5)[0].shape == (2, 5)


@pytest.mark.parametrize("bad", [
    {"ivfpq_m": 0}, {"ivfpq_bits": 3}, {"ivfpq_bits": 13}, {"ivfpq_k_factor": 0.9}, {"ivfpq_k_factor": 65},
    {"ivfpq_refine": "pq"}, {"kind": "ivf_pq"},
])
def test_ivfpq_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ValidationError):
        AnnIndexConfig.model_validate({"kind": "ivfpq", **bad})


def test_ivfpq_build_rejects_structures_the_data_cannot_hold() -> None:
    rng = np.random.default_rng(10)
    with pytest.raises(ValueError, match="does not divide"):
        AnnIndex.build(np.arange(500), _unit(rng, 500, 8), AnnIndexConfig(kind="ivfpq", ivfpq_m=3, ivfpq_bits=4))
    with pytest.raises(ValueError, match="needs >= 256 vectors"):
        AnnIndex.build(np.arange(200), _unit(rng, 200, 8), AnnIndexConfig(kind="ivfpq", ivfpq_m=4))


def test_a_loaded_ivf_index_maps_its_lists_and_searches_as_built(tmp_path):
    """Shared loading: the IVF lists stay in the file's pages (not copied), results unchanged."""
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(20_000, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    built = AnnIndex.build(np.arange(20_000), vectors, AnnIndexConfig(kind="ivf", ivf_nlist=64, ivf_nprobe=8,
                                                                      use_gpu=False))
    built.save(tmp_path / "ivf")
    loaded = AnnIndex.load(tmp_path / "ivf")
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(loaded._index).invlists)
    assert isinstance(lists, faiss.OnDiskInvertedLists)  # mapped from the file; a copy is ArrayInvertedLists
    ids_a, scores_a = built.search(vectors[:5], 50)
    ids_b, scores_b = loaded.search(vectors[:5], 50)
    np.testing.assert_array_equal(ids_a, ids_b)
    np.testing.assert_allclose(scores_a, scores_b, rtol=1e-6)
    assert not loaded.item_ids.flags.writeable
