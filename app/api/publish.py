"""POST /v1/items as the domain sees it: a validated batch of the contract's `items` rows turned
into the records the item stream keeps (app/state/items.py).

What is refused, each as a 4xx naming the item and the field: an id of the other kind than the
dataset's (422), a topic outside the catalogue's topic list (422: topics drive diversity,
session interest and ad brand safety, so an unknown one would silently do nothing), and an
item of the trained catalogue (409: its trained row is what serves; it changes with the next
`rayfeed train`). A second publish of a published item with different content is an update,
with the same content a no-op; within one batch the items apply in order (the same id twice:
the later one is an update of the earlier).

    records = publish_records(body, ids, catalog.topics, unrated_min_age=13, now=clock.now())
    tombstone, artifact_item = deletion("m7", 7, catalog.creator_id, ids, now=clock.now())
"""
from __future__ import annotations

from typing import Any

import numpy as np

from app.api.errors import ApiError
from app.api.ids import ApiIds
from app.api.schemas import PublishRequest
from app.data.contract import CONTENT_RATING_MIN_AGE


def publish_records(body: PublishRequest, ids: ApiIds, topics: tuple[str, ...], unrated_min_age: int,
                    now: float, artifact_item: Any, max_items: int) -> list[dict[str, Any]]:
    """The stream records of `body` (published_at: `now`, the serving world's time), or ApiError.

    `artifact_item(external) -> index or −1`: whether the trained catalogue holds the id."""
    if len(body.items) > max_items:
        raise ApiError(413, "items", f"{len(body.items)} items; at most {max_items} per request")
    known_topics, records = set(topics), []
    for k, item in enumerate(body.items):
        where = f"items[{k}]"
        item_id = ids.checked(item.item_id, f"{where}.item_id")
        creator_id = ids.checked(item.creator_id, f"{where}.creator_id")
        if artifact_item(item_id) >= 0:
            raise ApiError(409, f"{where}.item_id", f"item {item_id!r} is in the trained catalogue; it changes "
                                                     "with the next `rayfeed train`, not by publishing")
        unknown = [t for t in item.topics if t not in known_topics]
        if unknown:
            raise ApiError(422, f"{where}.topics", f"unknown topic {unknown[0]!r}; the catalogue's topics are "
                                                   f"{', '.join(sorted(known_topics))}")
        rating = item.content_rating or "NR"
        min_age = item.min_age if item.min_age is not None else CONTENT_RATING_MIN_AGE.get(rating, unrated_min_age)
        records.append({
            "item_id": item_id, "creator_id": creator_id,
            "created_at": float(item.created_at) if item.created_at is not None else None,
            "published_at": float(now), "topics": sorted(set(item.topics)), "content_rating": rating,
            "min_age": int(min_age), "title": item.title or str(item_id),
        })
    return records


def deletion(external: object, index: int, creator_id: np.ndarray, ids: ApiIds,
             now: float) -> tuple[dict[str, Any], bool]:
    """What a producer's delete of item `external` (models' index `index`) writes: the stream's
    tombstone (the item and creator as the producer named them) and whether the artifact holds
    the item. An artifact item's trained row outlives a tombstone until the next training, so the
    caller takes it down as well; a published item leaves every replica with its tombstone."""
    published = ids.published
    if published is not None and external in published.index_of:
        frame = published.frame
        creator = frame.loc[frame["item_id"] == index, "creator_external"].iloc[0]
        creator = creator.item() if isinstance(creator, np.generic) else creator  # JSON takes no numpy scalar
        return {"item_id": external, "creator_id": creator, "published_at": now}, False
    creator_index = int(creator_id[index])
    creator = creator_index if ids.ids is None else ids.ids.creators.to_external([creator_index])[0]
    return {"item_id": external, "creator_id": creator, "published_at": now}, True
