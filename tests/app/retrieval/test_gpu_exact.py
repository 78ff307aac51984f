"""Exact search through torch: FAISS's exact answers, on the CPU here and on CUDA where present."""
from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch

from app.retrieval.config import AnnIndexConfig
from app.retrieval.gpu_exact import TorchExactSearch
from app.retrieval.index import AnnIndex


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _faiss_exact(items: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    index = faiss.IndexFlatIP(items.shape[1])
    index.add(items)
    return index.search(queries, k)


def test_torch_search_returns_faiss_exact_rows_and_scores():
    rng = np.random.default_rng(0)
    items, queries = _unit(rng, 3000, 16), _unit(rng, 20, 16)
    scores, rows = TorchExactSearch(items, "cpu").search(queries, 100)
    truth_scores, truth_rows = _faiss_exact(items, queries, 100)
    assert rows.dtype == np.int64 and scores.dtype == np.float32
    np.testing.assert_array_equal(rows, truth_rows)
    np.testing.assert_allclose(scores, truth_scores, rtol=1e-5, atol=1e-6)


def test_queries_split_into_blocks_give_the_same_answer():
    rng = np.random.default_rng(1)
    items, queries = _unit(rng, 500, 8), _unit(rng, 11, 8)
    whole = TorchExactSearch(items, "cpu")
    blocked = TorchExactSearch(items, "cpu")
    blocked.queries_per_block = 3
    (whole_scores, whole_rows), (block_scores, block_rows) = whole.search(queries, 40), blocked.search(queries, 40)
    np.testing.assert_array_equal(block_rows, whole_rows)
    # a block's matmul may take another BLAS kernel than the whole batch's: equal to the last ulp or two
    np.testing.assert_allclose(block_scores, whole_scores, rtol=1e-6, atol=1e-7)
    scores, rows = whole.search(queries[:0], 5)
    assert scores.shape == rows.shape == (0, 5)


@pytest.mark.parametrize("k", [0, 501])
def test_k_outside_the_catalogue_is_refused(k):
    with pytest.raises(ValueError, match="outside 1..500"):
        TorchExactSearch(_unit(np.random.default_rng(2), 500, 8), "cpu").search(np.ones((1, 8), np.float32), k)


def test_no_vectors_are_refused():
    with pytest.raises(ValueError, match="non-empty 2-d"):
        TorchExactSearch(np.zeros((0, 8), np.float32), "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_without_cuda_an_exact_index_searches_on_faiss():
    index = AnnIndex.build(np.arange(50), np.eye(50, 8, dtype=np.float32), AnnIndexConfig(kind="exact", use_gpu=True))
    assert index.backend == ("faiss-gpu" if faiss.get_num_gpus() else "faiss-cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or faiss.get_num_gpus() > 0,
                    reason="needs CUDA in torch and a CPU-only FAISS")
def test_exact_index_searches_through_torch_on_cuda_and_saves_a_faiss_index(tmp_path):
    rng = np.random.default_rng(3)
    items, queries = _unit(rng, 4000, 32), _unit(rng, 9, 32)
    ids = np.arange(4000) * 7 + 1
    gpu = AnnIndex.build(ids, items, AnnIndexConfig(kind="exact", use_gpu=True))
    cpu = AnnIndex.build(ids, items, AnnIndexConfig(kind="exact", use_gpu=False))
    assert (gpu.backend, cpu.backend) == ("torch-cuda", "faiss-cpu")
    for a, b in zip(gpu.search(queries, 1000), cpu.search(queries, 1000)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    padded_ids, padded_scores = gpu.search(queries[:1], 4100)
    assert (padded_ids[0, 4000:] == -1).all() and np.isneginf(padded_scores[0, 4000:]).all()
    gpu.save(tmp_path)
    assert AnnIndex.load(tmp_path).backend == "torch-cuda"
    reloaded = AnnIndex.load(tmp_path, AnnIndexConfig(kind="exact", use_gpu=False))
    np.testing.assert_array_equal(reloaded.search(queries, 50)[0], cpu.search(queries, 50)[0])
