"""The composed Ray Serve app over real Redis: the HTTP contract of DESIGN.md end to end."""
from __future__ import annotations

import copy
import threading
import time
import uuid

import httpx
import pytest
import redis

from app.collator.config import CollatorConfig
from tests.integration.conftest import ADMIN_TOKEN, ServedApp, concurrent_feeds

pytestmark = pytest.mark.integration

RULES = CollatorConfig()


def feed(client: httpx.Client, **params) -> httpx.Response:
    return client.get("/v1/feed", params=params)


def test_health_and_readiness(served_app: ServedApp):
    with served_app.client() as c:
        assert c.get("/healthz").json() == {"status": "alive"}
        ready = c.get("/readyz")
        assert ready.status_code == 200
        body = ready.json()
        assert body["ready"] and not body["degraded"] and body["redis"] == "ok"
        assert set(body["models"]) == {"ingress", "retrieval", "ranking", "reranking", "auction"}


def test_feed_obeys_the_collator_rules(served_app: ServedApp):
    with served_app.client() as c:
        for user in (1, 42, 99, 305, 500, 943):
            response = feed(c, user_id=user, limit=20, explain="true")
            assert response.status_code == 200, response.text
            body = response.json()
            items = body["items"]
            assert [i["position"] for i in items] == list(range(1, len(items) + 1))
            assert len(items) == 20 and body["request_id"] and body["cold_start"] is False
            ids = [i.get("item_id") for i in items if i["type"] == "organic"]
            assert len(ids) == len(set(ids))
            ad_positions = [i["position"] for i in items if i["type"] == "ad"]
            organic = sum(1 for i in items if i["type"] == "organic")
            assert all(p >= RULES.no_ads_before for p in ad_positions)
            assert len(ad_positions) <= min(RULES.max_ads_per_page, organic // RULES.organic_per_ad)
            for a, b in zip(ad_positions, ad_positions[1:]):
                between = [i for i in items if a < i["position"] < b and i["type"] == "organic"]
                assert len(between) >= RULES.min_gap
            for item in items:
                assert "provenance" in item
                if item["type"] == "organic":
                    assert item["provenance"]["source"] and "final" in item["provenance"]["scores"]
                if item["type"] == "ad":
                    assert item["provenance"]["price"] <= item["provenance"]["ecpm"] * 1000 + 1e9  # present
            notifications = [i for i in items if i["type"] == "notification"]
            assert all(i["position"] in RULES.notification_positions for i in notifications)
            assert "removed" in body["explain"]


def test_concurrent_feeds_share_ranking_passes(served_app: ServedApp):
    """Requests that arrive while a ranking pass runs are scored together in the next one (with
    no batch wait configured, batches form from what queued), and each still gets its own page."""
    batch_sizes: list[float] = []
    deadline = time.monotonic() + 60
    while max(batch_sizes, default=0.0) < 2 and time.monotonic() < deadline:
        responses = concurrent_feeds(served_app, 8, 200 + len(batch_sizes))
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
        assert len({r.json()["request_id"] for r in responses}) == 8
        batch_sizes += [r.json()["timings_ms"]["ranking_batch_size"] for r in responses]
    assert max(batch_sizes) >= 2, f"no ranking pass scored two requests: {batch_sizes}"


def test_unknown_user_gets_a_cold_start_feed(served_app: ServedApp):
    with served_app.client() as c:
        body = feed(c, user_id=10_000_000, limit=10).json()
        assert body["cold_start"] is True
        assert len(body["items"]) == 10


def test_pagination_never_repeats_and_positions_continue(served_app: ServedApp):
    with served_app.client() as c:
        seen: list[int] = []
        cursor = None
        next_position = 1
        for page in range(1, 5):
            params = {"user_id": 7, "limit": 15}
            if cursor:
                params["cursor"] = cursor
            body = feed(c, **params).json()
            assert body["page"] == page
            assert body["items"][0]["position"] == next_position
            next_position = body["items"][-1]["position"] + 1
            seen += [i["item_id"] for i in body["items"] if i["type"] == "organic"]
            cursor = body["cursor"]
            assert cursor
        assert len(seen) == len(set(seen)), "an item was served twice in one cursor chain"
        # The cursor is bound to its user.
        assert feed(c, user_id=8, cursor=cursor).status_code == 400


def test_events_are_accepted_deduplicated_and_change_state(served_app: ServedApp):
    store = redis.Redis.from_url(served_app.redis_url)
    user = 55
    with served_app.client() as c:
        first = feed(c, user_id=user, limit=10).json()
        hidden = next(i["item_id"] for i in first["items"] if i["type"] == "organic")
        stream_before = store.xlen("rf:events")
        ads = [i for i in first["items"] if i["type"] == "ad"]
        events = [
            {"event_id": f"e-{uuid.uuid4()}", "user_id": user, "item_id": hidden, "type": "hide"},
            {"event_id": f"e-{uuid.uuid4()}", "user_id": user, "item_id": hidden, "type": "impression", "position": 1},
            {"event_id": f"e-{uuid.uuid4()}", "user_id": user, "item_id": hidden, "type": "watch", "watch_seconds": 1.0},
        ] + [
            {"event_id": f"e-{uuid.uuid4()}", "user_id": user, "ad_id": a["ad_id"], "type": "impression",
             "request_id": first["request_id"], "position": a["position"]} for a in ads
        ]
        ack = c.post("/v1/events", json=events)
        assert ack.status_code == 200, ack.text
        assert ack.json() == {"accepted": len(events), "duplicates": 0}
        assert c.post("/v1/events", json=events).json() == {"accepted": 0, "duplicates": len(events)}
        assert store.xlen("rf:events") == stream_before + len(events)
        session = {k.decode(): int(v) for k, v in store.hgetall(f"rf:session:{user}").items()}
        assert session["hides"] == 1 and session["quick_bounces"] == 1
        assert session["impressions"] == 1 + len(ads) and session.get("ad_impressions", 0) == len(ads)
        for _ in range(3):  # the hidden item never comes back, on fresh chains too
            again = feed(c, user_id=user, limit=30).json()
            assert hidden not in [i.get("item_id") for i in again["items"]]


@pytest.mark.parametrize(
    "params, status, field",
    [
        ({"user_id": 42, "limit": 0}, 422, "limit"),
        ({"user_id": 42, "limit": 101}, 422, "limit"),
        ({"user_id": "abc"}, 422, "user_id"),
        ({"user_id": -3}, 422, "user_id"),
        ({}, 422, "user_id"),
        ({"user_id": 42, "explain": "maybe"}, 422, "explain"),
        ({"user_id": 42, "cursor": "not-a-cursor"}, 400, "cursor"),
        ({"user_id": 42, "cursor": "eyJ4IjoxfQ.AAAAAAAAAAAAAAAAAAAAAA"}, 400, "cursor"),
    ],
)
def test_bad_feed_input_is_a_4xx_naming_the_field(served_app: ServedApp, params, status, field):
    with served_app.client() as c:
        response = feed(c, **params)
        assert response.status_code == status, response.text
        assert field in [p["field"] for p in response.json()["detail"]]


@pytest.mark.parametrize(
    "body, status, field",
    [
        ([{"user_id": 1, "item_id": 2, "type": "poke"}], 422, "[0].type"),
        ([{"user_id": 1, "type": "click"}], 422, "[0]"),
        ([{"user_id": 1, "item_id": 2, "type": "click", "colour": "red"}], 422, "[0].colour"),
        ([{"user_id": 1, "ad_id": 2, "type": "impression"}], 422, "[0]"),
        ({"user_id": 1}, 422, "body"),
        ([{"user_id": 1, "item_id": 2, "type": "click"}] * 501, 413, "body"),
    ],
)
def test_bad_events_are_a_4xx_naming_the_field(served_app: ServedApp, body, status, field):
    with served_app.client() as c:
        response = c.post("/v1/events", json=body)
        assert response.status_code == status, response.text
        assert field in [p["field"] for p in response.json()["detail"]]
    with served_app.client() as c:
        assert c.post("/v1/events", content=b"{not json", headers={"content-type": "application/json"}).status_code == 400


def test_admin_requires_the_bearer_token(served_app: ServedApp):
    with served_app.client() as c:
        for path, body in (("/admin/weights", {"alpha": 1.5}), ("/admin/reload", {"version": None})):
            assert c.post(path, json=body).status_code == 401
            assert c.post(path, json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert c.post(path, json=body, headers={"Authorization": ADMIN_TOKEN}).status_code == 401
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        missing = c.post("/admin/reload", json={"version": "v-does-not-exist"}, headers=auth)
        assert missing.status_code == 404 and missing.json()["detail"][0]["field"] == "version"
        bad = c.post("/admin/weights", json={"alpha": -1}, headers=auth)
        assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "alpha"
        ok = c.post("/admin/weights", json={"alpha": 1.5, "ranking": {"hide": 0.2}}, headers=auth)
        assert ok.status_code == 200, ok.text
        assert ok.json()["overrides"] == {"collator": {"alpha": 1.5}, "ranking": {"weights": {"hide": 0.2}}}
        assert feed(c, user_id=3).status_code == 200
    redis.Redis.from_url(served_app.redis_url).delete("rf:admin:overrides")  # back to the deployed config


def test_reconfigure_during_traffic_drops_nothing(served_app: ServedApp):
    """Swap the artifact version (and weights) through user_config while clients keep asking."""
    statuses: list[int] = []
    versions: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        with served_app.client() as c:
            user = 1
            while not stop.is_set():
                response = feed(c, user_id=user % 943 + 1, limit=10)
                statuses.append(response.status_code)
                if response.status_code == 200:
                    versions.append(response.json()["model_version"])
                user += 1

    threads = [threading.Thread(target=traffic) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(2.0)
        config = copy.deepcopy(served_app.config)
        for deployment in config["applications"][0]["deployments"]:
            deployment["user_config"]["rayfeed"]["artifacts"]["version"] = served_app.second.version
            deployment["user_config"]["rayfeed"]["collator"]["alpha"] = 1.2
        served_app.deploy(config)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not versions or versions[-1] != served_app.second.version):
            time.sleep(0.2)
        time.sleep(2.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert versions[0] == served_app.first.version and versions[-1] == served_app.second.version
