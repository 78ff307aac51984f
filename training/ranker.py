"""Ranker training: learning-to-rank examples that mirror the serving task, and a Ray Train job.

Set-up (it mirrors "rank every unseen item for a user at time t"):
  * a label window is (feature history, labels): features come from the history only, as of
    each user's last history timestamp; labels are the user's interactions in the window.
  * candidates are the items not in the user's history: every positive plus
    `negatives_per_positive` uniformly sampled unlabelled items (the serving ranker sees
    retrieval output over the whole catalogue, so uniform negatives match its distribution).
  * labels (app/data/labels.py): from a rating log the documented mapping (click = interacted in
    the window; like = rating >= 4; share = rating == 5; hide = rating <= 2; watch = (rating-1)/4);
    from an event log its events. Unlabelled candidates get 0 on every head (the heads are
    unconditional probabilities). A log with impressions learns from them instead: every shown
    item is an example, engaged with or not (`build_impression_examples`).
  * position = the logged slot (-1 unknown → the neutral index), randomly dropped to "unknown"
    for `position_dropout` of the rows so the neutral index is learned too.
  * the item id is dropped to "unknown" (code 0) for `item_id_dropout` of the rows: a published
    item is scored with that code until a training folds it in, and an untrained row ranks new
    items no better than chance on their content (docs/freshness.md, cold start).
  * `extra_label_windows` earlier windows, cut from the end of the feature history, add
    examples from other times (more data, and robustness to drift).

`fit_ranker` runs it end to end and writes the artifact directory; `train_ranker` is the Ray Train
job (TorchTrainer, `training.ranker.num_workers` data-parallel workers each reading its block of
the examples from the run's storage, a checkpoint per epoch); `train_loop` is the same loop
(`fit_dcn`) in-process.
With the cascade on, the trained DCN is then distilled into the pre-ranker (training/pre_ranker.py).
"""
from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from app.data.labels import head_label_matrix
from app.ranking.artifacts import MODEL_FILE, RankerArtifacts, build_model
from app.ranking.config import HEADS, RankingConfig
from app.ranking.dcn import MultiTaskDCN
from app.pipeline.candidates import Candidates
from app.ranking.features import FeatureSchema, FeatureStore, RankingFeatureAssembler
from training.config import TrainJobConfig
from training.pre_ranker import distill_pre_ranker
from training.ray_job import (
    DataParallel, ExampleArrays, RayTrainWorkers, checkpoint_state, fresh_run_name, resume_point, run_job,
    shuffled_order, unwrapped, worker_block, worker_log,
)

SORT_KEYS = ["user_id", "timestamp", "item_id"]  # the evaluation split's order (item id breaks ties)


@dataclass
class RankingExamples:
    """Model inputs and labels for (user, item) pairs; `labels` columns follow HEADS."""

    dense: np.ndarray  # float32 (n, d)
    categorical: np.ndarray  # int64 (n, c)
    position: np.ndarray  # int64 (n,), logged slot, <= 0 unknown
    labels: np.ndarray  # float32 (n, len(HEADS))
    user_ids: np.ndarray
    item_ids: np.ndarray
    schema: FeatureSchema

    def __len__(self) -> int:
        return len(self.labels)

    @staticmethod
    def concat(parts: list[RankingExamples]) -> RankingExamples:
        if any(p.schema != parts[0].schema for p in parts):
            raise ValueError("cannot concatenate examples built with different feature schemas")
        cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
        return RankingExamples(cat("dense"), cat("categorical"), cat("position"), cat("labels"),
                               cat("user_ids"), cat("item_ids"), parts[0].schema)


