"""Ray Train job for the two-tower retrieval model.

The driver builds the training examples (plain arrays), a `TorchTrainer` runs the shared
`app.retrieval.two_tower.fit` loop in each worker with a Ray-prepared model and loader, and
every epoch reports its metrics with a `ray.train.Checkpoint` (rank 0's state dict). The driver
reloads the last checkpoint, exports the embedding matrices and returns `TwoTowerArtifacts`.

Ray Train V2 (the default in Ray 2.60): `ray.train.report(metrics, checkpoint=...)` from every
worker, `RunConfig(storage_path=..., name=...)`; fault-tolerant resumption would go through
`FailureConfig` and `ray.train.get_checkpoint()` (there is no `Trainer.restore` in V2).

Example:
    artifacts = train_two_tower(ds, train_interactions, RetrievalConfig(), Path("runs"))
    artifacts.save(Path("artifacts/two_tower"))
"""
from __future__ import annotations

import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray
import ray.train
import ray.train.torch
import torch
from ray.train import Checkpoint, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

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
from training.ray_runtime import local_ray

CHECKPOINT_FILE = "model.pt"
TRAIN_LOG_LEVEL = "WARNING"  # Ray Train's own INFO lines (one per checkpoint) drown the epoch progress


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: rebuild the model from arrays, prepare it and the loader, run `fit`."""
    config = TwoTowerConfig.model_validate(loop_config["config"])
    torch.set_num_threads(config.torch_threads)
    features = TowerFeatures.from_dict(loop_config["features"])
    model = build_model(features, config, ModelTables(**loop_config["tables"]))
    examples = TrainingExamples(**loop_config["examples"])
    model = ray.train.torch.prepare_model(model)
    loader = ray.train.torch.prepare_data_loader(make_loader(examples, config))
    context = ray.train.get_context()
    rank = context.get_world_rank()

    def report(epoch: int, metrics: dict[str, float]) -> None:
        if rank != 0:
            ray.train.report(metrics)  # every worker reports; only rank 0 carries the checkpoint
            return
        # Ray Train patches print() to tee into its logger (each line would show twice).
        sys.__stdout__.write(format_progress(metrics) + "\n")
        sys.__stdout__.flush()
        with tempfile.TemporaryDirectory() as tmp:
            state = (model.module if hasattr(model, "module") else model).state_dict()
            torch.save({k: v.detach().cpu() for k, v in state.items()}, Path(tmp) / CHECKPOINT_FILE)
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp))

    sampler = getattr(loader, "sampler", None)
    set_epoch = sampler.set_epoch if hasattr(sampler, "set_epoch") else None
    init = loop_config.get("init_state")
    init_state = None if init is None else {k: torch.tensor(v) for k, v in init.items()}
    fit(
        model, loader, config, on_epoch=report, set_epoch=set_epoch,
        init_state=init_state, anchor_l2=float(loop_config.get("anchor_l2", 0.0)),
    )


def train_two_tower(
    dataset: Dataset,
    train_interactions: pd.DataFrame,
    config: RetrievalConfig,
    storage_dir: Path,
    run_name: str | None = None,
    *,
    init_state: dict[str, torch.Tensor] | None = None,
    anchor_l2: float = 0.0,
    features: TowerFeatures | None = None,
) -> TwoTowerArtifacts:
    """Train the two-tower on `train_interactions` with Ray Train and export its embeddings.

    Checkpoints go to `storage_dir/run_name` (default a fresh `two_tower-<time>-<id>` name).
    Uses the GPU when torch sees one and `config.two_tower.use_gpu`; shuts Ray down afterwards
    only if this call started it. Fine-tuning a base model: pass its `init_state` (state_dict)
    and `features`, and `anchor_l2` to keep the weights near it (`app.retrieval.two_tower.fit`).
    """
    tt = config.two_tower
    start = time.perf_counter()
    prepared = prepare_training(dataset, train_interactions, tt, features)
    run_name = run_name or f"two_tower-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    with local_ray():
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={
                "config": tt.model_dump(mode="json"),
                "features": prepared.features.to_dict(),
                "tables": prepared.tables.to_dict(),
                "examples": prepared.examples.to_dict(),
                # numpy arrays travel through the object store; workers turn them back into tensors
                "init_state": None if init_state is None else {k: v.cpu().numpy() for k, v in init_state.items()},
                "anchor_l2": anchor_l2,
            },
            scaling_config=ScalingConfig(
                num_workers=tt.num_workers, use_gpu=tt.use_gpu and torch.cuda.is_available()
            ),
            run_config=RunConfig(
                storage_path=str(Path(storage_dir).resolve()),
                name=run_name,
                logging_config=ray.train.LoggingConfig(log_level=TRAIN_LOG_LEVEL),
            ),
        )
        result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"two-tower run {run_name} finished without a checkpoint")
    with result.checkpoint.as_directory() as directory:
        state = torch.load(Path(directory) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    model = build_model(prepared.features, tt)
    model.load_state_dict(state)
    metrics = _epoch_metrics(result)
    artifacts = TwoTowerArtifacts.from_model(model, prepared.features, tt, prepared.histories, metrics)
    print(
        f"two-tower trained: {len(prepared.examples)} positives, {len(artifacts.item_ids)} items, "
        f"{len(artifacts.user_ids)} users in {time.perf_counter() - start:.1f}s",
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
