"""The item stream in a real Redis: atomic, idempotent per item id, updates keep their seq."""
from __future__ import annotations

import pytest

from app.state.errors import StoreUnavailable
from app.state._redis import fail_fast_client
from app.state.items import ItemStreamStore, read_whole_stream
from app.state.local_redis import free_port
from tests.app.state.conftest import run_async_store


def run(url: str, work):
    return run_async_store(url, ItemStreamStore, work)


def item(item_id, creator="c1", title="a post", **extra) -> dict:
    return {"item_id": item_id, "creator_id": creator, "created_at": 1.0, "published_at": 2.0, "topics": ["Drama"],
            "content_rating": "PG", "min_age": 0, "title": title, **extra}


def test_publish_is_idempotent_and_an_update_keeps_the_seq(state_url):
    assert run(state_url, lambda s: s.publish([item("p1"), item("p2", creator="c2")])) == ["published", "published"]
    retried = item("p1", published_at=9.0)  # the server's receipt time differs on a retry: still the same content
    assert run(state_url, lambda s: s.publish([retried])) == ["unchanged"]  # a retried batch adds nothing
    assert run(state_url, lambda s: s.publish([item("p2", creator="c2", title="edited"), item("p3")])) == [
        "updated", "published"]
    entries = run(state_url, lambda s: s.read_after("0-0", 100, None))
    assert [(e.item["item_id"], e.seq, e.creator_seq) for e in entries] == [
        ("p1", 0, 0), ("p2", 1, 1), ("p2", 1, 1), ("p3", 2, 0)]  # creators keep their seq too
    assert entries[2].item["title"] == "edited"
    later = run(state_url, lambda s: s.read_after(entries[1].entry_id, 100, None))
    assert [e.item["item_id"] for e in later] == ["p2", "p3"]
    assert run(state_url, lambda s: s.length()) == 4


def test_integer_and_string_ids_stay_apart(state_url):
    assert run(state_url, lambda s: s.publish([item(7), item("7")])) == ["published", "published"]
    assert [e.seq for e in run(state_url, lambda s: s.read_after("0-0", 10, None))] == [0, 1]


def test_a_delete_is_a_tombstone_under_the_items_seq_once_and_a_republish_brings_it_back(state_url):
    run(state_url, lambda s: s.publish([item("p1"), item("p2", creator="c2")]))
    assert run(state_url, lambda s: s.retract([{"item_id": "p2", "creator_id": "c2"}, {"item_id": "never",
                                                                                      "creator_id": "c9"}])) == [
        "deleted", "absent"]  # an id the stream never held: nothing written
    assert run(state_url, lambda s: s.retract([{"item_id": "p2", "creator_id": "c2", "published_at": 5.0}])) == [
        "unchanged"]
    entries = run(state_url, lambda s: s.read_after("0-0", 100, None))
    assert [(e.item["item_id"], e.seq, e.creator_seq, bool(e.item.get("deleted"))) for e in entries] == [
        ("p1", 0, 0, False), ("p2", 1, 1, False), ("p2", 1, 1, True)]
    assert set(entries[-1].item) == {"item_id", "creator_id", "deleted", "published_at"}
    assert run(state_url, lambda s: s.publish([item("p2", creator="c2")])) == ["updated"]


def test_an_unreachable_redis_is_store_unavailable():
    with pytest.raises(StoreUnavailable, match="publish"):
        run(f"redis://127.0.0.1:{free_port()}/0", lambda s: s.publish([item("p1")]))


def test_training_reads_the_whole_stream_page_by_page(state_url):
    run(state_url, lambda s: s.publish([item(f"p{k}") for k in range(5)]))
    run(state_url, lambda s: s.retract([item("p1")]))
    client = fail_fast_client(state_url, 2.0, max_connections=2)
    try:
        entries = read_whole_stream(client, page=2)  # three pages
    finally:
        client.close()
    assert [(e.item["item_id"], e.seq, bool(e.item.get("deleted"))) for e in entries] == [
        ("p0", 0, False), ("p1", 1, False), ("p2", 2, False), ("p3", 3, False), ("p4", 4, False), ("p1", 1, True)]
    assert entries == run(state_url, lambda s: s.read_after("0-0", 100, None))  # what a replica reads


def test_an_unreachable_redis_stops_the_stream_read_by_name():
    client = fail_fast_client(f"redis://127.0.0.1:{free_port()}/0", 0.5)
    with pytest.raises(StoreUnavailable, match="item stream read"):
        read_whole_stream(client)
