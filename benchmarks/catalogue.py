"""The living catalogue through the served app: publish → served and takedown → gone, measured,
with two Retrieval replicas, one of them killed and replaced part-way.

    python benchmarks/catalogue.py --items 200 --feeds 1000        # or: rayfeed bench catalogue

Starts its own redis-server, a local Ray (2 CPUs) and the Serve app from serve_config.yaml over a
copy of the latest artifact version, with Retrieval at two replicas (the others at one).

1. publish → first feed: per item, a user and the topic they watch most; the item (that topic, a
   creator of its own) goes to POST /v1/items, and that user's feed is fetched every 20 ms until
   it holds the item. Its producer then deletes it (DELETE /v1/items/{id}: a tombstone on the item
   stream), timed until that feed no longer holds it, so each publish measures the propagation of
   one new item, not its competition with the previous ones for the same user's page.
2. takedown → gone: per item, an item on a user's first page is taken down (POST
   /admin/items/{id}/takedown) and that user's feed is fetched every 20 ms until it is absent.
3. pages with a taken-down item: `--feeds` feeds (first pages and the following pages of their
   cursors, three pages per chain) across users, counting the pages that carry any item taken down
   before the feed was asked for. Half-way, one Retrieval replica is killed (ray.kill); Serve
   starts a replacement, which replays the takedowns and the item stream before taking requests.

Every takedown is restored at the end. Prints one JSON object (figures, machine).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks import served_app  # noqa: E402

ADMIN, PRODUCER = "bench-admin-token", "bench-producer-token"
FIRST_ITEM_ID = 5_000_000


def organic(body: dict) -> list:
    return [i["item_id"] for i in body["items"] if i["type"] == "organic"]


def percentiles(seconds: list[float]) -> dict[str, float | int | None]:
    ms = np.array(seconds) * 1000
    if not len(ms):
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {"n": int(len(ms)), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1), "max_ms": round(float(ms.max()), 1)}


def poll(check, timeout_s: float, period_s: float = 0.02) -> float | None:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if check():
            return time.perf_counter() - started
        time.sleep(period_s)
    return None


def favourite_topics(dataset, users: list[int]) -> dict[int, str]:
    out = {}
    for user in users:
        items = dataset.interactions.loc[dataset.interactions["user_id"] == user, "item_id"].to_numpy()
        out[user] = dataset.topics[int(np.argmax(dataset.item_topic_matrix[items].sum(axis=0)))]
    return out


def publish_phase(client, users: list[int], topics: dict[int, str], n: int, wait_s: float, log) -> tuple[dict, dict]:
    """(publish → first feed holding it, DELETE → first feed without it) per item."""
    delays, missed, deletes, not_gone = [], 0, [], 0
    producer = {"Authorization": f"Bearer {PRODUCER}"}
    for k in range(n):
        user = users[k % len(users)]
        item = {"item_id": FIRST_ITEM_ID + k, "creator_id": FIRST_ITEM_ID + k, "topics": [topics[user]],
                "content_rating": "PG", "title": f"bench post {k}"}
        sent = time.perf_counter()
        answer = client.post("/v1/items", json={"items": [item]}, headers=producer)
        answer.raise_for_status()
        seen = poll(lambda: item["item_id"] in organic(client.get("/v1/feed", params={"user_id": user, "limit": 20}).json()),
                    wait_s)
        if seen is None:
            missed += 1
        else:
            delays.append(time.perf_counter() - sent)
        sent = time.perf_counter()  # the producer deletes it (a tombstone): the next item competes with none
        client.delete(f"/v1/items/{item['item_id']}", headers=producer).raise_for_status()
        gone = poll(lambda: item["item_id"] not in organic(client.get("/v1/feed", params={"user_id": user,
                                                                                          "limit": 20}).json()), wait_s)
        if gone is None:
            not_gone += 1
        else:
            deletes.append(time.perf_counter() - sent)
        if (k + 1) % 50 == 0:
            log(f"published and deleted {k + 1}/{n}")
    return ({**percentiles(delays), "never_seen_within_s": missed, "wait_s": wait_s},
            {**percentiles(deletes), "never_gone_within_s": not_gone})


def takedown_phase(client, users: list[int], n: int, wait_s: float, log) -> tuple[dict, set]:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    delays, missed, taken = [], 0, set()
    for k in range(n):
        user = users[k % len(users)]
        page = organic(client.get("/v1/feed", params={"user_id": user, "limit": 20}).json())
        victim = next(i for i in page if i not in taken)
        sent = time.perf_counter()
        client.post(f"/admin/items/{victim}/takedown", json={"reason": "bench"}, headers=admin).raise_for_status()
        taken.add(victim)
        gone = poll(lambda: victim not in organic(client.get("/v1/feed", params={"user_id": user, "limit": 20}).json()),
                    wait_s)
        if gone is None:
            missed += 1
        else:
            delays.append(time.perf_counter() - sent)
        if (k + 1) % 50 == 0:
            log(f"taken down {k + 1}/{n}")
    return {**percentiles(delays), "never_gone_within_s": missed}, taken


def cursor_phase(client, users: list[int], taken: set, feeds: int, log) -> dict:
    from benchmarks.chaos import replica_actor_names, running_replicas
    import ray

    carrying, served, kill_at, failed, killed = 0, 0, feeds // 2, 0, None
    k = 0
    while served < feeds:
        user = users[k % len(users)]
        k += 1
        cursor = None
        for _ in range(3):
            params = {"user_id": user, "limit": 10, **({"cursor": cursor} if cursor else {})}
            answer = client.get("/v1/feed", params=params)
            if answer.status_code != 200:
                failed += 1  # e.g. 503 while a replica is replaced; not counted as a served page
                if failed > feeds:
                    raise RuntimeError(f"feeds keep failing: {answer.status_code} {answer.text[:200]}")
                break
            body = answer.json()
            served += 1
            carrying += bool(taken & set(organic(body)))
            cursor = body.get("cursor")
            if served == kill_at:
                name = replica_actor_names("Retrieval")[0]
                ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
                killed = time.perf_counter()
                log(f"killed {name}")
            if not cursor or served >= feeds:
                break
    # Looked at once the feeds are done (polling during them would slow them): an upper bound.
    back = poll(lambda: running_replicas().get("Retrieval") == 2, 120, 0.5)
    return {"feeds": served, "pages_with_a_taken_down_item": carrying, "feeds_not_200": failed,
            "retrieval_replica_killed_after": kill_at,
            "replacement_running_within_s_of_the_kill": None if back is None or killed is None
            else round(time.perf_counter() - killed, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rayfeed bench catalogue", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", default=str(REPO / "artifacts"), help="artifact root to copy the latest version from")
    parser.add_argument("--items", type=int, default=200, help="items published, and items taken down")
    parser.add_argument("--feeds", type=int, default=1000, help="feeds checked for taken-down items")
    parser.add_argument("--wait-s", type=float, default=5.0, help="how long one item is waited for")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args(argv)

    import httpx

    from app.data import DataConfig, load_dataset
    from app.state.local_redis import LocalRedis

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    work = Path(tempfile.mkdtemp(prefix="rayfeed-catalogue-"))
    server = LocalRedis.start()
    os.environ.update(REDIS_URL=server.url, RAYFEED_ADMIN_TOKEN=ADMIN, RAYFEED_PRODUCER_TOKEN=PRODUCER)
    dataset = load_dataset(DataConfig(cache_dir=REPO / "data_cache"))
    users = dataset.users["user_id"].to_numpy()[:200].tolist()
    topics = favourite_topics(dataset, users)
    try:
        version = served_app.prepare_artifacts(Path(args.artifacts), work / "artifacts", log)
        url, port = served_app.start_serve("rayfeed-bench-catalogue")
        config = served_app.app_config(work / "artifacts", version, port, replicas={"Retrieval": 2})
        served_app.deploy(config, url)
        with httpx.Client(base_url=url, timeout=30) as client:
            published, deleted = publish_phase(client, users, topics, args.items, args.wait_s, log)
            taken_down, taken = takedown_phase(client, users, args.items, args.wait_s, log)
            cursors = cursor_phase(client, users, taken, args.feeds, log)
            for item in taken:
                client.post(f"/admin/items/{item}/restore", headers={"Authorization": f"Bearer {ADMIN}"})
        figures = {
            "machine": served_app.machine(),
            "retrieval_replicas": 2,
            "publish_to_first_feed": published,
            "delete_to_gone": deleted,
            "takedown_to_gone": taken_down,
            "cursor_feeds": cursors,
        }
        served_app.report(figures, args.json)
        return 0
    finally:
        served_app.stop_all(server, work)


if __name__ == "__main__":
    sys.exit(main())
