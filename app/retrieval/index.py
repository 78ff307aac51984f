"""Approximate nearest-neighbour search over item embeddings (FAISS, inner product).

Kinds: "exact" (IndexFlatIP, the reference every other kind is measured against), "hnsw"
(IndexHNSWFlat) and "ivf" (IndexIVFFlat). With `use_gpu` and a GPU visible to FAISS, flat
and IVF indexes are cloned to every GPU; HNSW has no GPU implementation and stays on CPU.
FAISS rows are 0..n-1; `item_ids[row]` maps them back to item ids.

Example:
    index = AnnIndex.build(item_ids, item_vectors, AnnIndexConfig(kind="hnsw"))
    ids, scores = index.search(user_vectors, k=500)   # (n, 500) each; -1 / -inf pad
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import faiss
import numpy as np

from app.retrieval.config import AnnIndexConfig

log = logging.getLogger(__name__)

MIN_POINTS_PER_CENTROID = 39  # FAISS warns (and k-means degrades) below this many per IVF list
TRAIN_SAMPLE_SEED = 0  # the IVF training sample is reproducible


def _as_f32(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"expected a 2-d array of vectors, got shape {vectors.shape}")
    return vectors


def _build_cpu(vectors: np.ndarray, config: AnnIndexConfig) -> faiss.Index:
    d = vectors.shape[1]
    if config.kind == "exact":
        index = faiss.IndexFlatIP(d)
    elif config.kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.hnsw_ef_construction
    elif config.kind == "ivf":
        nlist = max(1, min(config.ivf_nlist, len(vectors) // MIN_POINTS_PER_CENTROID))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = vectors
        if len(vectors) > config.ivf_train_sample:  # k-means cost grows with n × nlist
            rows = np.random.default_rng(TRAIN_SAMPLE_SEED).choice(len(vectors), config.ivf_train_sample, replace=False)
            sample = vectors[np.sort(rows)]
        index.train(sample)
    else:  # pragma: no cover - the config's Literal rejects other kinds
        raise ValueError(f"unknown index kind {config.kind!r}")
    index.add(vectors)
    return index


class AnnIndex:
    """A FAISS index plus the row → item id map. Build with `build`, persist with `save`/`load`."""

    def __init__(self, index: faiss.Index, item_ids: np.ndarray, config: AnnIndexConfig) -> None:
        item_ids = np.asarray(item_ids, dtype=np.int64)
        if index.ntotal != len(item_ids):
            raise ValueError(f"index holds {index.ntotal} vectors but {len(item_ids)} item ids were given")
        if config.omp_threads is not None:
            faiss.omp_set_num_threads(config.omp_threads)
        self.config = config
        self.item_ids = item_ids
        self.on_gpu = False
        self._index = self._maybe_to_gpu(index)
        self._apply_search_params()

    @classmethod
    def build(cls, item_ids: np.ndarray, vectors: np.ndarray, config: AnnIndexConfig | None = None) -> AnnIndex:
        config = config or AnnIndexConfig()
        vectors = _as_f32(vectors)
        if len(vectors) != len(item_ids):
            raise ValueError(f"{len(vectors)} vectors for {len(item_ids)} item ids")
        if len(vectors) == 0:
            raise ValueError("cannot build an index over no items")
        if config.omp_threads is not None:
            faiss.omp_set_num_threads(config.omp_threads)
        return cls(_build_cpu(vectors, config), item_ids, config)

    def _maybe_to_gpu(self, index: faiss.Index) -> faiss.Index:
        if not self.config.use_gpu or self.config.kind == "hnsw":
            return index
        if not hasattr(faiss, "index_cpu_to_all_gpus") or faiss.get_num_gpus() == 0:
            return index
        self.on_gpu = True
        log.info("FAISS %s index moved to %d GPU(s)", self.config.kind, faiss.get_num_gpus())
        return faiss.index_cpu_to_all_gpus(index)

    def __len__(self) -> int:
        return len(self.item_ids)

    def set_search_params(self, hnsw_ef_search: int | None = None, ivf_nprobe: int | None = None) -> None:
        """Change search-time settings in place (e.g. from a deployment's `reconfigure`): no rebuild."""
        update: dict[str, int] = {}
        if hnsw_ef_search is not None:
            update["hnsw_ef_search"] = hnsw_ef_search
        if ivf_nprobe is not None:
            update["ivf_nprobe"] = ivf_nprobe
        self.config = AnnIndexConfig.model_validate({**self.config.model_dump(), **update})
        self._apply_search_params()

    def _apply_search_params(self) -> None:
        if self.config.kind == "hnsw":
            faiss.downcast_index(self._index).hnsw.efSearch = self.config.hnsw_ef_search
        elif self.config.kind == "ivf":
            if self.on_gpu:
                faiss.GpuParameterSpace().set_index_parameter(self._index, "nprobe", self.config.ivf_nprobe)
            else:
                ivf = faiss.extract_index_ivf(self._index)
                ivf.nprobe = min(self.config.ivf_nprobe, ivf.nlist)

    @property
    def dim(self) -> int:
        return int(self._index.d)

    def search(self, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item ids and inner-product scores per query row, best first.

        Returns (n, k) int64 ids and (n, k) float32 scores; when fewer than k items are found
        (k > catalogue, or an approximate index comes back short) the tail is -1 / -inf.
        """
        queries = _as_f32(query_vectors)
        if queries.shape[1] != self.dim:
            raise ValueError(f"query dimension {queries.shape[1]} != index dimension {self.dim}")
        if k < 1:
            raise ValueError("k must be >= 1")
        k_searched = min(k, len(self.item_ids))
        if self.config.kind == "hnsw":
            # efSearch below k silently returns fewer results; raise it for this call only.
            params = faiss.SearchParametersHNSW(efSearch=max(self.config.hnsw_ef_search, k_searched))
            scores, rows = self._index.search(queries, k_searched, params=params)
        else:
            scores, rows = self._index.search(queries, k_searched)
        ids = np.where(rows >= 0, self.item_ids[np.maximum(rows, 0)], -1)
        scores = np.where(rows >= 0, scores, -np.inf).astype(np.float32)
        if k_searched < k:
            pad = k - k_searched
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        return ids.astype(np.int64), scores

    def save(self, path: Path) -> None:
        """A directory: index.faiss (a CPU index, even when serving from GPU), item_ids.npy, config.json."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        cpu_index = faiss.index_gpu_to_cpu(self._index) if self.on_gpu else self._index
        faiss.write_index(cpu_index, str(path / "index.faiss"))
        np.save(path / "item_ids.npy", self.item_ids)
        (path / "config.json").write_text(self.config.model_dump_json())

    @classmethod
    def load(cls, path: Path, config: AnnIndexConfig | None = None) -> AnnIndex:
        """Load a saved index. `config` may change search-time settings (efSearch, nprobe,
        use_gpu, threads); the structure (kind, M, nlist) is what was built."""
        path = Path(path)
        saved = AnnIndexConfig.model_validate(json.loads((path / "config.json").read_text()))
        if config is not None and config.kind != saved.kind:
            raise ValueError(f"{path}: holds a {saved.kind} index, config asks for {config.kind}")
        config = config or saved
        index = faiss.read_index(str(path / "index.faiss"))
        return cls(index, np.load(path / "item_ids.npy"), config)
