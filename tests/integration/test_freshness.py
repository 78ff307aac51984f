"""Freshness over HTTP: a burst of likes through /v1/events moves the same user's next feed."""
from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from app.data import DataConfig, load_dataset
from tests.integration.artifacts import REPO
from tests.integration.conftest import ServedApp

pytestmark = pytest.mark.integration

USER = 301  # no other integration test touches this user


def organic_ids(body: dict) -> list[int]:
    return [i["item_id"] for i in body["items"] if i["type"] == "organic"]


def genre_share(items: list[int], genre: str, topics: dict[int, tuple[str, ...]]) -> float:
    return float(np.mean([genre in topics[i] for i in items])) if items else 0.0


def test_a_burst_of_likes_on_one_genre_shifts_the_next_feed(served_app: ServedApp):
    from ray import serve

    dataset = load_dataset(DataConfig(cache_dir=REPO / "data_cache"))
    topics = dict(zip(dataset.items["item_id"].tolist(), dataset.items["topics"]))
    seen = set(dataset.interactions.loc[dataset.interactions["user_id"] == USER, "item_id"].tolist())
    retrieval = serve.get_deployment_handle("Retrieval", app_name="rayfeed")
    with served_app.client() as c:
        before = c.get("/v1/feed", params={"user_id": USER, "limit": 50}).json()
        page = organic_ids(before)
        # The genre this user's feed shows least, among genres with plenty of unseen films.
        counts = {g: sum(1 for i, t in topics.items() if g in t and i not in seen) for g in dataset.topics}
        genre = min((g for g, n in counts.items() if n >= 60), key=lambda g: genre_share(page, g, topics))
        share_before = genre_share(page, genre, topics)
        # Its most popular unseen films: what a user discovering the genre would like first.
        popularity = dataset.interactions["item_id"].value_counts()
        liked = [i for i in popularity.index if genre in topics[i] and i not in seen and i not in page][:12]
        applied_before = retrieval.freshness.remote().result()["applied"]
        events = [{"event_id": f"fresh-{uuid.uuid4()}", "user_id": USER, "item_id": int(i), "type": "like"}
                  for i in liked]
        sent = time.perf_counter()
        ack = c.post("/v1/events", json=events)
        assert ack.status_code == 200 and ack.json()["accepted"] == len(liked), ack.text
        deadline = time.monotonic() + 15
        while retrieval.freshness.remote().result()["applied"] < applied_before + len(liked):
            assert time.monotonic() < deadline, "the Retrieval replica never applied the events"
            time.sleep(0.02)
        applied_after_s = time.perf_counter() - sent
        after = c.get("/v1/feed", params={"user_id": USER, "limit": 50}).json()
        explained = c.get("/v1/feed", params={"user_id": USER, "limit": 5, "explain": "true"}).json()
        assert c.post("/v1/events", json=events).json()["duplicates"] == len(liked)  # a retried batch
        again = c.get("/v1/feed", params={"user_id": USER, "limit": 5, "explain": "true"}).json()
    # The real-time counters moved with the append, once per event (the retry counted nothing).
    assert explained["explain"]["live_topics"][genre] == len(liked)
    assert again["explain"]["live_topics"][genre] == len(liked)
    page_after = organic_ids(after)
    share_after = genre_share(page_after, genre, topics)
    assert not set(liked) & set(page_after), "liked films are seen now: never served again"
    n_before, n_after = round(share_before * len(page)), round(share_after * len(page_after))
    assert n_after >= max(2 * n_before, n_before + 3), (genre, n_before, n_after)
    print(f"{genre}: share {share_before:.2f} -> {share_after:.2f}; events applied {applied_after_s * 1000:.0f} ms after sending")
