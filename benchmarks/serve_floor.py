"""What Ray Serve itself costs per feed request on this machine, beside what rayfeed costs: one run.

    python benchmarks/serve_floor.py [--seconds 15] [--closed 1,4,8] [--variants chain,chain-work,rayfeed]
    rayfeed bench floor ...     # the same

Starts a private local Ray (2 CPUs) and Serve with the same settings `rayfeed serve` uses
(RAY_SERVE_THROUGHPUT_OPTIMIZED, workers at niceness 0), then deploys, one after another, apps of
NO-OP stages shaped like rayfeed's graph, and finally rayfeed itself (serve_config.yaml, one
replica per deployment, own redis-server, a copy of the latest artifacts), and drives each with
the closed-loop client of `rayfeed bench serve`:

  ingress        HTTP proxy → FastAPI ingress answering a 20-item page; no inner call
  chain          the same ingress → Retrieval → Ranking (@serve.batch) → Reranking, chained
                 DeploymentResponses, with Auction concurrently: rayfeed's four handle calls,
                 payloads of rayfeed's measured sizes (87 / 42 / 10 KiB), no compute
  chain-plain    `chain` behind a plain Starlette ingress (`__call__`, no FastAPI routing)
  chain-work     `chain` with each stage burning the CPU time rayfeed's stage spends in one
                 process (thread CPU time, so contention cannot stretch it): this run's
                 in-process split of rayfeed's stages (or `--work`), scaled to its in-process
                 CPU per request
  monolith-work  no inner call: two ingress replicas each burning all of that work, i.e. the best
                 any Serve layout could do with rayfeed's compute (not rayfeed's design: one stage
                 could no longer scale or batch apart from the others)
  rayfeed        the real application

Per app and step: throughput, P50/P99, and the server's CPU per request (the machine's busy CPU
minus this client's, /proc/stat), from which the table derives Serve's own CPU per request and the
request rate two cores can carry at that cost. With `chain` as the floor, rayfeed's CPU per
request is `floor + its compute + what rayfeed adds on top`: rayfeed against `chain-work` (the
same shape and compute with nothing else) is printed as ratios of CPU per request and throughput.
`--repeat N` makes N passes over the apps in alternating order (A B, B A, ...) and prints each
ratio's median over the passes: one pass's ratio moved up to ±12 % with the shared machine's speed
(docs/serving.md, session 21).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks import served_app  # noqa: E402
from benchmarks.serve_load import closed_loop, idle_server_cores, measured, process_cpu_s  # noqa: E402

# Pickled sizes of what rayfeed's stages hand each other (docs/serving.md, session 4).
PAYLOAD_KIB = {"retrieval": 87, "ranking": 42, "reranking": 10, "auction": 2}
# In-process CPU per request of each stage (ms), 2-core box, session 5 (docs/serving.md).
DEFAULT_WORK_MS = {"ingress": 3.0, "retrieval": 5.2, "ranking": 14.8, "reranking": 2.1, "auction": 4.5}
VARIANTS = ("ingress", "chain", "chain-plain", "chain-work", "monolith-work", "rayfeed")
CPUS = 2


def burn(ms: float) -> None:
    """Spend `ms` of this thread's CPU time (not wall time: waiting for a core does not count)."""
    if ms <= 0:
        return
    end = time.thread_time() + ms / 1000.0
    x = 0
    while time.thread_time() < end:
        for i in range(200):
            x += i


