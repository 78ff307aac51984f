"""Overload without collapse: `rayfeed bench overload [--seconds 15] [--json out.json]`.

Deploys the MovieLens app on a private Ray + Serve + Redis (one replica per deployment, the
serve_config.yaml settings: adaptive admission, FeedIngress room for held refusals) and drives it
with closed-loop clients of three kinds (benchmarks/serve_load.py `retry_wait`):

  honour     waits the Retry-After of a 429/503 (the well-behaved client; the run's reference)
  immediate  retries at once (pull-to-refresh, a proxy retrying on 503): the storm
  backoff    capped exponential backoff with full jitter, ignoring Retry-After

under two ways of refusing, the same app reconfigured between them:

  held     `api.shed_delay_s` 0.1 (the default): a refusal sleeps ≈ 0.1 s × waiting / bound before its 503
  at-once  `api.shed_delay_s` 0: the 503 is answered as soon as the bound is full

Per step: goodput (200s per second), accepted P50/P99, statuses, the server side's CPU per
request and per refusal, and the CPU each process role spent (proxy, ingress, the stages, Redis).
CPU per refusal = (proxy + ingress CPU − 200s × their CPU per 200 in the honour step) / refusals,
per process (other work on the machine is not counted). The goodput
ratio is against the best sustained rate of the same run (the best step of either variant).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script (`rayfeed bench overload`): the repo's packages first
from benchmarks import served_app  # noqa: E402
from benchmarks.serve_load import closed_loop, measured, process_cpu_s  # noqa: E402
from app.api.config import ApiConfig  # noqa: E402
VARIANTS = {"held": 0.1, "at-once": 0.0}
STEPS = {  # variant -> (retry policy, concurrency) in order
    "held": [("honour", 4), ("immediate", 4), ("immediate", 8), ("immediate", 16), ("immediate", 32),
             ("backoff", 8), ("backoff", 16), ("backoff", 32)],
    "at-once": [("honour", 4), ("immediate", 8), ("immediate", 16), ("immediate", 32)],
}
ROLES = ("ProxyActor", "Ingress", "Retrieval", "Ranking", "Reranking", "Auction", "redis-server")


def run_step(url: str, policy: str, concurrency: int, seconds: float) -> dict:
    before = process_cpu_s()
    step = measured(closed_loop(url, concurrency, seconds, 20_000, 943, 20, 10.0, policy)).summary()
    after = process_cpu_s()
    step["role_cpu_s"] = {role: round(after.get(role, 0.0) - before.get(role, 0.0), 2) for role in ROLES}
    step["refused"] = step["statuses"].get("503", 0) + step["statuses"].get("429", 0)
    return step


FRONT = ("ProxyActor", "Ingress")  # where a refusal costs CPU (nothing behind the ingress sees it)


def with_refusal_cost(steps: list[dict]) -> None:
    """CPU per refusal in the HTTP proxy and the ingress: their CPU in the step less what its 200s
    cost there (per 200 from the variant's honour step, almost no refusals in it), over the
    refusals. Per process, so other work on the machine does not count."""
    reference = steps[0]
    per_ok = sum(reference["role_cpu_s"][r] for r in FRONT) / max(1, reference["ok"])
    for s in steps:
        front = sum(s["role_cpu_s"][r] for r in FRONT)
        spent = max(0.0, front - s["ok"] * per_ok)
        s["cpu_ms_per_refusal"] = 1000 * spent / s["refused"] if s["refused"] > 20 else None
        app = sum(s["role_cpu_s"].values())
        s["refusal_cpu_share"] = spent / app if app else None


def print_step(variant: str, s: dict, best: float) -> None:
    refusal = "" if s["cpu_ms_per_refusal"] is None else (
        f"  refusal {s['cpu_ms_per_refusal']:.1f} ms CPU (proxy + ingress), {100 * s['refusal_cpu_share']:.0f}% "
        "of the app's CPU")
    print(f"{variant:<8} {s['step']:<22} goodput {s['throughput_rps']:5.1f}/s ({100 * s['throughput_rps'] / best:3.0f}% "
          f"of best)  P50 {s['p50_ms']:6.0f}  P99 {s['p99_ms']:6.0f} ms  sent {s['sent']:5d}  503 {s['refused']:5d}  "
          f"errors {100 * s['error_rate']:.1f}%{refusal}", flush=True)
    print("         CPU s by role: " + ", ".join(f"{r} {v:.1f}" for r, v in s["role_cpu_s"].items() if v), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rayfeed bench overload", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", default=str(REPO / "artifacts"), help="artifact root to copy the latest version from")
    parser.add_argument("--seconds", type=float, default=15.0, help="duration of each step")
    parser.add_argument("--variants", default="held,at-once", help="comma-separated: held, at-once")
    parser.add_argument("--api", action="append", default=[], metavar="KEY=VALUE",
                        help="an api.* setting for every variant, e.g. admission_target_s=0.5 (repeatable)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if any(v not in VARIANTS for v in variants):
        parser.error(f"--variants: each of {', '.join(VARIANTS)}")
    api_settings = {}
    for item in args.api:
        key, sep, value = item.partition("=")
        if not sep or key not in ApiConfig.model_fields:
            parser.error(f"--api {item!r}: expected KEY=VALUE with KEY one of api.* ({', '.join(ApiConfig.model_fields)})")
        api_settings[key] = float(value) if value.replace(".", "", 1).isdigit() else value
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from app.state.local_redis import LocalRedis

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    work = Path(tempfile.mkdtemp(prefix="rayfeed-overload-"))
    server = LocalRedis.start()
    os.environ["REDIS_URL"] = server.url
    figures: dict = {"machine": served_app.machine(), "seconds": args.seconds, "api": api_settings, "variants": {}}
    try:
        version = served_app.prepare_artifacts(Path(args.artifacts), work / "artifacts", log)
        url, port = served_app.start_serve("rayfeed-bench-overload")
        for variant in variants:
            started = time.perf_counter()
            config = served_app.app_config(work / "artifacts", version, port,
                                           {"api": {**api_settings, "shed_delay_s": VARIANTS[variant]}})
            served_app.deploy(config, url)
            asyncio.run(closed_loop(url, 2, 30, 40, 943, 20, 10.0))  # warm-up, not measured
            log(f"{variant}: deployed and warmed in {time.perf_counter() - started:.0f}s")
            steps = []
            for policy, concurrency in STEPS[variant]:
                steps.append(run_step(url, policy, concurrency, args.seconds))
                log(f"{variant} {steps[-1]['step']}: {steps[-1]['throughput_rps']:.1f}/s")
            with_refusal_cost(steps)
            figures["variants"][variant] = steps
        best = max(s["throughput_rps"] for steps in figures["variants"].values() for s in steps)
        figures["best_goodput_rps"] = best
        print(f"\nmachine: {figures['machine']}; best sustained goodput of the run {best:.1f}/s")
        for variant, steps in figures["variants"].items():
            for s in steps:
                s["goodput_of_best"] = s["throughput_rps"] / best
                print_step(variant, s, best)
    finally:
        served_app.stop_all(server, work)
    served_app.report(figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
