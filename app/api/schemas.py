"""Typed bodies of the HTTP API (pydantic), shared by the ingress, the tests and the load generator.

The feed response is built by `app.api.responses`; these models document it for OpenAPI and
validate what clients send (events, admin requests). Unknown fields are rejected everywhere a
client writes, so a typo is a 4xx naming the field rather than a silently ignored value.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator

# Ids are integers a JSON client can hold exactly (JavaScript's Number.MAX_SAFE_INTEGER): above it,
# a client's double would round an id onto its neighbour.
MAX_ID = 2**53 - 1
# The user's own ids (app/data/ids.py): integers, or strings of these characters. A dataset has one
# kind; the OpenAPI document the ingress serves states which (deployments/http.py).
ID_PATTERN = r"^[A-Za-z0-9_.:@\-]{1,128}$"
StringId = Annotated[str, Field(min_length=1, max_length=128, pattern=ID_PATTERN)]
UserId = Annotated[int, Field(ge=1, le=MAX_ID)] | StringId
ItemId = Annotated[int, Field(ge=0, le=MAX_ID)] | StringId

EventType = Literal["impression", "click", "like", "share", "hide", "watch", "conversion"]
EVENT_TYPES: tuple[str, ...] = ("impression", "click", "like", "share", "hide", "watch", "conversion")


class _Strict(BaseModel):
    """What a client writes: unknown fields and mistyped values (a string for a number, `false`
    for a weight) are refused, so the OpenAPI document's types are the API's."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def _present(name: str, json_type: str | None = None) -> dict:
    """JSON Schema: `name` is given and not null (and of `json_type` when one is named)."""
    return {"required": [name], "properties": {name: {"type": json_type} if json_type else {"not": {"type": "null"}}}}


class FeedItem(BaseModel):
    position: int = Field(description="1-based; continues across the pages of one cursor chain")
    type: Literal["organic", "ad", "notification"]
    item_id: int | str | None = Field(None, description="the item, in the dataset's own ids")
    ad_id: int | None = None
    notification_id: str | None = None
    score: float = Field(description="the slot's contribution to CollatorScore")
    provenance: dict[str, object] | None = Field(None, description="explain mode only: why this item is here")


class FeedResponse(BaseModel):
    user_id: int | str = Field(description="the user, as the request named them")
    items: list[FeedItem]
    cursor: str | None = Field(description="pass back for the next page; null when there is none")
    request_id: str
    cold_start: bool = Field(description="true when the user is unknown or has no history: a trending feed")
    page: int
    model_version: str
    world_time: float = Field(description="the world time (unix seconds) the page was made at; events about it "
                                          "carry ts at or after it")
    ads_withheld: str | None = None
    timings_ms: dict[str, float] = Field(default_factory=dict, description="server-side time per stage")
    explain: dict[str, object] | None = None


class Event(_Strict):
    """One user event. Exactly one of item_id / ad_id names what it is about."""

    # The rules of `_target`, for the OpenAPI document.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, json_schema_extra={"oneOf": [
        _present("item_id"), _present("ad_id", "integer")], "allOf": [
        {"if": {"required": ["type"], "properties": {"type": {"const": "watch"}}},
         "then": _present("watch_seconds", "number")},
        {"if": {"required": ["type", "ad_id"], "properties": {"type": {"const": "impression"}, "ad_id": {"type": "integer"}}},
         "then": _present("request_id", "string")},
        {"if": _present("creator_id"), "then": {"properties": {"type": {"const": "hide"}}}},
    ]})

    event_id: str | None = Field(
        None, min_length=1, max_length=128, description="client-chosen id for de-duplication (derived when absent)"
    )
    user_id: UserId = Field(description="the user, in the dataset's own ids")
    item_id: ItemId | None = Field(None, description="the item, in the dataset's own ids")
    ad_id: int | None = Field(None, ge=0, le=MAX_ID)
    type: EventType
    watch_seconds: float | None = Field(None, ge=0, le=86_400)
    position: int | None = Field(None, ge=1, le=100_000)
    request_id: str | None = Field(None, min_length=1, max_length=128)
    ts: float | None = Field(None, gt=0, description="unix seconds of world time, within api.max_event_age_s (7 days) of "
                                                     "the server's (422 otherwise); the server's world time when absent")
    creator_id: ItemId | None = Field(None, description="hide events only: also hide this creator (the dataset's ids)")

    @model_validator(mode="after")
    def _target(self) -> "Event":
        if (self.item_id is None) == (self.ad_id is None):
            raise ValueError("exactly one of item_id and ad_id must be given")
        if self.type == "watch" and self.watch_seconds is None:
            raise ValueError("watch events need watch_seconds")
        if self.ad_id is not None and self.type == "impression" and not self.request_id:
            raise ValueError("ad impressions need the request_id of the feed that served the ad")
        if self.creator_id is not None and self.type != "hide":
            raise ValueError("creator_id is only meaningful on hide events")
        return self


