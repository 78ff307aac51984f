"""The two-tower retrieval model, its loss, its training loop and its artifacts (plain PyTorch).

User tower: user id + age bucket, gender, occupation, zip region + mean of the user's recent
history item embeddings. Item tower: item id + genre multi-hot, creator, release-year bucket,
content rating. Both end in an MLP and are L2-normalised, so the retrieval score is a cosine.

Training is a softmax over in-batch negatives with a learned temperature (log-parameterised,
clamped) and the logQ correction of Yi et al. (RecSys 2019): in-batch negatives are sampled in
proportion to item frequency, so without correction the model learns s(u, i) − log q(i) and
under-ranks popular items; subtracting log q(i) from every logit during training lets the plain
dot product estimate log p(i | u) at serving time.

Positives (documented choice): every interaction is a positive (`min_positive_rating = 0`) and
rows are unweighted: whether a user watched a film at all is the retrieval signal; the ranker
judges how much they liked it. Measured on ML-100k's per-user temporal split (fit on the oldest
80%, Recall@20 / NDCG@20 on the next 10%): all-interaction 0.276 / 0.214; rating-weighted
0.274 / 0.216 (a wash); only ratings >= 4 0.245 / 0.195; without logQ 0.135 / 0.091; without
the history feature 0.208 / 0.147 (ItemKNN 0.209 / 0.153, EASE 0.231 / 0.168). All configurable.

The training loop (`fit`) is shared: `train_two_tower_in_process` runs it here (unit tests, no
Ray); training/two_tower.py runs it inside Ray Train workers with prepared model and loader.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from app.data.tables import Dataset
from app.retrieval.config import TwoTowerConfig
from app.retrieval.features import OOV, TowerFeatures
from app.retrieval.two_tower_serving import (  # noqa: F401 - the serving side, re-exported
    TwoTowerArtifacts,
    ordered_interactions,
    row_histories,
    serving_histories,
)

EpochCallback = Callable[[int, dict[str, float]], None]
# (item_vectors, item_rows, log_q) of this batch -> the same for every column of the softmax
ColumnGather = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


class TwoTowerModel(nn.Module):
    """Both towers. Per-user and per-item feature rows live in buffers, so a batch is just rows.

    `forward(user_rows, history, item_rows)` returns (user vectors, item vectors, temperature),
    the temperature being computed inside forward so data-parallel wrappers see its gradient.
    """

    def __init__(self, features: TowerFeatures, config: TwoTowerConfig) -> None:
        super().__init__()
        self.config = config
        d_id, d_f = config.id_dim, config.feature_dim
        self.user_id = nn.Embedding(features.n_user_rows, d_id)
        self.user_features = nn.ModuleList(nn.Embedding(n, d_f) for n in features.user_cardinalities)
        self.history = nn.Embedding(features.n_item_rows, d_id, padding_idx=OOV) if config.history_length else None
        self.item_id = nn.Embedding(features.n_item_rows, d_id)
        self.item_features = nn.ModuleList(nn.Embedding(n, d_f) for n in features.item_cardinalities)
        self.genres = nn.Linear(len(features.topics), d_f, bias=False)
        user_in = d_id + d_f * len(features.user_cardinalities) + (d_id if self.history is not None else 0)
        item_in = d_id + d_f * (len(features.item_cardinalities) + 1)
        self.user_mlp = _mlp(user_in, config.hidden_dim, config.embedding_dim)
        self.item_mlp = _mlp(item_in, config.hidden_dim, config.embedding_dim)
        self.log_temperature = nn.Parameter(
            torch.tensor(math.log(config.temperature_init)), requires_grad=config.learn_temperature
        )
        for table in (self.user_id, self.item_id, *self.user_features, *self.item_features):
            nn.init.normal_(table.weight, std=0.05)
        if self.history is not None:
            nn.init.normal_(self.history.weight, std=0.05)
            with torch.no_grad():
                self.history.weight[OOV].zero_()
        # Feature rows per user/item row (filled by `set_tables`, saved with the state dict).
        n_user_cats, n_item_cats = len(features.user_cardinalities), len(features.item_cardinalities)
        self.register_buffer("user_cats", torch.zeros(features.n_user_rows, n_user_cats, dtype=torch.long))
        self.register_buffer("item_cats", torch.zeros(features.n_item_rows, n_item_cats, dtype=torch.long))
        self.register_buffer("item_genres", torch.zeros(features.n_item_rows, len(features.topics)))

    def set_tables(self, user_cats: np.ndarray, item_cats: np.ndarray, item_genres: np.ndarray) -> None:
        with torch.no_grad():
            self.user_cats.copy_(torch.tensor(user_cats))  # copies: inputs may be read-only (Ray object store)
            self.item_cats.copy_(torch.tensor(item_cats))
            self.item_genres.copy_(torch.tensor(item_genres))

    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp().clamp(self.config.temperature_min, self.config.temperature_max)

    def user_tower(self, id_rows: torch.Tensor, cats: torch.Tensor, history: torch.Tensor | None) -> torch.Tensor:
        parts = [self.user_id(id_rows), *(emb(cats[:, j]) for j, emb in enumerate(self.user_features))]
        if self.history is not None:
            if history is None or history.shape[1] == 0:
                history = torch.zeros(len(id_rows), 1, dtype=torch.long, device=id_rows.device)
            counts = (history != OOV).sum(1, keepdim=True).clamp(min=1)
            parts.append(self.history(history).sum(1) / counts)  # OOV row is zero: a padded mean
        return F.normalize(self.user_mlp(torch.cat(parts, 1)), dim=1)

    def item_tower(self, id_rows: torch.Tensor, cats: torch.Tensor, genres: torch.Tensor) -> torch.Tensor:
        parts = [
            self.item_id(id_rows),
            *(emb(cats[:, j]) for j, emb in enumerate(self.item_features)),
            self.genres(genres),
        ]
        return F.normalize(self.item_mlp(torch.cat(parts, 1)), dim=1)

    def content_item_tower(self, cats: torch.Tensor, genres: torch.Tensor,
                           mean_id: torch.Tensor | None = None) -> torch.Tensor:
        """The item tower for items it was not trained on: the mean trained id embedding stands
        in for the item's own (the OOV row was never trained), the content features are its own.
        `mean_id`: that mean, when the caller keeps it (it reads the whole id table)."""
        mean_id = (self.item_id.weight[1:].mean(0) if mean_id is None else mean_id).reshape(1, -1).expand(len(cats), -1)
        parts = [mean_id, *(emb(cats[:, j]) for j, emb in enumerate(self.item_features)), self.genres(genres)]
        return F.normalize(self.item_mlp(torch.cat(parts, 1)), dim=1)

    def user_vectors(self, user_rows: torch.Tensor, history: torch.Tensor | None) -> torch.Tensor:
        id_rows = user_rows
        if self.training and self.config.user_id_dropout > 0:
            dropped = torch.rand(len(user_rows), device=user_rows.device) < self.config.user_id_dropout
            id_rows = torch.where(dropped, torch.zeros_like(user_rows), user_rows)
        return self.user_tower(id_rows, self.user_cats[user_rows], history)

    def item_vectors(self, item_rows: torch.Tensor) -> torch.Tensor:
        return self.item_tower(item_rows, self.item_cats[item_rows], self.item_genres[item_rows])

    def forward(
        self, user_rows: torch.Tensor, history: torch.Tensor, item_rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.user_vectors(user_rows, history), self.item_vectors(item_rows), self.temperature()


def in_batch_softmax_loss(
    user_vectors: torch.Tensor,
    item_vectors: torch.Tensor,
    temperature: torch.Tensor,
    item_rows: torch.Tensor,
    log_q: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sampled softmax where row i's positive is column i and the other columns are negatives.

    logits[i, j] = <u_i, v_j> / temperature − log q(item_j)   (the logQ term only when given)
    A column holding the same item as row i's positive is masked: it is not a negative.
    There may be more columns than rows (`item_vectors`, `item_rows`, `log_q` per column): the
    batches of other data-parallel workers appended after this one's, as further negatives.
    """
    logits = user_vectors @ item_vectors.T / temperature
    if log_q is not None:
        logits = logits - log_q[None, :]
    same_item = item_rows[None, :] == item_rows[:len(user_vectors), None]
    same_item.fill_diagonal_(False)
    logits = logits.masked_fill(same_item, float("-inf"))
    losses = F.cross_entropy(logits, torch.arange(len(logits), device=logits.device), reduction="none")
    if weights is None:
        return losses.mean()
    return (losses * weights).sum() / weights.sum().clamp(min=1e-12)


