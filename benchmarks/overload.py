"""Overload without collapse: `rayfeed bench overload [--seconds 15] [--json out.json]`.

Deploys the MovieLens app on a private Ray + Serve + Redis with `rayfeed serve`'s environment
(benchmarks/served_app.py `start_serve`; one replica per deployment, the
serve_config.yaml settings: adaptive admission, FeedIngress room for held refusals) and drives it
with closed-loop clients of three kinds (benchmarks/serve_load.py `retry_wait`):

  honour     waits the Retry-After of a 429/503 (the well-behaved client; the run's reference)
  immediate  retries at once (pull-to-refresh, a proxy retrying on 503): the storm
  backoff    capped exponential backoff with full jitter, ignoring Retry-After

under two ways of refusing, the same app reconfigured between them:

  held     `api.shed_delay_s` as configured (default 0.4; `--api shed_delay_s=…` sets another): a refusal
           sleeps ≈ shed_delay_s × waiting / bound before its 503
  at-once  `api.shed_delay_s` 0: the 503 is answered as soon as the bound is full

and any named in `--variant NAME:KEY=VALUE,...` (api.* settings over the deployed ones). With
`--interleave` the variants take turns step by step (switched through the admin overrides in Redis,
each given a few unmeasured seconds of the step's load first), so a slow spell of a shared machine
falls on all of them alike instead of on whichever ran then. `--repeat N` runs every step N times
(all steps, then all again) and reports each step's rates and latencies as medians over them,
the repeats beside it.

Per step: goodput (200s answered within the step's sending window, per second of it: when the
clients stop sending, the refusals still held run out for up to `api.shed_delay_max_s`, an idle
drain that is not the storm's rate; the rate over the drain too is `throughput_with_drain_rps`),
accepted P50/P99, statuses, the server side's CPU per request and per refusal, and the CPU each process role spent (proxy, ingress, the stages, Redis).
CPU per refusal = (proxy + ingress CPU − 200s × their CPU per 200 in the honour step) / refusals,
per process (other work on the machine is not counted). The goodput
ratio is against the best sustained rate of the same run (the best step of either variant).

How fast the machine itself ran in each step, since a shared VM slows down for seconds at a
time and a step caught in such a spell loses goodput that no setting of the app lost: the
stages' CPU per 200 (Retrieval, Ranking, Reranking, Auction and Redis: no refusal reaches them,
so only a slower machine, contention or smaller batches raise it) as a ratio to the run's
lowest (`stage_slowdown`), and goodput × that ratio: near 100 % in every step means the storm
cost no capacity and the shortfall was the machine's.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script (`rayfeed bench overload`): the repo's packages first
from benchmarks import served_app  # noqa: E402
from benchmarks.serve_load import closed_loop, measured, process_cpu_s  # noqa: E402
from app.api.config import ApiConfig  # noqa: E402
VARIANTS = {"held": {}, "at-once": {"shed_delay_s": 0.0}}  # name -> api.* over the deployed settings
ALL_STEPS = [("honour", 4), ("immediate", 4), ("immediate", 8), ("immediate", 16), ("immediate", 32),
             ("backoff", 8), ("backoff", 16), ("backoff", 32)]
STEPS = {  # (retry policy, concurrency) in order; the first is the variant's reference for refusal CPU
    "held": ALL_STEPS,
    "at-once": [("honour", 4), ("immediate", 8), ("immediate", 16), ("immediate", 32)],
}
ROLES = ("ProxyActor", "Ingress", "Retrieval", "Ranking", "Reranking", "Auction", "redis-server")
SETTLE_S = 3.0  # unmeasured load after an interleaved switch: the new bound learns the step's load


def api_settings(items: list[str], parser: argparse.ArgumentParser, flag: str) -> dict:
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in ApiConfig.model_fields:
            parser.error(f"{flag} {item!r}: expected KEY=VALUE with KEY one of api.* ({', '.join(ApiConfig.model_fields)})")
        settings[key] = int(value) if value.isdigit() else float(value) if value.replace(".", "", 1).isdigit() else value
    return settings


def named_variants(specs: list[str], parser: argparse.ArgumentParser) -> dict[str, dict]:
    """The built-in variants and those of `--variant NAME:KEY=VALUE,...`."""
    known = dict(VARIANTS)
    for spec in specs:
        name, sep, items = spec.partition(":")
        if not sep or not name:
            parser.error(f"--variant {spec!r}: expected NAME:KEY=VALUE,...")
        known[name] = api_settings(items.split(","), parser, "--variant")
    return known


def switch_to(redis_url: str, api: dict, admin_poll_s: float) -> None:
    """Every replica on `api` (over the deployed settings) through the admin overrides key."""
    import redis

    from app.state.overrides import OVERRIDES_KEY, Overrides

    client = redis.Redis.from_url(redis_url)
    current = Overrides.decode(client.get(OVERRIDES_KEY))
    client.set(OVERRIDES_KEY, Overrides(current.generation + 1, {"api": api}).encode())
    time.sleep(2 * admin_poll_s + 0.5)


def run_step(url: str, policy: str, concurrency: int, seconds: float) -> dict:
    before = process_cpu_s()
    step = measured(closed_loop(url, concurrency, seconds, 20_000, 943, 20, 10.0, policy)).summary()
    after = process_cpu_s()
    step["role_cpu_s"] = {role: round(after.get(role, 0.0) - before.get(role, 0.0), 2) for role in ROLES}
    step["refused"] = step["statuses"].get("503", 0) + step["statuses"].get("429", 0)
    step["stage_cpu_ms_per_200"] = stage_cpu_ms_per_200(step)
    return step


FRONT = ("ProxyActor", "Ingress")  # where a refusal costs CPU (nothing behind the ingress sees it)


def stage_cpu_ms_per_200(step: dict) -> float | None:
    """CPU per 200 of the processes behind the ingress (the stages and Redis), where no refusal goes."""
    if not step["ok"]:
        return None
    return 1000 * sum(cpu for role, cpu in step["role_cpu_s"].items() if role not in FRONT) / step["ok"]


def combined(runs: list[dict]) -> dict:
    """One step's figures over its repeats: each rate and latency the median over the repeats (a
    slow spell of the machine that hits one repeat does not decide the step), counts and CPU
    summed, the rest (per-stage timings, the drain) from the run of median goodput."""
    if len(runs) == 1:
        return runs[0]
    out = dict(sorted(runs, key=lambda r: r["throughput_rps"])[len(runs) // 2])
    for key in ("throughput_rps", "throughput_with_drain_rps", "p50_ms", "p95_ms", "p99_ms", "rate_503",
                "error_rate", "server_cpu_ms_per_request", "client_cores", "mean_rank_batch", "mean_chain_batch"):
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = float(statistics.median(values)) if values else None
    for key in ("sent", "ok", "refused"):
        out[key] = sum(r[key] for r in runs)
    out["statuses"] = {code: sum(r["statuses"].get(code, 0) for r in runs)
                       for code in sorted({c for r in runs for c in r["statuses"]})}
    out["role_cpu_s"] = {role: round(sum(r["role_cpu_s"].get(role, 0.0) for r in runs), 2) for role in ROLES}
    out["stage_cpu_ms_per_200"] = stage_cpu_ms_per_200(out)
    out["repeats"] = [{k: r.get(k) for k in ("throughput_rps", "p99_ms", "refused", "stage_cpu_ms_per_200")} for r in runs]
    return out


def with_stage_slowdown(steps: list[dict]) -> None:
    """Each step's stages' CPU per 200 over the run's lowest (1.0 = as fast as the fastest step).
    No refusal reaches the processes behind the ingress, so only a slower machine, contention
    or smaller batches raise it: a step that lost goodput while its stages ran 1.4× slower lost
    it to the machine, not to the storm."""
    lowest = min((s["stage_cpu_ms_per_200"] for s in steps if s.get("stage_cpu_ms_per_200")), default=None)
    for s in steps:
        s["stage_slowdown"] = s["stage_cpu_ms_per_200"] / lowest if s.get("stage_cpu_ms_per_200") else None


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
    client = "" if s.get("client_cores") is None else f"; the load generator {s['client_cores']:.2f} cores"
    print("         CPU s by role: " + ", ".join(f"{r} {v:.1f}" for r, v in s["role_cpu_s"].items() if v) + client,
          flush=True)
    if s.get("repeats"):
        print("         repeats: " + "; ".join(f"{r['throughput_rps']:.1f}/s P99 {r['p99_ms']:.0f}" for r in s["repeats"])
              + " (the step's figures above are their medians)", flush=True)
    if s.get("stage_slowdown") is not None:
        print(f"         stages' CPU per 200 {s['stage_cpu_ms_per_200']:.1f} ms, ×{s['stage_slowdown']:.2f} the run's lowest; "
              f"goodput × that {100 * s['throughput_rps'] / best * s['stage_slowdown']:.0f}% of best", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rayfeed bench overload", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", default=str(REPO / "artifacts"), help="artifact root to copy the latest version from")
    parser.add_argument("--seconds", type=float, default=15.0, help="duration of each step")
    parser.add_argument("--variants", default="held,at-once", help="comma-separated: held, at-once, or a --variant name")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                        help="a named variant of api.* settings, e.g. fixed3:admission_target_s=0,max_inflight_feeds=3")
    parser.add_argument("--interleave", action="store_true",
                        help="run each step under every variant in turn (all variants take every step)")
    parser.add_argument("--api", action="append", default=[], metavar="KEY=VALUE",
                        help="an api.* setting for every variant, e.g. admission_target_s=0.5 (repeatable)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run every step this many times (all steps, then again) and report each step's "
                             "medians over them: one slow spell of the machine then decides no step")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if not 1 <= args.repeat <= 10:
        parser.error(f"--repeat must be 1 to 10, got {args.repeat}")
    known = named_variants(args.variant, parser)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if any(v not in known for v in variants):
        parser.error(f"--variants: each of {', '.join(known)}")
    shared = api_settings(args.api, parser, "--api")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from app.state.local_redis import LocalRedis

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    work = Path(tempfile.mkdtemp(prefix="rayfeed-overload-"))
    server = LocalRedis.start()
    os.environ["REDIS_URL"] = server.url
    figures: dict = {"machine": served_app.machine(), "seconds": args.seconds, "repeat": args.repeat, "api": shared,
                     "interleaved": args.interleave, "variant_api": {v: known[v] for v in variants}, "variants": {}}
    try:
        version = served_app.prepare_artifacts(Path(args.artifacts), work / "artifacts", log)
        url, port = served_app.start_serve("rayfeed-bench-overload")
        if args.interleave:
            config = served_app.app_config(work / "artifacts", version, port, {"api": shared})
            served_app.deploy(config, url)
            admin_poll_s = config["applications"][0]["deployments"][0]["user_config"]["admin_poll_s"]
            asyncio.run(closed_loop(url, 2, 30, 40, 943, 20, 10.0))  # warm-up, not measured
            runs: dict[str, list[list[dict]]] = {v: [[] for _ in ALL_STEPS] for v in variants}
            for _ in range(args.repeat):
                for index, (policy, concurrency) in enumerate(ALL_STEPS):
                    for variant in variants:
                        switch_to(server.url, known[variant], admin_poll_s)
                        asyncio.run(closed_loop(url, concurrency, SETTLE_S, 20_000, 943, 20, 10.0, policy))
                        runs[variant][index].append(run_step(url, policy, concurrency, args.seconds))
                        log(f"{variant} {runs[variant][index][-1]['step']}: "
                            f"{runs[variant][index][-1]['throughput_rps']:.1f}/s")
            for variant, step_runs in runs.items():
                steps = [combined(r) for r in step_runs]
                with_refusal_cost(steps)
                figures["variants"][variant] = steps
        for variant in ([] if args.interleave else variants):
            started = time.perf_counter()
            config = served_app.app_config(work / "artifacts", version, port, {"api": {**shared, **known[variant]}})
            served_app.deploy(config, url)
            asyncio.run(closed_loop(url, 2, 30, 40, 943, 20, 10.0))  # warm-up, not measured
            log(f"{variant}: deployed and warmed in {time.perf_counter() - started:.0f}s")
            plan = STEPS.get(variant, ALL_STEPS)
            step_runs: list[list[dict]] = [[] for _ in plan]
            for _ in range(args.repeat):
                for index, (policy, concurrency) in enumerate(plan):
                    step_runs[index].append(run_step(url, policy, concurrency, args.seconds))
                    log(f"{variant} {step_runs[index][-1]['step']}: {step_runs[index][-1]['throughput_rps']:.1f}/s")
            steps = [combined(r) for r in step_runs]
            with_refusal_cost(steps)
            figures["variants"][variant] = steps
        best = max(s["throughput_rps"] for steps in figures["variants"].values() for s in steps)
        figures["best_goodput_rps"] = best
        with_stage_slowdown([s for steps in figures["variants"].values() for s in steps])
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
