"""One feed, one path: the page served over HTTP equals `FeedService`'s page for the same
artifact, Redis state and world time.

The in-process service is built the way the CLI builds it (`app.bootstrap`), from the deployed
configuration plus the admin overrides in Redis, and given the event stream's live engagement
replayed as a Retrieval replica follows it. For each page the test reads the user's state from
Redis, fetches the page over HTTP, gives back the ads it reserved (so Redis is as it was), and
makes the same page in process at the served page's world time. Scores are compared to 2e-5:
the float32 passes may differ in the last bits between processes; everything else exactly.
"""
from __future__ import annotations

import asyncio
import os
import time
import uuid

import pytest
import redis
import redis.asyncio as aioredis
import torch

from app.api.cursor import CursorCodec
from app.bootstrap import build_feed_service, load_artifacts, world_clock
from app.freshness.live import LiveEngagement
from app.organic import OrganicRequest
from app.page import PageState
from app.state import keys
from app.state.events import EventStream
from app.state.overrides import OVERRIDES_KEY, Overrides
from app.state.sessions import FeedStateStore
from config import config_from_mapping, deep_merge
from tests.integration.conftest import ServedApp

pytestmark = pytest.mark.integration

KNOWN_USERS = [1, 2, 3, 7, 12, 25, 42, 60, 77, 99, 123, 150, 177, 201, 250, 280, 305, 333, 360, 401, 444, 480, 500,
               521, 555, 600, 640, 666, 700, 733, 768, 800, 821, 850, 877, 900, 911, 925, 933, 940, 943, 16]
COLD_USERS = [5001, 5002, 5003, 5004, 5005, 5006, 5007, 5008]  # unknown to the artifact: trending feeds
SECOND_PAGE_USERS = {1, 42, 99, 305, 500, 700, 900, 943, 5001, 5002}
SCORE_TOLERANCE = 2e-5  # both sides are rounded to 5 decimals: a difference under 1e-5 can show as one step


def served_config(app: ServedApp):
    """What the ingress runs: its deployed user_config plus the admin overrides in Redis."""
    ingress = next(d for d in app.config["applications"][0]["deployments"] if d["name"] == "FeedIngress")
    overrides = Overrides.decode(redis.Redis.from_url(app.redis_url).get(OVERRIDES_KEY)).overrides
    return config_from_mapping(deep_merge(ingress["user_config"]["rayfeed"], overrides), "served")


def in_process(app: ServedApp, config):
    torch.set_num_threads(1)  # as the Ranking replica runs
    loaded = load_artifacts(config)
    service = build_feed_service(loaded, config, app.redis_url, world_clock(loaded))
    dynamic = config.retrieval.dynamic
    if dynamic.enabled:
        live = LiveEngagement(loaded.organic.two_tower, dynamic)
        live.attach(loaded.organic)
        live.observe([event for _, event in asyncio.run(_whole_stream(app.redis_url, config))])
        service.live = live
    return service


async def _whole_stream(url: str, config):
    client = aioredis.Redis.from_url(url)
    try:
        stream, out, after = EventStream(client, config.api.event_stream_maxlen, config.api.event_dedup_ttl_s), [], "0-0"
        while batch := await stream.read(after, 1000):
            out += batch
            after = batch[-1][0]
        return out
    finally:
        await client.aclose()


def retrieval_followed_stream(app: ServedApp, config) -> None:
    """The served Retrieval replica has applied every event on the stream (as the replay did)."""
    from ray import serve

    async def last_id() -> str:
        client = aioredis.Redis.from_url(app.redis_url)
        try:
            return await EventStream(client, config.api.event_stream_maxlen, config.api.event_dedup_ttl_s).last_id()
        finally:
            await client.aclose()

    last = asyncio.run(last_id())
    handle = serve.get_deployment_handle("Retrieval", app_name="rayfeed")
    position = handle.freshness.remote().result(timeout_s=30)["position"]
    assert last in ("0-0", "", None) or position == last, (position, last)


def page_state(app: ServedApp, config, user_id: int, cursor: str | None) -> PageState:
    """The user's state as the ingress reads it before the page (the cursor's session, if any)."""
    async def read() -> PageState:
        client = aioredis.Redis.from_url(app.redis_url)
        try:
            a = config.api
            store = FeedStateStore(client, a.served_ttl_s, a.session_ttl_s, a.hidden_ttl_s, a.quick_bounce_s)
            decoded = None
            if cursor is not None:
                decoded = CursorCodec(await store.cursor_secret(), a.cursor_max_age_s).decode(cursor, user_id, 0.0)
            return PageState.from_store(decoded, await store.read(user_id, decoded.session_id if decoded else None),
                                        uuid.uuid4().hex)
        finally:
            await client.aclose()

    return asyncio.run(read())


