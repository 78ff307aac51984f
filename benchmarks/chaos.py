"""Chaos run: faults injected into a real rayfeed Serve app under steady load, one table out.

    rayfeed bench chaos [--rate 4] [--scenario-seconds 14] [--replicas 2] [--only kill-Ranking,redis-pause]
    make chaos

Everything runs on 127.0.0.1 and is owned by this run: a redis-server it starts (AOF with
`appendfsync always`, so an acknowledged event survives a Redis crash), a local Ray instance
(`ray.init(address="local")`, never someone else's cluster) and the app deployed from
serve_config.yaml with `--replicas` replicas per deployment and the trained artifacts in
artifacts/ (`rayfeed train` first if there are none). Steady open-loop load (`--rate` feeds/s)
and a stream of event batches (unique event ids) run throughout; each scenario injects one
fault after a short lead and watches for at most `--scenario-seconds` (each bounded; the whole
run is a few minutes):

  kill-<Deployment>   ray.kill on one replica actor of each deployment in turn
  kill-controller     ray.kill on the Serve controller (Ray restarts it)
  redis-stop          SIGTERM redis-server, keep it down 4 s, start it again (same port, same AOF)
  redis-pause         SIGSTOP redis-server for 4 s, then SIGCONT (a hung Redis); with --redis-cluster,
                      one of 3 masters (the event stream's) for 10 s
  redis-crash         SIGKILL redis-server, start it again at once
  overload            open loop at 6× the steady rate for 8 s: shed with 503 + Retry-After
  deadline            feeds with `X-Request-Timeout-Ms: 5`: answered 504, promptly
  rate-limit          one client at 20 req/s against a 2 req/s limit (admin override), no other load:
                      what the replicas together let through (the limit is cluster-wide, not per replica)

Columns: requests (feeds sent in the scenario window), failures (feeds not answered 200; for
`overload`/`deadline` only answers other than the intended 503/504/429), P99 of the feeds
answered 200 (client side), recovery (fault → the last failed feed: how long users saw
failures), restored (fault → the replacement replica RUNNING / the controller back with every
replica / Redis answering and /readyz 200), data lost (acknowledged events missing from the
Redis stream; "+n dup" would be events counted twice when every batch is re-sent). The notes
give the sheds, the 504s, the pages served without ads and the ingress's own (server-side)
latency while Redis was out. After the scenarios, every budget ledger is checked: spent equals
the committed reservations, reserved the pending ones, never above the budget.
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
APP = "rayfeed"
DEPLOYMENTS = ("FeedIngress", "Retrieval", "Ranking", "Reranking", "Auction")
ADMIN_TOKEN_ENV = "RAYFEED_ADMIN_TOKEN"
SCENARIOS = (*(f"kill-{d}" for d in DEPLOYMENTS), "kill-controller", "redis-stop", "redis-pause", "redis-crash",
             "overload", "deadline", "rate-limit")
RATE_LIMIT_PROBE = {"rate_limit_per_s": 2.0, "rate_limit_burst": 4.0}  # the `rate-limit` scenario's override


# -- the Redis this run owns ------------------------------------------------------------------------
class ChaosRedis:
    """A redis-server on loopback with an append-only file fsynced on every write."""

    pause_s = 4.0

    def __init__(self) -> None:
        from app.state.local_redis import free_port

        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="rayfeed-chaos-redis-"))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        from app.state.local_redis import find_redis_server

        self.process = subprocess.Popen(
            [find_redis_server(), "--bind", "127.0.0.1", "--port", str(self.port), "--protected-mode", "yes",
             "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            try:
                redis.Redis.from_url(self.url, socket_connect_timeout=0.2).ping()
                return
            except redis.RedisError:  # LOADING (AOF replay) or not listening yet
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        if sig in (signal.SIGTERM, signal.SIGKILL):
            self.process.wait(timeout=10)

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            self.process.wait(timeout=10)


class ChaosRedisCluster:
    """A 3-master Redis Cluster on loopback (`--redis-cluster`); its faults hit one master, the
    one serving the event stream's slot, and `redis-pause` freezes it for 10 s (less than the
    cluster's node timeout: the others keep serving their slots)."""

    pause_s = 10.0

    def __init__(self) -> None:
        self.cluster = None
        self.dir = Path(tempfile.mkdtemp(prefix="rayfeed-chaos-redis-cluster-"))

    @property
    def url(self) -> str:
        return self.cluster.url

    def start(self) -> None:
        from app.state.local_redis import LocalRedisCluster

        from app.state.events import EventPartitions

        if self.cluster is None:
            self.cluster = LocalRedisCluster.start(masters=3, directory=self.dir)
            # found once, while every node answers: a frozen master cannot say which slots it has
            self.victim = self.cluster.master_of(EventPartitions(1, tagged=True).key(0))

    def signal(self, sig: int) -> None:
        if sig not in (signal.SIGSTOP, signal.SIGCONT):
            raise ValueError("--redis-cluster runs redis-pause only (a frozen master)")
        self.victim.process.send_signal(sig)

    def client(self):
        from app.state._redis import fail_fast_client

        return fail_fast_client(self.url, 5.0)

    def stop(self) -> None:
        if self.cluster is not None:
            for node in self.cluster.nodes:
                node.process.send_signal(signal.SIGCONT)
            self.cluster.stop()


