"""`rayfeed train` folds the items published while the app served into the next version: a real
Redis item stream, a real training run on your own tables (string ids), the artifact replicas
load. The next training keeps every index."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from app.bootstrap import load_artifacts
from app.data import DataConfig, load_dataset
from app.data.export import export_dataset
from app.data.synthetic import SyntheticWorldSpec, generate_world
from app.freshness.published import ItemBase, PublishedItems
from app.state._redis import async_fail_fast_client, fail_fast_client
from app.state.items import ItemStreamStore, read_whole_stream
from app.state.local_redis import free_port
from cli.items_commands import trim
from cli.main import train
from tests.training.conftest import small_config


def _publish(url: str, items: list[dict], retract: list[dict] = ()) -> None:
    async def go():
        client = async_fail_fast_client(url, 2.0)
        try:
            store = ItemStreamStore(client)
            await store.publish(items)
            if retract:
                await store.retract(list(retract))
        finally:
            await client.aclose()
    asyncio.run(go())


def _publish_statuses(url: str, items: list[dict]) -> list[str]:
    async def go():
        client = async_fail_fast_client(url, 2.0)
        try:
            return await ItemStreamStore(client).publish(items)
        finally:
            await client.aclose()
    return asyncio.run(go())


def _post(item_id: str, creator: str, topic: str, title: str) -> dict:
    return {"item_id": item_id, "creator_id": creator, "created_at": 1.7e9, "published_at": 1.7e9,
            "topics": [topic], "content_rating": "PG", "min_age": 0, "title": title}


@pytest.fixture
def tables_config(tmp_path, redis_client, redis_url):
    world = generate_world(SyntheticWorldSpec(n_users=120, n_items=300, n_creators=30, n_topics=5,
                                              interactions_per_user=12), DataConfig(seed=3))
    export_dataset(world, tmp_path / "tables", string_ids=True)
    config = small_config(tmp_path).model_copy(update={
        "data": DataConfig(dataset="tables", tables={"uri": str(tmp_path / "tables"), "name": "mine"}),
        "redis_url": redis_url,
    })
    return config, world.topics


def test_the_next_training_folds_published_items_and_keeps_every_index(tables_config, capsys):
    config, topics = tables_config
    _publish(config.redis_url, [_post("post-a", "new-creator", topics[0], "A"), _post("post-b", "c1", topics[1], "B"),
                                _post("post-gone", "c1", topics[1], "gone")],
             retract=[_post("post-gone", "c1", topics[1], "gone")])
    assert train(config, no_ray=True) == 0
    assert "published items: 2 folded into this version (2 new ids), 0 already in the dataset's tables, 1 deleted" \
        in capsys.readouterr().out

    loaded = load_artifacts(config)  # what every replica of the new version loads
    ids, models = loaded.dataset.ids, loaded.organic
    index = ids.items.one("post-a")
    assert index > 300 and models.catalog.is_known(np.array([index]))[0]
    assert models.catalog.topic_names(index) == (topics[0],)
    assert models.catalog.creator_id[index] == ids.creators.one("new-creator") > 0
    assert ids.items.one("post-gone") == -1  # deleted before the training: never given an index
    assert index in models.index.item_ids  # in the main index now, not the fresh one
    vector = models.two_tower.item_embeddings[np.searchsorted(models.two_tower.item_ids, index)]
    assert index in models.index.search(vector[None, :], 5)[0][0].tolist()
    client = fail_fast_client(config.redis_url, 2.0)
    stream = PublishedItems().apply(read_whole_stream(client), caught_up=True)
    client.close()
    assert len(stream.place(ItemBase.of(models.catalog.known, models.catalog.creator_id, ids))) == 0

    # Published after that training: the next one appends it and moves nothing.
    _publish(config.redis_url, [_post("post-c", "new-creator", topics[2], "C")])
    before = {k: ids.items.one(k) for k in ("post-a", "post-b", "m1", "m300")}
    assert train(config, no_ray=True) == 0
    after = load_artifacts(config).dataset.ids
    assert {k: after.items.one(k) for k in before} == before
    assert after.items.one("post-c") == len(ids.items) + 1
    assert after.users.external == ids.users.external

    # Every entry up to the last one the newest version folded leaves the stream; a later publish
    # stays, and the ids stay taken (a retried publish is still "unchanged").
    _publish(config.redis_url, [_post("post-d", "c1", topics[0], "D")])
    assert trim(config, None, None) == 0
    assert "5 entries up to" in capsys.readouterr().out
    client = fail_fast_client(config.redis_url, 2.0)
    assert [e.item["item_id"] for e in read_whole_stream(client)] == ["post-d"]
    client.close()
    assert _publish_statuses(config.redis_url, [_post("post-a", "new-creator", topics[0], "A")]) == ["unchanged"]
    assert trim(config, "v-nope", None) == 2


def test_trimming_needs_a_version_that_folded_a_stream(tables_config, capsys):
    config, _ = tables_config
    assert train(config.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"}), no_ray=True) == 0
    capsys.readouterr()
    assert trim(config, None, None) == 2
    assert "folded no item stream" in capsys.readouterr().err


def test_training_without_a_reachable_redis_folds_nothing_and_says_so(tables_config, capsys):
    config, _ = tables_config
    config = config.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    dataset = load_dataset(config.data)
    from training.fold import fold_stream_items

    assert fold_stream_items(dataset, config, None) is dataset
    assert "none folded, the item stream could not be read" in capsys.readouterr().out
