"""The HTTP API's pure parts: cursors, event validation, the bearer check, response building."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from app.api.config import ApiConfig
from app.api.cursor import Cursor, CursorCodec, InvalidCursor
from app.api.responses import bearer_token_matches, page_items
from app.api.schemas import Event, WeightsRequest
from app.collator import Collator, CollatorConfig, OrganicEntry, SessionSignals

SECRET = b"0123456789abcdef0123456789abcdef"


@given(st.text(min_size=1, max_size=40), st.integers(1, 10**9), st.integers(2, 1000), st.integers(1, 10**6))
def test_cursor_round_trips(session, user, page, position):
    codec = CursorCodec(SECRET, max_age_s=60)
    cursor = Cursor(session, user, page, position, issued_at=1000.0)
    assert codec.decode(codec.encode(cursor), user_id=user, now=1030.0) == cursor


def test_cursor_rejects_forgery_other_users_expiry_and_garbage():
    codec = CursorCodec(SECRET, max_age_s=60)
    token = codec.encode(Cursor("s", 42, 2, 21, issued_at=1000.0))
    body, signature = token.split(".")
    with pytest.raises(InvalidCursor, match="another user"):
        codec.decode(token, user_id=43, now=1000.0)
    with pytest.raises(InvalidCursor, match="expired"):
        codec.decode(token, user_id=42, now=1061.0)
    with pytest.raises(InvalidCursor, match="signature"):
        codec.decode(body + "x." + signature, user_id=42, now=1000.0)
    with pytest.raises(InvalidCursor, match="signature"):
        CursorCodec(b"another-secret-of-32-bytes......", 60).decode(token, user_id=42, now=1000.0)
    for garbage in ("", "abc", "a.b.c", "x" * 600):
        with pytest.raises(InvalidCursor):
            codec.decode(garbage, user_id=42, now=1000.0)


def test_event_validation_names_the_rule():
    Event(user_id=1, item_id=2, type="click")
    Event(user_id=1, ad_id=2, type="impression", request_id="r")
    for bad in (
        {"user_id": 1, "type": "click"},  # neither target
        {"user_id": 1, "item_id": 1, "ad_id": 2, "type": "click"},  # both
        {"user_id": 1, "item_id": 1, "type": "watch"},  # no watch_seconds
        {"user_id": 1, "ad_id": 2, "type": "impression"},  # ad impression without request id
        {"user_id": 1, "item_id": 1, "type": "click", "creator_id": 3},  # creator only on hides
        {"user_id": 0, "item_id": 1, "type": "click"},
        {"user_id": 1, "item_id": 1, "type": "poke"},
        {"user_id": 1, "item_id": 1, "type": "click", "unknown": 1},
    ):
        with pytest.raises(ValidationError):
            Event.model_validate(bad)
    with pytest.raises(ValidationError):
        WeightsRequest.model_validate({"alpha": -1})


def test_api_config_orders_its_limits():
    with pytest.raises(ValidationError):
        ApiConfig(min_limit=10, default_limit=5, max_limit=20)


def test_bearer_check():
    assert bearer_token_matches("Bearer s3cret", "s3cret")
    assert bearer_token_matches("bearer s3cret", "s3cret")
    for header in (None, "", "s3cret", "Bearer", "Bearer wrong", "Basic s3cret"):
        assert not bearer_token_matches(header, "s3cret")
    assert not bearer_token_matches("Bearer anything", None)  # no token configured: closed


def test_page_items_positions_continue_and_ids_by_type():
    organic = [OrganicEntry(item_id=i, value=1.0, p_engage=0.3, creator_id=i) for i in range(10)]
    page = Collator(CollatorConfig()).collate(organic, [], [], SessionSignals(), limit=5)
    items = page_items(page, first_position=21, explain=True, organic={0: {"source": "ann"}})
    assert [i["position"] for i in items] == [21, 22, 23, 24, 25]
    assert [i["item_id"] for i in items] == [0, 1, 2, 3, 4]
    assert items[0]["provenance"]["source"] == "ann"
    assert "provenance" not in page_items(page, 1, explain=False)[0]
