"""Your own data, served: MovieLens exported to the table contract with string ids (u42, m50),
read back through it (`data.dataset: tables`) by every replica, and the feed, the events and the
errors speaking those ids over HTTP.

No second training: the session's artifact gains the id maps of the export (u<i> -> i, m<i> -> i),
exactly what training on the export records, so the same models serve the string ids."""
from __future__ import annotations

import copy
import json
import shutil

import pytest

from app.artifacts import ArtifactStore
from app.data import DataConfig, load_dataset
from app.data.export import export_dataset
from app.data.ids import IdMap, IdMaps
from tests.integration.conftest import REPO, ServedApp

pytestmark = pytest.mark.integration


@pytest.fixture
def string_id_app(served_app: ServedApp, tmp_path):
    dataset = load_dataset(DataConfig(cache_dir=REPO / "data_cache"))
    export_dataset(dataset, tmp_path / "tables", string_ids=True)
    store = ArtifactStore(served_app.first.root)
    version, staging = store.new_version()
    shutil.rmtree(staging)
    shutil.copytree(served_app.first.path, staging)
    manifest = json.loads((staging / "manifest.json").read_text())
    (staging / "manifest.json").unlink()
    n_users, n_items, n_creators = dataset.max_user_id, dataset.max_item_id, int(dataset.items["creator_id"].max())
    IdMaps(IdMap(tuple(f"u{i}" for i in range(1, n_users + 1))), IdMap(tuple(f"m{i}" for i in range(1, n_items + 1))),
           IdMap(tuple(f"c{i}" for i in range(1, n_creators + 1)))).save(staging / "ids")
    contract = store.publish(version, staging, {k: v for k, v in manifest.items() if k != "version"})
    original = copy.deepcopy(served_app.config)
    changed = copy.deepcopy(original)
    for deployment in changed["applications"][0]["deployments"]:
        rayfeed = deployment["user_config"]["rayfeed"]
        rayfeed["data"] = {**rayfeed.get("data", {}), "dataset": "tables",
                           "tables": {"uri": str(tmp_path / "tables"), "name": "movielens-100k"}}
        rayfeed["artifacts"] = {**rayfeed["artifacts"], "version": contract.version}
    served_app.deploy(changed)
    try:
        yield served_app
    finally:
        served_app.deploy(original)


def test_the_feed_and_the_events_speak_the_users_own_ids(string_id_app: ServedApp):
    with string_id_app.client() as c:
        page = c.get("/v1/feed", params={"user_id": "u42", "limit": 10, "explain": "true"})
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["user_id"] == "u42" and not body["cold_start"]
        organic = [i["item_id"] for i in body["items"] if i["type"] == "organic"]
        assert organic and all(isinstance(i, str) and i.startswith("m") for i in organic)
        second = c.get("/v1/feed", params={"user_id": "u42", "limit": 10, "cursor": body["cursor"]}).json()
        assert not set(organic) & {i["item_id"] for i in second["items"] if i["type"] == "organic"}

        newcomer = c.get("/v1/feed", params={"user_id": "someone-new", "limit": 10}).json()
        assert newcomer["user_id"] == "someone-new" and newcomer["cold_start"]

        ack = c.post("/v1/events", json=[{"user_id": "u42", "item_id": organic[0], "type": "hide"},
                                         {"user_id": "someone-new", "item_id": organic[1], "type": "click"}])
        assert ack.status_code == 200 and ack.json()["accepted"] == 2, ack.text
        hidden_then = c.get("/v1/feed", params={"user_id": "u42", "limit": 10}).json()
        assert organic[0] not in {i.get("item_id") for i in hidden_then["items"]}

        # In a query string every id is text: "42" is a (new) user of a dataset with string ids.
        assert c.get("/v1/feed", params={"user_id": "42", "limit": 5}).json()["cold_start"]
        for event, field in (({"user_id": "u42", "item_id": "m999999", "type": "click"}, "[0].item_id"),
                             ({"user_id": 42, "item_id": "m1", "type": "click"}, "[0].user_id")):
            refused = c.post("/v1/events", json=[event])
            assert refused.status_code == 422 and refused.json()["detail"][0]["field"] == field, refused.text

        document = c.get("/openapi.json").json()
        user_id = next(p for p in document["paths"]["/v1/feed"]["get"]["parameters"] if p["name"] == "user_id")
        assert user_id["schema"]["type"] == "string"
        assert document["components"]["schemas"]["Event"]["properties"]["user_id"]["type"] == "string"
