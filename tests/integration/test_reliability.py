"""Reliability and security over the real app: replica faults, a hung Redis, events under a
crash, rate limits, deadlines, oversized bodies, and schemathesis fuzzing of the OpenAPI schema.

The app and its Redis are the session's (tests/integration/conftest.py): every test puts back
what it breaks (replica count, a paused Redis, admin overrides) before it ends. The long,
timed versions of these faults are `make chaos` (benchmarks/chaos.py, docs/reliability.md).
"""
from __future__ import annotations

import copy
import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis

from tests.integration.conftest import ADMIN_TOKEN, ServedApp, concurrent_feeds, wait_ready

pytestmark = pytest.mark.integration

from app.state.overrides import OVERRIDES_KEY
from app.state.takedowns import KEYS as TAKEDOWN_KEYS
from app.state.takedowns import VERSION_KEY as TAKEDOWN_VERSION


def _replica_names(deployment: str) -> list[str]:
    import ray

    prefix = f"SERVE_REPLICA::rayfeed#{deployment}#"
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["namespace"] == "serve" and a["name"].startswith(prefix))


def _running(deployment: str) -> int:
    from ray import serve

    return int(serve.status().applications["rayfeed"].deployments[deployment].replica_states.get("RUNNING", 0))


def _wait(predicate, timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout_s}s: {what}")