# ----------------------------------------------------------------------------- training data


@dataclass
class TrainingExamples:
    """Columns of one (user, positive item) row each, ready for a TensorDataset."""

    user_rows: np.ndarray  # int64
    history: np.ndarray  # (n, history_length) int64, items engaged strictly before this row
    item_rows: np.ndarray  # int64
    log_q: np.ndarray  # float32: log of the positive item's share of training rows
    weights: np.ndarray  # float32

    def __len__(self) -> int:
        return len(self.user_rows)

    def tensors(self) -> tuple[torch.Tensor, ...]:
        # torch.tensor copies: the arrays may be read-only views into Ray's object store.
        return tuple(torch.tensor(a) for a in (self.user_rows, self.history, self.item_rows, self.log_q, self.weights))

    def to_dict(self) -> dict[str, np.ndarray]:
        return dict(self.__dict__)


def build_training_examples(
    features: TowerFeatures,
    interactions: pd.DataFrame,
    config: TwoTowerConfig,
    history: pd.DataFrame | None = None,
) -> TrainingExamples:
    """One row per positive interaction; its history holds every earlier interaction of the user.

    q(item) is the item's frequency among the positive rows: the probability that a random
    in-batch column holds it, which is what the logQ correction needs.
    `history` (fine-tuning on recent events): earlier interactions that fill the rows' histories
    without being training rows themselves.
    """
    combined = interactions.assign(_train=True)
    if history is not None:
        combined = pd.concat([history.assign(_train=False), combined], ignore_index=True)
    ordered = ordered_interactions(combined)
    user_rows = features.user_rows(ordered["user_id"].to_numpy())
    item_rows = features.item_rows(ordered["item_id"].to_numpy())
    history = row_histories(user_rows, item_rows, config.history_length, include_self=False)
    ratings = ordered["rating"].to_numpy(np.float32)
    positive = (
        (ratings >= config.min_positive_rating) & (user_rows != OOV) & (item_rows != OOV)
        & ordered["_train"].to_numpy(bool)
    )
    user_rows, item_rows = user_rows[positive], item_rows[positive]
    history, ratings = history[positive], ratings[positive]
    if len(user_rows) == 0:
        raise ValueError("no positive training interactions for known users and items")
    counts = np.bincount(item_rows, minlength=features.n_item_rows).astype(np.float64)
    log_q = np.log(counts[item_rows] / len(item_rows)).astype(np.float32)
    weights = (ratings / ratings.mean()) if config.rating_weighted else np.ones(len(ratings))
    return TrainingExamples(user_rows, history, item_rows, log_q, weights.astype(np.float32))