def release_ads(service, request_id: str, items: list[dict]) -> None:
    ad_ids = [i["ad_id"] for i in items if i["type"] == "ad"]
    if ad_ids:
        service.ads.release(request_id, ad_ids)


def wait_released(app: ServedApp, request_id: str, timeout_s: float = 5.0) -> int:
    """Until no reservation of the served page is held (returns how many it made): the test gave
    back the placed ads, the ingress sends the unplaced ones with its next auction call or alone
    after api.release_linger_s."""
    client = redis.Redis.from_url(app.redis_url, decode_responses=True)
    deadline = time.monotonic() + timeout_s
    while True:
        ledgers = list(client.scan_iter(match=f"{keys.PREFIX}:*:capres:{request_id}:*", count=1000))
        held = [k for k in ledgers if client.hget(k, "state") == "R"]
        if not held:
            return len(ledgers)
        assert time.monotonic() < deadline, f"still held {timeout_s} s after the page: {held}"
        time.sleep(0.02)


def same_item(served: dict, local: dict, where: str) -> None:
    assert {k: v for k, v in served.items() if k not in ("score", "provenance")} == \
        {k: v for k, v in local.items() if k not in ("score", "provenance")}, where
    assert abs(served["score"] - local["score"]) <= SCORE_TOLERANCE, where
    assert ("provenance" in served) == ("provenance" in local), where
    if "provenance" in served:
        same_values(served["provenance"], local["provenance"], where)


REQUEST_SCOPED = {"reservation_id"}  # "<request id>:<ad id>": each page holds its own reservations


def same_values(served, local, where: str) -> None:
    if isinstance(served, dict):
        assert isinstance(local, dict) and set(served) == set(local), (where, served, local)
        for key in set(served) - REQUEST_SCOPED:
            same_values(served[key], local[key], f"{where}.{key}")
    elif isinstance(served, float) or isinstance(local, float):
        assert abs(float(served) - float(local)) <= SCORE_TOLERANCE, (where, served, local)
    else:
        assert served == local, (where, served, local)


def test_the_served_page_is_the_in_process_page(served_app: ServedApp):
    config = served_config(served_app)
    assert os.environ.get("REDIS_URL") == served_app.redis_url
    service = in_process(served_app, config)
    retrieval_followed_stream(served_app, config)
    compared = dict.fromkeys(("reservations", "pages", "second_pages", "explained", "cold", "with_ads", "with_friends"), 0)
    with served_app.client() as c:
        for n, user in enumerate(KNOWN_USERS + COLD_USERS):
            explain = n % 2 == 0
            cursor = None
            for page_number in (1, 2) if user in SECOND_PAGE_USERS else (1,):
                state = page_state(served_app, config, user, cursor)
                params = {"user_id": user, "limit": 20, "explain": str(explain).lower(), **({"cursor": cursor} if cursor else {})}
                response = c.get("/v1/feed", params=params)
                assert response.status_code == 200, response.text
                served = response.json()
                release_ads(service, served["request_id"], served["items"])
                compared["reservations"] += wait_released(served_app, served["request_id"])
                request = OrganicRequest(user, served["world_time"], 20, uuid.uuid4().hex, state.served_item_ids,
                                         state.hidden_item_ids, state.hidden_creator_ids, explain)
                local_page = service.page(request, state)
                local = local_page.body
                release_ads(service, request.request_id, local["items"])
                where = f"user {user} page {page_number}"
                assert len(served["items"]) == len(local["items"]), where
                for s, l in zip(served["items"], local["items"]):
                    same_item(s, l, where)
                for key in ("user_id", "cold_start", "page", "model_version", "ads_withheld", "world_time"):
                    assert served.get(key) == local.get(key), (where, key)
                assert (served["cursor"] is not None) == local_page.assembled.has_more, where
                if explain:
                    served_explain = {k: v for k, v in served["explain"].items() if k != "live_topics"}
                    same_values(served_explain, local["explain"], f"{where} explain")
                compared["pages"] += 1
                compared["second_pages"] += page_number == 2
                compared["explained"] += explain
                compared["cold"] += served["cold_start"]
                compared["with_ads"] += any(i["type"] == "ad" for i in served["items"])
                compared["with_friends"] += any(i["type"] == "notification" for i in served["items"])
                cursor = served["cursor"]
                if cursor is None:
                    break
    assert len(set(KNOWN_USERS + COLD_USERS)) >= 50 and compared["pages"] >= 60, compared
    assert compared["second_pages"] >= 8 and compared["cold"] >= len(COLD_USERS), compared
    assert compared["reservations"] > compared["with_ads"], compared  # unplaced ones were reserved and released
    assert compared["with_ads"] >= 10 and compared["with_friends"] >= 5 and compared["explained"] >= 20, compared
