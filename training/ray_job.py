"""One way to run a data-parallel Ray Train job, shared by the two-tower, the ranker and the
pre-ranker's distillation.

The driver writes each example array once, as a `.npy` file under the run's storage (a local
path or any URI pyarrow's filesystems understand), in a seeded shuffled order. Each of the
`num_workers` workers then reads only its own contiguous block of rows, by byte range, from that
storage: no worker holds another's rows and nothing large travels through the object store or the
train loop's config. The rows are shuffled before they are cut, so every block is a random sample
of the whole; every block has the same number of rows (the remainder, < num_workers rows, is left
out), so every worker takes the same number of steps, which DistributedDataParallel needs.

Inside the loop, `ray.train.torch.prepare_model` wraps the model in DistributedDataParallel
(gloo on CPU, NCCL on GPU) when there is more than one worker, so gradients are averaged across
workers at every step; statistics of the whole training set (feature normalisers, a target's
scale) come from `RayTrainWorkers.moments`, an all-reduce over the blocks. Rank 0 reports the
checkpoint. A loop takes a `DataParallel` (one process: the in-process path) or a
`RayTrainWorkers`, so the same loop runs both ways.

On a cluster of several nodes the storage must be one every node reaches: a URI (`s3://`,
`gs://`, ...) or a path on a shared mount (a local path draws a warning there).

    shards = {"train": ExampleArrays(arrays, order)}
    result = run_job(loop, shards, settings, job, storage, name)        # in the driver
    block = worker_block(loop_config["train"])                          # in each worker
    parallel = RayTrainWorkers()        # prepare(model), moments(x), mean(v), batch_size(b)

Why files rather than Ray Data's `get_dataset_shard`: a worker reads its block (200k rows,
52 MiB) in about 0.1 s with no CPU beyond its own, whereas Ray Data runs its split as tasks that
need CPUs of their own: on this 2-CPU machine, with both CPUs held by the two workers, the shards
never arrived (docs/benchmarks.md, "Training on two workers"). The loops index tensors in memory,
so a streaming iterator would buy nothing at this size; at a scale where a block no longer fits a
worker's memory, Ray Data (with CPUs set aside for it) is the next step.
"""
from __future__ import annotations

import re
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import torch

from app.data.storage import filesystem_for
from training.config import TrainJobConfig

@dataclass(frozen=True)
class ExampleArrays:
    """Arrays of one example set (same first dimension) and the order their rows are written in
    (None: as they are)."""

    arrays: Mapping[str, np.ndarray]
    order: np.ndarray | None = None


@dataclass(frozen=True)
class ShardedArrays:
    """Where an example set was written: what a worker needs to read its block (small, picklable)."""

    filesystem: pafs.FileSystem
    directory: str
    names: tuple[str, ...]
    rows: int

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Rows [start, stop) of every array, read by byte range (only those rows leave storage)."""
        return {name: _read_rows(self.filesystem, f"{self.directory}/{name}.npy", start, stop) for name in self.names}

    def read_all(self) -> dict[str, np.ndarray]:
        return self.read(0, self.rows)

    def block(self, rank: int, world_size: int) -> dict[str, np.ndarray]:
        """Worker `rank`'s block: rows [rank·m, (rank+1)·m), m = rows // world_size."""
        size = self.rows // world_size
        if size == 0:
            raise ValueError(f"{self.rows} example rows cannot give each of {world_size} workers one")
        return self.read(rank * size, (rank + 1) * size)


