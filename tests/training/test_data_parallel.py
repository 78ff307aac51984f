"""Data-parallel Ray Train jobs: example shards on storage, one block per worker, and a real
two-worker run of each job (the ranker, its pre-ranker, the two-tower) on a tiny world."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.fs as pafs
import pytest
import torch

from app.ranking.config import HEADS, RankingConfig
from training.config import TrainJobConfig
from training.ray_job import FINISHED_MARKER, DataParallel, ExampleArrays, JobStorage, shuffled_order, write_arrays


def test_blocks_are_equal_disjoint_slices_of_one_shuffled_order(tmp_path) -> None:
    rows = 103
    arrays = {"x": np.arange(rows * 3, dtype=np.float32).reshape(rows, 3), "id": np.arange(rows, dtype=np.int64)}
    order = shuffled_order(rows, seed=5)
    storage = JobStorage.of(f"file://{tmp_path}")  # a URI, read through pyarrow's filesystem
    shards = write_arrays(ExampleArrays(arrays, order), storage.filesystem, f"{storage.root}/ex")

    blocks = [shards.block(rank, 4) for rank in range(4)]
    assert {len(b["id"]) for b in blocks} == {rows // 4}  # equal steps on every worker
    ids = np.concatenate([b["id"] for b in blocks])
    np.testing.assert_array_equal(ids, order[:len(ids)])  # disjoint, in the shuffled order
    for b in blocks:
        np.testing.assert_array_equal(b["x"], arrays["x"][b["id"]])  # rows stay whole across arrays
        b["x"][0, 0] = -1.0  # writable: the loops turn blocks into tensors
    np.testing.assert_array_equal(shards.read_all()["id"], order)
    with pytest.raises(ValueError, match="cannot give each of 200 workers"):
        shards.block(0, 200)


def test_a_grouped_order_keeps_each_group_together() -> None:
    groups = np.repeat([7, 3, 9, 1, 5], [4, 1, 3, 2, 5])
    ordered = groups[shuffled_order(len(groups), seed=1, groups=groups)]
    runs = ordered[np.r_[0, np.flatnonzero(np.diff(ordered)) + 1]]
    assert sorted(runs.tolist()) == [1, 3, 5, 7, 9]  # one run per group
    assert not np.array_equal(ordered, np.sort(groups))


def test_workers_and_gpus_are_declared_per_job_and_old_two_tower_metas_still_load() -> None:
    from pydantic import ValidationError

    from app.retrieval.config import TwoTowerConfig
    from config import ConfigError, config_from_mapping

    config = config_from_mapping({"training": {"two_tower": {"num_workers": 4}, "ranker": {"use_gpu": True}}})
    assert config.training.two_tower.num_workers == 4 and config.training.ranker.use_gpu
    with pytest.raises(ValidationError):
        TrainJobConfig(num_workers=0)
    with pytest.raises(ConfigError, match="training.num_workers"):  # one place only
        config_from_mapping({"training": {"num_workers": 2}})
    # A meta.json written when the two-tower's section carried them.
    assert TwoTowerConfig.model_validate({"num_workers": 2, "use_gpu": True, "epochs": 3}) == TwoTowerConfig(epochs=3)


def test_two_workers_with_gathered_columns_have_the_one_process_in_batch_loss() -> None:
    from app.retrieval.two_tower import in_batch_softmax_loss

    gen = torch.Generator().manual_seed(3)
    users, items = torch.randn(8, 4, generator=gen), torch.randn(8, 4, generator=gen)
    rows = torch.tensor([5, 2, 5, 7, 1, 2, 9, 3])  # repeats across the halves: masked, not negatives
    log_q = torch.randn(8, generator=gen)
    t = torch.tensor(0.5)
    whole = in_batch_softmax_loss(users, items, t, rows, log_q)
    halves = [slice(0, 4), slice(4, 8)]
    per_worker = []
    for mine, other in (halves, halves[::-1]):  # each worker: its own columns first, then the other's
        cat = lambda x: torch.cat([x[mine], x[other]])  # noqa: E731
        per_worker.append(in_batch_softmax_loss(users[mine], cat(items), t, cat(rows), cat(log_q)))
    torch.testing.assert_close(torch.stack(per_worker).mean(), whole)  # DDP averages the two


class _TwoWorkersOneProcess(DataParallel):
    """The distributed arithmetic without a process group: both 'workers' hold every row."""

    world_size = 2


def test_the_normaliser_from_global_moments_equals_one_fitted_on_every_row() -> None:
    from app.ranking.prerank import PreRankerNet

    dense = np.random.default_rng(0).normal(3.0, 2.0, size=(500, 4)).astype(np.float32)
    dense[:, 2] = 1.5  # a constant column: the module's own floor on std applies
    direct, via_moments = PreRankerNet(4, (8,)), PreRankerNet(4, (8,))
    direct.fit_normaliser(dense)
    _TwoWorkersOneProcess().fit_normaliser(via_moments, dense)
    torch.testing.assert_close(via_moments.dense_mean, direct.dense_mean)
    torch.testing.assert_close(via_moments.dense_std, direct.dense_std)
    assert _TwoWorkersOneProcess().batch_size(1024) == 512


@pytest.fixture(scope="module")
def ray_two_cpus():
    """One local Ray for this module's jobs (each job would otherwise start and stop its own)."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        yield
        return
    ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
             logging_config=ray.LoggingConfig(log_level="ERROR"))
    yield
    ray.shutdown()