@dataclass
class ModelTables:
    """The per-row feature tables the model keeps as buffers."""

    user_cats: np.ndarray
    item_cats: np.ndarray
    item_genres: np.ndarray

    @classmethod
    def build(cls, features: TowerFeatures, dataset: Dataset) -> ModelTables:
        users = dataset.users.set_index("user_id").loc[features.user_ids].reset_index()
        items = dataset.items.set_index("item_id").loc[features.item_ids].reset_index()
        user_cats = features.encode_users(users)
        item_cats, genres = features.encode_items(items)
        pad = lambda a: np.concatenate([np.zeros((1, a.shape[1]), a.dtype), a])  # noqa: E731 - row 0 = OOV
        return cls(pad(user_cats), pad(item_cats), pad(genres))

    def to_dict(self) -> dict[str, np.ndarray]:
        return dict(self.__dict__)


def build_model(features: TowerFeatures, config: TwoTowerConfig, tables: ModelTables | None = None) -> TwoTowerModel:
    torch.manual_seed(config.seed)
    model = TwoTowerModel(features, config)
    if tables is not None:
        model.set_tables(tables.user_cats, tables.item_cats, tables.item_genres)
    return model


def make_loader(examples: TrainingExamples, config: TwoTowerConfig) -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(config.seed)
    return torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(*examples.tensors()),
        batch_size=config.batch_size, shuffle=True, drop_last=len(examples) > config.batch_size, generator=generator,
    )


