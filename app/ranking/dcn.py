"""The multi-task DCN-v2 ranker (Wang et al. 2021) with MMoE or a shared bottom.

    x = [standardised dense ∥ embeddings of categoricals]
    cross: x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l        (W_l full-rank, or U_l V_lᵀ low-rank)
    deep:  MLP(x)
    combination: parallel = [cross(x) ∥ deep(x)],  stacked = deep(cross(x))
    bottom: shared (every head reads h) or MMoE (per-head softmax gates over experts of h)
    heads: click, like, share, hide, watch → logits; sigmoid gives P(·) and E(watch fraction)

Position is a training-time feature through a shallow additive tower: logit += bias[position],
where index 0 ("unknown / serving") is fixed at zero. Trained on logged positions it absorbs
position bias; at serving the scorer passes no position, so scores are position-neutral.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from app.ranking.config import HEADS, DCNConfig
from app.ranking.features import FeatureSchema


class CrossLayer(nn.Module):
    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        if rank and rank < dim:
            self.project = nn.Sequential(nn.Linear(dim, rank, bias=False), nn.Linear(rank, dim))
        else:
            self.project = nn.Linear(dim, dim)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.project(x) + x


def _mlp(dims: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class MultiTaskDCN(nn.Module):
    """forward(dense, categorical, position=None) → logits of shape (n, len(HEADS)).

    `dense` is raw (float32, (n, d)); the model standardises it with buffers fitted on the
    training examples (`fit_normaliser`), so the saved state_dict is self-contained.
    """

    heads = HEADS

    def __init__(self, schema: FeatureSchema, config: DCNConfig, max_position: int) -> None:
        super().__init__()
        self.schema = schema
        self.config = config
        d = len(schema.dense)
        self.register_buffer("dense_mean", torch.zeros(d))
        self.register_buffer("dense_std", torch.ones(d))
        self.embeddings = nn.ModuleList(
            nn.Embedding(card, config.item_embedding_dim if name == "item_id" else config.embedding_dim)
            for name, card in schema.categorical
        )
        width = d + sum(e.embedding_dim for e in self.embeddings)
        self.cross = nn.ModuleList(CrossLayer(width, config.cross_rank) for _ in range(config.cross_layers))
        deep_in = width
        self.deep = _mlp([deep_in, *config.deep_layers], config.dropout)
        out = width + config.deep_layers[-1] if config.combination == "parallel" else config.deep_layers[-1]
        n_heads = len(HEADS)
        if config.bottom == "mmoe":
            self.experts = nn.ModuleList(_mlp([out, config.expert_dim], config.dropout) for _ in range(config.experts))
            self.gates = nn.Linear(out, n_heads * config.experts)
            tower_in = config.expert_dim
        else:
            self.experts = nn.ModuleList()
            self.gates = None
            tower_in = out
        self.towers = nn.ModuleList(
            nn.Sequential(nn.Linear(tower_in, config.tower_dim), nn.ReLU(), nn.Linear(config.tower_dim, 1))
            for _ in range(n_heads)
        )
        # Shallow position tower: index 0 = unknown/serving, kept at exactly zero (padding_idx).
        self.position_bias = nn.Embedding(max_position + 1, n_heads, padding_idx=0)
        nn.init.zeros_(self.position_bias.weight)
        self.max_position = max_position

    def fit_normaliser(self, dense: np.ndarray) -> None:
        mean = dense.mean(axis=0)
        std = dense.std(axis=0)
        self.dense_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.dense_std.copy_(torch.as_tensor(np.where(std > 1e-6, std, 1.0), dtype=torch.float32))

    @torch.no_grad()
    def fill_unseen_rows(self, categorical: np.ndarray, trained_unknown: tuple[int, ...] = ()) -> None:
        """Every embedding row no training example used (an item without interactions, such as
        a published item folded in by `rayfeed train`, or the unknown code when every example
        was known) takes the mean of the rows examples did use: an untrained row is random
        noise of unit scale, the mean is an average item. `trained_unknown`: columns whose
        unknown code (0) training learned by dropping codes to it (the item id's dropout)."""
        for j, table in enumerate(self.embeddings):
            seen = np.zeros(table.num_embeddings, bool)
            seen[np.asarray(categorical[:, j], np.int64)] = True
            seen[0] |= j in trained_unknown
            if seen.any() and not seen.all():
                table.weight[torch.as_tensor(np.flatnonzero(~seen))] = table.weight[torch.as_tensor(seen)].mean(0)

    def position_index(self, positions: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Logged positions (1-based; ≤ 0 or missing = unknown) → embedding index."""
        p = torch.as_tensor(positions, dtype=torch.long)
        return torch.where(p > 0, p.clamp(max=self.max_position), torch.zeros_like(p))

    def forward(
        self, dense: torch.Tensor, categorical: torch.Tensor, position: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = (dense - self.dense_mean) / self.dense_std
        parts = [x] + [emb(categorical[:, j]) for j, emb in enumerate(self.embeddings)]
        x0 = torch.cat(parts, dim=1)
        xc = x0
        for layer in self.cross:
            xc = layer(x0, xc)
        if self.config.combination == "parallel":
            h = torch.cat([xc, self.deep(x0)], dim=1)
        else:
            h = self.deep(xc)
        if self.gates is not None:
            expert_out = torch.stack([e(h) for e in self.experts], dim=1)  # (n, E, expert_dim)
            gates = torch.softmax(self.gates(h).view(len(h), len(HEADS), self.config.experts), dim=-1)  # (n, H, E)
            task_in = torch.einsum("nhe,ned->nhd", gates, expert_out)
            logits = torch.cat([tower(task_in[:, k]) for k, tower in enumerate(self.towers)], dim=1)
        else:
            logits = torch.cat([tower(h) for tower in self.towers], dim=1)
        if position is not None:
            logits = logits + self.position_bias(position)
        return logits

    @torch.no_grad()
    def predict(self, dense: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """Position-neutral head outputs in [0, 1]: P(click), P(like), P(share), P(hide), E(watch)."""
        return torch.sigmoid(self.forward(dense, categorical, position=None))
