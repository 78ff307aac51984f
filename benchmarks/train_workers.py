"""One worker against several: both Ray Train jobs on MovieLens-100k, quality and wall time side by side.

    python benchmarks/train_workers.py [--workers 1,2] [--seeds 0,1] [--jobs two_tower,ranker]
                                       [--two-tower-threads N] [--storage DIR or URI]
    python benchmarks/train_workers.py --reads        # how a worker gets its shard: files vs Ray Data

Every job runs on one local Ray (2 CPUs, started here, so no job pays Ray's start-up) with the
configured models (serve_config.yaml's `retrieval.two_tower` and `ranking`), only
`training.<job>.num_workers` and the seeds changed:
  * two-tower: fit on train+valid of the per-user temporal split 80/10/10 (as benchmarks/quality.py);
    Recall@20 on test (every unseen item ranked, exact inner product), and the held-out loss: the
    full-catalogue softmax cross-entropy of the test interactions at the trained temperature;
  * ranker: the production split (each user's newest `training.label_fraction` are labels) and
    its examples; held-out loss (the weighted BCE of the heads) and AUCs on the 5 % of users the
    loop holds out, position-neutral;
  * pre-ranker: distilled from that ranker on the distillation set; its agreement with the DCN.
Wall time of each job: from the call to the returned model (examples written, workers started,
trained, checkpoint read back); "loop s" is the sum of the epochs' own seconds.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the benchmark host is shared

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def two_tower_row(dataset, split, config, job, storage: str) -> dict:
    from app.evaluation import evaluate
    from app.retrieval.recommender import TwoTowerRecommender
    from training.two_tower import train_two_tower

    class RayTrained(TwoTowerRecommender):
        def fit(self, interactions: pd.DataFrame) -> None:
            started = time.perf_counter()
            self.artifacts = train_two_tower(self.dataset, interactions, config.retrieval, storage, job=job)
            self.seconds = time.perf_counter() - started

    model = RayTrained(dataset, config.retrieval.two_tower, on_epoch=None)
    figures = evaluate(model, split, "test")
    art = model.artifacts
    return {"recall@20": figures["recall@20"], "ndcg@20": figures["ndcg@20"],
            "held-out loss": heldout_softmax_loss(art, split.test), "wall s": model.seconds,
            "loop s": sum(m["seconds"] for m in art.metrics), "train loss": art.metrics[-1]["loss"]}


def heldout_softmax_loss(art, test: pd.DataFrame) -> float:
    """Mean cross-entropy of each test interaction's item against the whole catalogue."""
    rows = art.features.user_rows(test["user_id"].to_numpy(np.int64))
    item_at = {int(i): k for k, i in enumerate(art.item_ids)}
    keep = (rows > 0) & test["item_id"].isin(item_at).to_numpy()
    users = art.user_embeddings[rows[keep] - 1]
    items = np.array([item_at[int(i)] for i in test["item_id"].to_numpy()[keep]])
    logits = users @ art.item_embeddings.T / art.metrics[-1]["temperature"]
    top = logits.max(axis=1)
    log_z = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
    return float(np.mean(log_z - logits[np.arange(len(items)), items]))


def ranker_rows(dataset, config, job, storage: str) -> tuple[dict, dict]:
    from training.organic import production_split
    from training.pre_ranker import distill_pre_ranker
    from training.ranker import build_training_set, distillation_set, train_ranker

    ranking = config.ranking
    history, labels = production_split(dataset.interactions, config.training.label_fraction)
    examples = build_training_set(history, labels, dataset.items, dataset.users, ranking)
    started = time.perf_counter()
    result = train_ranker(examples, ranking, storage_path=storage, name=f"ranker-w{job.num_workers}", job=job)
    ranker_s = time.perf_counter() - started
    m = result.metrics
    ranker = {"held-out loss": m["valid_loss"], "auc click": m["valid_auc_click"], "auc like": m["valid_auc_like"],
              "wall s": ranker_s, "train loss": m["train_loss"], "rows": len(examples)}
    teach = distillation_set(history, labels, dataset.items, dataset.users, ranking)
    started = time.perf_counter()
    _, agreement = distill_pre_ranker(teach.dense, teach.categorical, teach.user_ids, result.model, ranking,
                                      storage_path=storage, log=lambda _: None, job=job)
    pre = {"spearman": agreement["spearman"], "top-10 kept": agreement["teacher_top_kept"],
           "wall s": time.perf_counter() - started, "rows": len(teach)}
    return ranker, pre