def floor_app(variant: str, work: dict[str, float]):
    """A rayfeed-shaped Serve application whose stages do nothing but `work` (ms of CPU each)."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from ray import serve
    from starlette.requests import Request

    if variant == "monolith-work":
        work = {**{k: 0.0 for k in work}, "ingress": sum(work.values())}
    elif variant != "chain-work":
        work = {k: 0.0 for k in work}
    inner = variant not in ("ingress", "monolith-work")
    page = {"items": [{"item_id": i, "type": "organic", "position": i, "score": 0.5} for i in range(20)],
            "request_id": "x", "timings_ms": {}}

    def payload(stage: str) -> np.ndarray:
        return np.zeros(PAYLOAD_KIB[stage] * 256, dtype=np.float32)

    @serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=4, max_queued_requests=8)
    class Retrieval:
        async def retrieve(self, query: dict) -> np.ndarray:
            burn(work["retrieval"])
            return payload("retrieval")

    @serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=16, max_queued_requests=32)
    class Ranking:
        @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0)
        async def rank(self, candidates: list[np.ndarray]) -> list[np.ndarray]:
            burn(work["ranking"] * len(candidates))
            return [payload("ranking") for _ in candidates]

    @serve.deployment(ray_actor_options={"num_cpus": 0.15}, max_ongoing_requests=4, max_queued_requests=16)
    class Reranking:
        async def rerank(self, ranked: np.ndarray) -> np.ndarray:
            burn(work["reranking"])
            return payload("reranking")

    @serve.deployment(ray_actor_options={"num_cpus": 0.15}, max_ongoing_requests=8, max_queued_requests=16)
    class Auction:
        async def serve_ads(self, query: dict) -> np.ndarray:
            burn(work["auction"])
            return payload("auction")

    async def one_page(self, user_id: int) -> dict:
        if inner:
            query = {"user_id": user_id}
            organic = self.reranking.rerank.remote(self.ranking.rank.remote(self.retrieval.retrieve.remote(query)))
            await asyncio.gather(organic, self.auction.serve_ads.remote(query))
        burn(work["ingress"])
        return page

    ingress_options = {"ray_actor_options": {"num_cpus": 0.25}, "max_ongoing_requests": 16, "max_queued_requests": 8,
                       "num_replicas": 2 if variant == "monolith-work" else 1}
    if variant == "chain-plain":
        @serve.deployment(**ingress_options)
        class PlainIngress:
            def __init__(self, retrieval, ranking, reranking, auction) -> None:
                self.retrieval, self.ranking, self.reranking, self.auction = retrieval, ranking, reranking, auction

            async def __call__(self, request: Request) -> JSONResponse:
                return JSONResponse(await one_page(self, int(request.query_params.get("user_id", 1))))

        ingress = PlainIngress
    else:
        api = FastAPI()

        @serve.deployment(**ingress_options)
        @serve.ingress(api)
        class FastAPIIngress:
            def __init__(self, retrieval, ranking, reranking, auction) -> None:
                self.retrieval, self.ranking, self.reranking, self.auction = retrieval, ranking, reranking, auction

            @api.get("/v1/feed")
            async def feed(self, user_id: int, limit: int = 20) -> JSONResponse:
                return JSONResponse(await one_page(self, user_id))

        ingress = FastAPIIngress
    return ingress.bind(Retrieval.bind(), Ranking.bind(), Reranking.bind(), Auction.bind())


def bench(url: str, concurrencies: list[int], seconds: float, users: int) -> list[dict]:
    asyncio.run(closed_loop(url, 1, 30, 20, users, 20, 10.0))  # warm-up
    steps = []
    for c in concurrencies:
        before = process_cpu_s()
        step = measured(closed_loop(url, c, seconds, 20_000, users, 20, 10.0)).summary()
        after = process_cpu_s()
        steps.append({k: step[k] for k in ("step", "sent", "ok", "throughput_rps", "p50_ms", "p99_ms", "rate_503",
                                           "error_rate", "server_cpu_ms_per_request")})
        steps[-1]["per_process_ms"] = per_request(before, after, max(step["sent"], 1))
        print(f"  {step['step']:<10} {step['throughput_rps']:6.1f} req/s  P50 {step['p50_ms']:6.1f}  "
              f"P99 {step['p99_ms']:6.1f} ms  503 {100 * step['rate_503']:4.1f}%  "
              f"server CPU {step['server_cpu_ms_per_request'] or float('nan'):5.1f} ms/req", flush=True)
    return steps


def per_request(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    """CPU ms per request of each process role between two `process_cpu_s` snapshots (≥ 0.1 ms)."""
    spent = {role: 1000.0 * (t - before.get(role, 0.0)) / requests for role, t in after.items()}
    return {role: ms for role, ms in sorted(spent.items(), key=lambda kv: -kv[1]) if ms >= 0.1}


def print_breakdown(results: dict[str, dict], step: str) -> None:
    """One row per process role, one column per app: where each app's CPU per request goes."""
    tables = {name: next((s["per_process_ms"] for s in r["steps"] if s["step"] == step), {})
              for name, r in results.items()}
    if not any(tables.values()):
        return
    roles = sorted({role for t in tables.values() for role in t}, key=lambda role: -max(t.get(role, 0) for t in tables.values()))
    print(f"\nCPU ms per request by process, {step}:")
    print(f"{'process':<22}" + "".join(f"{name:>14}" for name in tables))
    for role in roles:
        print(f"{role[:21]:<22}" + "".join(f"{t.get(role, 0.0):14.1f}" for t in tables.values()))
    print(f"{'total':<22}" + "".join(f"{sum(t.values()):14.1f}" for t in tables.values()))


def _wait_http(url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if served_app.answers_ok(f"{url}/v1/feed", {"user_id": 1}):
            return
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f}s")


def parse_work(text: str) -> dict[str, float]:
    work = dict(DEFAULT_WORK_MS)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name not in work:
            raise SystemExit(f"--work: unknown stage {name!r} (stages: {', '.join(work)})")
        try:
            work[name] = float(value)
        except ValueError:
            raise SystemExit(f"--work: {name}={value!r} is not a number of milliseconds") from None
        if work[name] < 0:
            raise SystemExit(f"--work: {name}={value} is negative (milliseconds of CPU, >= 0)")
    return work