class EventBatch(RootModel[list[Event]]):
    """The body of POST /v1/events: one or more events (at most api.max_events_per_request)."""

    root: list[Event] = Field(min_length=1)


class EventsAck(BaseModel):
    accepted: int
    duplicates: int


class ReloadRequest(_Strict):
    version: str | None = Field(
        None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-]+$",
        description="artifact version to serve; null follows LATEST",
    )


_HEADS = ("click", "like", "share", "hide", "watch")


TakedownKind = Literal["item", "creator"]


class TakedownRequest(_Strict):
    """Why an item or a creator is taken down (recorded with it)."""

    reason: str = Field(min_length=1, max_length=500)


class PublishedItemIn(_Strict):
    """One item of POST /v1/items: the `items` table of the data contract (docs/data.md)."""

    item_id: ItemId = Field(description="the item, in the dataset's own ids (new: not in the trained catalogue)")
    creator_id: ItemId = Field(description="who made it; a creator the catalogue has not seen is welcome")
    created_at: float | None = Field(
        None, ge=0, le=4_102_444_800, description="when it was made, unix seconds (default: when it is published)")
    topics: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=32, description="topics, from the catalogue's topic list")
    content_rating: str | None = Field(None, min_length=1, max_length=16, description="G, PG, PG-13, R, NC-17; NR")
    min_age: int | None = Field(None, ge=0, le=21, description="youngest audience (default: from content_rating)")
    title: str | None = Field(None, min_length=1, max_length=300)


class PublishRequest(_Strict):
    """A batch of items to publish; each is idempotent by item id (see docs/freshness.md)."""

    items: list[PublishedItemIn] = Field(min_length=1, description="at most api.max_publish_items")


class PublishedItemStatus(BaseModel):
    item_id: int | str
    status: Literal["published", "updated", "unchanged"]


class PublishAck(BaseModel):
    items: list[PublishedItemStatus]
    applies_within_s: float = Field(description="every replica serves the items within about this long")


class DeletedItem(BaseModel):
    item_id: int | str
    status: Literal["deleted", "unchanged"] = Field(
        description="unchanged: a published item whose delete was acknowledged before (an item of the trained "
                    "catalogue is taken down, idempotently, and answers deleted every time)")
    applies_within_s: float = Field(description="no replica serves the item after about this long")


class NoBody(_Strict):
    """A request without a body (an empty object is accepted too)."""


class RankingWeights(_Strict):
    """Head weights of the final score; at least one."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False,
                              json_schema_extra={"anyOf": [_present(h, "number") for h in _HEADS]})

    click: float | None = Field(None, ge=0, le=100)
    like: float | None = Field(None, ge=0, le=100)
    share: float | None = Field(None, ge=0, le=100)
    hide: float | None = Field(None, ge=0, le=100)
    watch: float | None = Field(None, ge=0, le=100)

    @model_validator(mode="after")
    def _some(self) -> "RankingWeights":
        if all(getattr(self, h) is None for h in _HEADS):
            raise ValueError(f"give at least one of {', '.join(_HEADS)}")
        return self


class WeightsRequest(_Strict):
    """Collator α/β/γ and ranking head weights; fields left out keep their current value, and at
    least one is given."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, json_schema_extra={"anyOf": [
        *(_present(k, "number") for k in ("alpha", "beta", "gamma")), _present("ranking", "object")]})

    alpha: float | None = Field(None, ge=0, le=10)
    beta: float | None = Field(None, ge=0, le=100)
    gamma: float | None = Field(None, ge=0, le=10)
    ranking: RankingWeights | None = None

    @model_validator(mode="after")
    def _some(self) -> "WeightsRequest":
        if self.alpha is None and self.beta is None and self.gamma is None and self.ranking is None:
            raise ValueError("give at least one of alpha, beta, gamma, ranking")
        return self


class ReadyResponse(BaseModel):
    ready: bool
    degraded: bool
    models: dict[str, str]
    redis: str
    redis_breaker: str = Field("closed", description="the ingress's Redis circuit breaker: closed, half_open or open")
