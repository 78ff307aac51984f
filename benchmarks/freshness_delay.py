"""Event-to-feed freshness through the served app: how fast and how far a burst of likes moves the
next feed, with the live path (dynamic embeddings + session interest) on and off, one run.

    python benchmarks/freshness_delay.py --users 20        # or: rayfeed bench freshness

Starts its own redis-server, a local Ray (2 CPUs) and the Serve app from serve_config.yaml over a
copy of the latest artifact version (as benchmarks/live_monitor_overhead.py does). Per user:
fetch a 50-item page, take the genre it shows least (among genres with ≥ 60 unseen films), post
12 likes on that genre's most popular unseen films through /v1/events, then fetch the page again
every 20 ms until it holds more films of that genre (or `--wait-s` passes). Two modes, switched
by redeploying user_config (in-place reconfigure), on disjoint users:

  live     retrieval.dynamic.enabled (the replica follows the stream) + ranking.session_interest
  static   both off: the feed moves only when a new artifact is trained

Reported per mode: films of the genre on the page before and after, users whose page shifted,
and (live) the event-to-feed delay: from sending the events to the first shifted page.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks import served_app  # noqa: E402
MODES = ("live", "static")
LIKES = 12


def app_config(artifact_root: Path, version: str, port: int, live: bool) -> dict:
    return served_app.app_config(artifact_root, version, port, {
        "retrieval": {"dynamic": {"enabled": live}},
        "ranking": {"session_interest": {"weight": 1.0 if live else 0.0}},
    })


def genre_count(page: list[int], genre: str, topics: dict[int, tuple[str, ...]]) -> int:
    return sum(genre in topics[i] for i in page)


def one_user(client, user: int, dataset, topics, wait_s: float) -> dict:
    seen = set(dataset.interactions.loc[dataset.interactions["user_id"] == user, "item_id"].tolist())
    organic = lambda body: [i["item_id"] for i in body["items"] if i["type"] == "organic"]  # noqa: E731
    page = organic(client.get("/v1/feed", params={"user_id": user, "limit": 50}).json())
    unseen = {g: sum(1 for i, t in topics.items() if g in t and i not in seen) for g in dataset.topics}
    genre = min((g for g, n in unseen.items() if n >= 60), key=lambda g: genre_count(page, g, topics))
    popularity = dataset.interactions["item_id"].value_counts()
    liked = [int(i) for i in popularity.index if genre in topics[i] and i not in seen and i not in page][:LIKES]
    events = [{"event_id": f"bench-{uuid.uuid4()}", "user_id": user, "item_id": i, "type": "like"} for i in liked]
    before = genre_count(page, genre, topics)
    sent = time.perf_counter()
    assert client.post("/v1/events", json=events).status_code == 200
    acked = time.perf_counter() - sent
    after, delay = before, None
    while time.perf_counter() - sent < wait_s:
        now_page = organic(client.get("/v1/feed", params={"user_id": user, "limit": 50}).json())
        after = genre_count(now_page, genre, topics)
        if after > before:
            delay = time.perf_counter() - sent
            break
        time.sleep(0.02)
    return {"user": user, "genre": genre, "before": before, "after": after, "delay_s": delay, "ack_s": acked}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rayfeed bench freshness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", default=str(REPO / "artifacts"), help="artifact root to copy the latest version from")
    parser.add_argument("--users", type=int, default=20, help="users per mode (disjoint)")
    parser.add_argument("--wait-s", type=float, default=3.0, help="how long to wait for a page to shift")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args(argv)

    import httpx

    from app.data import DataConfig, load_dataset
    from app.state.local_redis import LocalRedis

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    work = Path(tempfile.mkdtemp(prefix="rayfeed-freshness-"))
    server = LocalRedis.start()
    os.environ["REDIS_URL"] = server.url
    dataset = load_dataset(DataConfig(cache_dir=REPO / "data_cache"))
    topics = dict(zip(dataset.items["item_id"].tolist(), dataset.items["topics"]))
    users = dataset.users["user_id"].to_numpy()[100: 100 + 2 * args.users].tolist()
    try:
        version = served_app.prepare_artifacts(Path(args.artifacts), work / "artifacts", log)
        url, port = served_app.start_serve("rayfeed-bench-freshness")
        rows: dict[str, list[dict]] = {}
        for k, mode in enumerate(MODES):
            served_app.deploy(app_config(work / "artifacts", version, port, live=mode == "live"), url)
            with httpx.Client(base_url=url, timeout=30) as client:
                rows[mode] = [one_user(client, u, dataset, topics, args.wait_s) for u in users[k::2]]
            log(f"{mode}: {len(rows[mode])} users")
        figures: dict[str, object] = {
            "machine": served_app.machine(),
            "likes_per_user": LIKES, "wait_s": args.wait_s,
        }
        for mode, found in rows.items():
            delays = np.array([r["delay_s"] for r in found if r["delay_s"] is not None]) * 1000
            figures[mode] = {
                "users": len(found),
                "genre_films_before": float(np.mean([r["before"] for r in found])),
                "genre_films_after": float(np.mean([r["after"] for r in found])),
                "users_shifted": int(sum(r["after"] > r["before"] for r in found)),
                "delay_p50_ms": float(np.percentile(delays, 50)) if len(delays) else None,
                "delay_p95_ms": float(np.percentile(delays, 95)) if len(delays) else None,
                "delay_max_ms": float(delays.max()) if len(delays) else None,
                "ack_p50_ms": float(np.median([r["ack_s"] for r in found]) * 1000),
            }
        for mode in MODES:
            f = figures[mode]
            f["shift"] = f["genre_films_after"] - f["genre_films_before"]
        served_app.report(figures, args.json)
        return 0
    finally:
        served_app.stop_all(server, work)


if __name__ == "__main__":
    sys.exit(main())
