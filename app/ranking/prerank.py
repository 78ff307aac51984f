"""The ranking cascade's first step: a light pre-ranker over every merged candidate.

The DCN costs ≈ 5 µs per candidate on one core (cross layers, MMoE, five towers); a request's
≈ 5000 merged candidates would spend the whole ranking budget there. `PreRankerNet` reads the same
dense features (standardised by its own fitted buffers) and the DCN's item-id embedding through a
small MLP, ≈ 30× cheaper per candidate, and is distilled from the DCN's final score (training/pre_ranker.py), so what it keeps
is what the DCN would have ranked highly. `PreRanker` is the batch-aware scorer stage writing the
`prerank` column; `CascadeCut` keeps the best `keep` by it and names why the rest left.

    net = PreRankerNet.for_dcn(dcn, hidden=(32,))
    stage = PreRanker(net, RankingFeatureAssembler(store))
    columns = stage.score_batch([(query, candidates)])[0]   # {"prerank": ...}
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from app.pipeline.candidates import Candidates, FeedQuery
from app.ranking.features import FeatureBatch, RankingFeatureAssembler

PRERANK_COLUMN = "prerank"


class PreRankerNet(nn.Module):
    """forward(dense, item_codes) → one score per row (the distilled DCN final score).

    Reads the standardised dense features and the DCN's own learned item-id embedding (shared by
    reference, frozen: item identity is much of what the DCN knows, and a second table would cost
    a million rows of memory), through a small MLP."""

    def __init__(self, n_dense: int, hidden: tuple[int, ...] = (32,), item_embedding: nn.Embedding | None = None,
                 ) -> None:
        super().__init__()
        self.n_dense, self.hidden = n_dense, tuple(hidden)
        self.register_buffer("dense_mean", torch.zeros(n_dense))
        self.register_buffer("dense_std", torch.ones(n_dense))
        # A tuple: not a submodule, so neither trained here nor saved with this net's state.
        self._shared = (item_embedding,) if item_embedding is not None else ()
        width = n_dense + (item_embedding.embedding_dim if item_embedding is not None else 0)
        layers: list[nn.Module] = []
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    @property
    def item_embedding(self) -> nn.Embedding | None:
        """The DCN's item-id embedding this net reads (None: dense features only)."""
        return self._shared[0] if self._shared else None

    @classmethod
    def for_dcn(cls, dcn: nn.Module, hidden: tuple[int, ...]) -> PreRankerNet:
        """A pre-ranker over `dcn`'s dense features and its item-id embedding (when it has one)."""
        names = dcn.schema.categorical_names
        embedding = dcn.embeddings[names.index("item_id")] if "item_id" in names else None
        return cls(len(dcn.schema.dense), hidden, embedding)

    def fit_normaliser(self, dense: np.ndarray) -> None:
        std = dense.std(axis=0)
        self.dense_mean.copy_(torch.as_tensor(dense.mean(axis=0), dtype=torch.float32))
        self.dense_std.copy_(torch.as_tensor(np.where(std > 1e-6, std, 1.0), dtype=torch.float32))

    def forward(self, dense: torch.Tensor, item_codes: torch.Tensor | None = None) -> torch.Tensor:
        x = (dense - self.dense_mean) / self.dense_std
        if self.item_embedding is not None:
            with torch.no_grad():
                x = torch.cat([x, self.item_embedding(item_codes)], dim=1)
        return self.mlp(x).squeeze(-1)


class PreRanker:
    """Batch-aware scorer: one MLP pass over every queued request's candidates. It reads the
    rows `RankingFeatureRows` attached (the cut slices them, so the DCN reads its survivors' rows
    from the same assembly) and featurises only candidates that arrive without them."""

    name = "pre_ranker"

    def __init__(self, net: PreRankerNet, assembler: RankingFeatureAssembler) -> None:
        if net.n_dense != len(assembler.schema.dense):
            raise ValueError(
                f"the pre-ranker reads {net.n_dense} dense features, the feature tables make {len(assembler.schema.dense)}"
            )
        self.net = net.eval()
        self.assembler = assembler
        names = assembler.schema.categorical_names
        self.item_column = names.index("item_id") if net.item_embedding is not None else None

    def score_batch(self, requests: list[tuple[FeedQuery, Candidates]]) -> list[dict[str, np.ndarray]]:
        batch = FeatureBatch.from_rows([c for _, c in requests], self.assembler.schema)
        if batch is None:
            batch = self.assembler.batch_for_requests(requests)
        with torch.inference_mode():
            codes = torch.from_numpy(batch.categorical[:, self.item_column]) if self.item_column is not None else None
            scores = self.net(torch.from_numpy(batch.dense), codes).numpy().astype(np.float32, copy=False)
        bounds = np.cumsum([0] + [len(c) for _, c in requests])
        return [{PRERANK_COLUMN: scores[lo:hi]} for lo, hi in zip(bounds[:-1], bounds[1:])]

    def score(self, query: FeedQuery, candidates: Candidates) -> dict[str, np.ndarray]:
        return self.score_batch([(query, candidates)])[0]


class CascadeCut:
    """The best `keep` candidates by the pre-ranker's score; a request with fewer keeps all."""

    name = "cascade_cut"

    def __init__(self, keep: int) -> None:
        if keep < 1:
            raise ValueError(f"cascade keep must be >= 1, got {keep}")
        self.keep = keep
        self.removal_reason = f"below the pre-ranker's top {keep}"

    def select(self, query: FeedQuery, candidates: Candidates) -> np.ndarray:
        scores = candidates.scores[PRERANK_COLUMN]
        if len(scores) <= self.keep:
            return np.arange(len(scores))
        top = np.argpartition(-scores, self.keep - 1)[: self.keep]
        return top[np.lexsort((top, -scores[top]))]  # best first; ties keep input order
