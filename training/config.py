"""Ray Train jobs' tunables: the `training` section of the composed configuration."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from app._config_base import Section


class FineTuneJobConfig(Section):
    """Fine-tuning the serving artifact on recent events (training/fine_tune.py) and when to do it
    (training/retrain_runner.py: on a monitor's retrain request, or on a schedule)."""

    window_days: float = Field(30.0, gt=0, le=3650, description="the recent window the models continue on")
    start_from: Literal["base", "parent"] = Field(
        "base",
        description="continue the fully trained ancestor (stable: docs/freshness.md replay) or the serving version",
    )
    two_tower_epochs: int = Field(1, ge=1, le=100, description="passes of the two-tower over the window")
    two_tower_lr: float = Field(1e-3, gt=0, le=1, description="learning rate while fine-tuning the two-tower")
    anchor_l2: float = Field(
        1e-3, ge=0, le=1e6,
        description="L2-SP weight pulling fine-tuned weights toward the starting model's (1e-3: the replay's choice)"
    )
    ranker_epochs: int = Field(1, ge=0, le=100, description="passes of the ranker over the window (0: keep its weights)")
    ranker_lr: float = Field(3e-4, gt=0, le=1, description="learning rate while fine-tuning the ranker")
    implied_ratings: dict[str, float] = Field(
        default_factory=lambda: {"like": 5.0, "share": 5.0, "conversion": 5.0, "click": 4.0, "watch": 4.0},
        description="rating given to an engagement event when it joins the training history (others are dropped)",
    )
    holdout_fraction: float = Field(
        0.1, gt=0, lt=0.5, description="the window's newest share of interactions, held out for the offline gate"
    )
    gate_k: int = Field(20, ge=1, le=1000, description="the gate compares Recall@k on the held-out interactions")
    gate_tolerance: float = Field(
        0.01, ge=0, le=1, description="a candidate may trail the serving model's Recall@k by at most this much"
    )
    min_interval_s: float = Field(600.0, ge=0, le=30 * 86_400, description="at most one fine-tune job per interval")
    schedule_s: float | None = Field(
        None, gt=0, le=30 * 86_400, description="also fine-tune on this period when new events arrived (None: triggers only)"
    )
    min_new_events: int = Field(1, ge=0, le=10_000_000, description="a scheduled job needs at least this many new engagements")
    consumer_group: str = Field("trainer", min_length=1, max_length=64, description="event-stream group of the job runner")


class TrainJobConfig(Section):
    """How one Ray Train job spreads: data-parallel workers (DistributedDataParallel, gloo on CPU,
    NCCL on GPU), each reading its own block of the examples from the run's storage
    (training/ray_job.py). The batch size a model's section declares is the global batch: each
    worker takes batch_size / num_workers rows a step, so a step averages as many rows however
    many workers share it. A model's `threads` are a node's, shared by its workers on that node."""

    num_workers: int = Field(
        1, ge=1, le=256, description="Ray Train workers: one process and one CPU each (and a GPU each with GPUs)"
    )
    use_gpu: bool | None = Field(
        None, description="a GPU per worker; None: when the Ray cluster has one for every worker (True waits for them)"
    )
    cpus_per_worker: float = Field(
        1.0, gt=0, le=256,
        description="CPUs each worker reserves; below 1 lets the workers share a node with a served app (one machine)")
    max_failures: int = Field(
        2, ge=-1, le=100,
        description="worker failures (a process or node lost, an error in the loop) one run survives by restarting its "
                    "workers, which resume after the last checkpointed epoch (-1: no limit, 0: the first failure ends it)")
    keep_finished_runs: int = Field(
        3, ge=1, le=1000,
        description="finished runs of this job kept under training.storage_dir (the newest; older ones are deleted "
                    "when a run finishes; unfinished runs, a concurrent one or a crashed one, are never touched)")


class TrainingConfig(Section):
    two_tower: TrainJobConfig = Field(default_factory=TrainJobConfig, description="the two-tower's Ray Train job")
    ranker: TrainJobConfig = Field(
        default_factory=TrainJobConfig, description="the ranker's Ray Train job and the pre-ranker's distillation"
    )
    storage_dir: str = Field(
        "runs/train", min_length=1,
        description="Ray Train checkpoints and example shards: a local path or a URI (file://, s3://, gs://, hdfs://)",
    )
    refit_retrieval: bool = Field(
        True,
        description=(
            "after the ranker is trained, retrain the two-tower on history + labels for serving "
            "(the ranker learned from a two-tower that had not seen the labels; serving uses all data)"
        ),
    )
    label_fraction: float = Field(
        0.1, gt=0, lt=0.5, description="each user's newest share of interactions the ranker learns to predict"
    )
    fine_tune: FineTuneJobConfig = Field(default_factory=FineTuneJobConfig)
