"""What tracing and metrics cost a feed request: P50/P99 with them on and off, in one run.

    python benchmarks/observability_overhead.py --requests 300          # or: rayfeed bench observability

The in-process feed path (FeedService: organic retrieval → ranking → reranking, the ads funnel
over a local Redis, the collator, one thread, torch on one thread) runs under four modes,
interleaved request by request so that load from other processes hits every mode alike:

  off       NullHook everywhere, no request span                     (the floor)
  metrics   ObservabilityHook recording stage metrics, tracing off   (metrics alone)
  tracing   ObservabilityHook with no metrics; spans via the SDK, batched and OTLP-encoded by a
            BatchSpanProcessor whose exporter drops the bytes       (tracing alone, no network)
  both      metrics + tracing: what production pays with an OTLP endpoint configured

Every mode serves the same users in the same order (each round draws one user and runs it under
every mode, in a rotating order). Metrics go to Ray's own recorder (`--metrics ray`, a local Ray
started for the run: what a Serve replica pays) or to the in-memory recorder (`--metrics memory`).
What is NOT measured here: the OTLP HTTP POST itself (done off the request path by the batch
processor's thread) and the Ray Serve hops (see benchmarks/serve_load.py).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
import uuid
from collections.abc import Sequence

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

MODES = ("off", "metrics", "tracing", "both")


class DroppingOtlpExporter:
    """Encodes spans to OTLP protobuf exactly as the HTTP exporter would, then drops the bytes."""

    def __init__(self) -> None:
        self.spans = 0
        self.bytes = 0

    def export(self, spans: Sequence) -> object:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
        from opentelemetry.sdk.trace.export import SpanExportResult

        self.bytes += len(encode_spans(spans).SerializeToString())
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def _metrics_recorder(kind: str):
    from observability.metrics import InMemoryMetrics, RayMetrics

    if kind == "memory":
        return InMemoryMetrics()
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    return RayMetrics()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="requests per mode (after warm-up)")
    parser.add_argument("--warmup", type=int, default=10, help="rounds discarded at the start")
    parser.add_argument("--limit", type=int, default=20, help="items per page")
    parser.add_argument("--users", type=int, default=943, help="users drawn from 1..N")
    parser.add_argument("--metrics", choices=("ray", "memory"), default="ray", help="metrics recorder")
    parser.add_argument("--json", default=None, help="also write the summary here")
    args = parser.parse_args(argv)

    import torch
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import NoOpTracerProvider

    from app.bootstrap import build_feed_service, load_artifacts, world_clock
    from app.organic import OrganicRequest
    from config import load_config
    from app.pipeline import NullHook
    from app.state.local_redis import LocalRedis
    from observability.metrics import NullMetrics, ObservabilityHook
    from observability.tracing import TracingStageHook, request_span

    torch.set_num_threads(1)
    config = load_config()
    loaded = load_artifacts(config)
    metrics = _metrics_recorder(args.metrics)
    exporter = DroppingOtlpExporter()
    sdk = TracerProvider()  # always-on sampling: every request traced, the worst case
    sdk.add_span_processor(BatchSpanProcessor(exporter))
    tracers = {"off": NoOpTracerProvider().get_tracer("rayfeed"), "on": sdk.get_tracer("rayfeed")}
    version = loaded.version.version

    def hooks(mode: str):
        if mode == "off":
            return NullHook(), NullHook()
        recorder = metrics if mode in ("metrics", "both") else NullMetrics()
        tracer = tracers["on" if mode in ("tracing", "both") else "off"]
        return tuple(ObservabilityHook(p, recorder, TracingStageHook(p, tracer=tracer), model_version=version)
                     for p in ("organic", "ads"))

    local = None if config.redis_url else LocalRedis.start()
    try:
        clock = world_clock(loaded)
        services = {}
        for mode in MODES:
            organic_hook, ads_hook = hooks(mode)
            services[mode] = build_feed_service(loaded, config, config.redis_url or local.url, clock,
                                                organic_hook, ads_hook)
        rng = random.Random(1)
        times: dict[str, list[float]] = {mode: [] for mode in MODES}
        for i in range(args.requests + args.warmup):
            user = rng.randint(1, args.users)
            order = MODES[i % 4:] + MODES[: i % 4]  # rotate: no mode always runs first (cache-cold)
            for mode in order:
                request_id = uuid.uuid4().hex
                started = time.perf_counter()
                request = OrganicRequest(user, clock(), args.limit, request_id)
                if mode in ("tracing", "both"):
                    with request_span("GET /v1/feed", {}, user_id=user, request_id=request_id,
                                      salt=config.observability.user_id_hash_salt, tracer=tracers["on"]):
                        services[mode].page(request)
                else:
                    services[mode].page(request)
                if mode in ("metrics", "both"):
                    metrics.record_request(200, time.perf_counter() - started)
                if i >= args.warmup:
                    times[mode].append(time.perf_counter() - started)
        sdk.force_flush()
    finally:
        if local is not None:
            local.stop()
        sdk.shutdown()

    summary: dict[str, object] = {
        "requests_per_mode": args.requests, "metrics_recorder": args.metrics, "machine": platform.platform(),
        "cpus": os.cpu_count(), "load_average": os.getloadavg(), "spans_exported": exporter.spans,
        "otlp_bytes_per_request": exporter.bytes / max(1, 2 * (args.requests + args.warmup)), "modes": {},
    }
    base = np.asarray(times["off"]) * 1000
    print(f"{'mode':<9} {'P50 ms':>8} {'P99 ms':>8} {'mean ms':>8}   P50/off  P99/off")
    for mode in MODES:
        t = np.asarray(times[mode]) * 1000
        row = {"p50_ms": float(np.percentile(t, 50)), "p99_ms": float(np.percentile(t, 99)), "mean_ms": float(t.mean()),
               "p50_ratio": float(np.percentile(t, 50) / np.percentile(base, 50)),
               "p99_ratio": float(np.percentile(t, 99) / np.percentile(base, 99))}
        summary["modes"][mode] = row  # type: ignore[index]
        print(f"{mode:<9} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f} {row['mean_ms']:8.2f}   "
              f"{row['p50_ratio']:7.3f}  {row['p99_ratio']:7.3f}")
    print(f"spans exported {exporter.spans} ({summary['otlp_bytes_per_request']:.0f} OTLP bytes per traced request); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
