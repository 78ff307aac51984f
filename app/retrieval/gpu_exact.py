"""Exact inner-product search through torch on one device: the GPU path for `kind: exact`.

FAISS's pip wheels are CPU-only, while torch's CUDA build is what a GPU Ranking replica already
carries. Exact search is one matrix product and one top-k per block of queries, bound by reading
the item matrix (10M x 64 float32 = 2.56 GB per block), which a GPU's memory does in about a
millisecond. Products stay float32 (no TF32: torch's default), so results are FAISS's exact
ones, ties aside.

Example:
    search = TorchExactSearch(item_vectors, device="cuda")
    scores, rows = search.search(user_vectors, k=1000)   # rows index item_vectors
"""
from __future__ import annotations

import numpy as np
import torch

SCORE_BLOCK_BYTES = 1 << 30  # the (queries x items) float32 score block of one pass stays under 1 GiB


def cuda_available() -> bool:
    return torch.cuda.is_available()


class TorchExactSearch:
    """The item vectors held on `device`; `search` returns FAISS's (scores, rows) shapes."""

    def __init__(self, vectors: np.ndarray, device: str | torch.device) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) == 0:
            raise ValueError(f"expected a non-empty 2-d array of vectors, got shape {vectors.shape}")
        self.device = torch.device(device)
        self.vectors = torch.from_numpy(vectors).to(self.device)
        self.queries_per_block = max(1, SCORE_BLOCK_BYTES // (4 * len(vectors)))

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, k) float32 scores and (n, k) int64 rows, best first; k is at most len(self)."""
        if not 1 <= k <= len(self):
            raise ValueError(f"k={k} outside 1..{len(self)}")
        on_device = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(self.device)
        scores, rows = [], []
        with torch.inference_mode():
            for lo in range(0, len(on_device), self.queries_per_block):
                block = on_device[lo:lo + self.queries_per_block] @ self.vectors.T
                top = torch.topk(block, k, dim=1, largest=True, sorted=True)
                scores.append(top.values)
                rows.append(top.indices)
            if not scores:
                return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
            return torch.cat(scores).cpu().numpy(), torch.cat(rows).cpu().numpy().astype(np.int64)
