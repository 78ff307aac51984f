"""The seeded notification generator."""
from __future__ import annotations

from app.collator import NotificationConfig, generate_notifications

CONFIG = NotificationConfig(max_friend_requests=2, friend_request_probability=1.0)


def gen(seed=7, **kw):
    args = dict(friend_ids=[2, 3], candidate_requester_ids=[1, 2, 4, 5, 6, 7], post_likes={}, seed=seed, config=CONFIG)
    args.update(kw)
    return generate_notifications(1, **args)


def test_same_inputs_same_notifications_and_seed_matters():
    assert gen() == gen()
    chosen = {tuple(n.notification_id for n in gen(seed=s)) for s in range(10)}
    assert len(chosen) > 1  # which 2 of the 4 candidate requesters depends on the seed


def test_friend_requests_come_from_non_friends_only_and_are_capped():
    ns = gen()
    assert len(ns) == 2 and all(n.kind == "friend_request" for n in ns)
    requesters = {int(n.notification_id.split(":")[2]) for n in ns}
    assert requesters <= {4, 5, 6, 7}
    none = NotificationConfig(friend_request_probability=0.0)
    assert gen(config=none) == []
    assert gen(candidate_requester_ids=[]) == []


def test_milestones_use_the_highest_threshold_reached_and_rank_by_priority():
    ns = gen(candidate_requester_ids=[], post_likes={10: 5, 11: 60, 12: 1500})
    assert [n.text for n in ns] == ["Your post 12 got 1000 likes", "Your post 11 got 50 likes"]
    assert all(n.kind == "milestone" for n in ns)
    mixed = gen(post_likes={11: 60})
    assert mixed[0].kind == "friend_request"  # priority 1.0 > 0.25·log10(50)
    assert [n.priority for n in mixed] == sorted((n.priority for n in mixed), reverse=True)
