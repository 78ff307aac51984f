"""POST /v1/items bodies turned into stream records, and every refusal naming the item and field."""
from __future__ import annotations

import pytest

from app.api.errors import ApiError
from app.api.ids import ApiIds
from app.api.publish import publish_records
from app.api.schemas import PublishRequest
from app.data.ids import IdMap, IdMaps

IDS = ApiIds(IdMaps(IdMap(("u1",)), IdMap(("m1", "m2")), IdMap(("c1",))))
TOPICS = ("Comedy", "Drama")


def records(items: list[dict], ids: ApiIds = IDS, max_items: int = 10):
    return publish_records(PublishRequest.model_validate({"items": items}), ids, TOPICS, 13, 500.0,
                           lambda external: 1 if external == "m1" else -1, max_items)


def test_defaults_come_from_the_contract():
    out = records([{"item_id": "p1", "creator_id": "c7", "topics": ["Drama", "Drama"], "content_rating": "R"},
                   {"item_id": "p2", "creator_id": "c1", "created_at": 12.0}])
    assert out[0] == {"item_id": "p1", "creator_id": "c7", "created_at": None, "published_at": 500.0,
                      "topics": ["Drama"], "content_rating": "R", "min_age": 17, "title": "p1"}
    assert (out[1]["created_at"], out[1]["min_age"], out[1]["content_rating"]) == (12.0, 13, "NR")


@pytest.mark.parametrize("items, status, field, words", [
    ([{"item_id": "m1", "creator_id": "c1"}], 409, "items[0].item_id", "trained catalogue"),
    ([{"item_id": "p1", "creator_id": "c1", "topics": ["Horror"]}], 422, "items[0].topics", "unknown topic 'Horror'"),
    ([{"item_id": 5, "creator_id": "c1"}], 422, "items[0].item_id", "strings"),
    ([{"item_id": "p1", "creator_id": 3}], 422, "items[0].creator_id", "strings"),
    ([{"item_id": f"p{k}", "creator_id": "c1"} for k in range(11)], 413, "items", "at most 10"),
])
def test_refusals_name_the_item_and_the_field(items, status, field, words):
    with pytest.raises(ApiError) as caught:
        records(items)
    assert (caught.value.status, caught.value.field) == (status, field) and words in caught.value.message


def test_a_delete_names_the_item_and_its_creator_as_the_producer_did_and_says_whether_the_artifact_holds_it():
    import numpy as np

    from app.api.publish import deletion
    from app.freshness.published import ItemBase, PublishedItems
    from app.state.items import StreamedItem

    creators = np.array([-1, 1, 1])  # slots 1..2: the artifact's items m1, m2 by c1
    post = StreamedItem("1-0", 0, 0, {"item_id": "p1", "creator_id": "new-creator", "created_at": 5.0,
                                      "published_at": 6.0, "topics": [], "min_age": 0})
    placed = PublishedItems().apply([post], True).place(ItemBase.of(np.array([False, True, True]), creators, IDS.ids))
    ids = IDS.with_published(placed)
    published_index = ids.item("p1")
    assert deletion("p1", published_index, creators, ids, 9.0) == (
        {"item_id": "p1", "creator_id": "new-creator", "published_at": 9.0}, False)
    assert deletion("m2", ids.item("m2"), creators, ids, 9.0) == (
        {"item_id": "m2", "creator_id": "c1", "published_at": 9.0}, True)  # taken down as well
