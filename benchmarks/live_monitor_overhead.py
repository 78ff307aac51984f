"""What the live monitor costs a served feed: P50/P99 through Ray Serve with it on and off, one run.

    python benchmarks/live_monitor_overhead.py --blocks 3 --requests 150    # or: rayfeed bench live-monitor

Starts its own redis-server, a local Ray (2 CPUs) and the Serve app from serve_config.yaml (every
deployment at one replica, as the integration tests deploy it) over a copy of the latest artifact
version (a training baseline is fitted into the copy when the artifact has none). Then it
alternates two modes, switched by redeploying the user_config (an in-place reconfigure of every
deployment, no restart), in blocks with a rotating order so that other load on the machine hits
both alike:

  on    observability.live_monitor.enabled (sample_rate 1.0): Ranking samples features, the
        ingress sends the prediction record with the page's Redis writes, the Monitor deployment
        reads both streams, joins and publishes every `publish_seconds`
  off   live_monitor.enabled: false (no sample, no XADD, the Monitor's loop cancelled)

Each block: `--warmup` requests, then `--requests` measured feed requests from `--concurrency`
closed-loop clients; after each page the client posts an impression per organic item and a click
on the first (in both modes, so the event path loads the app alike and the Monitor has joins to do).
Reported: feed latency P50/P99 per mode (client side, loopback), the ratio on/off, the size of
the stream entries, what the Monitor processed, and (measured first, in-process, before Ray
starts) the serving-side cost of one logged request in µs: the feature sample, the record's
build + JSON, and the page's Redis round trip with and without the XADD riding in it.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks import served_app  # noqa: E402
MODES = ("on", "off")


def app_config(artifact_root: Path, version: str, port: int, enabled: bool) -> dict:
    return served_app.app_config(artifact_root, version, port,
                                 {"observability": {"live_monitor": {"enabled": enabled, "sample_rate": 1.0}}})


async def run_block(url: str, requests: int, warmup: int, concurrency: int, users: int, rng: random.Random) -> list[float]:
    import httpx

    latencies: list[float] = []
    budget = {"left": warmup + requests, "warm": warmup}

    async def client_loop(client: httpx.AsyncClient) -> None:
        while budget["left"] > 0:
            budget["left"] -= 1
            measured = budget["warm"] <= 0
            budget["warm"] -= 1
            user = rng.randint(1, users)
            t = time.perf_counter()
            response = await client.get(f"{url}/v1/feed", params={"user_id": user, "limit": 20})
            elapsed = time.perf_counter() - t
            if response.status_code != 200:
                continue
            if measured:
                latencies.append(elapsed)
            body = response.json()
            organic = [i for i in body["items"] if i["type"] == "organic"]
            events = [{"user_id": user, "item_id": i["item_id"], "request_id": body["request_id"],
                       "position": i["position"], "type": "impression"} for i in organic]
            if organic:
                events.append({**events[0], "type": "click"})
                await client.post(f"{url}/v1/events", json=events)

    async with httpx.AsyncClient(timeout=30.0) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
    return latencies


def serving_side_cost(redis_url: str, n: int = 500) -> dict[str, float]:
    """Per logged request, in-process (µs): Ranking's feature sample over 1500 candidates, the
    ingress's record (build + JSON), and the page's Redis round trip with and without the XADD."""
    import redis.asyncio as aioredis

    from app.state.sessions import FeedStateStore, StreamAppend
    from observability.config import ObservabilityConfig
    from observability.live_monitor import FeatureSampler, PredictionRecord

    live = ObservabilityConfig().live_monitor
    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(40)]
    names[: len(live.features)] = live.features
    dense = rng.normal(size=(1500, len(names))).astype(np.float32)
    scores = {h: rng.uniform(size=1500).astype(np.float32) for h in ("click", "like", "share", "hide", "watch")}
    sampler = FeatureSampler(names, live.features, live.feature_rows)
    ranked = list(range(100))
    head_scores = {h: v[:100].tolist() for h, v in scores.items()}
    slots = [(i, i + 1, i) for i in range(20)]

    def timed(fn) -> float:
        started = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - started) / n * 1e6

    sample_us = timed(lambda: sampler.sample(dense, scores))
    sample = sampler.sample(dense, scores)
    record_us = timed(lambda: PredictionRecord.for_page("r" * 32, "u" * 16, "v1", time.time(), slots, ranked,
                                                        head_scores, sample).to_fields())
    fields = PredictionRecord.for_page("r" * 32, "u" * 16, "v1", time.time(), slots, ranked, head_scores, sample).to_fields()

    async def round_trips() -> tuple[float, float]:
        client = aioredis.Redis.from_url(redis_url)
        store = FeedStateStore(client, 60, 60, 60, 3)
        out = []
        for append in (None, StreamAppend("rf:bench:predictions", fields, 1000)):
            started = time.perf_counter()
            for i in range(n):
                await store.record_page(1, f"s{i % 50}", list(range(20)), 1, append=append)
            out.append((time.perf_counter() - started) / n * 1e6)
        await client.aclose()
        return out[0], out[1]

    without, with_xadd = asyncio.run(round_trips())
    return {"feature_sample_us": sample_us, "record_build_json_us": record_us,
            "record_page_us": without, "record_page_with_xadd_us": with_xadd}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rayfeed bench live-monitor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", default=str(REPO / "artifacts"), help="artifact root to copy the latest version from")
    parser.add_argument("--blocks", type=int, default=3, help="blocks per mode (interleaved)")
    parser.add_argument("--requests", type=int, default=150, help="measured feed requests per block")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--users", type=int, default=943)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args(argv)

    import redis
    from ray import serve

    from app.state.local_redis import LocalRedis

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    work = Path(tempfile.mkdtemp(prefix="rayfeed-live-monitor-"))
    server = LocalRedis.start()
    os.environ["REDIS_URL"] = server.url
    try:
        version = served_app.prepare_artifacts(Path(args.artifacts), work / "artifacts", log)
        serving_side = serving_side_cost(server.url)
        log(f"serving side per logged request: {serving_side}")
        url, port = served_app.start_serve("rayfeed-bench-live-monitor")
        started = time.perf_counter()
        served_app.deploy(app_config(work / "artifacts", version, port, enabled=True), url)
        log(f"app deployed ({time.perf_counter() - started:.0f}s)")
        rng = random.Random(args.seed)
        results: dict[str, list[float]] = {mode: [] for mode in MODES}
        logged = {mode: 0 for mode in MODES}
        stream = redis.Redis.from_url(server.url)
        for block in range(args.blocks):
            for mode in (MODES if block % 2 == 0 else MODES[::-1]):
                served_app.deploy(app_config(work / "artifacts", version, port, enabled=mode == "on"), url)
                logged_before = stream.xlen("rf:predictions")
                latencies = asyncio.run(run_block(url, args.requests, args.warmup, args.concurrency, args.users, rng))
                results[mode] += latencies
                logged[mode] += stream.xlen("rf:predictions") - logged_before  # off: 0 (the switch took)
                log(f"block {block} {mode}: {len(latencies)} requests, P50 {np.percentile(latencies, 50) * 1000:.1f} ms")
        client = redis.Redis.from_url(server.url)
        entries = client.xrange("rf:predictions", count=50)
        entry_bytes = float(np.mean([len(f[b"r"]) for _, f in entries])) if entries else float("nan")
        monitor = serve.get_deployment_handle("Monitor", app_name="rayfeed").stats.remote().result(timeout_s=30)
        figures = {
            "machine": served_app.machine(),
            "blocks": args.blocks, "requests_per_block": args.requests, "concurrency": args.concurrency,
            "prediction_entries_logged": logged, "mean_entry_bytes": entry_bytes, "serving_side_us": serving_side,
            "monitor": {k: monitor.get(k) for k in ("predictions_read", "events_read", "impressions_read", "publishes", "errors")},
        }
        for mode in MODES:
            lat = np.asarray(results[mode]) * 1000
            figures[mode] = {"n": len(lat), "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
                             "mean_ms": float(lat.mean())}
        figures["p50_ratio_on_off"] = figures["on"]["p50_ms"] / figures["off"]["p50_ms"]
        figures["p99_ratio_on_off"] = figures["on"]["p99_ms"] / figures["off"]["p99_ms"]
        served_app.report(figures, args.json)
        return 0
    finally:
        served_app.stop_all(server, work)


if __name__ == "__main__":
    sys.exit(main())