def measured_split(wall_ms_by_stage: dict[str, float]) -> dict[str, float]:
    """The chain-work stages' split from rayfeed's in-process wall time per stage; the session-5
    defaults where a stage was not timed (the split of rayfeed's stages has moved since: Ranking
    got cheaper, so the defaults had Retrieval burn half its work and Ranking more than its own)."""
    split = {stage: wall_ms_by_stage.get(stage, 0.0) for stage in DEFAULT_WORK_MS}
    return split if all(split.values()) else dict(DEFAULT_WORK_MS)


def scaled_work(work: dict[str, float], total_ms: float) -> dict[str, float]:
    """The same stage split, scaled to `total_ms` in all (this run's in-process measurement)."""
    factor = total_ms / sum(work.values())
    return {k: v * factor for k, v in work.items()}


def summarise(results: dict[str, dict], work: dict[str, float]) -> dict:
    """Per app: the best accepted throughput of a step without transport errors (rayfeed's
    admission sheds with 503 + Retry-After under closed-loop load, which the clients honour), the
    lowest CPU per request of a step that shed < 5 %, and the rate two cores carry at that cost."""
    table = {}
    for name, result in results.items():
        ok = [s for s in result["steps"] if s["error_rate"] == 0]
        clean = [s for s in ok if s["rate_503"] < 0.05]
        cpu = min((s["server_cpu_ms_per_request"] for s in clean if s["server_cpu_ms_per_request"]), default=None)
        c1 = next((s for s in result["steps"] if s["step"] == "closed c=1"), None)
        table[name] = {"best_rps": max((s["throughput_rps"] for s in ok), default=None), "cpu_ms_per_request": cpu,
                       "c1_p50_ms": c1["p50_ms"] if c1 else None, "c1_p99_ms": c1["p99_ms"] if c1 else None,
                       "cpu_bound_rps": CPUS * 1000.0 / cpu if cpu else None}
    derived = {"stage_work_ms": sum(work.values())}
    floor, ingress = (table.get(k, {}).get("cpu_ms_per_request") for k in ("chain", "ingress"))
    if floor and ingress:
        derived["per_inner_call_cpu_ms"] = (floor - ingress) / 4
    ours, ideal = table.get("rayfeed", {}), table.get("chain-work", {})
    if ours.get("cpu_ms_per_request") and ideal.get("cpu_ms_per_request"):
        derived["rayfeed_over_chain_work_cpu"] = ours["cpu_ms_per_request"] / ideal["cpu_ms_per_request"]
    if ours.get("best_rps") and ideal.get("best_rps"):
        derived["rayfeed_over_chain_work_rps"] = ours["best_rps"] / ideal["best_rps"]
    return {"apps": table, "derived": derived}


def one_pass(order: list[str], deploy, url: str, concurrencies: list[int], args, work: dict[str, float]
             ) -> tuple[dict[str, dict], dict]:
    """Every app of `order` deployed and driven in turn; the pass's figures printed and returned."""
    from ray import serve

    results: dict[str, dict] = {}
    for variant in order:
        started = time.perf_counter()
        deploy(variant)
        print(f"{variant} (up in {time.perf_counter() - started:.0f}s, idle {idle_server_cores(3.0):.2f} cores)",
              flush=True)
        results[variant] = {"steps": bench(url, concurrencies, args.seconds, args.users)}
        serve.delete("rayfeed" if variant == "rayfeed" else "floor")
        time.sleep(2.0)
    summary = summarise(results, work)
    print(f"\n{'app':<12} {'best req/s':>10} {'CPU ms/req':>11} {'2-core cap':>11} {'c=1 P50/P99 ms':>16}")
    for name, row in summary["apps"].items():
        cap = f"{row['cpu_bound_rps']:.0f} req/s" if row["cpu_bound_rps"] else "-"
        print(f"{name:<12} {row['best_rps'] or 0:10.1f} {row['cpu_ms_per_request'] or float('nan'):11.1f} {cap:>11} "
              f"{row['c1_p50_ms'] or float('nan'):7.1f}/{row['c1_p99_ms'] or float('nan'):.1f}")
    for key, value in summary["derived"].items():
        print(f"{key}: {value:.2f}")
    print_breakdown(results, f"closed c={args.breakdown}")
    return results, summary