def split_user_tail(history: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per user (ordered by timestamp, item_id), the newest round(fraction·n) rows (≥ 1 for
    users with ≥ 2 rows) form the tail; the rest the head."""
    ordered = history.sort_values(SORT_KEYS, kind="stable", ignore_index=True)
    sizes = ordered.groupby("user_id", sort=True).size().to_numpy()
    n_tail = np.where(sizes >= 2, np.clip(np.floor(fraction * sizes + 0.5), 1, sizes - 1), 0).astype(np.int64)
    position = ordered.groupby("user_id", sort=True).cumcount().to_numpy()
    in_tail = position >= np.repeat(sizes - n_tail, sizes)
    return ordered[~in_tail].reset_index(drop=True), ordered[in_tail].reset_index(drop=True)


def label_windows(
    feature_history: pd.DataFrame, labels: pd.DataFrame, extra: int
) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    """The main window plus `extra` earlier ones, each label window sized like the main one
    relative to its history (so every window asks the same question at a different time)."""
    windows = [(feature_history, labels)]
    fraction = len(labels) / max(len(feature_history) + len(labels), 1)
    history = feature_history
    for _ in range(extra):
        history, tail = split_user_tail(history, fraction)
        if not len(tail):
            break
        windows.append((history, tail))
    return windows


def build_ranking_examples(
    feature_history: pd.DataFrame,
    labels: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame,
    config: RankingConfig,
    seed: int = 0,
    candidates: Mapping[int, Candidates] | None = None,
    store: FeatureStore | None = None,
) -> RankingExamples:
    """Examples for one label window (module docstring): features from `feature_history` as of
    each user's last history timestamp, positives from `labels`, uniform negatives. `store`: the
    tables of `feature_history` when the caller has them (a build costs ≈ 90 s at 1M items).

    With `candidates` (the retrieval output per user, as of the same time), negatives are drawn
    from the user's retrieved candidates and every pair carries its `src_*` / `n_sources`
    columns, exactly as at serving; a positive retrieval missed gets zeros there."""
    rng = np.random.default_rng(seed)
    store = store or FeatureStore.build(feature_history, items, users, config.features)
    assembler = RankingFeatureAssembler(store)
    catalogue = np.sort(items["item_id"].to_numpy(np.int64))
    last_seen = feature_history.groupby("user_id")["timestamp"].max()
    first_label = labels.groupby("user_id")["timestamp"].min()
    labels = labels.sort_values(SORT_KEYS, kind="stable").drop_duplicates(["user_id", "item_id"], keep="last")
    label_groups = {u: g for u, g in labels.groupby("user_id", sort=True)}

    rows_user, rows_item, rows_now, rows_pos, rows_label = [], [], [], [], []
    rows_sources: list[dict[str, np.ndarray]] = []
    for user_id, g in label_groups.items():
        seen = store.user_history(int(user_id))
        fresh = ~np.isin(g["item_id"].to_numpy(np.int64), seen)  # re-consumption can never be recommended
        if not fresh.any():
            continue
        g = g[fresh]
        positives = g["item_id"].to_numpy(np.int64)
        retrieved = None if candidates is None else candidates.get(int(user_id))
        universe = catalogue if retrieved is None else retrieved.item_ids
        pool = np.setdiff1d(universe, np.concatenate([seen, positives]), assume_unique=False)
        n_neg = min(len(pool), config.training.negatives_per_positive * len(positives))
        negatives = rng.choice(pool, size=n_neg, replace=False) if n_neg else np.zeros(0, np.int64)
        pair_items = np.concatenate([positives, negatives])
        now = float(last_seen.get(user_id, first_label[user_id] - 1))
        label_matrix = np.zeros((len(pair_items), len(HEADS)), dtype=np.float32)
        label_matrix[:len(positives)] = head_label_matrix(g)
        positions = np.zeros(len(pair_items), dtype=np.int64)
        if "position" in g:
            positions[:len(positives)] = g["position"].to_numpy(np.int64)
        rows_user.append(np.full(len(pair_items), user_id, np.int64))
        rows_item.append(pair_items)
        rows_now.append(np.full(len(pair_items), now))
        rows_pos.append(positions)
        rows_label.append(label_matrix)
        if candidates is not None:
            rows_sources.append(_pair_source_columns(retrieved, pair_items, assembler.source_columns))
    if not rows_user:
        raise ValueError("no label window row has an item outside its user's history: nothing to learn from")
    user_ids, item_ids = np.concatenate(rows_user), np.concatenate(rows_item)
    sources = (
        {name: np.concatenate([r[name] for r in rows_sources]) for name in assembler.source_columns}
        if candidates is not None else None
    )
    batch = assembler.batch(user_ids, item_ids, np.concatenate(rows_now), sources)
    return RankingExamples(batch.dense, batch.categorical, np.concatenate(rows_pos), np.concatenate(rows_label),
                           user_ids, item_ids, assembler.schema)


def build_impression_examples(
    impressions: pd.DataFrame,
    feature_history: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame,
    config: RankingConfig,
    candidates: Mapping[int, Candidates] | None = None,
) -> RankingExamples:
    """One example per labelled impression (app.data.labels.impression_labels): what the user
    was shown, engaged with or not, at the slot it was shown in. Features from `feature_history`
    as of each user's last history timestamp, as for the rating windows."""
    if not len(impressions):
        raise ValueError("no impression falls in the label window: nothing to learn from")
    store = FeatureStore.build(feature_history, items, users, config.features)
    assembler = RankingFeatureAssembler(store)
    last_seen = feature_history.groupby("user_id")["timestamp"].max()
    user_ids = impressions["user_id"].to_numpy(np.int64)
    item_ids = impressions["item_id"].to_numpy(np.int64)
    fallback = impressions["timestamp"].to_numpy(np.float64) - 1
    now = np.where(np.isin(user_ids, last_seen.index.to_numpy()),
                   last_seen.reindex(user_ids).to_numpy(np.float64), fallback)
    now = np.where(np.isfinite(now), now, fallback)
    sources = None
    if candidates is not None:
        parts = [(_pair_source_columns(candidates.get(int(u)), item_ids[idx], assembler.source_columns), idx)
                 for u, idx in pd.Series(np.arange(len(user_ids))).groupby(user_ids).groups.items()]
        sources = {name: np.zeros(len(user_ids), np.float32) for name in assembler.source_columns}
        for columns, idx in parts:
            for name in assembler.source_columns:
                sources[name][np.asarray(idx)] = columns[name]
    batch = assembler.batch(user_ids, item_ids, now, sources)
    labels = impressions[list(HEADS)].to_numpy(np.float32)
    position = impressions["position"].to_numpy(np.int64)
    return RankingExamples(batch.dense, batch.categorical, np.where(position >= 1, position, 0), labels,
                           user_ids, item_ids, assembler.schema)


def _pair_source_columns(
    retrieved: Candidates | None, pair_items: np.ndarray, names: tuple[str, ...]
) -> dict[str, np.ndarray]:
    out = {name: np.zeros(len(pair_items), np.float32) for name in names}
    if retrieved is None or not len(retrieved):
        return out
    order = np.argsort(retrieved.item_ids, kind="stable")
    sorted_ids = retrieved.item_ids[order]
    at = np.clip(np.searchsorted(sorted_ids, pair_items), 0, len(sorted_ids) - 1)
    found = sorted_ids[at] == pair_items
    for name in names:
        column = retrieved.features.get(name)
        if column is not None:
            out[name][found] = np.asarray(column, np.float32)[order][at[found]]
    return out


def build_training_set(
    feature_history: pd.DataFrame, labels: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame,
    config: RankingConfig, candidates: Mapping[int, Candidates] | None = None, store: FeatureStore | None = None,
) -> RankingExamples:
    """Examples from the main window and `training.extra_label_windows` earlier ones (`store`:
    the main window's feature tables, when the caller has them).

    With retrieval `candidates` only the main window is used: earlier windows would need the
    retrieval state as of their own time, and mixing windows with and without source features
    would teach the ranker a skew it never sees at serving."""
    if candidates is not None:
        return build_ranking_examples(feature_history, labels, items, users, config, config.training.seed, candidates,
                                      store)
    windows = label_windows(feature_history, labels, config.training.extra_label_windows)
    return RankingExamples.concat([
        build_ranking_examples(h, lab, items, users, config, seed=config.training.seed + k,
                               store=store if k == 0 else None)  # window 0 is feature_history itself
        for k, (h, lab) in enumerate(windows)
    ])


def distillation_set(
    feature_history: pd.DataFrame, labels: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame,
    config: RankingConfig, candidates: Mapping[int, Candidates] | None = None, store: FeatureStore | None = None,
) -> RankingExamples:
    """What the pre-ranker learns the DCN's order on: the main label window's users, each with
    `cascade.distill_negatives_per_positive` unlabelled candidates per positive (their retrieval
    candidates when given), so it sees many candidates per request, as the cut does. Unlabelled
    is fine: the DCN is the teacher."""
    training = config.training.model_copy(update={
        "negatives_per_positive": config.cascade.distill_negatives_per_positive, "extra_label_windows": 0})
    return build_training_set(feature_history, labels, items, users, config.model_copy(update={"training": training}),
                              candidates, store)


# -- the training loop (shared by Ray Train and in-process runs) ------------------------------------

def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    pos = labels > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = pd.Series(scores).rank().to_numpy()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def holdout(examples: RankingExamples, seed: int) -> np.ndarray:
    """The rows of 5 % of the users, held out of training for the reported figures."""
    rng = np.random.default_rng(seed)
    users = np.unique(examples.user_ids)
    held_users = rng.choice(users, size=max(1, len(users) // 20), replace=False) if len(users) > 1 else users[:0]
    return np.isin(examples.user_ids, held_users)


def head_report(model: MultiTaskDCN, examples: RankingExamples, seed: int, deciles: int = 10) -> dict:
    """Per head on the held-out users, position-neutral as served: AUC (the binary heads) and
    calibration, the mean prediction against the observed rate in each decile of prediction."""
    rows = np.flatnonzero(holdout(examples, seed))
    if not len(rows):
        return {}
    with torch.no_grad():
        probs = torch.sigmoid(model(torch.tensor(examples.dense[rows]), torch.tensor(examples.categorical[rows]))).numpy()
    labels = examples.labels[rows]
    out: dict = {"rows": int(len(rows))}
    for k, head in enumerate(HEADS):
        p, y = probs[:, k], labels[:, k]
        edges = np.quantile(p, np.linspace(0, 1, deciles + 1)[1:-1])
        bucket = np.searchsorted(edges, p, side="right")
        table = [(float(p[bucket == b].mean()), float(y[bucket == b].mean()), int((bucket == b).sum()))
                 for b in range(deciles) if (bucket == b).any()]
        out[head] = {"auc": _auc((y > 0.5).astype(np.float32), p) if head != "watch" else float("nan"),
                     "mean_predicted": float(p.mean()), "mean_observed": float(y.mean()), "deciles": table}
    return out


def format_head_report(report: dict) -> str:
    lines = [f"ranker heads on {report.get('rows', 0)} held-out rows (position-neutral):"]
    for head in HEADS:
        r = report.get(head)
        if r is None:
            continue
        auc = "" if r["auc"] != r["auc"] else f"AUC {r['auc']:.3f}  "
        lines.append(f"  {head:6} {auc}mean predicted {r['mean_predicted']:.4f} vs observed {r['mean_observed']:.4f}")
        lines.append("         calibration by decile (predicted/observed): " + " ".join(
            f"{p:.3f}/{o:.3f}" for p, o, _ in r["deciles"]))
    return "\n".join(lines)


def train_loop(
    examples: RankingExamples,
    config: RankingConfig,
    report: Callable[[dict, MultiTaskDCN], None] | None = None,
    device: torch.device | None = None,
    log: Callable[[str], None] = print,
    init_state: Mapping[str, torch.Tensor] | None = None,
) -> MultiTaskDCN:
    """Train a MultiTaskDCN on `examples` in this process (5% of users held out for the
    reported metrics): `fit_dcn` on one worker holding every row."""
    held = holdout(examples, config.training.seed)
    return fit_dcn(_columns(examples, ~held), _columns(examples, held), examples.schema, config,
                   report=report, device=device, log=log, init_state=init_state)


LOOP_COLUMNS = ("dense", "categorical", "position", "labels")  # what the training loop reads


def _columns(examples: RankingExamples, rows: np.ndarray) -> dict[str, np.ndarray]:
    return {name: getattr(examples, name)[rows] for name in LOOP_COLUMNS}


def fit_dcn(
    train: Mapping[str, np.ndarray],
    valid: Mapping[str, np.ndarray] | None,
    schema: FeatureSchema,
    config: RankingConfig,
    *,
    parallel: DataParallel = DataParallel(),
    report: Callable[[dict, MultiTaskDCN], None] | None = None,
    device: torch.device | None = None,
    log: Callable[[str], None] = print,
    init_state: Mapping[str, torch.Tensor] | None = None,
    start_epoch: int = 1,
) -> MultiTaskDCN:
    """The loop shared by the in-process path and each Ray Train worker: `train` holds this
    worker's rows (LOOP_COLUMNS), `valid` the held-out rows (None on the workers that do not
    report them). A step takes `training.batch_size` rows in all, split over the workers, whose
    gradients `parallel` averages; the feature normaliser is fitted on every worker's rows.

    `init_state` continues a trained model (fine-tuning): its weights AND its feature normaliser,
    so the continued model reads features exactly as the serving one does. A restarted run
    passes its last checkpoint as `init_state` and the next epoch as `start_epoch` (the
    optimiser's moments start afresh)."""
    t = config.training
    torch.manual_seed(t.seed)
    torch.set_num_threads(parallel.threads(t.threads))
    device = device or parallel.device
    model = build_model(config, schema)
    if init_state is not None:
        model.load_state_dict({k: torch.as_tensor(v) for k, v in init_state.items()})
    else:
        parallel.fit_normaliser(model, train["dense"])
    model.to(device)
    net = parallel.prepare(model)  # DistributedDataParallel across Ray Train workers
    # Copies: arrays handed over by Ray's object store are read-only.
    dense = torch.tensor(train["dense"], device=device)
    categorical = torch.tensor(train["categorical"], device=device)
    item_column = schema.categorical_names.index("item_id") if "item_id" in schema.categorical_names else None
    position = model.position_index(train["position"]).to(device)
    labels = torch.tensor(train["labels"], device=device)
    head_weights = torch.tensor([t.loss_weights[h] for h in HEADS], device=device)
    optimiser = torch.optim.Adam(net.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    bce = nn.BCEWithLogitsLoss(reduction="none")
    gen = torch.Generator().manual_seed(t.seed + parallel.rank)
    batch_size = parallel.batch_size(t.batch_size)
    has_valid = valid is not None and len(valid["labels"]) > 0

    for epoch in range(start_epoch, t.epochs + 1):
        start = time.perf_counter()
        net.train()
        order = torch.randperm(len(labels), generator=gen).to(device)
        total, batches = 0.0, 0
        for lo in range(0, len(order), batch_size):
            idx = order[lo:lo + batch_size]
            pos = position[idx]
            if t.position_dropout > 0:
                drop = torch.rand(len(idx), generator=gen).to(device) < t.position_dropout
                pos = torch.where(drop, torch.zeros_like(pos), pos)
            cats = categorical[idx]
            if t.item_id_dropout > 0 and item_column is not None:
                unknown = torch.rand(len(idx), generator=gen).to(device) < t.item_id_dropout
                cats = cats.clone()
                cats[unknown, item_column] = 0
            logits = net(dense[idx], cats, pos)
            loss = (bce(logits, labels[idx]).mean(dim=0) * head_weights).sum()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach())
            batches += 1
        metrics = {"epoch": epoch, "train_loss": parallel.mean(total / max(batches, 1)),
                   "seconds": time.perf_counter() - start}
        if has_valid:
            metrics.update(_validation_metrics(model, valid, head_weights, bce, device))
        if parallel.rank == 0:
            log("ranker epoch {epoch}/{n}: train_loss={train_loss:.4f} valid_loss={v:.4f} "
                "auc_click={a:.4f} ({seconds:.1f}s)".format(
                    n=t.epochs, v=metrics.get("valid_loss", float("nan")),
                    a=metrics.get("valid_auc_click", float("nan")), **metrics))
        if report is not None:
            report(metrics, model)
    model.eval()
    return model.cpu()


def _validation_metrics(model: MultiTaskDCN, valid: Mapping[str, np.ndarray], head_weights: torch.Tensor,
                        bce: nn.Module, device: torch.device) -> dict[str, float]:
    """Position-neutral (as served) loss and AUCs on the held-out rows, by the bare module (the
    other workers take no part: no collective call under DistributedDataParallel)."""
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor(valid["dense"], device=device), torch.tensor(valid["categorical"], device=device))
        loss = (bce(logits, torch.tensor(valid["labels"], device=device)).mean(dim=0) * head_weights).sum()
    probs, y = torch.sigmoid(logits).cpu().numpy(), valid["labels"]
    out = {"valid_loss": float(loss)}
    for k, head in enumerate(HEADS[:4]):
        out[f"valid_auc_{head}"] = _auc(y[:, k], probs[:, k])
    return out


# -- Ray Train -------------------------------------------------------------------------------------

def report_checkpoint(metrics: dict, module: nn.Module, filename: str) -> None:
    """`ray.train.report` of an epoch's metrics, with the module's state_dict in `filename` as the
    checkpoint (written by the rank-0 worker only, as Ray Train expects)."""
    import ray.train

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if ray.train.get_context().get_world_rank() == 0:
            state = {k: v.detach().cpu() for k, v in unwrapped(module).state_dict().items()}
            torch.save(state, Path(tmp) / filename)
            (Path(tmp) / "metrics.json").write_text(json.dumps(metrics))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)


def _ray_train_loop(loop_config: dict) -> None:
    """One Ray Train worker: its block of the training rows; rank 0 also reads the held-out rows
    and reports the validation figures."""
    parallel = RayTrainWorkers()
    config = RankingConfig.model_validate(loop_config["config"])
    valid = loop_config["valid"].read_all() if parallel.rank == 0 else None
    init = loop_config.get("init_state")
    resumed = resume_point(MODEL_FILE)
    if resumed is not None:
        worker_log(f"ranker resumes after epoch {resumed.epochs_done} (its workers were restarted)")
    fit_dcn(worker_block(loop_config["train"]), valid, loop_config["schema"], config, parallel=parallel,
            report=lambda metrics, model: report_checkpoint(metrics, model, MODEL_FILE), log=worker_log,
            init_state=resumed.state if resumed else _tensors(init), start_epoch=resumed.epochs_done + 1 if resumed else 1)


def _tensors(state: Mapping[str, np.ndarray] | None) -> dict[str, torch.Tensor] | None:
    return None if state is None else {k: torch.tensor(v) for k, v in state.items()}


@dataclass
class TrainResult:
    model: MultiTaskDCN
    metrics: dict
    checkpoint_path: str | None


def train_ranker(
    examples: RankingExamples,
    config: RankingConfig,
    storage_path: str | Path = "artifacts/ray_train",
    name: str | None = None,
    init_state: Mapping[str, torch.Tensor] | None = None,
    job: TrainJobConfig | None = None,
) -> TrainResult:
    """Train with Ray Train (`job`: workers and GPUs, default one worker), a checkpoint per epoch
    under `storage_path` (a local path or a URI). The held-out users' rows are written apart and
    read by rank 0; the training rows are cut into one block per worker."""
    job = job or TrainJobConfig()
    held = holdout(examples, config.training.seed)
    train_rows = np.flatnonzero(~held)
    # One worker reads the rows as built (its loop shuffles them each epoch, as in-process);
    # several read blocks of one shuffled order, so each block is a random sample.
    order = None if job.num_workers == 1 else shuffled_order(len(train_rows), config.training.seed)
    result = run_job(
        _ray_train_loop,
        {"train": ExampleArrays(_columns(examples, train_rows), order), "valid": ExampleArrays(_columns(examples, held))},
        {"config": config.model_dump(mode="json"), "schema": examples.schema,
         "init_state": None if init_state is None else {k: v.cpu().numpy() for k, v in init_state.items()}},
        job, storage_path, name or fresh_run_name("ranker"), num_to_keep=2,
    )
    model = build_model(config, examples.schema)
    model.load_state_dict(checkpoint_state(result, MODEL_FILE))
    model.eval()
    return TrainResult(model, dict(result.metrics or {}), result.checkpoint.path)


def fit_ranker(
    feature_history: pd.DataFrame,
    labels: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame,
    config: RankingConfig | None = None,
    *,
    serving_history: pd.DataFrame | None = None,
    artifact_dir: str | Path | None = None,
    candidates: Mapping[int, Candidates] | None = None,
    use_ray: bool = True,
    storage_path: str | Path = "artifacts/ray_train",
    log: Callable[[str], None] = print,
    init_state: Mapping[str, torch.Tensor] | None = None,
    impressions: pd.DataFrame | None = None,
    job: TrainJobConfig | None = None,
) -> RankerArtifacts:
    """Examples → training (Ray Train on `job`'s workers, or in-process with use_ray=False) →
    artifacts whose feature tables come from `serving_history` (default: feature_history +
    labels). With labelled `impressions` (an event log that has them) the examples are those
    impressions. The pre-ranker's distillation runs on the same `job`."""
    config = config or RankingConfig()
    start = time.perf_counter()
    main_store = None  # the main label window's tables, shared by the ranker's and the distillation's examples
    if impressions is not None:
        examples = build_impression_examples(impressions, feature_history, items, users, config, candidates)
    else:
        main_store = FeatureStore.build(feature_history, items, users, config.features)
        examples = build_training_set(feature_history, labels, items, users, config, candidates, main_store)
    log(f"ranker examples: {len(examples)} rows, {int(examples.labels[:, 0].sum())} positives, "
        f"{examples.dense.shape[1]} dense + {examples.categorical.shape[1]} categorical features "
        f"({time.perf_counter() - start:.1f}s)")
    if use_ray:
        model = train_ranker(examples, config, storage_path=storage_path, init_state=init_state, job=job).model
    else:
        model = train_loop(examples, config, log=log, init_state=init_state)
    names = examples.schema.categorical_names
    dropped = (names.index("item_id"),) if config.training.item_id_dropout > 0 and "item_id" in names else ()
    model.fill_unseen_rows(examples.categorical, trained_unknown=dropped)
    log(format_head_report(head_report(model, examples, config.training.seed)))
    pre_ranker = None
    if config.cascade.enabled:
        teach = examples if impressions is not None else distillation_set(
            feature_history, labels, items, users, config, candidates, main_store)
        log(f"pre-ranker distillation set: {len(teach)} rows")
        pre_ranker, _ = distill_pre_ranker(teach.dense, teach.categorical, teach.user_ids, model, config,
                                           use_ray=use_ray, storage_path=storage_path, log=log, job=job)
    if serving_history is None:
        serving_history = pd.concat([feature_history, labels], ignore_index=True)
    store = FeatureStore.build(serving_history, items, users, config.features)
    artifacts = RankerArtifacts(config, store, model, pre_ranker)
    if artifact_dir is not None:
        artifacts.save(artifact_dir)
    return artifacts
