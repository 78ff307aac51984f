"""Approximate nearest-neighbour search over item embeddings (FAISS, inner product).

Kinds: "exact" (IndexFlatIP, the reference every other kind is measured against), "hnsw"
(IndexHNSWFlat), "ivf" (IndexIVFFlat) and "ivfpq" (IndexIVFPQ, by default wrapped in an
IndexRefine that re-scores the PQ shortlist of k x k_factor on stored vectors: float32, fp16 or
8-bit, see `AnnIndexConfig.ivfpq_refine`). With `use_gpu` and a GPU visible to FAISS, flat and
IVF indexes are cloned to every GPU; HNSW has no GPU implementation, and IVF-PQ stays on CPU too
(a refine wrapper cannot be cloned, and its shortlist k x k_factor exceeds the GPU's top-k limit
of 2048 at serving's k). An exact index with `use_gpu` where FAISS has no GPU build (its pip
wheels) but torch sees CUDA searches through torch on the GPU instead (app/retrieval/gpu_exact.py);
the FAISS index stays the saved form. FAISS rows are 0..n-1; `item_ids[row]` maps them back to item ids.

Example:
    index = AnnIndex.build(item_ids, item_vectors, AnnIndexConfig(kind="hnsw"))
    ids, scores = index.search(user_vectors, k=500)   # (n, 500) each; -1 / -inf pad
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np

from app.retrieval.config import AnnIndexConfig

if TYPE_CHECKING:  # torch is imported only on the GPU path: a CPU Retrieval replica never loads it
    from app.retrieval.gpu_exact import TorchExactSearch

log = logging.getLogger(__name__)


def _torch_cuda_available() -> bool:
    from app.retrieval.gpu_exact import cuda_available

    return cuda_available()


MIN_POINTS_PER_CENTROID = 39  # FAISS warns (and k-means degrades) below this many per IVF list
TRAIN_SAMPLE_SEED = 0  # the IVF training sample is reproducible
# ivfpq_refine -> the index_factory suffix that wraps the IVF-PQ index in a re-ranking IndexRefine
REFINE_FACTORY = {"flat": ",RFlat", "fp16": ",Refine(SQfp16)", "sq8": ",Refine(SQ8)", "none": ""}


def _as_f32(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"expected a 2-d array of vectors, got shape {vectors.shape}")
    return vectors


def _train_sample(vectors: np.ndarray, config: AnnIndexConfig) -> np.ndarray:
    if len(vectors) <= config.ivf_train_sample:
        return vectors
    # k-means cost grows with n × nlist: a seeded sample
    rows = np.random.default_rng(TRAIN_SAMPLE_SEED).choice(len(vectors), config.ivf_train_sample, replace=False)
    return vectors[np.sort(rows)]


def _ivfpq(vectors: np.ndarray, config: AnnIndexConfig) -> faiss.Index:
    """IVF-PQ (plus its refine wrapper) from index_factory, which owns the sub-indexes."""
    n, d = vectors.shape
    if d % config.ivfpq_m:
        raise ValueError(f"ivfpq_m={config.ivfpq_m} does not divide the dimension {d}")
    # each PQ codebook's k-means needs at least 2^bits points (FAISS warns below 39 x 2^bits)
    if min(n, config.ivf_train_sample) < 2**config.ivfpq_bits:
        raise ValueError(
            f"ivfpq with {config.ivfpq_bits}-bit codes needs >= {2**config.ivfpq_bits} vectors to train "
            f"(catalogue {n}, ivf_train_sample {config.ivf_train_sample}): use fewer bits or another kind"
        )
    nlist = max(1, min(config.ivf_nlist, n // MIN_POINTS_PER_CENTROID))
    # "np": no polysemous training (a Hamming-distance code ordering this index never uses, and
    # the bulk of the build time on small catalogues)
    spec = f"IVF{nlist},PQ{config.ivfpq_m}x{config.ivfpq_bits}np{REFINE_FACTORY[config.ivfpq_refine]}"
    return faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)


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
        index.train(_train_sample(vectors, config))
    elif config.kind == "ivfpq":
        index = _ivfpq(vectors, config)
        index.train(_train_sample(vectors, config))  # a refine wrapper trains its base (SQ8: its ranges too)
    else:  # pragma: no cover - the config's Literal rejects other kinds
        raise ValueError(f"unknown index kind {config.kind!r}")
    index.add(vectors)  # one call: chunked adds would grow flat storage by doubling (up to 2x memory)
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
        self.on_gpu = False  # a FAISS GPU index
        self._torch_search: TorchExactSearch | None = None  # exact search through torch on CUDA
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
        if not self.config.use_gpu or self.config.kind in ("hnsw", "ivfpq"):
            return index
        if not hasattr(faiss, "index_cpu_to_all_gpus") or faiss.get_num_gpus() == 0:
            if self.config.kind == "exact" and _torch_cuda_available():
                from app.retrieval.gpu_exact import TorchExactSearch

                self._torch_search = TorchExactSearch(index.reconstruct_n(0, index.ntotal), "cuda")
                log.info("exact index of %d items searched through torch on CUDA", index.ntotal)
            return index
        self.on_gpu = True
        log.info("FAISS %s index moved to %d GPU(s)", self.config.kind, faiss.get_num_gpus())
        return faiss.index_cpu_to_all_gpus(index)

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def backend(self) -> str:
        """Where searches run: faiss-cpu, faiss-gpu or torch-cuda."""
        return "torch-cuda" if self._torch_search is not None else "faiss-gpu" if self.on_gpu else "faiss-cpu"

    def set_search_params(
        self, hnsw_ef_search: int | None = None, ivf_nprobe: int | None = None, ivfpq_k_factor: float | None = None
    ) -> None:
        """Change search-time settings in place (e.g. from a deployment's `reconfigure`): no rebuild."""
        update: dict[str, float] = {}
        if hnsw_ef_search is not None:
            update["hnsw_ef_search"] = hnsw_ef_search
        if ivf_nprobe is not None:
            update["ivf_nprobe"] = ivf_nprobe
        if ivfpq_k_factor is not None:
            update["ivfpq_k_factor"] = ivfpq_k_factor
        self.config = AnnIndexConfig.model_validate({**self.config.model_dump(), **update})
        self._apply_search_params()

    def _apply_search_params(self) -> None:
        if self.config.kind == "hnsw":
            faiss.downcast_index(self._index).hnsw.efSearch = self.config.hnsw_ef_search
        elif self.config.kind in ("ivf", "ivfpq"):
            if self.on_gpu:
                faiss.GpuParameterSpace().set_index_parameter(self._index, "nprobe", self.config.ivf_nprobe)
            else:
                ivf = faiss.extract_index_ivf(self._index)  # looks through a refine wrapper
                ivf.nprobe = min(self.config.ivf_nprobe, ivf.nlist)
            refine = faiss.downcast_index(self._index)
            if isinstance(refine, faiss.IndexRefine):  # IndexRefineFlat is one too
                refine.k_factor = self.config.ivfpq_k_factor

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
        elif self._torch_search is not None:
            scores, rows = self._torch_search.search(queries, k_searched)
        else:
            scores, rows = self._index.search(queries, k_searched)
        ids = np.where(rows >= 0, self.item_ids[np.maximum(rows, 0)], -1)
        scores = np.where(rows >= 0, scores, -np.inf).astype(np.float32)
        if k_searched < k:
            pad = k - k_searched
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        return ids.astype(np.int64), scores

    def serialized_bytes(self) -> int:
        """Bytes of the FAISS index as `save` writes it (streamed and counted, not copied); about
        its memory, less the slack of growing inverted lists. The id map adds 8 bytes per item."""
        total = 0

        def count(chunk: bytes) -> None:
            nonlocal total
            total += len(chunk)

        writer = faiss.PyCallbackIOWriter(count)
        faiss.write_index(faiss.index_gpu_to_cpu(self._index) if self.on_gpu else self._index, writer)
        del writer  # flushes its last buffer
        return total

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
        k_factor, use_gpu, threads); the structure (kind, M, nlist, PQ m and bits, refine) is what
        was built."""
        path = Path(path)
        saved = AnnIndexConfig.model_validate(json.loads((path / "config.json").read_text()))
        if config is not None and config.kind != saved.kind:
            raise ValueError(f"{path}: holds a {saved.kind} index, config asks for {config.kind}")
        config = config or saved
        # IVF lists mapped from the file (FAISS's IO_FLAG_MMAP): the node's replicas share the
        # pages; flat and HNSW storage cannot be mapped and are read into memory.
        flags = faiss.IO_FLAG_MMAP if saved.kind == "ivf" else 0
        index = faiss.read_index(str(path / "index.faiss"), flags)
        return cls(index, np.load(path / "item_ids.npy", mmap_mode="r").view(np.ndarray), config)