def median_derived(summaries: list[dict]) -> dict[str, float]:
    """Each derived ratio's median over the passes that have it."""
    keys = sorted({key for s in summaries for key in s["derived"]})
    return {key: float(np.median([s["derived"][key] for s in summaries if key in s["derived"]])) for key in keys}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rayfeed bench floor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--closed", default="1,4,8", help="closed-loop concurrencies per app")
    parser.add_argument("--breakdown", type=int, default=None,
                        help="concurrency whose per-process CPU is tabled (default: 4 if run, else the highest)")
    parser.add_argument("--seconds", type=float, default=15.0, help="duration of each step")
    parser.add_argument("--work", default="", help="stage=ms of the chain-work CPU per stage, over the defaults "
                        f"{DEFAULT_WORK_MS} (without it: this run's in-process split)")
    parser.add_argument("--inprocess", type=int, default=60, help="in-process rayfeed requests (0: skip)")
    parser.add_argument("--artifacts", default=str(REPO / "artifacts"), help="artifact root for the rayfeed app")
    parser.add_argument("--users", type=int, default=943)
    parser.add_argument("--repeat", type=int, default=1,
                        help="passes over the apps, in alternating order (ABBA); the ratios' medians are printed last")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants: unknown {unknown} (choose from {', '.join(VARIANTS)})")
    if not 1 <= args.repeat <= 10:
        parser.error(f"--repeat must be 1 to 10, got {args.repeat}")
    if not 0 < args.seconds <= 300:
        parser.error("--seconds must be in (0, 300]")
    try:
        concurrencies = [int(c) for c in args.closed.split(",") if c.strip()]
    except ValueError:
        parser.error(f"--closed must be comma-separated whole numbers (got {args.closed!r})")
    if not concurrencies or min(concurrencies) < 1:
        parser.error(f"--closed needs at least one concurrency, each >= 1 (got {args.closed!r})")
    if args.breakdown is None:
        args.breakdown = 4 if 4 in concurrencies else max(concurrencies)
    elif args.breakdown not in concurrencies:
        parser.error(f"--breakdown {args.breakdown} is not one of the --closed concurrencies {concurrencies}")
    work = parse_work(args.work)

    from ray import serve

    from app.state.local_redis import LocalRedis
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    work_dir = Path(tempfile.mkdtemp(prefix="rayfeed-floor-"))
    server = LocalRedis.start()
    os.environ["REDIS_URL"] = server.url
    in_process_ms = None
    source = "--work over the defaults" if args.work else "the defaults (no in-process run)"
    try:
        if args.inprocess and set(variants) & {"chain-work", "monolith-work", "rayfeed"}:
            from benchmarks.serve_load import in_process_cost

            cost = in_process_cost(args.inprocess, 20, args.users)
            in_process_ms = cost["cpu_ms_per_request"]
            print(f"rayfeed in one process: {in_process_ms:.1f} ms CPU per request", flush=True)
            if not args.work:  # this run's own split: each stage burns what rayfeed's spends
                split = measured_split(cost["wall_ms_by_stage"])
                source = ("this run's in-process split" if split != DEFAULT_WORK_MS
                          else "the default split (a stage went untimed)")
                work = scaled_work(split, in_process_ms)
        print("stage work (ms CPU): " + ", ".join(f"{k} {v:.1f}" for k, v in work.items()) + f", from {source}",
              flush=True)
        url, port = served_app.start_serve("rayfeed-bench-floor")
        print(f"idle Serve: {idle_server_cores(5.0):.2f} cores busy", flush=True)
        version: list[str] = []  # rayfeed's artifacts, copied once for every pass

        def deploy(variant: str) -> None:
            if variant == "rayfeed":
                if not version:
                    version.append(served_app.prepare_artifacts(Path(args.artifacts), work_dir / "artifacts", log))
                served_app.deploy(served_app.app_config(work_dir / "artifacts", version[0], port), url)
            else:
                serve.run(floor_app(variant, work), name="floor", route_prefix="/")
                _wait_http(url)

        passes = []
        for index in range(args.repeat):
            order = variants if index % 2 == 0 else variants[::-1]  # ABBA: a slow spell falls on both
            if args.repeat > 1:
                print(f"\npass {index + 1} of {args.repeat}: {', '.join(order)}", flush=True)
            passes.append(one_pass(order, deploy, url, concurrencies, args, work))
        results, summary = passes[0]
        figures = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                   "load_after": os.getloadavg(), "work_ms": work, "in_process_cpu_ms": in_process_ms,
                   "results": results, **summary}
        if args.repeat > 1:
            figures["passes"] = [{"results": r, **s} for r, s in passes]
            figures["median_derived"] = median_derived([s for _, s in passes])
            for key, value in figures["median_derived"].items():
                each = ", ".join(f"{s['derived'][key]:.2f}" for _, s in passes if key in s["derived"])
                print(f"{key}, median over the passes: {value:.2f} (passes: {each})", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=1))
        return 0
    finally:
        served_app.stop_all(server, work_dir)


if __name__ == "__main__":
    sys.exit(main())
