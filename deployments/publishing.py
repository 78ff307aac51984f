"""POST /v1/items and DELETE /v1/items/{item_id} behind the ingress's routes: the producer's token
first, then the body, then the item stream (app/state/items.py). Acknowledged only once Redis has every item of the batch;
with Redis unreachable the answer is 503 and nothing was accepted (the batch is idempotent, so
the producer retries it whole). Every replica that holds item data follows the stream and
serves the items within about `api.item_read_block_ms` (usually milliseconds: reads block until
an entry arrives).

A delete is a tombstone in the stream for a published item. An item of the artifact (trained, or
folded in by the last `rayfeed train`) is taken down as well (app/state/takedowns.py, reason
"deleted by its producer"): its artifact row outlives a tombstone until the next training, a
takedown does not. Both writes are idempotent, so a refused (503) delete is retried whole."""
from __future__ import annotations

from typing import Any

from fastapi import Request

from app.api.errors import ApiError
from app.api.publish import deletion, publish_records
from app.api.schemas import NoBody, PublishRequest
from app.freshness.published import ItemBase
from app.state.errors import StoreUnavailable
from app.state.items import ItemStreamStore
from deployments.admin import authorised_body, item_index, record_takedown
from deployments.redis_guard import GuardedRedis


async def publish(request: Request, state, redis: GuardedRedis) -> dict[str, Any]:
    """`state`: the ingress's (its producer token, the artifact's catalogue and ids, config, clock)."""
    config, now = state.config, state.clock()
    body = await authorised_body(request, state.producer_token, PublishRequest, config.api.max_body_bytes)
    catalog, ids = state.catalog.value
    base = ItemBase.of(catalog.known, catalog.creator_id, ids.ids)
    records = publish_records(body, ids, catalog.topics, config.data.unrated_min_age, now,  # type: ignore[arg-type]
                              base.artifact_item, config.api.max_publish_items)
    if redis.client is None:
        raise ApiError(503, None, "publishing needs Redis (REDIS_URL)", {"Retry-After": "1"})
    store = ItemStreamStore(redis.client)
    try:
        statuses = await redis.guarded("publish", lambda: store.publish(records))
    except StoreUnavailable as exc:
        raise ApiError(503, None, f"items not acknowledged (Redis did not answer: {exc}); retry the batch, "
                                  "it is idempotent", {"Retry-After": "1"}) from None
    return {"items": [{"item_id": r["item_id"], "status": s} for r, s in zip(records, statuses)],
            "applies_within_s": config.api.item_read_block_ms / 1000}


async def delete(request: Request, state, redis: GuardedRedis, raw_id: str) -> dict[str, Any]:
    """The producer's delete of one item (404 for an id no replica serves)."""
    config = state.config
    await authorised_body(request, state.producer_token, NoBody, config.api.max_body_bytes)
    catalog, ids = state.items
    external, index = item_index(ids, raw_id, catalog)
    tombstone, artifact_item = deletion(external, index, catalog.creator_id, ids, state.clock())
    if redis.client is None:
        raise ApiError(503, None, "deleting needs Redis (REDIS_URL)", {"Retry-After": "1"})
    if artifact_item:
        await record_takedown(redis, "item", index, external, "deleted by its producer", config.api.takedown_poll_s)
    try:
        status, = await redis.guarded("retract", lambda: ItemStreamStore(redis.client).retract([tombstone]))
    except StoreUnavailable as exc:
        raise ApiError(503, None, f"delete not acknowledged (Redis did not answer: {exc}); retry, it is idempotent",
                       {"Retry-After": "1"}) from None
    applies = config.api.takedown_poll_s if artifact_item else config.api.item_read_block_ms / 1000
    # An artifact item's delete is its takedown (idempotent): "deleted" every time.
    return {"item_id": external, "status": "deleted" if artifact_item or status == "deleted" else status,
            "applies_within_s": applies}