def compare_reads(storage: str, rows: int = 400_000, width: int = 48) -> None:
    """Two workers each obtain their half of an example set: a byte-range read of their block
    from files the driver wrote once, against a Ray Data dataset's `get_dataset_shard`, iterated
    once (what a loop would do each epoch)."""
    import ray
    import ray.data
    import ray.train
    from ray.train.torch import TorchTrainer

    from training.ray_job import ExampleArrays, JobStorage, worker_block, worker_log, write_arrays

    rng = np.random.default_rng(0)
    arrays = {"dense": rng.normal(size=(rows, width)).astype(np.float32),
              "categorical": rng.integers(0, 1000, size=(rows, 8)), "labels": rng.random((rows, 5), np.float32)}
    mib = sum(a.nbytes for a in arrays.values()) / 2**20

    def file_loop(cfg: dict) -> None:
        started = time.perf_counter()
        block = worker_block(cfg["examples"])
        worker_log(f"files: worker {ray.train.get_context().get_world_rank()} read its block of {len(block['dense'])} "
                   f"rows in {time.perf_counter() - started:.3f}s")

    def data_loop(cfg: dict) -> None:
        started = time.perf_counter()
        n = 0
        for batch in ray.train.get_dataset_shard("train").iter_batches(batch_size=8192, batch_format="numpy"):
            n += len(batch["dense"])
        worker_log(f"Ray Data: worker {ray.train.get_context().get_world_rank()} passed over its shard of {n} rows "
                   f"in {time.perf_counter() - started:.3f}s")

    where = JobStorage.of(storage)
    started = time.perf_counter()
    shards = write_arrays(ExampleArrays(arrays), where.filesystem, f"{where.root}/reads-probe")
    written = time.perf_counter() - started

    def fit(loop, **kwargs):
        return TorchTrainer(loop, scaling_config=ray.train.ScalingConfig(num_workers=2, use_gpu=False),
                            run_config=ray.train.RunConfig(name=f"reads-{time.time_ns()}", storage_path=where.root,
                                                           storage_filesystem=where.filesystem), **kwargs).fit()

    started = time.perf_counter()
    fit(file_loop, train_loop_config={"examples": shards})
    print(f"{rows} rows, {mib:.0f} MiB; files: written in {written:.2f}s (once); job wall "
          f"{time.perf_counter() - started:.1f}s", flush=True)

    started = time.perf_counter()
    dataset = ray.data.from_numpy(arrays["dense"]).zip(ray.data.from_numpy(arrays["categorical"])).zip(
        ray.data.from_numpy(arrays["labels"]))
    dataset = dataset.rename_columns(["dense", "categorical", "labels"])
    fit(data_loop, datasets={"train": dataset})
    print(f"Ray Data: job wall {time.perf_counter() - started:.1f}s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    parser.add_argument("--seeds", default="0", help="model seeds, comma-separated (the spread is the noise)")
    parser.add_argument("--jobs", default="two_tower,ranker", help="which jobs: two_tower, ranker (and its pre-ranker)")
    parser.add_argument("--two-tower-threads", type=int, default=None,
                        help="retrieval.two_tower.torch_threads (a node's, shared by its workers; default: configured)")
    parser.add_argument("--storage", default=None, help="Ray Train storage: a path or URI (default: a temp dir)")
    parser.add_argument("--reads", action="store_true", help="compare files with Ray Data for the workers' shards")
    args = parser.parse_args()

    import ray

    from config import load_config
    from app.data import load_dataset
    from app.evaluation import temporal_split
    from training.config import TrainJobConfig

    storage = args.storage or tempfile.mkdtemp(prefix="rayfeed-train-workers-")
    ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
             logging_config=ray.LoggingConfig(log_level="ERROR"))
    if args.reads:
        compare_reads(storage)
        return
    base = load_config()
    dataset = load_dataset(base.data)
    split = temporal_split(dataset.interactions)
    print(f"{dataset.name}: {len(dataset.interactions)} interactions; storage {storage}", flush=True)
    rows = []
    for seed in map(int, args.seeds.split(",")):
        for workers in map(int, args.workers.split(",")):
            job = TrainJobConfig(num_workers=workers, use_gpu=False)
            config = base.model_copy(update={
                "retrieval": base.retrieval.model_copy(update={
                    "two_tower": base.retrieval.two_tower.model_copy(update={
                        "seed": seed, "torch_threads": args.two_tower_threads or base.retrieval.two_tower.torch_threads})}),
                "ranking": base.ranking.model_copy(update={
                    "training": base.ranking.training.model_copy(update={"seed": seed})}),
            })
            row = {"workers": workers, "seed": seed}
            if "two_tower" in args.jobs:
                row.update({f"tt {k}": v for k, v in two_tower_row(dataset, split, config, job, storage).items()})
            if "ranker" in args.jobs:
                ranker, pre = ranker_rows(dataset, config, job, storage)
                row.update({f"ranker {k}": v for k, v in ranker.items()} | {f"pre {k}": v for k, v in pre.items()})
            rows.append(row)
            print(" | ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    frame = pd.DataFrame(rows)
    print(frame.T.to_string(float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
