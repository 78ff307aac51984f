"""Takedowns in a real Redis: durable, versioned, idempotent, undoable; a follower keeps what it
holds while Redis is unreachable."""
from __future__ import annotations

import pytest

from app.state.errors import StoreUnavailable
from app.state.local_redis import free_port
from tests.app.state.conftest import run_async_store
from app.state.takedowns import TakedownFollower, TakedownSet, TakedownStore


def run(url: str, work):
    return run_async_store(url, TakedownStore, work)


def test_takedowns_are_versioned_idempotent_and_undoable(state_url):
    assert run(state_url, lambda s: s.load()) == TakedownSet(0, frozenset(), frozenset())
    v1 = run(state_url, lambda s: s.take_down("item", 50, "copyright", 100.0, external_id="m50"))
    v2 = run(state_url, lambda s: s.take_down("item", 50, "again", 200.0))
    v3 = run(state_url, lambda s: s.take_down("creator", 7, "policy", 300.0))
    assert v1 < v2 < v3
    loaded = run(state_url, lambda s: s.load())
    assert loaded == TakedownSet(v3, frozenset({50}), frozenset({7}))
    first = run(state_url, lambda s: s.get("item", 50))
    assert (first.reason, first.at, first.external_id) == ("copyright", 100.0, "m50")  # the first one stands
    assert run(state_url, lambda s: s.restore("item", 50))[0] is True
    assert run(state_url, lambda s: s.restore("item", 50))[0] is False
    assert run(state_url, lambda s: s.load()).items == frozenset()


def test_a_follower_reloads_on_a_new_version_and_keeps_its_set_without_redis(state_url):
    follower = TakedownFollower()
    assert not follower.current.loaded
    run(state_url, lambda s: s.take_down("item", 3, "spam", 1.0))
    assert run(state_url, follower.refresh).items == {3}
    run(state_url, lambda s: s.take_down("creator", 9, "spam", 2.0))
    assert run(state_url, follower.refresh).creators == {9}
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(StoreUnavailable):
        run(dead, follower.refresh)
    assert follower.current.items == {3} and follower.current.creators == {9}  # still applied
    with pytest.raises(StoreUnavailable):
        run(dead, lambda s: s.take_down("item", 4, "x", 3.0))  # refused, never accepted and lost