def _unwrapped(model: nn.Module) -> nn.Module:
    """The module itself, under a data-parallel wrapper (DistributedDataParallel.module) if any."""
    return model.module if hasattr(model, "module") else model


def anchor_penalty(model: nn.Module, anchor: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ ||θ − θ_anchor||² over the anchored (trainable) parameters: the L2-SP term of
    Li et al. (ICML 2018), which keeps a fine-tuned model near the weights it started from."""
    params = dict(_unwrapped(model).named_parameters())
    terms = [(params[name] - ref).pow(2).sum() for name, ref in anchor.items()]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def fit(
    model: nn.Module,
    loader: Sequence | torch.utils.data.DataLoader,
    config: TwoTowerConfig,
    on_epoch: EpochCallback | None = None,
    set_epoch: Callable[[int], None] | None = None,
    *,
    init_state: dict[str, torch.Tensor] | None = None,
    anchor_l2: float = 0.0,
    columns: ColumnGather | None = None,
    resume_state: dict[str, torch.Tensor] | None = None,
    start_epoch: int = 0,
) -> list[dict[str, float]]:
    """The training loop shared by the in-process path and the Ray Train workers.

    `model` may be wrapped (DistributedDataParallel); batches must already be on its device.
    `on_epoch(epoch, metrics)` reports progress (and, under Ray Train, the checkpoint).
    `columns(item_vectors, item_rows, log_q)`: the softmax's columns when they are more than this
    batch (data-parallel workers: every worker's batch, this one's first, so that a row meets the
    negatives of the whole global batch, as in one process).

    Fine-tuning (freshness): `init_state` warm-starts from a previous model's state_dict (same
    features and vocabulary as the base model: ids the base did not know use its OOV rows);
    `anchor_l2 > 0` adds anchor_l2 × Σ ||θ − θ_start||² to every step's loss, θ_start being the
    trainable weights when fit begins (the init_state when given), so the fine-tuned model stays
    near its base. The reported "loss" is the retrieval loss alone; "anchor" is the penalty term.

    A restarted run continues from `resume_state` (its last checkpoint) at `start_epoch`
    (0-based): the anchor stays the init_state's weights, the optimiser's moments start afresh.
    """
    if anchor_l2 < 0:
        raise ValueError(f"anchor_l2 must be >= 0, got {anchor_l2}")
    if init_state is not None:
        _unwrapped(model).load_state_dict(init_state)  # load_state_dict copies onto the model's device
    anchor = {
        name: p.detach().clone() for name, p in _unwrapped(model).named_parameters() if p.requires_grad
    } if anchor_l2 > 0 else {}
    if resume_state is not None:
        _unwrapped(model).load_state_dict(resume_state)
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay
    )
    history: list[dict[str, float]] = []
    for epoch in range(start_epoch, config.epochs):
        if set_epoch is not None:
            set_epoch(epoch)
        model.train()
        start, total, rows, anchor_total = time.perf_counter(), 0.0, 0, 0.0
        temperature = torch.tensor(float("nan"))
        for user_rows, hist, item_rows, log_q, weights in loader:
            user_vectors, item_vectors, temperature = model(user_rows, hist, item_rows)
            column_rows = item_rows
            if columns is not None:
                item_vectors, column_rows, log_q = columns(item_vectors, item_rows, log_q)
            loss = in_batch_softmax_loss(
                user_vectors, item_vectors, temperature, column_rows,
                log_q if config.logq_correction else None,
                weights if config.rating_weighted else None,
            )
            objective = loss
            if anchor:
                penalty = anchor_penalty(model, anchor)
                objective = loss + anchor_l2 * penalty
                anchor_total += float(penalty.detach()) * len(user_rows)
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            optimizer.step()
            total += float(loss.detach()) * len(user_rows)
            rows += len(user_rows)
        metrics = {
            "epoch": float(epoch + 1),
            "loss": total / max(rows, 1),
            "temperature": float(temperature.detach()),
            "seconds": time.perf_counter() - start,
        }
        if anchor:
            metrics["anchor"] = anchor_total / max(rows, 1)
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
    return history


def format_progress(metrics: dict[str, float]) -> str:
    return (
        f"two-tower epoch {int(metrics['epoch'])}: loss {metrics['loss']:.4f} "
        f"temperature {metrics['temperature']:.4f} ({metrics['seconds']:.1f}s)"
    )


def print_progress(epoch: int, metrics: dict[str, float]) -> None:
    print(format_progress(metrics), flush=True)


# ----------------------------------------------------------------------------- artifacts


def mean_fill(weight: torch.Tensor, trained_rows: np.ndarray) -> None:
    trained = np.unique(trained_rows[trained_rows != OOV])
    untrained = np.setdiff1d(np.arange(1, weight.shape[0]), trained)
    if len(trained) and len(untrained):
        with torch.no_grad():
            weight[torch.as_tensor(untrained)] = weight[torch.as_tensor(trained)].mean(0)


@torch.no_grad()
def encode_in_batches(fn: Callable[..., torch.Tensor], n: int, batch: int, *columns: torch.Tensor) -> np.ndarray:
    chunks = [fn(*(c[s:s + batch] for c in columns)) for s in range(0, n, batch)]
    return torch.cat(chunks).cpu().numpy().astype(np.float32) if chunks else np.zeros((0, 0), np.float32)


@dataclass
class PreparedTraining:
    """Everything a training worker needs, as plain arrays (cheap to ship to Ray workers)."""

    features: TowerFeatures
    tables: ModelTables
    examples: TrainingExamples
    histories: np.ndarray


def prepare_training(
    dataset: Dataset,
    train_interactions: pd.DataFrame,
    config: TwoTowerConfig,
    features: TowerFeatures | None = None,
) -> PreparedTraining:
    """Arrays for `fit`. `features`: a base model's vocabulary when fine-tuning it (default: built
    from `dataset`), so rows line up with the base state_dict and unknown ids fall to OOV."""
    features = features if features is not None else TowerFeatures.from_dataset(dataset, config)
    return PreparedTraining(
        features=features,
        tables=ModelTables.build(features, dataset),
        examples=build_training_examples(features, train_interactions, config),
        histories=serving_histories(features, train_interactions, config.history_length),
    )


def train_two_tower_in_process(
    dataset: Dataset,
    train_interactions: pd.DataFrame,
    config: TwoTowerConfig,
    on_epoch: EpochCallback | None = print_progress,
    *,
    init_state: dict[str, torch.Tensor] | None = None,
    anchor_l2: float = 0.0,
    features: TowerFeatures | None = None,
) -> TwoTowerArtifacts:
    """Train without Ray, on CPU, in this process (unit tests, notebooks): the same `fit` loop.

    Fine-tuning: pass the base model's `init_state` and `features` (and `anchor_l2`; see `fit`).
    """
    prepared = prepare_training(dataset, train_interactions, config, features)
    torch.set_num_threads(config.torch_threads)
    model = build_model(prepared.features, config, prepared.tables)
    metrics = fit(
        model, make_loader(prepared.examples, config), config, on_epoch, init_state=init_state, anchor_l2=anchor_l2
    )
    return TwoTowerArtifacts.from_model(model, prepared.features, config, prepared.histories, metrics,
                                        trained_item_rows=prepared.examples.item_rows)