def _tiny_ranking(small_world):
    from training.ranker import build_training_set, split_user_tail

    history, labels = split_user_tail(small_world.interactions, 0.1)
    config = RankingConfig.model_validate({
        "training": {"epochs": 3, "batch_size": 512, "extra_label_windows": 0, "threads": 1},
        "cascade": {"epochs": 2, "hidden": [16]}, "model": {"cross_layers": 1, "deep_layers": [32]},
    })
    return history, config, build_training_set(history, labels, small_world.items, small_world.users, config)


# A quarter CPU each: in the full suite the integration session's app holds part of the 2 CPUs.
TWO = TrainJobConfig(num_workers=2, use_gpu=False, cpus_per_worker=0.25)


@pytest.fixture(scope="module")
def s3_uri():
    """An S3-compatible server on loopback with a `runs` bucket; the URI carries its endpoint."""
    pytest.importorskip("moto")
    import boto3
    from moto.server import ThreadedMotoServer

    from app.state.local_redis import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="k", aws_secret_access_key="s",
                 region_name="us-east-1").create_bucket(Bucket="runs")
    yield f"s3://k:s@runs/train?scheme=http&endpoint_override=127.0.0.1:{port}&region=us-east-1"
    server.stop()


@pytest.mark.slow
def test_two_ranker_workers_read_their_blocks_from_s3_and_checkpoint_there(ray_two_cpus, s3_uri, small_world):
    from training.ranker import train_ranker

    _, config, examples = _tiny_ranking(small_world)
    ranker = train_ranker(examples, config, storage_path=s3_uri, name="ranker2", job=TWO)

    storage = JobStorage.of(s3_uri)
    assert ranker.checkpoint_path.startswith(f"{storage.root}/ranker2/checkpoint_")
    losses = [json.loads(_read(storage, f"{c}/metrics.json"))["train_loss"] for c in _checkpoints(storage, "ranker2")]
    assert len(losses) == 2 and losses[-1] < losses[0]  # num_to_keep=2: the last two epochs
    assert ranker.metrics["epoch"] == 3 and ranker.metrics["valid_auc_click"] > 0.6  # rank 0's held-out figures
    assert not [c for c in _children(storage, "ranker2") if "examples-" in c.base_name]  # the shards go after the run
    assert _read(storage, f"{storage.root}/ranker2/{FINISHED_MARKER}")  # finished: older runs may be pruned
    with torch.no_grad():  # the model the driver loaded from the checkpoint scores
        scores = ranker.model.predict(torch.from_numpy(examples.dense[:64]), torch.from_numpy(examples.categorical[:64]))
    assert torch.isfinite(scores).all() and scores.shape == (64, len(HEADS))


