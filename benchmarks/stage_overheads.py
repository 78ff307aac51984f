"""Two suspected per-request costs of the served app, measured in isolation:

  1. recording stage metrics through Ray (`RayMetrics.record_stage`, inside a Ray worker) against
     the in-memory recorder, per call;
  2. pickling what the stages hand each other, `(FeedQuery, Candidates)` after retrieval, ranking
     and reranking (size and dump+load time), over real users of the trained artifacts.

    python benchmarks/stage_overheads.py [--calls 5000] [--users 60]

Needs trained artifacts (`rayfeed train`); starts and stops a private local Ray instance.
Figures are in docs/serving.md ("Session 4").
"""
from __future__ import annotations

import argparse
import os
import pickle
import time

import numpy as np


def metric_call_cost(calls: int) -> dict[str, float]:
    import ray

    @ray.remote(num_cpus=0.5)
    def measure(n: int) -> dict[str, float]:
        from app.pipeline.runner import StageRecord
        from observability.metrics import InMemoryMetrics, RayMetrics

        out = {}
        record = StageRecord("two_tower", "source", 0.003, 500, 300)
        for name, metrics in (("ray", RayMetrics()), ("in_memory", InMemoryMetrics())):
            for _ in range(200):  # create the metric objects first
                metrics.record_stage(record, "organic")
            started = time.perf_counter()
            for _ in range(n):
                metrics.record_stage(record, "organic")
            out[name] = (time.perf_counter() - started) / n * 1e6
        return out

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        return ray.get(measure.remote(calls))
    finally:
        ray.shutdown()


def payload_cost(users: int) -> dict[str, tuple[float, float]]:
    from app.bootstrap import load_artifacts, world_clock
    from config import load_config
    from app.organic import OrganicPipeline

    config = load_config()
    loaded = load_artifacts(config)
    pipeline = OrganicPipeline(loaded.organic, config)
    now = world_clock(loaded)()
    sizes: dict[str, list[int]] = {name: [] for name in pipeline.parts}
    seconds: dict[str, list[float]] = {name: [] for name in pipeline.parts}
    for user_id in range(1, users + 1):
        query = loaded.organic.query(user_id, now=now, limit=20)
        candidates = None
        for name, runner in pipeline.parts.items():
            candidates = runner.run(query, candidates).candidates
            started = time.perf_counter()
            blob = pickle.dumps((query, candidates), protocol=5)
            pickle.loads(blob)
            seconds[name].append(time.perf_counter() - started)
            sizes[name].append(len(blob))
    return {name: (float(np.median(sizes[name])), float(np.median(seconds[name])) * 1e3) for name in sizes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=5000, help="record_stage calls timed per recorder")
    parser.add_argument("--users", type=int, default=60, help="users whose stage payloads are pickled")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.users < 1:
        parser.error("--calls and --users must be >= 1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    costs = metric_call_cost(args.calls)
    print(f"record_stage per call: Ray {costs['ray']:.1f} µs, in-memory {costs['in_memory']:.1f} µs "
          f"(ratio {costs['ray'] / costs['in_memory']:.2f}x)")
    for name, (size, ms) in payload_cost(args.users).items():
        print(f"after {name:<9}: (query, candidates) P50 {size / 1024:.0f} KiB, pickle dump+load P50 {ms:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
