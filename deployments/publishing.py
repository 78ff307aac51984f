"""POST /v1/items behind the ingress's route: the producer's token first, then the body, then the
item stream (app/state/items.py). Acknowledged only once Redis has every item of the batch;
with Redis unreachable the answer is 503 and nothing was accepted (the batch is idempotent, so
the producer retries it whole). Every replica that holds item data follows the stream and
serves the items within about `api.item_read_block_ms` (usually milliseconds: reads block until
an entry arrives)."""
from __future__ import annotations

from typing import Any

from fastapi import Request

from app.api.errors import ApiError
from app.api.publish import publish_records
from app.api.schemas import PublishRequest
from app.freshness.published import ItemBase
from app.state.errors import StoreUnavailable
from app.state.items import ItemStreamStore
from deployments.admin import authorised_body
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