# -- load ---------------------------------------------------------------------------------------
@dataclass
class Sample:
    at: float  # monotonic send time
    latency: float
    status: int  # -1: transport error / timeout
    ads_withheld: str | None = None
    retry_after: bool = False
    server_ms: float | None = None  # the ingress's own `timings_ms.total` (200s only)
    reason: str | None = None  # the error body's first message (non-200s), to tell the causes apart


@dataclass
class EventBatch:
    ids: list[str]
    body: list[dict]
    acked: bool = False
    recounted: int = 0  # events accepted again when the acknowledged batch was re-sent (must be 0)


@dataclass
class Load:
    """Open-loop feeds at `rate`/s and one event batch every `event_period` s, on its own loop."""

    url: str
    rate: float
    timeout: float = 10.0
    event_period: float = 0.5
    samples: list[Sample] = field(default_factory=list)
    batches: list[EventBatch] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rng = random.Random(7)

    def start(self) -> "Load":
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=self.timeout + 5)

    async def _feed(self, client) -> None:
        import httpx

        started = time.monotonic()
        try:
            r = await client.get("/v1/feed", params={"user_id": self._rng.randint(1, 943), "limit": 10},
                                 headers=self.headers)
            try:
                body = r.json()
            except ValueError:  # Serve's own refusal is plain text
                body = {"error": r.text[:80]}
            self.samples.append(Sample(started, time.monotonic() - started, r.status_code, body.get("ads_withheld"),
                                       "retry-after" in r.headers, body.get("timings_ms", {}).get("total"),
                                       None if r.status_code == 200 else error_message(body)))
        except (httpx.HTTPError, ValueError):
            self.samples.append(Sample(started, time.monotonic() - started, -1))

    async def _events(self, client) -> None:
        import httpx

        ids = [f"chaos-{uuid.uuid4().hex}" for _ in range(4)]
        body = [{"event_id": i, "user_id": self._rng.randint(1, 943), "item_id": self._rng.randint(1, 1682),
                 "type": "click"} for i in ids]
        batch = EventBatch(ids, body)
        self.batches.append(batch)
        try:
            r = await client.post("/v1/events", json=body)
            batch.acked = r.status_code == 200
        except httpx.HTTPError:
            pass

    async def _run(self) -> None:
        import httpx

        limits = httpx.Limits(max_connections=500, max_keepalive_connections=100)
        async with httpx.AsyncClient(base_url=self.url, timeout=self.timeout, limits=limits) as client:
            tasks: set[asyncio.Task] = set()
            start, n, next_event = time.monotonic(), 0, time.monotonic()
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= start + n / self.rate:
                    n += 1
                    t = asyncio.create_task(self._feed(client))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                if self.event_period and now >= next_event:
                    next_event += self.event_period
                    t = asyncio.create_task(self._events(client))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                await asyncio.sleep(min(0.005, max(0.0, start + n / self.rate - time.monotonic())))
            if tasks:
                await asyncio.wait(tasks, timeout=self.timeout + 1)


def error_message(body: object) -> str | None:
    """The first `detail[].message` of rayfeed's error body (Serve's own 503 has none)."""
    if not isinstance(body, dict):
        return None
    detail = body.get("detail")
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        return str(detail[0].get("message"))
    return str(body.get("error")) if body.get("error") else None


