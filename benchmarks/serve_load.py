"""Load generator for the served app: `rayfeed bench serve [options]`.

Loopback only, bounded in requests and seconds. Two modes:
  open loop    requests start on a fixed schedule (rate r: one every 1/r s) whether or not
               earlier ones finished, so queueing shows up as latency, 503s or errors;
  closed loop  c clients, each sends its next request when the last one returned; after a
               429/503 (`--retry`) it waits the Retry-After (honour), asks again at once
               (immediate: the retry storm of pull-to-refresh apps and proxies), or backs off
               exponentially with full jitter (backoff).

Prints per step: throughput, P50/P95/P99 end-to-end, error and 503 rates, and per-stage
P50/P99 from the server's `timings_ms` (retrieval, ranking, reranking, ads, collate, ...).
Then runs the same pipeline in one plain process (FeedService, one thread, torch threads 1)
for the per-request compute cost and prints the ratio Ray-served / in-process.

CPU per request: each step also reports the machine's busy CPU time (Linux /proc/stat) minus this
client's own, divided by the requests sent, i.e. what the server side (Ray, Serve, Redis) spent
per request, the idle app's share included (printed first), and the in-process step its own
process's CPU per request (its local Redis not counted). Their ratio moves far less with the
host's speed than latency does (on a shared VM, run-to-run latency varies by ±30 %); the served
figure counts every process on the box, so run it on an otherwise idle machine.

    rayfeed bench serve --closed 1,4 --open 20,40,60,120 --seconds 20 --max-requests 3000
    rayfeed bench serve --closed 4,8,16,32 --retry immediate,backoff       # the storm
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from urllib.parse import urlparse

import numpy as np

STAGES = ("state", "chain_wait", "retrieval", "ranking", "reranking", "ads", "organic_and_ads_wall", "collate", "total")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class StepResult:
    label: str
    seconds: float
    latencies: list[float] = field(default_factory=list)  # accepted (200) requests only
    statuses: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    errors: int = 0  # transport errors and timeouts
    stages: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    batch_sizes: list[float] = field(default_factory=list)
    chain_batch_sizes: list[float] = field(default_factory=list)
    server_cpu_s: float | None = None  # machine busy CPU minus this client's during the step
    client_cpu_s: float | None = None  # this client's own: on one box it shares the server's cores
    # A closed loop stopped by its deadline: its sending window, and the 200s answered within it
    # (`seconds` also spans the drain after it, where no new request is sent and the server idles
    # while the last held refusals run out)
    window_end: float = math.inf  # time.perf_counter() at the deadline
    window_s: float | None = None
    ok_in_window: int = 0

    @property
    def sent(self) -> int:
        return sum(self.statuses.values()) + self.errors

    def summary(self) -> dict[str, object]:
        lat = np.asarray(self.latencies) * 1000
        pct = (lambda q: float(np.percentile(lat, q))) if len(lat) else (lambda q: float("nan"))
        sent = max(self.sent, 1)
        other = sum(n for s, n in self.statuses.items() if s not in (200, 503))
        return {
            "step": self.label, "sent": self.sent, "ok": self.statuses.get(200, 0),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "throughput_rps": self.statuses.get(200, 0) / self.seconds if self.window_s is None
            else self.ok_in_window / self.window_s,
            "throughput_with_drain_rps": self.statuses.get(200, 0) / self.seconds,
            "drain_s": None if self.window_s is None else self.seconds - self.window_s,
            "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
            "rate_503": self.statuses.get(503, 0) / sent, "error_rate": (self.errors + other) / sent,
            "stages_p50_ms": {k: float(np.percentile(v, 50)) for k, v in self.stages.items() if v},
            "stages_p99_ms": {k: float(np.percentile(v, 99)) for k, v in self.stages.items() if v},
            "mean_rank_batch": float(np.mean(self.batch_sizes)) if self.batch_sizes else None,
            "mean_chain_batch": float(np.mean(self.chain_batch_sizes)) if self.chain_batch_sizes else None,
            "server_cpu_ms_per_request": None if self.server_cpu_s is None else 1000 * self.server_cpu_s / sent,
            "client_cores": None if self.client_cpu_s is None else self.client_cpu_s / self.seconds,
        }


def machine_busy_cpu_s() -> float | None:
    """CPU seconds all cores spent busy since boot (not idle, not waiting on I/O); None off Linux."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


IDLE_SAMPLE_S = 5.0


