"""Ray Train job for the two-tower retrieval model.

The driver builds the training examples (plain arrays) and writes them once under the run's
storage (training/ray_job.py); a `TorchTrainer` of `training.two_tower.num_workers` workers runs
the shared `app.retrieval.two_tower.fit` loop, each worker on its own block of the examples with
the model under DistributedDataParallel (gradients averaged every step). The global batch is the
configured `batch_size`, split over the workers, and every worker's rows meet the whole global
batch's items as negatives (the item vectors are all-gathered, with their gradients), so the loss
is the one-process loss. Every
epoch reports its metrics with a `ray.train.Checkpoint` (rank 0's state dict). The driver reloads
the last checkpoint, exports the embedding matrices and returns `TwoTowerArtifacts`.

Ray Train V2 (the default in Ray 2.60): `ray.train.report(metrics, checkpoint=...)` from every
worker, `RunConfig(storage_path=..., storage_filesystem=..., name=...)`; a worker group Ray Train
restarts after a failure (`FailureConfig`) resumes from `ray.train.get_checkpoint()`
(training/ray_job.py `resume_point`; there is no `Trainer.restore`).

Example:
    artifacts = train_two_tower(ds, train_interactions, RetrievalConfig(), "s3://bucket/runs",
                                job=TrainJobConfig(num_workers=2))
    artifacts.save(Path("artifacts/two_tower"))
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray.train
import ray.train.torch
import torch
from ray.train import Checkpoint

from app.data.tables import Dataset
from app.retrieval.config import RetrievalConfig, TwoTowerConfig
from app.retrieval.features import TowerFeatures
from app.retrieval.two_tower import (
    ModelTables,
    TrainingExamples,
    TwoTowerArtifacts,
    build_model,
    fit,
    make_loader,
    prepare_training,
    format_progress,
)
from training.config import TrainJobConfig
from training.ray_job import (
    ExampleArrays, RayTrainWorkers, checkpoint_state, fresh_run_name, resume_point, run_job, shuffled_order, unwrapped,
    worker_block, worker_log,
)

CHECKPOINT_FILE = "model.pt"
TRAIN_LOG_LEVEL = "WARNING"  # Ray Train's own INFO lines (one per checkpoint) drown the epoch progress


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: rebuild the model from its tables, read this worker's block of the
    examples, and run `fit` on it with the model under DistributedDataParallel and the softmax's
    columns gathered from every worker."""
    config = TwoTowerConfig.model_validate(loop_config["config"])
    parallel = RayTrainWorkers()
    torch.set_num_threads(parallel.threads(config.torch_threads))
    features = TowerFeatures.from_dict(loop_config["features"])
    model = parallel.prepare(build_model(features, config, ModelTables(**loop_config["tables"])))
    examples = TrainingExamples(**worker_block(loop_config["examples"]))
    # `batch_size` is the global batch: each worker's share of it, from its own block (no sampler).
    step = config.model_copy(update={"batch_size": parallel.batch_size(config.batch_size)})
    loader = ray.train.torch.prepare_data_loader(make_loader(examples, step), add_dist_sampler=False)

    def report(epoch: int, metrics: dict[str, float]) -> None:
        metrics = {**metrics, "loss": parallel.mean(metrics["loss"])}
        if parallel.rank != 0:
            ray.train.report(metrics)  # every worker reports; only rank 0 carries the checkpoint
            return
        worker_log(format_progress(metrics))
        with tempfile.TemporaryDirectory() as tmp:
            state = unwrapped(model).state_dict()
            torch.save({k: v.detach().cpu() for k, v in state.items()}, Path(tmp) / CHECKPOINT_FILE)
            (Path(tmp) / "metrics.json").write_text(json.dumps(metrics))  # its epoch: where a restart resumes
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp))

    init = loop_config.get("init_state")
    init_state = None if init is None else {k: torch.tensor(v) for k, v in init.items()}
    resumed = resume_point(CHECKPOINT_FILE)
    if resumed is not None:
        worker_log(f"two-tower resumes after epoch {resumed.epochs_done} (its workers were restarted)")
    fit(model, loader, config, on_epoch=report, init_state=init_state, anchor_l2=float(loop_config.get("anchor_l2", 0.0)),
        columns=parallel.gather_columns if parallel.world_size > 1 else None,
        resume_state=resumed.state if resumed else None, start_epoch=resumed.epochs_done if resumed else 0)


def train_two_tower(
    dataset: Dataset,
    train_interactions: pd.DataFrame,
    config: RetrievalConfig,
    storage_dir: str | Path,
    run_name: str | None = None,
    *,
    init_state: dict[str, torch.Tensor] | None = None,
    anchor_l2: float = 0.0,
    features: TowerFeatures | None = None,
    job: TrainJobConfig | None = None,
) -> TwoTowerArtifacts:
    """Train the two-tower on `train_interactions` with Ray Train and export its embeddings.

    `job` (default one worker): how many workers, and GPUs (training/config.py). The examples are
    written once under `storage_dir` (a local path or a URI) and each worker reads its block;
    checkpoints go to `storage_dir/run_name` (default a fresh `two_tower-<time>-<id>` name).
    Shuts Ray down afterwards only if this call started it. Fine-tuning a base model: pass its
    `init_state` (state_dict) and `features`, and `anchor_l2` to keep the weights near it
    (`app.retrieval.two_tower.fit`).
    """
    tt = config.two_tower
    job = job or TrainJobConfig()
    start = time.perf_counter()
    prepared = prepare_training(dataset, train_interactions, tt, features)
    run_name = run_name or fresh_run_name("two_tower")
    # One worker reads the rows as built (the loader shuffles them, as in-process); several read
    # blocks of one shuffled order, so each block is a random sample.
    order = None if job.num_workers == 1 else shuffled_order(len(prepared.examples), tt.seed)
    result = run_job(
        train_loop_per_worker,
        {"examples": ExampleArrays(prepared.examples.to_dict(), order)},
        {
            "config": tt.model_dump(mode="json"),
            "features": prepared.features.to_dict(),
            "tables": prepared.tables.to_dict(),
            # numpy arrays travel in the loop's config; workers turn them back into tensors
            "init_state": None if init_state is None else {k: v.cpu().numpy() for k, v in init_state.items()},
            "anchor_l2": anchor_l2,
        },
        job, storage_dir, run_name, log_level=TRAIN_LOG_LEVEL,
    )
    model = build_model(prepared.features, tt)
    model.load_state_dict(checkpoint_state(result, CHECKPOINT_FILE))
    metrics = _epoch_metrics(result)
    artifacts = TwoTowerArtifacts.from_model(model, prepared.features, tt, prepared.histories, metrics,
                                             trained_item_rows=prepared.examples.item_rows)
    print(
        f"two-tower trained: {len(prepared.examples)} positives, {len(artifacts.item_ids)} items, "
        f"{len(artifacts.user_ids)} users on {job.num_workers} worker(s) in {time.perf_counter() - start:.1f}s",
        flush=True,
    )
    return artifacts


def _epoch_metrics(result: ray.train.Result) -> list[dict[str, float]]:
    """Per-epoch metrics of the run (all reported rows when available, else the last)."""
    frame = getattr(result, "metrics_dataframe", None)
    if isinstance(frame, pd.DataFrame) and not frame.empty:
        keep = [c for c in ("epoch", "loss", "temperature", "seconds", "anchor") if c in frame]
        return [{k: float(v) for k, v in row.items()} for row in frame[keep].to_dict("records")]
    return [{k: float(v) for k, v in (result.metrics or {}).items() if isinstance(v, (int, float, np.floating))}]
