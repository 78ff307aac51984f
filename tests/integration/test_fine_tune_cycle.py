"""A fine-tune cycle end to end: monitor trigger → Ray Train job → offline gate → hot swap, under
load, with zero failed requests."""
from __future__ import annotations

import asyncio
import threading
import time
import uuid

import httpx
import pytest
import redis.asyncio as aioredis

from config import config_from_mapping
from observability.monitors import MonitorResult, RetrainRequest, Severity
from observability.retrain_requests import RetrainRequestStream
from tests.integration.artifacts import reduced_config
from tests.integration.conftest import ADMIN_TOKEN, ServedApp
from training.retrain_runner import RetrainRunner, http_reload

pytestmark = pytest.mark.integration

DEPLOYMENTS = ("Retrieval", "Ranking", "Reranking", "Auction")


class Load:
    """GET /v1/feed in a loop from one thread; every status is kept."""

    def __init__(self, url: str) -> None:
        self.url, self.statuses, self._stop = url, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            k = 0
            while not self._stop.is_set():
                k += 1
                try:
                    self.statuses.append(client.get("/v1/feed", params={"user_id": 1 + k % 400, "limit": 10}).status_code)
                except httpx.HTTPError as exc:
                    self.statuses.append(type(exc).__name__)
                time.sleep(0.05)

    def __enter__(self) -> "Load":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def _serving_versions() -> dict[str, str]:
    from ray import serve

    return {name: serve.get_deployment_handle(name, app_name="rayfeed").loaded_version.remote().result()
            for name in DEPLOYMENTS}


def test_a_monitor_trigger_fine_tunes_gates_and_hot_swaps_under_load(served_app: ServedApp):
    root = served_app.first.root
    mapping = reduced_config(root).model_dump(mode="json", exclude={"redis_url"})
    mapping["artifacts"] = {"root": str(root), "version": served_app.first.version}
    mapping["training"]["storage_dir"] = str(root.parent / "train_runs")
    mapping["training"]["fine_tune"] = {"gate_tolerance": 0.05, "min_interval_s": 3600}
    config = config_from_mapping({**mapping, "redis_url": served_app.redis_url})

    with served_app.client() as c:  # engagement on the stream, as clients send it
        events = [{"event_id": f"cycle-{uuid.uuid4()}", "user_id": u, "item_id": i, "type": "like"}
                  for u in range(200, 240) for i in (50 + u % 7, 100 + u % 11, 181)]
        assert c.post("/v1/events", json=events).json()["accepted"] == len(events)

    async def trigger() -> None:
        client = aioredis.Redis.from_url(served_app.redis_url)
        critical = MonitorResult("calibration", "click", 0.21, Severity.CRITICAL, 0.02, 0.05)
        await RetrainRequestStream(client).append(RetrainRequest(time.time(), (critical,)), served_app.first.version)
        await client.aclose()

    asyncio.run(trigger())
    runner = RetrainRunner(config, http_reload(served_app.url, ADMIN_TOKEN), use_ray=True)
    with Load(served_app.url) as load:
        record = runner.step()  # Ray Train on the test's Ray cluster, beside the serving replicas
        assert record is not None and record.status == "published", record
        deadline = time.monotonic() + 90
        while set(_serving_versions().values()) != {record.version}:
            assert time.monotonic() < deadline, _serving_versions()
            time.sleep(0.5)
        time.sleep(2)  # traffic on the new version too
    assert record.trigger == "monitor" and "calibration" in record.reasons
    assert record.gate["passed"] and record.new_interactions >= len(events)  # plus other tests' likes
    assert len(load.statuses) > 20
    assert all(s == 200 for s in load.statuses), [s for s in load.statuses if s != 200][:10]
    # Rate-limited: a second request within min_interval_s is logged, not run.
    asyncio.run(trigger())
    assert runner.step().status == "suppressed"
    # Back to the deployed configuration (the app's user_config pins the first version).
    import redis

    redis.Redis.from_url(served_app.redis_url).delete("rf:admin:overrides")
    deadline = time.monotonic() + 90
    while set(_serving_versions().values()) != {served_app.first.version}:
        assert time.monotonic() < deadline, _serving_versions()
        time.sleep(0.5)
