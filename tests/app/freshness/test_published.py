"""Published items laid out after the artifact's slots: the same indices on every replica."""
from __future__ import annotations

import numpy as np

from app.api.ids import ApiIds
from app.catalog import Catalog
from app.data.ids import IdMap, IdMaps
from app.freshness.published import ItemBase, PublishedItems
from app.state.items import StreamedItem

KNOWN = np.array([False, True, True, True])  # slots 1..3 hold the artifact's items
CREATORS = np.array([-1, 1, 1, 2])


def entry(n: int, seq: int, item_id, creator="c9", creator_seq=0, **extra) -> StreamedItem:
    return StreamedItem(f"{n}-0", seq, creator_seq, {
        "item_id": item_id, "creator_id": creator, "created_at": 5.0, "published_at": 6.0 + n, "topics": ["Drama"],
        "content_rating": "PG-13", "min_age": 13, "title": f"t{item_id}", **extra})


def maps() -> IdMaps:
    return IdMaps(IdMap(("u1",)), IdMap(("m1", "m2", "m3")), IdMap(("c1", "c2")))


def test_items_go_after_the_artifact_in_seq_order_and_new_creators_after_its_creators():
    published = PublishedItems().apply([entry(1, 1, "p2", "c1"), entry(2, 0, "p1", "c9", creator_seq=4)], True)
    placed = published.place(ItemBase.of(KNOWN, CREATORS, maps()))
    assert dict(placed.index_of) == {"p1": 4, "p2": 5}
    assert dict(placed.creator_index_of) == {"c9": 3 + 4, "c1": 1}  # known creators keep their index
    assert placed.slots == 6 and placed.external_of[5] == "p2"
    np.testing.assert_array_equal(placed.published_at()[4:], [8.0, 7.0])


def test_an_update_replaces_the_content_and_a_folded_item_keeps_the_artifact_row():
    published = PublishedItems().apply([entry(1, 0, "p1"), entry(2, 1, "m2")], True)
    published = published.apply([entry(3, 0, "p1", title="edited")], True)
    placed = published.place(ItemBase.of(KNOWN, CREATORS, maps()))
    assert list(placed.frame["title"]) == ["edited"]  # "m2" is the artifact's own (a later training folded it)
    assert published.position == "3-0" and published.caught_up


def test_a_dataset_without_maps_keeps_known_creators_and_gives_new_ones_a_slot():
    entries = [entry(1, 0, 900, creator=2**52, creator_seq=0), entry(2, 1, 901, creator=2, creator_seq=1)]
    placed = PublishedItems().apply(entries, True).place(ItemBase.of(KNOWN, CREATORS, None))
    assert dict(placed.index_of) == {900: 4, 901: 5}
    assert dict(placed.creator_index_of) == {2**52: 3, 2: 2}  # a huge id never becomes an array size


def test_the_catalogue_and_the_ids_know_published_items():
    catalog = Catalog(CREATORS, np.zeros(4, np.int16), np.eye(4, 2, dtype=np.float32), ("Drama", "Horror"), KNOWN)
    placed = PublishedItems().apply([entry(1, 0, "p1")], True).place(ItemBase.of(KNOWN, CREATORS, maps()))
    grown = catalog.with_items(placed)
    assert grown.is_known(np.array([4]))[0] and grown.topic_names(4) == ("Drama",) and grown.min_age[4] == 13
    ids = ApiIds(maps()).with_published(placed)
    assert ids.item("p1") == 4 and ids.item("m3") == 3
    assert ids.items_out([3, 4, 1]) == ["m3", "p1", "m1"]
    assert ids.creator("c9") == placed.creator_index_of["c9"]


def test_a_tombstone_removes_the_item_and_keeps_its_slot_unused():
    published = PublishedItems().apply([entry(1, 0, "p1"), entry(2, 1, "p2"), entry(3, 0, "p1", deleted=True)], True)
    placed = published.place(ItemBase.of(KNOWN, CREATORS, maps()))
    assert dict(placed.index_of) == {"p2": 5}


def test_engagement_counts_are_sparse_so_any_event_id_is_safe():
    import pandas as pd

    from app.retrieval.engagement import EngagementLog

    log = EngagementLog(pd.DataFrame({"user_id": [1, 2, 3], "item_id": [5, 5, 2**50], "timestamp": [1.0, 2.0, 3.0]}))
    assert log.item_counts(np.array([5, 2**50, 7, -1])).tolist() == [2, 1, 0, 0]
    assert EngagementLog().item_counts(np.array([1])).tolist() == [0]


def test_an_edit_keeps_the_first_publication_time():
    published = PublishedItems().apply([entry(1, 0, "p1")], True).apply([entry(5, 0, "p1", title="edited")], True)
    placed = published.place(ItemBase.of(KNOWN, CREATORS, maps()))
    assert placed.frame["title"].tolist() == ["edited"] and placed.published_at()[4] == 7.0  # entry 1's time


def test_engagement_counts_follow_later_adds_without_a_recount():
    import pandas as pd

    from app.retrieval.engagement import EngagementLog

    log = EngagementLog(pd.DataFrame({"user_id": [1], "item_id": [5], "timestamp": [1.0]}))
    assert log.item_counts(np.array([5, 6])).tolist() == [1, 0]
    log.add(pd.DataFrame({"user_id": [2, 3], "item_id": [6, 5], "timestamp": [2.0, 3.0]}))
    assert log.item_counts(np.array([5, 6])).tolist() == [2, 1]


def test_dense_engagement_counts_equal_a_recount_through_growth_and_a_switch_to_sparse_ids():
    import pandas as pd

    from app.retrieval.engagement import EngagementLog

    rng = np.random.default_rng(4)
    first = pd.DataFrame({"user_id": rng.integers(0, 50, 400), "item_id": rng.integers(0, 300, 400),
                          "timestamp": np.sort(rng.random(400) * 100)})
    log = EngagementLog(first)
    probe = np.arange(-2, 700)
    counts = log.item_counts(probe)  # taken once: the dense array
    assert counts.tolist() == [int((first["item_id"] == i).sum()) for i in probe]
    later = pd.DataFrame({"user_id": [1, 2, 3], "item_id": [650, 650, 7], "timestamp": [101.0, 102.0, 103.0]})
    log.add(later)  # 650 is past the array: it grows
    every = pd.concat([first, later])
    assert log.item_counts(probe).tolist() == [int((every["item_id"] == i).sum()) for i in probe]
    log.add(pd.DataFrame({"user_id": [4], "item_id": [2**40], "timestamp": [104.0]}))  # ids no longer dense
    assert log.item_counts(np.array([650, 7, 2**40])).tolist() == [2, int((every["item_id"] == 7).sum()), 1]
