"""The trained two-tower as serving holds it: artifacts, user histories, and both towers in numpy.

A Retrieval replica runs the user tower on every live engagement batch (dynamic embeddings) and
the content item tower on every publish. Both are two embedding gathers and a two-layer MLP, so
they run here in numpy over the artifact's mapped weights, and the replica never imports torch:
torch's import alone is ≈ 120 MiB of private memory in every process (measured at 1M items, where
it was the largest share of what a second Retrieval replica costs). Training, fine-tuning and
the full-table re-encode (`with_histories`) build the torch model (app/retrieval/two_tower.py);
`tests/app/retrieval/test_two_tower_serving.py` holds the two implementations equal.

Weights are saved as one .npy per state-dict entry (`weights/`), mapped read-only and shared by
a node's replicas (app/shared_arrays.py). Artifacts saved before that keep a torch `model.pt`,
which loads through torch as before.
"""
from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from app.retrieval.config import TwoTowerConfig
from app.retrieval.features import OOV, TowerFeatures
from app.shared_arrays import load_arrays, load_state, save_arrays

if TYPE_CHECKING:
    import torch

    from app.retrieval.two_tower import TwoTowerModel

ARTIFACT_VERSION = 1
EMBEDDINGS_DIR = "embeddings"  # one .npy per array, memory-mapped at load
WEIGHTS_DIR = "weights"  # one .npy per state-dict entry, memory-mapped at load
LEGACY_STATE_FILE = "model.pt"  # artifacts saved before WEIGHTS_DIR
ITEM_ID_MEAN = "item_id_mean"  # beside the embeddings: what content_item_tower stands a new item in with
SERVING_ARRAYS = ("user_ids", "user_embeddings", "item_ids", "user_histories", ITEM_ID_MEAN)  # prefaulted
ITEM_TOWER_TABLES = ("item_id.", "item_genres", "item_cats")  # state entries serving leaves unmapped
NORM_EPS = 1e-12  # torch.nn.functional.normalize's


# ----------------------------------------------------------------------------- histories


def ordered_interactions(interactions: pd.DataFrame) -> pd.DataFrame:
    """Interactions in the order every history uses: per user, by (timestamp, item_id)."""
    return interactions.sort_values(["user_id", "timestamp", "item_id"], kind="stable").reset_index(drop=True)


def row_histories(user_codes: np.ndarray, item_rows: np.ndarray, length: int, include_self: bool) -> np.ndarray:
    """Row r's history: the `length` items before r (or ending at r) of the same user, newest first."""
    n = len(item_rows)
    out = np.zeros((n, length), dtype=np.int64)
    if n == 0 or length == 0:
        return out
    starts = np.r_[0, np.flatnonzero(np.diff(user_codes)) + 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    position = np.arange(n)
    offset = 0 if include_self else 1
    for j in range(length):
        source = position - j - offset
        valid = source >= group_start
        out[valid, j] = item_rows[source[valid]]
    return out


def serving_histories(features: TowerFeatures, interactions: pd.DataFrame, length: int) -> np.ndarray:
    """(n_user_rows, length): each known user's latest `length` items, newest first (row 0 empty)."""
    out = np.zeros((features.n_user_rows, length), dtype=np.int64)
    ordered = ordered_interactions(interactions)
    user_rows = features.user_rows(ordered["user_id"].to_numpy())
    item_rows = features.item_rows(ordered["item_id"].to_numpy())
    keep = (user_rows != OOV) & (item_rows != OOV)
    user_rows, item_rows = user_rows[keep], item_rows[keep]
    if len(user_rows) == 0 or length == 0:
        return out
    last = np.r_[np.flatnonzero(np.diff(user_rows)), len(user_rows) - 1]
    out[user_rows[last]] = row_histories(user_rows, item_rows, length, include_self=True)[last]
    return out


# ----------------------------------------------------------------------------- the towers in numpy


def _normalized(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, NORM_EPS)).astype(np.float32, copy=False)


def _mlp(weights: Mapping[str, np.ndarray], prefix: str, x: np.ndarray) -> np.ndarray:
    """`two_tower._mlp`: Linear → ReLU → Linear (state-dict entries `<prefix>.0.*`, `<prefix>.2.*`)."""
    hidden = np.maximum(x @ weights[f"{prefix}.0.weight"].T + weights[f"{prefix}.0.bias"], 0.0)
    return hidden @ weights[f"{prefix}.2.weight"].T + weights[f"{prefix}.2.bias"]


def user_tower(weights: Mapping[str, np.ndarray], id_rows: np.ndarray, cats: np.ndarray,
               history: np.ndarray | None) -> np.ndarray:
    """`TwoTowerModel.user_tower` (eval mode) on the state dict's arrays: (n, dim) float32."""
    parts = [weights["user_id.weight"][id_rows]]
    parts += [weights[f"user_features.{j}.weight"][cats[:, j]] for j in range(cats.shape[1])]
    if "history.weight" in weights:
        if history is None or history.shape[1] == 0:
            history = np.zeros((len(id_rows), 1), dtype=np.int64)
        counts = np.maximum((history != OOV).sum(1, keepdims=True), 1).astype(np.float32)
        parts.append(weights["history.weight"][history].sum(1) / counts)  # OOV row is zero: a padded mean
    return _normalized(_mlp(weights, "user_mlp", np.concatenate(parts, 1)))