# -- the app ------------------------------------------------------------------------------------
def app_config(port: int, replicas: int) -> tuple[dict, dict[str, int]]:
    """serve_config.yaml with fixed replica counts (`replicas` for the serving path, the
    configured count for any other deployment): the config and the expected RUNNING counts."""
    import yaml

    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    config["http_options"]["port"] = port
    expected: dict[str, int] = {}
    for d in config["applications"][0]["deployments"]:
        d.pop("autoscaling_config", None)
        d["num_replicas"] = replicas if d["name"] in DEPLOYMENTS else int(d.get("num_replicas", 1))
        expected[d["name"]] = d["num_replicas"]
        d["ray_actor_options"] = {"num_cpus": 0.05}
        settings = copy.deepcopy(d["user_config"])
        settings["rayfeed"]["artifacts"] = {"root": str(REPO / "artifacts"), "version": None}
        settings["rayfeed"]["data"] = {**settings["rayfeed"].get("data", {}), "cache_dir": str(REPO / "data_cache")}
        d["user_config"] = settings
    return config, expected


def deploy(config: dict) -> None:
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    # Not blocking: Serve's own wait is 60 s, too short for ten replicas loading on a busy 2-core box.
    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(config), _blocking=False)


def running_replicas() -> dict[str, int]:
    from ray import serve

    app = serve.status().applications.get(APP)
    if app is None:
        return {}
    return {name: int(d.replica_states.get("RUNNING", 0)) for name, d in app.deployments.items()}


def replica_actor_names(deployment: str) -> list[str]:
    import ray

    prefix = f"SERVE_REPLICA::{APP}#{deployment}#"
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["namespace"] == "serve" and a["name"].startswith(prefix))


