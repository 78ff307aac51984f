"""POST /v1/events, the pure parts: parsing with errors naming the field, stream entries, counts."""
from __future__ import annotations

import json

import pytest

from app.api.errors import ApiError
from app.api.events import (
    ad_impressions, counts_by_type, parse_events, stream_event, stream_events_of, with_internal_ids,
)
from app.api.ids import ApiIds

NOW = 1.7e9  # world time of the age checks


def body(events) -> bytes:
    return json.dumps(events).encode()


@pytest.mark.parametrize("raw, status, field", [
    (b"{not json", 400, "body"),
    (b"\xff\xfe", 400, "body"),
    (body({"user_id": 1}), 422, "body"),  # not a list
    (body([]), 422, "body"),  # nothing to acknowledge
    (body([{"user_id": 1, "item_id": 2, "type": "click"}] * 4), 413, "body"),
    (body([{"user_id": 1, "item_id": 2, "type": "poke"}]), 422, "[0].type"),
    (body([{"user_id": 1, "type": "click"}]), 422, "[0]"),  # neither item_id nor ad_id
])
def test_bad_bodies_are_refused_naming_the_field(raw, status, field):
    with pytest.raises(ApiError) as refused:
        parse_events(raw, max_events=3)
    assert refused.value.status == status
    assert refused.value.problems[0]["field"] == field and refused.value.body()["detail"]


def test_every_bad_event_of_a_batch_is_named():
    with pytest.raises(ApiError) as refused:
        parse_events(body([{"user_id": 1, "item_id": 2, "type": "click"}, {"user_id": 0, "item_id": 2, "type": "x"}]),
                     max_events=10)
    assert {p["field"] for p in refused.value.problems} == {"[1].user_id", "[1].type"}


def test_events_further_than_the_max_age_from_world_time_are_refused_by_position():
    week = 7 * 86_400.0
    given = parse_events(body([{"user_id": 1, "item_id": 2, "type": "like"},
                               {"user_id": 1, "item_id": 2, "type": "like", "ts": NOW - week + 1}]), 10)
    assert [e.ts for e in stream_events_of(given, [None, None], NOW, week)] == [NOW, NOW - week + 1]
    for ts in (NOW - week - 1, NOW + week + 1):  # a replayed log, or a client clock far ahead
        late = parse_events(body([{"user_id": 1, "item_id": 2, "type": "like"},
                                  {"user_id": 1, "item_id": 2, "type": "like", "ts": ts}]), 10)
        with pytest.raises(ApiError) as refused:
            stream_events_of(late, [None, None], NOW, week)
        assert refused.value.status == 422 and refused.value.problems[0]["field"] == "[1].ts"


def test_stream_events_take_world_time_and_a_content_id_when_the_client_gave_none():
    first, second = parse_events(body([{"user_id": 1, "item_id": 2, "type": "like"},
                                       {"event_id": "e9", "user_id": 1, "item_id": 2, "type": "like", "ts": 5.0}]), 10)
    a, b = stream_event(first, now=100.0), stream_event(first, now=100.0)
    assert a.ts == 100.0 and a.event_id == b.event_id  # a retried batch is de-duplicated
    named = stream_event(second, now=100.0)
    assert named.event_id == "e9" and named.ts == 5.0


def test_ad_impressions_and_counts():
    events = [stream_event(e, 1.0) for e in parse_events(body([
        {"user_id": 1, "ad_id": 3, "type": "impression", "request_id": "r1"},
        {"user_id": 1, "item_id": 4, "type": "impression"},
        {"user_id": 1, "ad_id": 3, "type": "click"},
    ]), 10)]
    assert ad_impressions(events) == [("r1", 3)]
    assert counts_by_type(events) == {"impression": 2, "click": 1}


def test_integral_json_numbers_are_integers_and_types_are_strict():
    """`659.0` is a valid JSON Schema integer; a string or a bool is not a number."""
    (event,) = parse_events(b'[{"user_id": 7.0, "item_id": 3, "type": "watch", "watch_seconds": 12, "position": 2.0}]', 5)
    assert (event.user_id, event.position, event.watch_seconds) == (7, 2, 12.0)
    for bad in (b'[{"user_id": true, "item_id": 3, "type": "click"}]',
                b'[{"user_id": 7.5, "item_id": 3, "type": "click"}]', b'[{"user_id": 7, "item_id": 3, "type": "click", "ts": 1e400}]'):
        with pytest.raises(ApiError) as refused:
            parse_events(bad, 5)
        assert refused.value.status == 422
    # "7" is an id of the other kind for a dataset of integer ids: refused when the ids are mapped.
    with pytest.raises(ApiError) as refused:
        with_internal_ids(parse_events(b'[{"user_id": "7", "item_id": 3, "type": "click"}]', 5), ApiIds(None))
    assert (refused.value.status, refused.value.field) == (422, "[0].user_id")


def test_events_speak_the_datasets_own_ids():
    from app.data.ids import IdMap, IdMaps

    ids = ApiIds(IdMaps(IdMap(("u1", "u2")), IdMap(("m1", "m2")), IdMap(("c1",))))
    (event,) = with_internal_ids(parse_events(
        b'[{"user_id": "u2", "item_id": "m1", "type": "hide", "creator_id": "c1"}]', 5), ids)
    assert (event.user_id, event.item_id, event.creator_id) == (2, 1, 1)
    (guest,) = with_internal_ids(parse_events(b'[{"user_id": "newcomer", "item_id": "m2", "type": "click"}]', 5), ids)
    assert guest.user_id == IdMap(("u1", "u2")).guest("newcomer") > 2
    for body, field in ((b'[{"user_id": "u1", "item_id": "m9", "type": "click"}]', "[0].item_id"),
                        (b'[{"user_id": 1, "item_id": "m1", "type": "click"}]', "[0].user_id")):
        with pytest.raises(ApiError) as refused:
            with_internal_ids(parse_events(body, 5), ids)
        assert (refused.value.status, refused.value.field) == (422, field)
