"""Publishing over the real app and Redis: POST /v1/items needs the producer token (not the admin
one), refuses bad bodies naming the item and the field, and a published item reaches the feed of
a user who likes its topic within a second, with its provenance; events about it are accepted; a
takedown removes it; its producer's DELETE retires it (the session's other tests never see it), and
a DELETE of a trained item takes it down."""
from __future__ import annotations

import time

import numpy as np
import pytest

from app.data import DataConfig, load_dataset
from tests.integration.conftest import ADMIN_TOKEN, PRODUCER_TOKEN, REPO, ServedApp

pytestmark = pytest.mark.integration
PRODUCER = {"Authorization": f"Bearer {PRODUCER_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
USER = 91
NEW_ITEM = 900_001


def organic(page: dict) -> list:
    return [i["item_id"] for i in page["items"] if i["type"] == "organic"]


def favourite_topic(user: int) -> str:
    world = load_dataset(DataConfig(cache_dir=REPO / "data_cache"))
    items = world.interactions.loc[world.interactions["user_id"] == user, "item_id"].to_numpy()
    shares = world.item_topic_matrix[items].sum(axis=0)
    return world.topics[int(np.argmax(shares))]


def test_bad_publishes_are_refused_and_name_the_field(served_app: ServedApp):
    good = {"item_id": NEW_ITEM + 50, "creator_id": 5000, "topics": ["Drama"]}
    with served_app.client() as c:
        for headers in ({}, ADMIN, {"Authorization": "Bearer nope"}):
            refused = c.post("/v1/items", json={"items": [good]}, headers=headers)
            assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        for body, status, field in [
            ({"items": [{"item_id": NEW_ITEM + 50}]}, 422, "items[0].creator_id"),
            ({"items": [{**good, "topics": ["Knitting"]}]}, 422, "items[0].topics"),
            ({"items": [{**good, "min_age": 40}]}, 422, "items[0].min_age"),
            ({"items": [{**good, "item_id": "m50"}]}, 422, "items[0].item_id"),  # MovieLens ids are integers
            ({"items": [{**good, "item_id": 50}]}, 409, "items[0].item_id"),  # in the trained catalogue
            ({"items": []}, 422, "items"),
        ]:
            answer = c.post("/v1/items", json=body, headers=PRODUCER)
            assert answer.status_code == status, (body, answer.text)
            assert answer.json()["detail"][0]["field"] == field


def test_a_published_item_is_served_within_a_second_then_taken_down_and_retired(served_app: ServedApp):
    topic = favourite_topic(USER)
    item = {"item_id": NEW_ITEM, "creator_id": 777_777, "topics": [topic], "content_rating": "PG",
            "title": "a brand new post"}
    with served_app.client() as c:
        before = c.get("/v1/feed", params={"user_id": USER, "limit": 20}).json()
        assert NEW_ITEM not in organic(before)
        sent = time.perf_counter()
        ack = c.post("/v1/items", json={"items": [item]}, headers=PRODUCER)
        assert ack.status_code == 200 and ack.json()["items"] == [{"item_id": NEW_ITEM, "status": "published"}]
        assert c.post("/v1/items", json={"items": [item]}, headers=PRODUCER).json()["items"][0]["status"] == "unchanged"
        page = {}
        while time.perf_counter() - sent < 5.0:
            page = c.get("/v1/feed", params={"user_id": USER, "limit": 20, "explain": "true"}).json()
            if NEW_ITEM in organic(page):
                break
            time.sleep(0.05)
        seconds = time.perf_counter() - sent
        assert NEW_ITEM in organic(page), page
        assert seconds < 1.0, seconds
        entry = next(i for i in page["items"] if i.get("item_id") == NEW_ITEM)
        assert entry["provenance"]["source"] in ("fresh", "ann")
        assert entry["provenance"].get("explored") or entry["position"] <= 8
        # Events about it are accepted (its id maps like any other).
        event = {"event_id": f"pub-{time.time()}", "user_id": USER, "item_id": NEW_ITEM, "type": "click",
                 "ts": page["world_time"], "request_id": page["request_id"], "position": entry["position"]}
        assert c.post("/v1/events", json=[event]).status_code == 200
        # A takedown works on published items as on trained ones.
        assert c.post(f"/admin/items/{NEW_ITEM}/takedown", json={"reason": "test"}, headers=ADMIN).status_code == 200
        deadline = time.perf_counter() + 5.0
        while NEW_ITEM in organic(c.get("/v1/feed", params={"user_id": USER, "limit": 20}).json()):
            assert time.perf_counter() < deadline
            time.sleep(0.05)
        assert c.post(f"/admin/items/{NEW_ITEM}/restore", headers=ADMIN).status_code == 200
        # Deleted by its producer (a tombstone): gone again, and the other tests of the session never see it.
        for headers in ({}, ADMIN):
            assert c.delete(f"/v1/items/{NEW_ITEM}", headers=headers).status_code == 401
        deleted = c.delete(f"/v1/items/{NEW_ITEM}", headers=PRODUCER)
        assert deleted.status_code == 200 and deleted.json()["status"] == "deleted", deleted.text
        deadline = time.perf_counter() + 5.0
        while NEW_ITEM in organic(c.get("/v1/feed", params={"user_id": USER, "limit": 20}).json()):
            assert time.perf_counter() < deadline
            time.sleep(0.05)
        assert time.perf_counter() - (deadline - 5.0) < 1.0
        # Its id no longer names a served item; publishing it again would bring it back.
        deadline = time.perf_counter() + 5.0
        while (again := c.delete(f"/v1/items/{NEW_ITEM}", headers=PRODUCER)).status_code != 404:
            assert again.json()["status"] == "unchanged" and time.perf_counter() < deadline
            time.sleep(0.05)
        assert again.json()["detail"][0]["field"] == "item_id"


def test_deleting_a_trained_item_takes_it_down_until_an_admin_restores_it(served_app: ServedApp):
    """An artifact's row outlives a tombstone until the next training; the delete takes it down."""
    with served_app.client() as c:
        page = c.get("/v1/feed", params={"user_id": USER, "limit": 20}).json()
        victim = organic(page)[0]
        assert c.delete("/v1/items/999999999", headers=PRODUCER).status_code == 404
        assert c.delete("/v1/items/not-an-integer", headers=PRODUCER).status_code in (404, 422)
        deleted = c.delete(f"/v1/items/{victim}", headers=PRODUCER)
        try:
            assert deleted.status_code == 200 and deleted.json()["status"] == "deleted", deleted.text
            deadline = time.perf_counter() + 5.0
            while victim in organic(c.get("/v1/feed", params={"user_id": USER, "limit": 20}).json()):
                assert time.perf_counter() < deadline
                time.sleep(0.05)
            assert c.delete(f"/v1/items/{victim}", headers=PRODUCER).json()["status"] == "deleted"  # idempotent
        finally:
            assert c.post(f"/admin/items/{victim}/restore", headers=ADMIN).json()["was_taken_down"] is True
