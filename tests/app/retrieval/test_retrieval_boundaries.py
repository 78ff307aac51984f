"""Layering and hardware boundaries of app/retrieval."""
from __future__ import annotations

import subprocess
import sys

import faiss
import numpy as np
import pytest

from app.retrieval.config import AnnIndexConfig
from app.retrieval.index import AnnIndex


def test_app_retrieval_never_imports_ray() -> None:
    code = (
        "import sys, app.retrieval, app.retrieval.recommender, app.retrieval.sources; "
        "print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cpu_only_faiss_keeps_the_index_on_cpu() -> None:
    index = AnnIndex.build(np.arange(50), np.eye(50, 8, dtype=np.float32), AnnIndexConfig(kind="exact", use_gpu=True))
    assert index.on_gpu == (faiss.get_num_gpus() > 0)


@pytest.mark.gpu
@pytest.mark.skipif(faiss.get_num_gpus() == 0, reason="FAISS sees no GPU")
def test_gpu_ivf_matches_exact_and_saves_a_cpu_index(tmp_path) -> None:
    rng = np.random.default_rng(0)
    items = rng.normal(size=(2000, 16)).astype(np.float32)
    queries = rng.normal(size=(10, 16)).astype(np.float32)
    gpu = AnnIndex.build(np.arange(2000), items, AnnIndexConfig(kind="ivf", ivf_nlist=16, ivf_nprobe=16))
    exact = AnnIndex.build(np.arange(2000), items, AnnIndexConfig(kind="exact", use_gpu=False))
    assert gpu.on_gpu
    np.testing.assert_array_equal(gpu.search(queries, 20)[0], exact.search(queries, 20)[0])
    gpu.save(tmp_path)
    cpu = AnnIndex.load(tmp_path, AnnIndexConfig(kind="ivf", ivf_nlist=16, ivf_nprobe=16, use_gpu=False))
    np.testing.assert_array_equal(cpu.search(queries, 20)[0], exact.search(queries, 20)[0])