class Traffic:
    """A few closed-loop clients asking for feeds until stopped; statuses in order."""

    def __init__(self, app: ServedApp, clients: int = 2) -> None:
        self.app, self.statuses, self.stop = app, [], threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(clients)]

    def _run(self, i: int) -> None:
        with self.app.client() as c:
            user = i * 100 + 1
            while not self.stop.is_set():
                try:
                    self.statuses.append(c.get("/v1/feed", params={"user_id": user % 943 + 1, "limit": 10}).status_code)
                except httpx.HTTPError:
                    self.statuses.append(-1)
                user += 1

    def __enter__(self) -> "Traffic":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def test_killing_a_stage_replica_under_load_fails_almost_nothing(served_app: ServedApp):
    """Retrieval at two replicas; one is killed under load. The in-flight chain on it is
    retried by the ingress, Serve replaces the replica, the feed keeps answering."""
    import ray

    original = copy.deepcopy(served_app.config)
    scaled = copy.deepcopy(original)
    next(d for d in scaled["applications"][0]["deployments"] if d["name"] == "Retrieval")["num_replicas"] = 2
    served_app.deploy(scaled)
    try:
        _wait(lambda: _running("Retrieval") == 2, 120, "a second Retrieval replica")
        with Traffic(served_app) as traffic:
            time.sleep(1.5)
            before = set(_replica_names("Retrieval"))
            victim = sorted(before)[0]
            ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
            # A replacement loads the models: ~20 s, over 45 s on this shared 2-core machine when busy.
            _wait(lambda: bool(set(_replica_names("Retrieval")) - before) and _running("Retrieval") == 2,
                  120, "a replacement replica running")
            time.sleep(1.0)
        failed = [s for s in traffic.statuses if s != 200]
        assert len(traffic.statuses) >= 10
        assert len(failed) <= max(1, len(traffic.statuses) // 50), (failed, len(traffic.statuses))
    finally:
        served_app.deploy(original)
        _wait(lambda: _running("Retrieval") == 1, 60, "Retrieval back to one replica")


def _redis_pid(url: str) -> int:
    return int(redis.Redis.from_url(url).info("server")["process_id"])


def test_a_hung_redis_degrades_to_organic_only_and_recovers(served_app: ServedApp):
    """SIGSTOP the session's redis-server: feeds stay 200 without ads and fast (the circuit
    breaker skips Redis), /readyz says degraded with the breaker open; SIGCONT brings it back."""
    pid = _redis_pid(served_app.redis_url)
    try:
        os.kill(pid, 0)
    except PermissionError:
        pytest.skip("the session's Redis is not ours to pause")
    bodies, latencies = [], []
    with served_app.client() as c:
        assert c.get("/v1/feed", params={"user_id": 12, "limit": 10}).status_code == 200  # warm
        os.kill(pid, signal.SIGSTOP)
        try:
            for i in range(12):
                started = time.perf_counter()
                r = c.get("/v1/feed", params={"user_id": 20 + i, "limit": 10})
                latencies.append(time.perf_counter() - started)
                assert r.status_code == 200, r.text
                bodies.append(r.json())
            ready = c.get("/readyz")
            events = c.post("/v1/events", json=[{"user_id": 1, "item_id": 2, "type": "click"}])
        finally:
            os.kill(pid, signal.SIGCONT)
        assert all(b["ads_withheld"] == "store_unavailable" for b in bodies)
        assert all(i["type"] != "ad" for b in bodies for i in b["items"])
        assert all(b["cursor"] is None for b in bodies)  # no pagination state could be stored
        assert ready.status_code == 503
        body = ready.json()
        assert body["degraded"] is True and body["redis"].startswith("unreachable")
        assert body["redis_breaker"] in ("open", "half_open")
        # Events cannot be made durable: refused (retry-able), never acknowledged.
        assert events.status_code == 503 and events.headers.get("retry-after")
        # Once open, the breaker skips Redis: the later feeds pay no Redis timeouts. (Generous
        # bound: a shared 2-core machine; the point is no multi-second stalls.)
        assert sorted(latencies)[len(latencies) // 2] < 1.0
        _wait(lambda: c.get("/readyz").status_code == 200, 30, "ready again after SIGCONT")
        after = c.get("/v1/feed", params={"user_id": 42, "limit": 20}).json()
        assert "ads_withheld" not in after and after["cursor"]


def test_acknowledged_events_survive_an_ingress_replica_crash(served_app: ServedApp):
    """Batches posted while the only ingress replica is killed: every acknowledged event is on
    the stream exactly once, and re-sending every batch counts nothing twice."""
    import ray

    store = redis.Redis.from_url(served_app.redis_url)
    batches: list[tuple[list[dict], bool]] = []
    stop = threading.Event()

    def post() -> None:
        with httpx.Client(base_url=served_app.url, timeout=10) as c:
            while not stop.is_set():
                body = [{"event_id": f"rel-{uuid.uuid4().hex}", "user_id": 7, "item_id": 100 + i, "type": "like"}
                        for i in range(3)]
                try:
                    acked = c.post("/v1/events", json=body).status_code == 200
                except httpx.HTTPError:
                    acked = False
                batches.append((body, acked))
                time.sleep(0.05)

    poster = threading.Thread(target=post)
    poster.start()
    try:
        time.sleep(1.0)
        before = set(_replica_names("FeedIngress"))
        ray.kill(ray.get_actor(sorted(before)[0], namespace="serve"), no_restart=True)
        _wait(lambda: bool(set(_replica_names("FeedIngress")) - before) and _running("FeedIngress") == 1, 90,
              "a replacement ingress replica running")
        wait_ready(served_app.url, 60)
        time.sleep(0.5)
    finally:
        stop.set()
        poster.join()
    on_stream = {}
    for _, fields in store.xrange("rf:events"):
        event_id = fields[b"event_id"].decode()
        on_stream[event_id] = on_stream.get(event_id, 0) + 1
    acked = [e["event_id"] for body, ok in batches if ok for e in body]
    assert acked, "no batch was acknowledged"
    assert [i for i in acked if on_stream.get(i, 0) != 1] == []
    with served_app.client() as c:
        for body, ok in batches:
            again = c.post("/v1/events", json=body)
            assert again.status_code == 200
            if ok:
                assert again.json() == {"accepted": 0, "duplicates": len(body)}
    assert all(on_stream.get(e["event_id"], 0) <= 1 for body, _ in batches for e in body)


def _set_overrides(app: ServedApp, overrides: dict) -> None:
    client = redis.Redis.from_url(app.redis_url)
    current = json.loads(client.get(OVERRIDES_KEY) or b'{"generation": 0}')
    client.set(OVERRIDES_KEY, json.dumps({"generation": int(current["generation"]) + 1, "overrides": overrides}))


def test_public_endpoints_are_rate_limited_per_client(served_app: ServedApp):
    _set_overrides(served_app, {"api": {"rate_limit_per_s": 1, "rate_limit_burst": 2}})
    try:
        with served_app.client() as c:
            def limited() -> httpx.Response | None:
                for _ in range(4):
                    r = c.get("/healthz")  # probes are not limited
                    assert r.status_code == 200
                    r = c.post("/v1/events", json=[])
                    if r.status_code == 429:
                        return r
                return None

            found: list[httpx.Response] = []
            _wait(lambda: bool(found.append(limited()) or found[-1]), 20, "a 429 once the override applies")
            r = found[-1]
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["error"] == "rate_limited"
            assert c.get("/v1/feed", params={"user_id": 3}).status_code == 429
    finally:
        redis.Redis.from_url(served_app.redis_url).delete(OVERRIDES_KEY)
    with served_app.client() as c:
        _wait(lambda: c.post("/v1/events", json=[]).status_code == 422, 20, "limit lifted")  # [] is refused, not limited


def test_ingress_replicas_count_each_other_for_their_share_of_the_rate_limit(served_app: ServedApp):
    """Each ingress replica heartbeats into one Redis set and enforces 1/n of the limit."""
    from deployments.guards import MEMBERSHIP_KEY

    client = redis.Redis.from_url(served_app.redis_url)
    _wait(lambda: client.zcard(MEMBERSHIP_KEY) == 1, 10, "the one FeedIngress replica's heartbeat")
    (_, first), = client.zrange(MEMBERSHIP_KEY, 0, -1, withscores=True)
    _wait(lambda: client.zrange(MEMBERSHIP_KEY, 0, -1, withscores=True)[0][1] > first, 10, "a later heartbeat")


def test_overload_is_shed_at_once_with_retry_after(served_app: ServedApp):
    """With room for one feed at a time and refusals not held (`shed_delay_s: 0`), a burst of
    concurrent feeds gets 503 + Retry-After for the excess, answered without waiting for the
    admitted ones."""
    def burst(n: int = 8) -> list[httpx.Response]:
        return concurrent_feeds(served_app, n, 30)

    _set_overrides(served_app, {"api": {"max_inflight_feeds": 1, "shed_delay_s": 0}})
    try:
        found: list[list[httpx.Response]] = []
        _wait(lambda: bool(found.append(burst()) or any(r.status_code == 503 for r in found[-1])), 30,
              "503s once the override applies")
        responses = found[-1]
        shed = [r for r in responses if r.status_code == 503]
        assert {r.status_code for r in responses} <= {200, 503}
        assert any(r.status_code == 200 for r in responses)
        assert all(r.headers.get("retry-after") == "1" and r.json()["error"] == "unavailable" for r in shed)
        assert min(r.elapsed.total_seconds() for r in shed) < min(
            r.elapsed.total_seconds() for r in responses if r.status_code == 200)
    finally:
        redis.Redis.from_url(served_app.redis_url).delete(OVERRIDES_KEY)
    _wait(lambda: all(r.status_code == 200 for r in burst(3)), 30, "the bound lifted")


def _closed_loop(app: ServedApp, clients: int, seconds: float, honour_retry_after: bool) -> list[httpx.Response]:
    """`clients` threads asking for feeds for `seconds`; after a 503 each waits its Retry-After
    (`honour_retry_after`) or asks again at once (a retry storm)."""
    out: list[httpx.Response] = []
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        with app.client() as c:
            user = 1 + 37 * i
            while time.monotonic() < stop:
                response = c.get("/v1/feed", params={"user_id": user % 943 + 1, "limit": 10})
                out.append(response)
                user += 1
                if response.status_code == 503 and honour_retry_after:
                    wait = float(response.headers.get("retry-after", 1))
                    time.sleep(min(wait, max(0.0, stop - time.monotonic())))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_a_storm_of_immediate_retries_keeps_goodput(served_app: ServedApp):
    """Twelve clients re-sending every 503 at once against room for two feeds (a fixed bound: the
    adaptive one is tested below): the feeds served per second stay above half of what two polite
    clients got in the same test, every answer is a 200 or a 503 with Retry-After, and the held
    refusals (`api.shed_delay_s`) keep the storm to ≈ bound / shed_delay_s refusals a second
    instead of a spin, their room handed on as it frees."""
    seconds = 8.0
    _set_overrides(served_app, {"api": {"max_inflight_feeds": 2, "admission_target_s": 0}})
    try:
        with served_app.client() as c:
            _wait(lambda: sum(r.status_code == 503 for r in concurrent_feeds(served_app, 6, 80)) > 0, 30,
                  "the bound of two applied")
            assert c.get("/v1/feed", params={"user_id": 3}).status_code == 200
        unloaded = _closed_loop(served_app, 2, seconds, honour_retry_after=True)
        storm = _closed_loop(served_app, 12, seconds, honour_retry_after=False)
    finally:
        redis.Redis.from_url(served_app.redis_url).delete(OVERRIDES_KEY)
    # Seen by the replica before the next test writes its own generation 1 (else it looks unchanged).
    _wait(lambda: all(r.status_code == 200 for r in concurrent_feeds(served_app, 4, 90)), 30, "the bound lifted")
    unloaded_rate = sum(r.status_code == 200 for r in unloaded) / seconds
    storm_rate = sum(r.status_code == 200 for r in storm) / seconds
    refusals = [r for r in storm if r.status_code == 503]
    print(f"storm: {storm_rate:.1f} feeds/s vs {unloaded_rate:.1f} unloaded, {len(refusals) / seconds:.1f} refusals/s")
    assert {r.status_code for r in storm} <= {200, 503}
    bare = [(dict(r.headers), r.text) for r in refusals if int(r.headers.get("retry-after", 0)) < 1]
    # Serve's proxy answers its own queue-full 503 without Retry-After (max_queued_requests; seen
    # in CI, 2026-12-04): known and documented, allowed only as a small share; ours always carry it.
    proxy = [b for b in bare if b[1].startswith("Request dropped due to backpressure")]
    assert refusals and len(bare) == len(proxy) and len(proxy) <= 0.1 * len(refusals), (len(refusals), bare[:3])
    assert storm_rate >= 0.5 * unloaded_rate, (storm_rate, unloaded_rate)
    # Held refusals finish at most ≈ 2 × bound / shed_delay_s = 10 a second (app/api/admission.py;
    # 0.4 s by default); at once they came back ≈ 100 a second on this box (docs/serving.md).
    assert len(refusals) / seconds <= 20, len(refusals)


def test_the_in_flight_bound_adapts_to_latency(served_app: ServedApp):
    """Adaptive admission: with a target no feed can meet, the bound falls from 4 to 1 and a
    burst is shed down to one feed at a time (refusals answered at once: a hold would hand the
    freed slot on); without the override every feed is admitted."""
    def burst(n: int) -> list[httpx.Response]:
        return concurrent_feeds(served_app, n, 60)

    _set_overrides(served_app, {"api": {"admission_target_s": 0.001, "max_inflight_feeds": 4, "shed_delay_s": 0}})
    try:
        with served_app.client() as c:  # sequential feeds, each slower than 1 ms: the bound shrinks
            _wait(lambda: c.get("/v1/feed", params={"user_id": 7, "limit": 5}).status_code == 200
                  and sum(r.status_code == 503 for r in burst(4)) >= 3, 60, "a burst of 4 shed down to 1")
    finally:
        redis.Redis.from_url(served_app.redis_url).delete(OVERRIDES_KEY)
    _wait(lambda: all(r.status_code == 200 for r in burst(3)), 30, "the fixed bound back")


def test_deadlines_and_oversized_input_are_refused_cleanly(served_app: ServedApp):
    with served_app.client() as c:
        started = time.perf_counter()
        late = c.get("/v1/feed", params={"user_id": 5}, headers={"X-Request-Timeout-Ms": "1"})
        assert late.status_code == 504, late.text
        assert late.json()["error"] == "deadline_exceeded" and late.headers.get("retry-after")
        assert time.perf_counter() - started < 5
        bad = c.get("/v1/feed", params={"user_id": 5}, headers={"X-Request-Timeout-Ms": "soon"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "x-request-timeout-ms"
        huge = c.post("/v1/events", content=b"[" + b" " * (5 * 1024 * 1024) + b"]",
                      headers={"content-type": "application/json"})
        assert huge.status_code == 413 and huge.json()["detail"][0]["field"] == "body"
        admin = c.post("/admin/weights", content=b"{" + b" " * 100_000 + b"}",
                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "content-type": "application/json"})
        assert admin.status_code == 413
        assert c.post("/admin/weights", content=b"{" + b" " * 100_000 + b"}").status_code == 401  # auth first
        assert c.get("/v1/feed", params={"user_id": 5, "limit": 10_000}).status_code == 422
        now = c.get("/v1/feed", params={"user_id": 5, "limit": 5}).json()["world_time"]
        stale = c.post("/v1/events", json=[{"user_id": 5, "item_id": 2, "type": "click", "ts": now},
                                           {"user_id": 5, "item_id": 3, "type": "click", "ts": now - 30 * 86_400}])
        assert stale.status_code == 422 and stale.json()["detail"][0]["field"] == "[1].ts", stale.text  # nothing kept


def retract_everything_published(url: str) -> None:
    """A tombstone for every item on the item stream: the replicas drop them all."""
    import asyncio

    import redis.asyncio as aioredis

    from app.state.items import ItemStreamStore

    async def go() -> None:
        client = aioredis.Redis.from_url(url)
        try:
            store = ItemStreamStore(client)
            latest = {str(e.item["item_id"]): e.item for e in await store.read_after("0-0", 1_000_000, None)}
            live = [item for item in latest.values() if not item.get("deleted")]
            if live:
                await store.retract(live)
        finally:
            await client.aclose()

    asyncio.run(go())


def test_schemathesis_with_every_check_finds_the_document_true(served_app: ServedApp):
    """schemathesis 4, every check on (status codes, bodies, headers and content types as
    documented, schema-valid data accepted and invalid data refused, auth not ignored, no 5xx),
    against /openapi.json of the served app, with the admin token so the admin routes are
    exercised too. tests/integration/schemathesis.toml holds its one documented exception."""
    import subprocess
    import sys

    config = Path(__file__).with_name("schemathesis.toml")
    command = [str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(config), "run",
               f"{served_app.url}/openapi.json", "--checks", "all", "--max-examples", "40", "--seed", "7",
               "--workers", "1", "--no-color"]  # the tokens: schemathesis.toml, from the environment
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=600)
    finally:  # the admin routes wrote overrides and took random items down, the producer published: undo all
        client = redis.Redis.from_url(served_app.redis_url)
        client.delete(OVERRIDES_KEY, *TAKEDOWN_KEYS.values())
        client.incr(TAKEDOWN_VERSION)
        retract_everything_published(served_app.redis_url)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "No issues found" in run.stdout, run.stdout[-3000:]


def test_fuzzing_the_openapi_schema_finds_no_5xx(served_app: ServedApp):
    """schemathesis generates valid and invalid requests for every operation of /openapi.json
    (a bounded number each); none may be answered 5xx, every 4xx names its field."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{served_app.url}/openapi.json")
    problems: list[str] = []

    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        @settings(max_examples=60, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=schema.as_strategy(generation_mode=mode))
        def check(case) -> None:
            response = case.call(base_url=served_app.url, timeout=30)
            where = f"{case.method} {case.formatted_path} {case.query} {str(case.body)[:80]} -> {response.status_code}"
            if response.status_code >= 500:
                problems.append(where + " " + response.text[:200])
            elif 400 <= response.status_code < 500 and response.status_code not in (401, 404, 405, 429):
                detail = response.json().get("detail", [])
                if not (detail and all(p.get("field") for p in detail)):
                    problems.append(where + " (no field named) " + response.text[:200])

        check()
    redis.Redis.from_url(served_app.redis_url).delete(OVERRIDES_KEY)
    assert problems == []
