"""One way to get a Ray runtime for training jobs, shared by every trainer."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import ray

LOCAL_RAY_CPUS = 2


@contextlib.contextmanager
def local_ray() -> Iterator[bool]:
    """Use the caller's Ray if one is running; otherwise start a small local one for the block
    and shut it down after. Yields True when this call started Ray.

    The dashboard stays on: Ray Train V2's placement-group cleaner asks its state API every
    second and logs a warning each time it cannot reach it."""
    if ray.is_initialized():
        yield False
        return
    # address="local": a new instance even when `ray start` left /tmp/ray/ray_current_cluster behind.
    ray.init(address="local", num_cpus=LOCAL_RAY_CPUS, include_dashboard=True, dashboard_host="127.0.0.1",
             logging_config=ray.LoggingConfig(log_level="ERROR"))
    try:
        yield True
    finally:
        ray.shutdown()
