"""One way to get a Ray runtime for training jobs, shared by every trainer."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import ray

LOCAL_RAY_CPUS = 2


@contextlib.contextmanager
def local_ray(workers: int = 1) -> Iterator[bool]:
    """Use the caller's Ray if one is running; else the cluster `RAY_ADDRESS` names (Ray's own
    convention: `RAY_ADDRESS=ray://head:10001 rayfeed train` trains on that cluster); else start
    a small local one (LOCAL_RAY_CPUS logical CPUs, or one per Ray Train worker when `workers` is
    more). What this call connected or started, it shuts down after. Yields True when it did.

    The dashboard stays on: Ray Train V2's placement-group cleaner asks its state API every
    second and logs a warning each time it cannot reach it."""
    if ray.is_initialized():
        yield False
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(logging_config=ray.LoggingConfig(log_level="ERROR"))  # ray.init reads RAY_ADDRESS itself
    else:
        # address="local": a new instance even when `ray start` left /tmp/ray/ray_current_cluster behind.
        ray.init(address="local", num_cpus=max(LOCAL_RAY_CPUS, workers), include_dashboard=True,
                 dashboard_host="127.0.0.1", logging_config=ray.LoggingConfig(log_level="ERROR"))
    try:
        yield True
    finally:
        ray.shutdown()