def process_cpu_s() -> dict[str, float]:
    """CPU seconds (user + system) of every other process on the machine, summed by role: a Serve
    replica by its deployment (`ServeReplica:<app>:Ranking` → `Ranking`; any `*Ingress` →
    `Ingress`), other Ray actors by class, anything else by executable. Empty off Linux."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    roles: dict[str, float] = defaultdict(float)
    for pid in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:  # Ray rewrites it: "ray::<actor> ..."
                command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        roles[process_role(command)] += (int(fields[11]) + int(fields[12])) / tick
    return dict(roles)


def process_role(command: str) -> str:
    """The role `process_cpu_s` files a process under, from its command line's first word."""
    if command.startswith("ray::ServeReplica:"):
        # "...:Auction.reconfigure" while a replica runs a method: filed under its deployment, or
        # the step's CPU delta would count a whole process (or a negative one) when it changed.
        deployment = command.split()[0].rsplit(":", 1)[-1].split(".")[0]
        return "Ingress" if deployment.endswith("Ingress") else deployment
    if command.startswith("ray::"):  # "ray::ServeController.listen_for_change" while in a method
        return command.split()[0][len("ray::"):].split(".")[0]
    return os.path.basename(command.split()[0]) if command else "other"


def _server_cpu_during(run):
    """`run()`'s result, the CPU seconds every other process on the machine spent meanwhile (the
    machine's busy time minus this process's own; None off Linux), and this process's own."""
    busy, own = machine_busy_cpu_s(), time.process_time()
    result = run()
    busy_after, own_s = machine_busy_cpu_s(), time.process_time() - own
    server = None if busy is None or busy_after is None else max(0.0, (busy_after - busy) - own_s)
    return result, server, own_s


def idle_server_cores(seconds: float) -> float | None:
    """The machine's busy cores while nothing is sent: the served app's background cost."""
    _, cpu, _ = _server_cpu_during(lambda: time.sleep(seconds))
    return None if cpu is None else cpu / seconds


def measured(step) -> StepResult:
    """Run one load step (a coroutine) with the server side's CPU attached."""
    result, result.server_cpu_s, result.client_cpu_s = _server_cpu_during(lambda: asyncio.run(step))
    return result


async def _one(client, url: str, users: int, limit: int, result: StepResult, rng: random.Random,
               user_prefix: str = "") -> float:
    """One feed request, recorded into `result`; the Retry-After (s) of a 429/503, else 0.
    `user_prefix`: a dataset with string ids names user k `<prefix>k` (an export's `u42`)."""
    import httpx

    started = time.perf_counter()
    try:
        response = await client.get(url, params={"user_id": f"{user_prefix}{rng.randint(1, users)}", "limit": limit})
    except httpx.HTTPError:
        result.errors += 1
        return 0.0
    result.statuses[response.status_code] += 1
    if response.status_code in (429, 503):
        try:
            return max(0.0, float(response.headers.get("retry-after", 0)))
        except ValueError:
            return 0.0
    if response.status_code == 200:
        answered = time.perf_counter()
        result.latencies.append(answered - started)
        result.ok_in_window += answered <= result.window_end
        timings = response.json().get("timings_ms", {})
        for stage in STAGES:
            if stage in timings:
                result.stages[stage].append(float(timings[stage]))
        if "ranking_batch_size" in timings:
            result.batch_sizes.append(float(timings["ranking_batch_size"]))
        if "chain_batch_size" in timings:
            result.chain_batch_sizes.append(float(timings["chain_batch_size"]))
    return 0.0


async def open_loop(base: str, rate: float, seconds: float, max_requests: int, users: int, limit: int,
                    timeout: float, user_prefix: str = "") -> StepResult:
    import httpx

    result = StepResult(f"open {rate:g}/s", seconds)
    rng = random.Random(0)
    n = min(int(rate * seconds), max_requests)
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        start = time.perf_counter()
        tasks = []
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_one(client, f"{base}/v1/feed", users, limit, result, rng, user_prefix)))
        await asyncio.gather(*tasks)
        result.seconds = max(time.perf_counter() - start, seconds if n == int(rate * seconds) else 0.001)
    return result


RETRY_POLICIES = ("honour", "immediate", "backoff")
BACKOFF_BASE_S, BACKOFF_CAP_S = 0.05, 2.0  # the "backoff" client: capped exponential, full jitter


def retry_wait(policy: str, retry_after: float, failures: int, rng: random.Random) -> float:
    """How long a client of `policy` waits after its `failures`-th refusal in a row (429/503):
    `honour` the server's Retry-After; `immediate` not at all (a mobile app's pull-to-refresh, a
    proxy retrying on 503); `backoff` capped exponential with full jitter (AWS's recommendation),
    ignoring Retry-After."""
    if policy == "honour":
        return retry_after
    if policy == "immediate":
        return 0.0
    if policy == "backoff":
        return rng.uniform(0.0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (failures - 1)))
    raise ValueError(f"retry policy must be one of {RETRY_POLICIES}, got {policy!r}")