def shuffled_order(rows: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """A seeded permutation of the rows; with `groups` (e.g. user ids), the groups are shuffled and
    each group's rows kept together, in their order (a block then holds whole groups but the
    one it is cut through)."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return rng.permutation(rows)
    _, codes = np.unique(groups, return_inverse=True)
    rank = rng.permutation(codes.max() + 1 if len(codes) else 0)
    return np.argsort(rank[codes], kind="stable")


def write_arrays(examples: ExampleArrays, filesystem: pafs.FileSystem, directory: str) -> ShardedArrays:
    """Each array as `<directory>/<name>.npy`, rows in `examples.order`."""
    names = tuple(examples.arrays)
    lengths = {len(a) for a in examples.arrays.values()}
    if len(lengths) != 1:
        raise ValueError(f"example arrays differ in length: {sorted(lengths)}")
    filesystem.create_dir(directory, recursive=True)
    for name, array in examples.arrays.items():
        rows = array if examples.order is None else array[examples.order]
        with filesystem.open_output_stream(f"{directory}/{name}.npy") as out:
            np.lib.format.write_array(out, np.ascontiguousarray(rows), allow_pickle=False)
    return ShardedArrays(filesystem, directory, names, lengths.pop())


def _read_rows(filesystem: pafs.FileSystem, path: str, start: int, stop: int) -> np.ndarray:
    with filesystem.open_input_file(path) as f:
        major, _ = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if fortran or dtype.hasobject:
            raise ValueError(f"{path}: expected a C-ordered array of plain values")
        row_bytes = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
        stop = min(stop, shape[0])
        f.seek(f.tell() + start * row_bytes)
        data = f.read(max(stop - start, 0) * row_bytes)
    # A writable copy: the loops turn arrays into tensors in place.
    return np.frombuffer(data, dtype=dtype).reshape((max(stop - start, 0), *shape[1:])).copy()


# -- in the workers --------------------------------------------------------------------------------

def world() -> tuple[int, int]:
    """(rank, world size) of this Ray Train worker."""
    import ray.train

    context = ray.train.get_context()
    return context.get_world_rank(), context.get_world_size()


def worker_log(message: str) -> None:
    """A progress line from a worker, once: Ray Train patches print() to tee into its logger, so
    each printed line would show twice."""
    sys.__stdout__.write(message + "\n")
    sys.__stdout__.flush()


def worker_block(shards: ShardedArrays) -> dict[str, np.ndarray]:
    """This Ray Train worker's block of `shards`."""
    return shards.block(*world())


def unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The module itself, under DistributedDataParallel if `prepare` wrapped it."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


class DataParallel:
    """How a training loop shares its work: here, one process that holds every training row (the
    in-process path and the loops' tests). `RayTrainWorkers` is the same contract across Ray Train
    workers, so a loop written against it runs unchanged in both."""

    rank = 0
    world_size = 1

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the loop steps through (its gradients averaged across workers)."""
        return model

    def moments(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation over every worker's rows (axis 0)."""
        return x.mean(axis=0), x.std(axis=0)

    def mean(self, value: float) -> float:
        """The mean of a per-worker figure (an epoch's train loss) over the workers."""
        return value

    def batch_size(self, global_batch: int) -> int:
        """Rows per worker per step, so that a step averages `global_batch` rows in all."""
        return max(1, global_batch // self.world_size)

    def threads(self, configured: int) -> int:
        """Intra-op threads of this process: the configured count is a node's, shared by the
        workers on that node (DDP waits for the slowest worker at every step, so threads beyond
        the node's cores slow every worker down)."""
        return configured

    def fit_normaliser(self, module: torch.nn.Module, dense: np.ndarray) -> None:
        """`module.fit_normaliser` as if it saw every worker's rows."""
        if self.world_size == 1:
            module.fit_normaliser(dense)
            return
        # Two rows, mean ± std, have exactly that mean and (population) standard deviation: the
        # module applies its own rule (e.g. a floor on std) to the global moments.
        mean, std = self.moments(dense)
        module.fit_normaliser(np.stack([mean - std, mean + std]))


class RayTrainWorkers(DataParallel):
    """This process is one of a Ray Train job's workers: DistributedDataParallel through
    `ray.train.torch.prepare_model`, statistics all-reduced over the workers' blocks."""

    def __init__(self) -> None:
        import ray.train

        self.rank, self.world_size = world()
        self.local_world_size = ray.train.get_context().get_local_world_size()

    def threads(self, configured: int) -> int:
        return max(1, configured // self.local_world_size)

    @property
    def device(self) -> torch.device:
        import ray.train.torch

        return ray.train.torch.get_device()

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)  # DDP when world_size > 1; on the worker's device

    def moments(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """An all-reduce of counts, sums and sums of squares (float64)."""
        if self.world_size == 1:
            return super().moments(x)
        rows = torch.as_tensor(np.asarray(x, np.float64).reshape(len(x), -1))
        width = rows.shape[1]
        sums = torch.cat([torch.tensor([float(len(rows))], dtype=torch.float64), rows.sum(0), rows.pow(2).sum(0)])
        torch.distributed.all_reduce(sums)
        n = max(sums[0].item(), 1.0)
        mean = (sums[1:1 + width] / n).numpy()
        std = np.sqrt(np.maximum((sums[1 + width:] / n).numpy() - mean ** 2, 0.0))
        return mean.reshape(x.shape[1:]).astype(x.dtype), std.reshape(x.shape[1:]).astype(x.dtype)

    def gather_columns(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Each tensor (same first dimension on every worker) with every other worker's appended
        after this worker's own rows, in rank order; gradients flow back to their workers."""
        from torch.distributed.nn.functional import all_gather

        out = []
        for tensor in tensors:
            parts = all_gather(tensor) if tensor.requires_grad else _gather_constant(tensor, self.world_size)
            out.append(torch.cat([parts[self.rank], *(p for r, p in enumerate(parts) if r != self.rank)]))
        return tuple(out)

    def mean(self, value: float) -> float:
        if self.world_size == 1:
            return value
        total = torch.tensor([value], dtype=torch.float64)
        torch.distributed.all_reduce(total)
        return float(total.item() / self.world_size)


def _gather_constant(tensor: torch.Tensor, world_size: int) -> list[torch.Tensor]:
    parts = [torch.empty_like(tensor) for _ in range(world_size)]
    torch.distributed.all_gather(parts, tensor.contiguous())
    return parts


# -- in the driver ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class JobStorage:
    """A run's storage: the filesystem and the path inside it (from a local path or a URI)."""

    filesystem: pafs.FileSystem
    root: str

    @classmethod
    def of(cls, storage: str | Path, filesystem: pafs.FileSystem | None = None) -> JobStorage:
        fs, root = filesystem_for(storage, filesystem)
        return cls(fs, root.rstrip("/"))


def use_gpu(job: TrainJobConfig) -> bool:
    """The job's `use_gpu`, or (None) whether the running Ray cluster has a GPU per worker."""
    import ray

    if job.use_gpu is not None:
        return job.use_gpu
    return ray.cluster_resources().get("GPU", 0) >= job.num_workers


def scaling(job: TrainJobConfig):
    """The job's ScalingConfig: its workers, each reserving `cpus_per_worker` CPUs (and a GPU)."""
    import ray.train

    gpu = use_gpu(job)
    resources = {"CPU": job.cpus_per_worker, **({"GPU": 1} if gpu else {})}
    return ray.train.ScalingConfig(num_workers=job.num_workers, use_gpu=gpu, resources_per_worker=resources)


FINISHED_MARKER = ".finished"  # written into a run's directory once its fit returned a checkpoint
_FRESH_NAME = re.compile(r"^(?P<job>.+)-\d{8}-\d{6}-[0-9a-f]{6}$")


def fresh_run_name(job_name: str) -> str:
    """A run name no earlier run used (`<job>-<time>-<id>`): concurrent trainings sharing one
    storage never touch each other's checkpoints or examples."""
    return f"{job_name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def prune_finished_runs(where: JobStorage, name: str, keep: int) -> list[str]:
    """Delete the finished runs of `name`'s job beyond the newest `keep` (run `name` counts and is
    never deleted); returns the names deleted. Only runs with the finished marker go: a run still
    going (another training sharing the storage) or one that crashed is left alone. A name not
    made by `fresh_run_name` prunes nothing."""
    match = _FRESH_NAME.match(name)
    if match is None:
        return []
    found = where.filesystem.get_file_info(pafs.FileSelector(where.root, allow_not_found=True))
    finished = []
    for info in found:
        other = _FRESH_NAME.match(info.base_name)
        if info.type != pafs.FileType.Directory or other is None or other["job"] != match["job"]:
            continue
        marker = where.filesystem.get_file_info(f"{info.path}/{FINISHED_MARKER}")
        if marker.type == pafs.FileType.File:
            finished.append((marker.mtime_ns or 0, info.base_name))
    stale = [run for _, run in sorted(finished, reverse=True) if run != name][max(keep - 1, 0):]
    for run in stale:
        where.filesystem.delete_dir(f"{where.root}/{run}")
    return stale


def run_job(
    loop: Callable[[dict], None],
    shards: Mapping[str, ExampleArrays],
    settings: Mapping[str, object],
    job: TrainJobConfig,
    storage: str | Path,
    name: str,
    *,
    filesystem: pafs.FileSystem | None = None,
    num_to_keep: int | None = None,
    log_level: str = "WARNING",
):
    """Run `loop` as a TorchTrainer job of `job.num_workers` workers: each example set in `shards`
    is written once under `<storage>/<name>/examples-<id>/<set>/` and reaches the loop as a
    `ShardedArrays` under its key (next to `settings`); checkpoints go to `<storage>/<name>`.
    Returns Ray Train's Result; the example files are removed after the run.
    Uses the caller's Ray, or a small local one for the duration of the job.

    Every call is a new run: what an earlier run left under `<storage>/<name>` (a name given
    twice; the jobs' default names are `fresh_run_name`s) is removed first, since Ray Train V2
    would otherwise restore that run's checkpoint state into this one. Within the
    run, Ray Train restarts the workers after a failure up to `job.max_failures` times; a loop
    picks up from its last checkpoint through `resume_point`."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from training.ray_runtime import local_ray

    where = JobStorage.of(storage, filesystem)
    where.filesystem.delete_dir_contents(f"{where.root}/{name}", missing_dir_ok=True)
    examples_dir = f"{where.root}/{name}/examples-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    written = {key: write_arrays(examples, where.filesystem, f"{examples_dir}/{key}") for key, examples in shards.items()}
    try:
        with local_ray(workers=job.num_workers):
            _warn_if_local_on_many_nodes(where)
            trainer = TorchTrainer(
                loop,
                train_loop_config={**settings, **written},
                scaling_config=scaling(job),
                run_config=ray.train.RunConfig(
                    name=name,
                    storage_path=where.root,
                    storage_filesystem=where.filesystem,
                    checkpoint_config=ray.train.CheckpointConfig(num_to_keep=num_to_keep),
                    failure_config=ray.train.FailureConfig(max_failures=job.max_failures),
                    logging_config=ray.train.LoggingConfig(log_level=log_level),
                ),
            )
            result = trainer.fit()
    finally:
        if written:
            where.filesystem.delete_dir(examples_dir)
    if result.checkpoint is None:
        raise RuntimeError(f"{name} training finished without a checkpoint")
    with where.filesystem.open_output_stream(f"{where.root}/{name}/{FINISHED_MARKER}") as marker:
        marker.write(time.strftime("%Y-%m-%dT%H:%M:%S").encode())
    prune_finished_runs(where, name, job.keep_finished_runs)
    return result


def _warn_if_local_on_many_nodes(where: JobStorage) -> None:
    import ray

    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    if isinstance(where.filesystem, pafs.LocalFileSystem) and nodes > 1:
        warnings.warn(f"Ray Train storage {where.root} is a local path on a {nodes}-node cluster: every node must "
                      "see it (a shared mount), or set training.storage_dir to a URI (s3://, gs://, ...)", stacklevel=3)


@dataclass(frozen=True)
class Resumed:
    """Where a restarted worker group picks its run up: the last checkpoint's weights and the
    epochs it had finished."""
    state: dict[str, torch.Tensor]
    epochs_done: int


def resume_point(filename: str) -> Resumed | None:
    """This run's last checkpoint when Ray Train restarted the workers after a failure (None on a
    run's first attempt: every run_job call starts clean). Checkpoints hold the state dict as
    `filename` and the epoch's metrics, `epoch` among them, as metrics.json."""
    import json

    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        state = torch.load(Path(directory) / filename, map_location="cpu", weights_only=True)
        epochs = int(json.loads((Path(directory) / "metrics.json").read_text())["epoch"])
    return Resumed(state, epochs)


def checkpoint_state(result, filename: str) -> dict[str, torch.Tensor]:
    """The state_dict saved as `filename` in the result's last checkpoint (downloaded from the
    storage when it is remote)."""
    with result.checkpoint.as_directory() as directory:
        return torch.load(Path(directory) / filename, map_location="cpu", weights_only=True)