def content_item_tower(weights: Mapping[str, np.ndarray], cats: np.ndarray, genres: np.ndarray,
                       mean_id: np.ndarray) -> np.ndarray:
    """`TwoTowerModel.content_item_tower`: the mean trained id embedding in place of the item's own."""
    parts = [np.broadcast_to(np.asarray(mean_id, np.float32).reshape(1, -1), (len(cats), mean_id.size))]
    parts += [weights[f"item_features.{j}.weight"][cats[:, j]] for j in range(cats.shape[1])]
    parts.append(np.asarray(genres, np.float32) @ weights["genres.weight"].T)
    return _normalized(_mlp(weights, "item_mlp", np.concatenate(parts, 1)))


# ----------------------------------------------------------------------------- artifacts


@dataclass
class TwoTowerArtifacts:
    """What serving needs from a trained two-tower: embeddings by id, the model's weights, its features.

    `user_embeddings[i]` belongs to `user_ids[i]` (sorted), likewise for items. Stored user
    embeddings use each user's latest `history_length` training items (`user_histories`).
    `weights`: the model's state dict as numpy arrays (mapped read-only once loaded);
    `state_dict` gives them as torch tensors for training code.
    """

    features: TowerFeatures
    config: TwoTowerConfig
    weights: dict[str, np.ndarray]
    user_ids: np.ndarray
    user_embeddings: np.ndarray
    item_ids: np.ndarray
    item_embeddings: np.ndarray
    user_histories: np.ndarray  # (n_user_rows, history_length) item rows, newest first
    metrics: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def from_model(
        cls,
        model: TwoTowerModel,
        features: TowerFeatures,
        config: TwoTowerConfig,
        histories: np.ndarray,
        metrics: list[dict[str, float]],
        batch: int = 4096,
        trained_item_rows: np.ndarray | None = None,
    ) -> TwoTowerArtifacts:
        """`trained_item_rows`: the item rows training saw; every other item (one without
        interactions, such as a published item folded in: training/fold.py) gets the mean trained
        id embedding, so it embeds as `content_item_tower` embeds it, not from an untrained row."""
        import torch

        from app.retrieval.two_tower import encode_in_batches, mean_fill

        model = model.cpu().eval()
        if trained_item_rows is not None:
            mean_fill(model.item_id.weight, trained_item_rows)
        user_rows = torch.arange(1, features.n_user_rows)
        item_rows = torch.arange(1, features.n_item_rows)
        hist = torch.as_tensor(histories[1:])
        return cls(
            features=features,
            config=config,
            weights={k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()},
            user_ids=features.user_ids.copy(),
            user_embeddings=encode_in_batches(model.user_vectors, len(user_rows), batch, user_rows, hist),
            item_ids=features.item_ids.copy(),
            item_embeddings=encode_in_batches(model.item_vectors, len(item_rows), batch, item_rows),
            user_histories=histories,
            metrics=metrics,
        )

    @property
    def dim(self) -> int:
        return int(self.item_embeddings.shape[1])

    @cached_property
    def state_dict(self) -> dict[str, torch.Tensor]:
        """The weights as torch tensors over the same memory (training and fine-tuning read these;
        a loaded artifact's are its mapped, read-only pages: copy before writing)."""
        import torch

        with warnings.catch_warnings():  # from_numpy warns on a read-only mapping; nothing writes it
            warnings.simplefilter("ignore", UserWarning)
            return {name: torch.from_numpy(np.asarray(array)) for name, array in self.weights.items()}

    def user_embedding(self, user_id: int) -> np.ndarray | None:
        """The stored embedding of a user known at training time, else None."""
        row = int(self.features.user_rows(np.array([user_id]))[0])
        return None if row == OOV else self.user_embeddings[row - 1]

    def user_vectors(self, user_rows: np.ndarray, history: np.ndarray | None) -> np.ndarray:
        """The user tower on known user rows and item-row histories (newest first, OOV-padded)."""
        user_rows = np.asarray(user_rows, dtype=np.int64)
        return user_tower(self.weights, user_rows, self.weights["user_cats"][user_rows], history)

    def with_histories(self, interactions: pd.DataFrame, batch: int = 4096) -> TwoTowerArtifacts:
        """The same model with user embeddings re-encoded from newer histories (no retraining):
        the user tower reads recent items, so new interactions move the stored embeddings."""
        import torch

        from app.retrieval.two_tower import encode_in_batches

        histories = serving_histories(self.features, interactions, self.config.history_length)
        model = self.build_model()
        user_rows = torch.arange(1, self.features.n_user_rows)
        with torch.no_grad():
            embeddings = encode_in_batches(model.user_vectors, len(user_rows), batch, user_rows,
                                           torch.as_tensor(histories[1:]))
        return dataclasses.replace(self, user_embeddings=embeddings, user_histories=histories)

    def build_model(self) -> TwoTowerModel:
        """The torch model for inference, its parameters the artifact's own arrays (no copy: a
        loaded artifact's are the file's mapped pages); never train it, build one to train instead."""
        from app.retrieval.two_tower import TwoTowerModel

        model = TwoTowerModel(self.features, self.config)
        model.load_state_dict(self.state_dict, assign=True)
        return model.eval()

    def encode_users(self, users: pd.DataFrame, histories: Sequence[Sequence[int]]) -> np.ndarray:
        """Fresh user embeddings from features and recent item ids (newest first), e.g. for
        cold-start users or dynamic embeddings; unknown ids use the shared unknown rows."""
        length = self.config.history_length
        hist = np.zeros((len(users), length), dtype=np.int64)
        for r, items in enumerate(histories):
            rows = self.features.item_rows(np.asarray(list(items)[:length], dtype=np.int64))
            hist[r, : len(rows)] = rows
        return user_tower(self.weights, self.features.user_rows(users["user_id"].to_numpy()),
                          self.features.encode_users(users), hist)

    def encode_new_items(self, items: pd.DataFrame) -> np.ndarray:
        """Vectors of items published after training (ITEM_COLUMNS; creator_id as the models'
        index), from content alone (`TwoTowerModel.content_item_tower`)."""
        if items.empty:
            return np.zeros((0, self.dim), np.float32)
        cats, genres = self.features.encode_items(items)
        return content_item_tower(self.weights, cats, genres, self.item_id_mean)

    @cached_property
    def item_id_mean(self) -> np.ndarray:
        """The mean trained item-id embedding (what a new item stands in with), saved with the
        artifact: computing it reads the whole 1M × 64 id table, which a Retrieval replica
        otherwise never maps (its pages would then count in that replica's memory)."""
        return np.asarray(self.weights["item_id.weight"][1:], np.float32).mean(0).astype(np.float32)

    def save(self, path: Path) -> None:
        """A directory: weights/ and embeddings/ (one .npy per array), features.json, meta.json."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_arrays(path / WEIGHTS_DIR, self.weights)
        save_arrays(path / EMBEDDINGS_DIR, {
            "user_ids": self.user_ids, "user_embeddings": self.user_embeddings,
            "item_ids": self.item_ids, "item_embeddings": self.item_embeddings, "user_histories": self.user_histories,
            ITEM_ID_MEAN: self.item_id_mean,
        })
        self.features.save(path / "features.json")
        meta = {"version": ARTIFACT_VERSION, "config": self.config.model_dump(mode="json"), "metrics": self.metrics}
        (path / "meta.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, path: Path) -> TwoTowerArtifacts:
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("version") != ARTIFACT_VERSION:
            raise ValueError(f"{path}: two-tower artifact version {meta.get('version')}, expected {ARTIFACT_VERSION}")
        # Mapped read-only (app/shared_arrays.py): the node's replicas share the pages. Only what
        # serving reads is prefaulted: the user tower and the user-side arrays. The item tower's
        # 1M-row tables and the item embeddings (the index holds its own vectors) stay unmapped
        # until read, ≈ 0.63 GiB at 1M items that a Retrieval replica never touches.
        if (path / EMBEDDINGS_DIR).is_dir():
            arrays = load_arrays(path / EMBEDDINGS_DIR, prefaulted=SERVING_ARRAYS)
        else:  # artifacts written before the embeddings were mapped
            arrays = dict(np.load(path / "embeddings.npz"))
        artifacts = cls(
            features=TowerFeatures.load(path / "features.json"),
            config=TwoTowerConfig.model_validate(meta["config"]),
            weights=_load_weights(path),
            user_ids=arrays["user_ids"],
            user_embeddings=arrays["user_embeddings"],
            item_ids=arrays["item_ids"],
            item_embeddings=arrays["item_embeddings"],
            user_histories=arrays["user_histories"],
            metrics=meta["metrics"],
        )
        if ITEM_ID_MEAN in arrays:  # artifacts from before it was saved compute it when first asked
            artifacts.__dict__["item_id_mean"] = np.asarray(arrays[ITEM_ID_MEAN])
        return artifacts


def _serving_reads(name: str) -> bool:
    return not name.startswith(ITEM_TOWER_TABLES)


def _load_weights(path: Path) -> dict[str, np.ndarray]:
    if (path / WEIGHTS_DIR).is_dir():
        directory = path / WEIGHTS_DIR
        names = [p.name.removesuffix(".npy") for p in directory.glob("*.npy")]
        return load_arrays(directory, names, prefaulted=[n for n in names if _serving_reads(n)])
    if not (path / LEGACY_STATE_FILE).is_file():
        raise FileNotFoundError(f"{path}: two-tower artifact without weights: neither {WEIGHTS_DIR}/ "
                                f"nor {LEGACY_STATE_FILE} is there")
    state = load_state(path / LEGACY_STATE_FILE, prefaulted=_serving_reads)  # imports torch
    return {name: tensor.numpy() for name, tensor in state.items()}