async def closed_loop(base: str, concurrency: int, seconds: float, max_requests: int, users: int, limit: int,
                      timeout: float, retry: str = "honour", user_prefix: str = "") -> StepResult:
    import httpx

    label = f"closed c={concurrency}" + ("" if retry == "honour" else f" {retry}")
    result = StepResult(label, seconds)
    rng = random.Random(0)
    budget = [max_requests]
    deadline = time.perf_counter() + seconds

    async def worker(client) -> None:
        failures = 0
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            before = result.statuses[429] + result.statuses[503]
            retry_after = await _one(client, f"{base}/v1/feed", users, limit, result, rng, user_prefix)
            refused = result.statuses[429] + result.statuses[503] > before
            failures = failures + 1 if refused else 0
            wait = retry_wait(retry, retry_after, failures, rng) if refused else 0.0
            if wait:
                await asyncio.sleep(min(wait, max(0.0, deadline - time.perf_counter())))

    limits = httpx.Limits(max_connections=max(100, 2 * concurrency), max_keepalive_connections=max(20, concurrency))
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        start = time.perf_counter()
        result.window_end = deadline
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        result.seconds = time.perf_counter() - start
    if budget[0] > 0:  # the deadline stopped it: goodput is the window's, not the drain's
        result.window_s = deadline - start
    return result


IN_PROCESS_PARTS = ("retrieval", "ranking", "reranking")  # timed by the organic page itself


def in_process_cost(requests: int, limit: int, users: int) -> dict:
    """Per-request compute of the same pipeline in one plain process (organic + ads + collator),
    and its wall time per stage as the served app splits it (`wall_ms_by_stage`: the organic
    parts, the auction, and the ingress's rest: state, collation, bookkeeping)."""
    import uuid

    import torch

    from app.bootstrap import build_feed_service, load_artifacts, world_clock
    from app.organic import OrganicRequest
    from config import load_config
    from app.state.local_redis import LocalRedis

    torch.set_num_threads(1)
    config = load_config()
    loaded = load_artifacts(config)
    local = None if config.redis_url else LocalRedis.start()
    try:
        clock = world_clock(loaded)
        service = build_feed_service(loaded, config, config.redis_url or local.url, clock)
        ads_s = [0.0]  # the last page's auction time
        serve_ads = service.serve_ads

        def timed_ads(*args, **kwargs):  # the auction's share of a page, for the stage split
            started = time.perf_counter()
            try:
                return serve_ads(*args, **kwargs)
            finally:
                ads_s[0] = time.perf_counter() - started

        service.serve_ads = timed_ads
        rng = random.Random(1)
        times, own, parts = [], 0.0, defaultdict(float)
        for i in range(requests + 10):
            if i == 10:  # after the warm-up
                own = time.process_time()
            request = OrganicRequest(rng.randint(1, users), clock(), limit, uuid.uuid4().hex)
            started = time.perf_counter()
            page = service.page(request)
            if i >= 10:
                times.append(time.perf_counter() - started)
                for part in IN_PROCESS_PARTS:
                    parts[part] += page.organic.timings_ms.get(part, 0.0) / 1000
                parts["auction"] += ads_s[0]
        own = time.process_time() - own  # this process only: the served app may be running beside it
    finally:
        if local is not None:
            local.stop()
    t = np.asarray(times) * 1000
    parts["ingress"] = max(0.0, float(np.sum(times)) - sum(parts.values()))  # state, collation, the rest
    return {"requests": requests, "mean_ms": float(t.mean()), "p50_ms": float(np.percentile(t, 50)),
            "p99_ms": float(np.percentile(t, 99)), "max_rps_one_core": 1000.0 / float(t.mean()),
            "cpu_ms_per_request": 1000.0 * own / requests,
            "wall_ms_by_stage": {part: 1000.0 * seconds / requests for part, seconds in parts.items()}}