def ready(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/readyz", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(predicate, timeout_s: float, period_s: float = 0.1) -> float | None:
    """Seconds until `predicate()` held, None if it never did within `timeout_s`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if predicate():
                return time.monotonic() - started
        except Exception:  # noqa: BLE001 - e.g. the controller is restarting
            pass
        time.sleep(period_s)
    return None


# -- scenarios ----------------------------------------------------------------------------------
@dataclass
class Row:
    scenario: str
    requests: int
    failures: int
    p99_ms: float
    recovery_s: float | None  # fault → the last failed feed (0: none failed)
    restored_s: float | None  # fault → replica replaced / Redis answering / controller back (None: not seen)
    lost: int
    doubled: int
    note: str = ""

    def failure_rate(self) -> float:
        return self.failures / max(self.requests, 1)


class Chaos:
    def __init__(self, url: str, redis: ChaosRedis, rate: float, scenario_s: float, expected: dict[str, int]) -> None:
        self.url, self.redis, self.rate, self.scenario_s, self.expected = url, redis, rate, scenario_s, expected

    def settled(self) -> bool:
        return running_replicas() == self.expected

    def run(self, name: str) -> Row:
        if name == "rate-limit":
            return self._rate_limit()
        lead = 2.0
        load = Load(self.url, self.rate * (6 if name == "overload" else 1),
                    headers={"X-Request-Timeout-Ms": "5"} if name == "deadline" else {}).start()
        time.sleep(lead)
        fault_at = time.monotonic()
        # The load stops `scenario_s` after it started, whether or not the fault is repaired by
        # then; watching for the repair (a replacement replica) goes on without load, bounded.
        stopper = threading.Timer(max(1.0, self.scenario_s - lead), load.stop)
        stopper.start()
        try:
            restored_at, note = self._inject(name, fault_at)
        finally:
            stopper.join()
        return self._row(name, load, fault_at, restored_at, note)

    def _inject(self, name: str, fault_at: float) -> tuple[float | None, str]:
        import ray

        limit = 60.0  # a replacement replica loads models: ~20-30 s on a busy 2-core machine
        if name.startswith("kill-") and name != "kill-controller":
            deployment = name.removeprefix("kill-")
            before = set(replica_actor_names(deployment))
            victim = sorted(before)[0]
            ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
            # Recovered: a replacement (a replica name not there before) is RUNNING, at full count.
            took = wait_until(lambda: bool(set(replica_actor_names(deployment)) - before)
                              and running_replicas().get(deployment) == self.expected[deployment], limit, 0.2)
            return (fault_at + took if took is not None else None), f"killed {victim.split('#')[-1]}"
        if name == "kill-controller":
            ray.kill(ray.get_actor("SERVE_CONTROLLER_ACTOR", namespace="serve"), no_restart=False)
            time.sleep(0.5)
            took = wait_until(self.settled, limit, 0.3)
            return (fault_at + 0.5 + took if took is not None else None), "controller restarted by Ray"
        if name == "redis-stop":
            self.redis.signal(signal.SIGTERM)
            time.sleep(4.0)
            self.redis.start()
        elif name == "redis-pause":
            self.redis.signal(signal.SIGSTOP)
            time.sleep(self.redis.pause_s)
            self.redis.signal(signal.SIGCONT)
        elif name == "redis-crash":
            self.redis.signal(signal.SIGKILL)
            self.redis.start()
        if name.startswith("redis-"):
            took = wait_until(lambda: ready(self.url), limit, 0.2)
            return (time.monotonic() if took is not None else None), ""
        return None, ""  # overload, deadline: nothing to repair

    def _row(self, name: str, load: Load, fault_at: float, restored_at: float | None, note: str) -> Row:
        samples = load.samples
        latencies = [s.latency for s in samples if s.status == 200]
        p99 = float(np.percentile(np.asarray(latencies) * 1000, 99)) if latencies else float("nan")
        intended = {503, 504, 429} if name in ("overload", "deadline") else set()
        failed = [s for s in samples if s.status != 200 and s.status not in intended]
        last_failure = max((s.at + s.latency for s in failed if s.at >= fault_at - 1), default=fault_at)
        recovery = last_failure - fault_at
        restored = None if restored_at is None else restored_at - fault_at
        lost, doubled = self.verify_events(load)
        statuses = Counter(s.status for s in samples)
        extras = []
        withheld = sum(1 for s in samples if s.ads_withheld)
        if name.startswith("redis-"):
            during = [s.server_ms for s in samples if s.status == 200 and s.ads_withheld and s.server_ms is not None]
            normal = [s.server_ms for s in samples if s.status == 200 and not s.ads_withheld and s.server_ms is not None]
            extras.append(f"{withheld} feeds without ads")
            if during and normal:
                extras.append(f"server P50/P99 {np.percentile(during, 50):.0f}/{np.percentile(during, 99):.0f} ms "
                              f"degraded vs {np.percentile(normal, 50):.0f}/{np.percentile(normal, 99):.0f} ms not")
        if name == "overload":
            shed = statuses.get(503, 0) + statuses.get(429, 0)
            with_header = sum(1 for s in samples if s.status in (503, 429) and s.retry_after)
            served = [s.latency * 1000 for s in samples if s.status in (503, 429)]
            extras.append(f"{shed} shed ({with_header} with Retry-After, answered in P50 "
                          f"{np.percentile(served, 50) if served else float('nan'):.0f} ms), {statuses.get(504, 0)} × 504")
            inside = [s.server_ms for s in samples if s.status == 200 and s.server_ms is not None]
            if inside:  # the ingress's own time: the rest of the client's wait is before the handler
                extras.append(f"accepted: server P50/P99 {np.percentile(inside, 50):.0f}/{np.percentile(inside, 99):.0f} ms")
        if name == "deadline":
            t504 = [s.latency * 1000 for s in samples if s.status == 504]
            if t504:
                extras.append(f"{len(t504)} × 504, answered in P99 {np.percentile(t504, 99):.0f} ms")
        if failed:
            causes = Counter((s.status, re.sub(r"\d+", "N", s.reason or "")) for s in failed)
            extras.append("failed: " + ", ".join(f"{status}×{n}" + (f" ({reason})" if reason else "")
                                                 for (status, reason), n in sorted(causes.items(), key=str)))
        return Row(name, len(samples), len(failed), p99, recovery, restored, lost, doubled,
                   "; ".join(x for x in (note, *extras) if x))

    def _rate_limit(self) -> Row:
        """One client (this one) posts empty event batches at 20/s for the scenario window with
        the limit overridden to 2/s (burst 4) at every replica; accepted/s should be ≈ 2, not
        2 × replicas. The override is removed afterwards."""
        import httpx

        from app.state.overrides import OVERRIDES_KEY

        client = self.redis.client()
        generation = int(json.loads(client.get(OVERRIDES_KEY) or b'{"generation": 0}')["generation"])
        client.set(OVERRIDES_KEY, json.dumps({"generation": generation + 1, "overrides": {"api": RATE_LIMIT_PROBE}}))
        statuses: Counter[int] = Counter()
        latencies: list[float] = []
        with httpx.Client(base_url=self.url, timeout=10) as http:
            time.sleep(3.0)  # every replica polls the override (1 s) and heartbeats its share (1 s)
            window = max(5.0, self.scenario_s - 3.0)
            began = time.monotonic()
            while time.monotonic() - began < window:
                started = time.perf_counter()
                r = http.post("/v1/events", json=[])
                statuses[r.status_code] += 1
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                time.sleep(max(0.0, began + sum(statuses.values()) / 20.0 - time.monotonic()))
            elapsed = time.monotonic() - began
            client.delete(OVERRIDES_KEY)
            wait_until(lambda: http.post("/v1/events", json=[]).status_code == 200, 20, 0.5)
        sent, accepted = sum(statuses.values()), statuses.get(200, 0)
        replicas = self.expected["FeedIngress"]
        limit, burst = RATE_LIMIT_PROBE["rate_limit_per_s"], RATE_LIMIT_PROBE["rate_limit_burst"]
        note = (f"{accepted} of {sent} accepted in {elapsed:.1f} s = {accepted / elapsed:.2f}/s; the limit allows "
                f"{limit:g}/s + burst {burst:g} = {limit * elapsed + burst:.0f} across {replicas} ingress replicas "
                f"(per-replica limits would allow {replicas * (limit * elapsed + burst):.0f})")
        failed = sent - accepted - statuses.get(429, 0)
        p99 = float(np.percentile(np.asarray(latencies) * 1000, 99)) if latencies else float("nan")
        return Row("rate-limit", sent, failed, p99, None, None, 0, 0, note)

    def verify_events(self, load: Load) -> tuple[int, int]:
        """(acknowledged events not on the stream, events counted twice after re-sending every
        batch once: acknowledged ones must come back all duplicates)."""
        import httpx

        from app.state.events import EventPartitions

        with httpx.Client(base_url=self.url, timeout=10) as client:
            for batch in load.batches:  # a client retrying everything (it cannot know what was lost)
                for _ in range(20):
                    try:
                        r = client.post("/v1/events", json=batch.body)
                    except httpx.HTTPError:
                        time.sleep(0.25)
                        continue
                    if r.status_code == 200:
                        if batch.acked:
                            batch.recounted = r.json()["accepted"]
                        break
                    time.sleep(0.25)
        counts: Counter[str] = Counter()
        store = self.redis.client()
        for key in EventPartitions.of(store, 1).keys():
            for _, fields in store.xrange(key):
                counts[fields[b"event_id"].decode()] += 1
        acked = [i for b in load.batches if b.acked for i in b.ids]
        lost = sum(1 for i in acked if counts[i] == 0)
        doubled = sum(b.recounted for b in load.batches)
        doubled += sum(1 for b in load.batches for i in b.ids if counts[i] > 1)
        return lost, doubled


def check_budgets(redis_client) -> str:
    """Every budget hash: spent == sum of committed reservations in its ledger, spent ≤ budget."""
    from app.state import keys

    checked, bad = 0, []
    for key in redis_client.scan_iter(f"{keys.PREFIX}:*:budget:*"):  # rf:ads:{c:<campaign>}:budget:<day>
        tag, _, day = key.decode().rsplit(":", 2)
        campaign = tag.rsplit(":", 1)[-1].rstrip("}")
        h = {k.decode(): int(v) for k, v in redis_client.hgetall(key).items()}
        ledger = redis_client.hgetall(keys.budget_ledger(int(campaign), int(day)))
        committed = sum(int(v.split(b"|")[1]) for v in ledger.values() if v.startswith(b"C|"))
        reserved = sum(int(v.split(b"|")[1]) for v in ledger.values() if v.startswith(b"R|"))
        checked += 1
        if h.get("spent", 0) != committed or h.get("spent", 0) > h.get("budget", 0) > 0 \
                or h.get("reserved", 0) != reserved:
            bad.append(f"{key.decode()} {h} committed={committed} reserved={reserved}")
    return f"{checked} budget ledgers checked, {len(bad)} inconsistent" + (": " + "; ".join(bad[:3]) if bad else "")


def print_table(rows: list[Row]) -> None:
    print(f"| {'scenario':<18} | {'requests':>8} | {'failures':>15} | {'P99 ms':>7} | {'recovery s':>10} | "
          f"{'restored s':>10} | {'data lost':>9} | note |")
    print("|" + "|".join("-" * n for n in (20, 10, 17, 9, 12, 12, 11, 6)) + "|")
    for r in rows:
        rec = "-" if r.recovery_s is None else f"{r.recovery_s:.1f}"
        restored = "-" if r.restored_s is None else f"{r.restored_s:.1f}"
        lost = f"{r.lost}" + (f" (+{r.doubled} dup)" if r.doubled else "")
        print(f"| {r.scenario:<18} | {r.requests:>8} | {r.failures:>5} ({100 * r.failure_rate():5.2f} %) | "
              f"{r.p99_ms:>7.0f} | {rec:>10} | {restored:>10} | {lost:>9} | {r.note} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rayfeed bench chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=4.0, help="steady feeds per second (open loop)")
    parser.add_argument("--scenario-seconds", type=float, default=14.0, help="bound of each scenario (max 30)")
    parser.add_argument("--replicas", type=int, default=2, help="replicas per deployment (1..3)")
    parser.add_argument("--only", default="", help="comma-separated scenarios (default: all): " + ",".join(SCENARIOS))
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument("--redis-cluster", action="store_true",
                        help="run against a 3-master Redis Cluster it starts (redis-pause freezes one master for 10 s)")
    args = parser.parse_args(argv)
    if not 0 < args.scenario_seconds <= 30 or not 1 <= args.replicas <= 3 or not 0 < args.rate <= 50:
        parser.error("--scenario-seconds in (0, 30], --replicas in 1..3, --rate in (0, 50]")
    chosen = [s for s in args.only.split(",") if s] or list(SCENARIOS)
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {sorted(unknown)}")
    if not (REPO / "artifacts" / "LATEST").exists():
        parser.error("no trained artifacts in artifacts/: run `rayfeed train` first")

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import ray
    from ray import serve

    from app.state.local_redis import free_port

    # `timeout`/kill sends SIGTERM: exit through the finally below (Ray, Serve and Redis stopped).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    redis = ChaosRedisCluster() if args.redis_cluster else ChaosRedis()
    redis.start()
    os.environ["REDIS_URL"] = redis.url  # replicas inherit the driver's environment
    os.environ.setdefault(ADMIN_TOKEN_ENV, uuid.uuid4().hex)
    started = time.monotonic()
    rows: list[Row] = []
    try:
        for attempt in (1, 2):  # a busy shared machine sometimes misses Ray's node start-up timeout
            try:
                ray.init(address="local", num_cpus=2, include_dashboard=False, namespace="rayfeed-chaos",
                         log_to_driver=False, logging_level="ERROR", _node_ip_address="127.0.0.1")  # loopback only
                break
            except Exception:
                ray.shutdown()
                if attempt == 2:
                    raise
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        url = f"http://127.0.0.1:{port}"
        config, expected = app_config(port, args.replicas)
        deploy(config)
        chaos = Chaos(url, redis, args.rate, args.scenario_seconds, expected)
        if wait_until(lambda: ready(url) and chaos.settled(), 300, 1.0) is None:
            raise TimeoutError("the app did not become ready within 300 s")
        print(f"app ready at {url} with {args.replicas} replicas per deployment in {time.monotonic() - started:.0f} s; "
              f"redis {redis.url}" + ("" if args.redis_cluster else " (AOF, appendfsync always)"), flush=True)
        rows.append(_baseline(chaos))
        print_table(rows[-1:])
        for name in chosen:
            rows.append(chaos.run(name))
            print_table(rows[-1:])
            if wait_until(lambda: ready(url) and chaos.settled(), 60, 0.5) is None:
                print(f"warning: the app did not settle after {name}", flush=True)
        print()
        print(f"## rayfeed chaos: {len(rows)} scenarios, {time.monotonic() - started:.0f} s in all, "
              f"steady load {args.rate:g} feeds/s + 8 events/s, {args.replicas} replicas per deployment")
        print_table(rows)
        print(check_budgets(redis.client()))
        if args.json:
            Path(args.json).write_text(json.dumps([r.__dict__ for r in rows], indent=2))
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            redis.stop()
            shutil.rmtree(redis.dir, ignore_errors=True)
    return 0


def _baseline(chaos: Chaos) -> Row:
    """Steady load with no fault: the reference the scenarios compare to."""
    load = Load(chaos.url, chaos.rate).start()
    time.sleep(min(chaos.scenario_s, 8.0))
    load.stop()
    row = chaos._row("baseline", load, time.monotonic(), None, "no fault")
    row.recovery_s = None
    return row


if __name__ == "__main__":
    sys.exit(main())
