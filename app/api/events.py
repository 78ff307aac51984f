"""`POST /v1/events`, the pure parts: a body becomes validated events, events become stream
entries, accepted events become per-type counts. No I/O; the ingress appends and applies.
"""
from __future__ import annotations

import json
from collections.abc import Sequence

from pydantic import TypeAdapter, ValidationError

from app.api.errors import ApiError
from app.api.ids import ApiIds
from app.api.schemas import Event
from app.api.validation import validation_problems
from app.state.events import StreamEvent

_EVENTS = TypeAdapter(list[Event])


def integral_number(text: str) -> float | int:
    """A JSON number with no fraction is an integer (JSON Schema says so: `3.0` is a valid
    `integer`); the models are strict about types, so it is handed to them as one."""
    value = float(text)
    return int(value) if value.is_integer() else value


def parse_events(raw: bytes, max_events: int) -> list[Event]:
    """The events of a request body: 400 when it is not JSON, 422 naming the field of each bad
    event, 413 past `max_events`. An empty list is a 422 (nothing to acknowledge)."""
    try:
        payload = json.loads(raw, parse_float=integral_number)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "body", f"not JSON: {exc}") from None
    if not isinstance(payload, list):
        raise ApiError(422, "body", "expected a JSON list of events")
    if not payload:
        raise ApiError(422, "body", "expected at least one event")
    if len(payload) > max_events:
        raise ApiError(413, "body", f"at most {max_events} events per request")
    try:
        return _EVENTS.validate_python(payload)
    except ValidationError as exc:
        problems = validation_problems(list(exc.errors()))
        raise ApiError(422, problems[0]["field"], problems[0]["message"], problems=problems) from None


def with_internal_ids(events: list[Event], ids: ApiIds) -> list[Event]:
    """The events with the models' indices for the dataset's ids (422 naming `[i].<field>` for an
    id of the wrong kind or an unknown item)."""
    out = []
    for i, event in enumerate(events):
        update: dict[str, object] = {"user_id": ids.user(event.user_id, f"[{i}].user_id")}
        if event.item_id is not None:
            update["item_id"] = ids.item(event.item_id, f"[{i}].item_id")
        if event.creator_id is not None:
            update["creator_id"] = ids.creator(event.creator_id, f"[{i}].creator_id")
        out.append(event.model_copy(update=update))
    return out


def stream_event(event: Event, now: float, user_ref: object = None) -> StreamEvent:
    """The stream's record of an event: world time `now` when the client sent none, and a
    content-derived id when it named none (a retried batch is then still de-duplicated).
    `user_ref`: the user as the client named them (datasets with their own ids)."""
    fields = event.model_dump(exclude={"event_id"})
    if user_ref is not None:
        fields["user_ref"] = user_ref
    fields["ts"] = event.ts if event.ts is not None else now
    event_id = event.event_id or StreamEvent.derive_id(fields)
    return StreamEvent(event_id=event_id, **fields)


def stream_events_of(events: Sequence[Event], refs: Sequence[object], now: float,
                     max_age_s: float) -> list[StreamEvent]:
    """The batch's stream records, or a 422 naming `[i].ts` for the first event whose timestamp
    lies further than `max_age_s` from world time `now` (a replayed or mis-clocked log would
    otherwise move counters, sessions and trending far from the present)."""
    for i, event in enumerate(events):
        if event.ts is not None and abs(event.ts - now) > max_age_s:
            raise ApiError(422, f"[{i}].ts", f"{event.ts:.0f} is more than api.max_event_age_s = {max_age_s:.0f} s "
                                             f"from the server's world time {now:.0f}")
    return [stream_event(e, now, ref) for e, ref in zip(events, refs)]


def ad_impressions(accepted: Sequence[StreamEvent]) -> list[tuple[str, int]]:
    """(request id, ad id) of the accepted ad impressions: each turns a reservation into spend."""
    return [(e.request_id, e.ad_id) for e in accepted
            if e.type == "impression" and e.ad_id is not None and e.request_id]


def counts_by_type(accepted: Sequence[StreamEvent]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in accepted:
        counts[e.type] = counts.get(e.type, 0) + 1
    return counts