def _print_step(s: dict[str, object]) -> None:
    print(f"{s['step']:<14} sent {s['sent']:>5}  ok {s['ok']:>5}  {s['throughput_rps']:6.1f} req/s  "
          f"P50 {s['p50_ms']:6.1f}  P95 {s['p95_ms']:6.1f}  P99 {s['p99_ms']:6.1f} ms  "
          f"503 {100 * s['rate_503']:5.1f}%  errors {100 * s['error_rate']:5.1f}%"
          + (f"  rank batch {s['mean_rank_batch']:.1f}" if s["mean_rank_batch"] else "")
          + (f"  chain batch {s['mean_chain_batch']:.1f}" if s.get("mean_chain_batch") else "")
          + (f"  server CPU {s['server_cpu_ms_per_request']:.1f} ms/req" if s.get("server_cpu_ms_per_request") else ""))
    p50, p99 = s["stages_p50_ms"], s["stages_p99_ms"]
    print("               stages P50/P99 ms: " + ", ".join(f"{k} {p50[k]:.1f}/{p99[k]:.1f}" for k in STAGES if k in p50))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rayfeed bench serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the app (loopback only)")
    parser.add_argument("--closed", default="1", help="closed-loop concurrencies, comma-separated ('' for none)")
    parser.add_argument("--retry", default="honour",
                        help="closed-loop clients after a 429/503, comma-separated, each run at every --closed: "
                             "honour (wait Retry-After), immediate (retry at once), backoff (capped exponential)")
    parser.add_argument("--open", dest="open_rates", default="", help="open-loop rates in req/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each step (max 300)")
    parser.add_argument("--max-requests", type=int, default=3000, help="requests per step at most (max 20000)")
    parser.add_argument("--warmup", type=int, default=20, help="requests sent first and not measured")
    parser.add_argument("--users", type=int, default=943)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=10.0, help="client timeout per request (s)")
    parser.add_argument("--inprocess", type=int, default=200, help="in-process requests for the ratio (0: skip)")
    parser.add_argument("--json", default=None, help="write all figures to this file")
    args = parser.parse_args(argv)
    host = urlparse(args.url).hostname
    if host not in LOOPBACK:
        parser.error(f"--url must be a loopback address (got {host!r}): this tool never loads other hosts")
    if not 0 < args.seconds <= 300 or not 0 < args.max_requests <= 20_000:
        parser.error("--seconds must be in (0, 300] and --max-requests in (0, 20000]")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    figures: dict[str, object] = {"url": args.url, "steps": []}
    idle = idle_server_cores(IDLE_SAMPLE_S)
    if idle is not None:
        figures["idle_server_cores"] = idle
        print(f"idle app: {idle:.2f} cores busy with no requests (controller, health checks, pollers); "
              f"included in each step's server CPU")
    asyncio.run(closed_loop(args.url, 1, 60, args.warmup, args.users, args.limit, args.timeout))
    policies = [p.strip() for p in args.retry.split(",") if p.strip()]
    if any(p not in RETRY_POLICIES for p in policies):
        parser.error(f"--retry: each of {', '.join(RETRY_POLICIES)}")
    for policy in policies:
        for c in [int(x) for x in args.closed.split(",") if x.strip()]:
            step = measured(closed_loop(args.url, c, args.seconds, args.max_requests, args.users, args.limit,
                                        args.timeout, policy)).summary()
            figures["steps"].append(step)
            _print_step(step)
    for r in [float(x) for x in args.open_rates.split(",") if x.strip()]:
        step = measured(open_loop(args.url, r, args.seconds, args.max_requests, args.users, args.limit, args.timeout)).summary()
        figures["steps"].append(step)
        _print_step(step)
    if args.inprocess:
        cost = in_process_cost(args.inprocess, args.limit, args.users)
        figures["in_process"] = cost
        print(f"in-process   {cost['requests']} requests, one thread: mean {cost['mean_ms']:.1f} ms, "
              f"P50 {cost['p50_ms']:.1f}, P99 {cost['p99_ms']:.1f} ms, CPU {cost['cpu_ms_per_request']:.1f} ms/req "
              f"(≈ {cost['max_rps_one_core']:.0f} req/s per core)")
        c1 = next((s for s in figures["steps"] if s["step"] == "closed c=1"), None)
        if c1 is not None:
            ratio = c1["p50_ms"] / cost["p50_ms"]
            figures["ratio_served_over_in_process_p50"] = ratio
            print(f"ratio Ray-served / in-process (P50 latency at c=1): {ratio:.2f}x")
        best = max((s["throughput_rps"] for s in figures["steps"] if s["error_rate"] == 0), default=None)
        if best:
            figures["ratio_in_process_over_served_throughput"] = cost["max_rps_one_core"] * 2 / best
            print(f"throughput: served best {best:.1f} req/s vs in-process {cost['max_rps_one_core'] * 2:.0f} req/s "
                  f"on 2 cores (ratio {cost['max_rps_one_core'] * 2 / best:.2f}x)")
        served_cpu = [s["server_cpu_ms_per_request"] for s in figures["steps"]
                      if s.get("server_cpu_ms_per_request") and s["error_rate"] == 0 and s["rate_503"] < 0.05]
        if served_cpu:
            figures["ratio_served_over_in_process_cpu"] = min(served_cpu) / cost["cpu_ms_per_request"]
            print(f"CPU per request: served {min(served_cpu):.1f} ms (best step with < 5 % shed) vs in-process "
                  f"{cost['cpu_ms_per_request']:.1f} ms (ratio {figures['ratio_served_over_in_process_cpu']:.2f}x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