@pytest.mark.slow
def test_two_workers_distill_the_pre_ranker_and_train_the_two_tower(ray_two_cpus, small_world, tmp_path) -> None:
    from app.retrieval.config import RetrievalConfig, TwoTowerConfig
    from training.pre_ranker import distill_pre_ranker
    from training.ranker import train_loop
    from training.two_tower import train_two_tower

    history, config, examples = _tiny_ranking(small_world)
    teacher = train_loop(examples, config, log=lambda _: None)  # in-process: the student's job is what is tested
    net, agreement = distill_pre_ranker(examples.dense, examples.categorical, examples.user_ids, teacher, config,
                                        storage_path=tmp_path / "runs", log=lambda _: None, job=TWO)
    assert agreement["spearman"] > 0.3 and net.n_dense == examples.dense.shape[1]

    tt = RetrievalConfig(two_tower=TwoTowerConfig(embedding_dim=16, id_dim=16, feature_dim=4, hidden_dim=32,
                                                  epochs=2, batch_size=256))
    artifacts = train_two_tower(small_world, history, tt, tmp_path / "runs", run_name="tt2", job=TWO)
    assert [m["epoch"] for m in artifacts.metrics] == [1.0, 2.0]
    assert artifacts.metrics[1]["loss"] < artifacts.metrics[0]["loss"]
    assert np.isfinite(artifacts.item_embeddings).all()


def _children(storage: JobStorage, run: str) -> list[pafs.FileInfo]:
    return storage.filesystem.get_file_info(pafs.FileSelector(f"{storage.root}/{run}"))


def _checkpoints(storage: JobStorage, run: str) -> list[str]:
    return sorted(c.path for c in _children(storage, run)
                  if c.type == pafs.FileType.Directory and c.base_name.startswith("checkpoint_"))


def _read(storage: JobStorage, path: str) -> str:
    with storage.filesystem.open_input_stream(path) as f:
        return f.read().decode()


@pytest.mark.slow
def test_gpus_when_configured_or_when_the_cluster_has_one_per_worker(ray_two_cpus) -> None:
    import ray

    from training.ray_job import use_gpu

    assert use_gpu(TrainJobConfig(use_gpu=True)) and not use_gpu(TrainJobConfig(use_gpu=False))
    gpus = ray.cluster_resources().get("GPU", 0)
    assert use_gpu(TrainJobConfig(num_workers=2)) == (gpus >= 2)  # the local Ray of this module has none


def test_a_failed_worker_is_restarted_from_its_checkpoint_and_each_call_is_a_new_run(ray_two_cpus, tmp_path) -> None:
    """A loop that dies after its first epoch's checkpoint is restarted (`max_failures`) and
    resumes after that epoch (`resume_point`, as the ranker's, pre-ranker's and two-tower's loops
    do); with no failures allowed the error reaches the caller; and a second run under the same
    name starts clean: Ray Train V2 would otherwise hand it the earlier run's checkpoint."""
    from ray.train.v2.api.exceptions import TrainingFailedError

    from training.ray_job import run_job

    def loop(settings: dict) -> None:
        import json as json_
        import tempfile
        from pathlib import Path

        import ray.train
        import torch as torch_

        from training.ray_job import resume_point

        attempts = Path(settings["attempts"])
        with attempts.open("a") as out:
            out.write("x")
        resumed = resume_point("state.pt")
        for epoch in range(resumed.epochs_done + 1 if resumed else 1, 3):
            with tempfile.TemporaryDirectory() as tmp:
                torch_.save({"w": torch_.tensor([float(epoch)])}, Path(tmp) / "state.pt")
                (Path(tmp) / "metrics.json").write_text(json_.dumps({"epoch": epoch}))
                ray.train.report({"epoch": epoch, "resumed_after": resumed.epochs_done if resumed else 0,
                                  "resumed_w": float(resumed.state["w"]) if resumed else -1.0},
                                 checkpoint=ray.train.Checkpoint.from_directory(tmp))
            if settings["fail_first"] and attempts.read_text() == "x":
                raise RuntimeError("worker lost on its first attempt")

    job = TrainJobConfig(cpus_per_worker=0.5, max_failures=1)
    run = lambda n, fail, j=job: run_job(loop, {}, {"attempts": str(tmp_path / f"attempts-{n}"), "fail_first": fail},  # noqa: E731
                                          j, tmp_path / "storage", "flaky")
    first = run(1, True)
    assert (tmp_path / "attempts-1").read_text() == "xx"  # restarted once
    assert first.metrics == {"epoch": 2, "resumed_after": 1, "resumed_w": 1.0}  # from epoch 1's checkpoint
    second = run(2, False)
    assert (tmp_path / "attempts-2").read_text() == "x" and second.metrics["resumed_after"] == 0  # a clean run
    with pytest.raises(TrainingFailedError, match="worker lost on its first attempt"):
        run(3, True, job.model_copy(update={"max_failures": 0}))
