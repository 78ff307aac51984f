"""Published items folded into the next training's dataset: indices that never move, the rows a
replica would have served from the stream, and the stream entries the new version then skips."""
from __future__ import annotations

import numpy as np
import pytest

from app.data import DataConfig, load_dataset
from app.data.config import TablesConfig
from app.data.export import export_dataset
from app.freshness.fold import fold_published
from app.freshness.published import ItemBase, PublishedItems
from app.state.items import StreamedItem


def entry(n: int, seq: int, item_id, creator, creator_seq=0, **extra) -> StreamedItem:
    return StreamedItem(f"{n}-0", seq, creator_seq, {
        "item_id": item_id, "creator_id": creator, "created_at": 1.7e9, "published_at": 1.7e9 + n,
        "topics": ["t0"], "content_rating": "PG-13", "min_age": 13, "title": f"new {item_id}", **extra})


def stream(*entries: StreamedItem) -> PublishedItems:
    return PublishedItems().apply(entries, caught_up=True)


@pytest.fixture(scope="module")
def world(tiny_world):
    topic = tiny_world.topics[0]
    return tiny_world, lambda *a, **k: entry(*a, **{**k, "topics": [topic]})


def test_integer_ids_get_identity_maps_and_published_items_follow_in_seq_order(world):
    dataset, make = world
    n_items, n_creators = dataset.max_item_id, int(dataset.creators["creator_id"].max())
    published = stream(make(1, 1, 90_001, creator=3), make(2, 0, 90_000, creator=2**52, creator_seq=0),
                       make(3, 2, 90_002, creator=5), make(4, 2, 90_002, creator=5, deleted=True))
    folded, report = fold_published(dataset, published)

    assert (report.folded, report.new_ids, report.deleted) == (2, 2, 1)  # a deleted item takes no id
    ids = folded.ids
    assert [ids.items.one(i) for i in (1, n_items, 90_000, 90_001)] == [1, n_items, n_items + 1, n_items + 2]
    assert ids.users.one(7) == 7 and ids.creators.one(3) == 3  # every old id names the same row
    assert ids.creators.one(2**52) == n_creators + 1  # a huge creator id is a map entry, never an array size
    row = folded.items.set_index("item_id").loc[n_items + 1]
    assert (row["title"], row["topics"], row["min_age"], row["creator_id"]) == (
        "new 90000", (dataset.topics[0],), 13, n_creators + 1)
    assert 90_002 not in folded.items["item_id"].map(lambda i: ids.items.to_external([i])[0]).tolist()
    creators = folded.creators.set_index("creator_id")
    assert creators.loc[n_creators + 1, "entity"] == str(2**52) and creators.loc[n_creators + 1, "n_items"] == 1
    assert creators.loc[3, "n_items"] == dataset.creators.set_index("creator_id").loc[3, "n_items"] + 1
    assert len(folded.interactions) == len(dataset.interactions)


def test_a_replica_of_the_folded_version_serves_them_from_the_artifact_not_the_stream(world):
    dataset, make = world
    published = stream(make(1, 0, 90_000, creator=3), make(2, 1, 90_001, creator=3))
    folded, _ = fold_published(dataset, published)
    known = np.zeros(folded.max_item_id + 1, bool)
    known[folded.items["item_id"].to_numpy()] = True
    placed = published.place(ItemBase.of(known, folded.item_creator, folded.ids))
    assert len(placed) == 0  # both rows are the artifact's now
    later = published.apply([make(3, 2, 90_002, creator=3)], caught_up=True)
    assert dict(later.place(ItemBase.of(known, folded.item_creator, folded.ids)).index_of) == {
        90_002: len(known) + 2}  # a later publish goes after the new version's slots (slots + its seq)


def test_indices_never_move_across_folds_even_when_an_item_was_deleted_since(world):
    dataset, make = world
    first, _ = fold_published(dataset, stream(make(1, 0, 90_000, creator=3), make(2, 1, 90_001, creator=3)))
    published = stream(make(1, 0, 90_000, creator=3), make(2, 1, 90_001, creator=3), make(3, 0, 90_000, creator=3,
                       deleted=True), make(4, 2, 90_002, creator=3))
    second, report = fold_published(dataset, published, previous=first.ids)
    assert second.ids.items.one(90_001) == first.ids.items.one(90_001)
    assert second.ids.items.one(90_000) == first.ids.items.one(90_000)  # kept, though no row holds it now
    assert second.ids.items.one(90_002) == first.ids.items.one(90_001) + 1
    assert not second.items["item_id"].isin([first.ids.items.one(90_000)]).any()
    assert (report.folded, report.new_ids, report.deleted) == (2, 1, 1)


def test_nothing_published_leaves_a_dataset_without_maps_as_it_was(world):
    dataset, _ = world
    folded, report = fold_published(dataset, PublishedItems())
    assert folded is dataset and folded.ids is None and report.folded == 0


def test_a_tables_dataset_extends_its_own_maps_and_its_tables_win(world, tmp_path):
    dataset, make = world
    export_dataset(dataset, tmp_path / "tables", string_ids=True)
    config = DataConfig(dataset="tables", tables=TablesConfig(uri=str(tmp_path / "tables"), name="mine"))
    tables = load_dataset(config)
    n = len(tables.ids.items)
    published = stream(make(1, 0, "p-new", creator="c-new"), make(2, 1, "m1", creator="c-new"))
    folded, report = fold_published(tables, published)
    assert (report.folded, report.in_tables) == (1, 1)  # "m1" is the tables' own item: their row wins
    assert folded.ids.items.one("p-new") == n + 1 and folded.ids.items.one("m1") == tables.ids.items.one("m1")
    assert folded.ids.creators.one("c-new") == len(tables.ids.creators) + 1
    # The next training reads the tables with these maps: the folded id keeps its index there too.
    again = load_dataset(config, folded.ids)
    assert again.ids.items.one("p-new") == n + 1


def test_a_folded_item_embeds_in_the_main_index_as_the_fresh_index_embedded_it(world):
    from app.retrieval.two_tower import train_two_tower_in_process
    from tests.app.freshness.conftest import TINY

    dataset, make = world
    folded, _ = fold_published(dataset, stream(make(1, 0, 90_000, creator=3), make(2, 1, 90_001, creator=2**52)))
    artifacts = train_two_tower_in_process(folded, folded.interactions, TINY, on_epoch=None)  # no events on them yet
    new = folded.items[folded.items["item_id"] > dataset.max_item_id]
    main_index = artifacts.item_embeddings[np.searchsorted(artifacts.item_ids, new["item_id"].to_numpy())]
    np.testing.assert_allclose(main_index, artifacts.encode_new_items(new), atol=1e-5)
    engaged = np.unique(dataset.interactions["item_id"].to_numpy())
    own = artifacts.item_embeddings[np.searchsorted(artifacts.item_ids, engaged)]
    content_only = artifacts.encode_new_items(dataset.items.set_index("item_id").loc[engaged].reset_index())
    assert np.abs(own - content_only).max(axis=1).min() > 1e-4  # an engaged item embeds with its own trained row
