"""A seeded notification generator: friend requests from the friend graph and like milestones.

Pure function of its inputs and seed (no dataset import): the caller passes the user's friends,
candidate requesters (e.g. friends of friends, from the social-edge table) and like counts of the
user's posts. The same inputs and seed always give the same notifications.

Example:
    >>> from app.collator.config import NotificationConfig
    >>> ns = generate_notifications(1, friend_ids=[2], candidate_requester_ids=[3, 4],
    ...                             post_likes={10: 120}, seed=7, config=NotificationConfig())
    >>> [n.kind for n in ns if n.kind == "milestone"]
    ['milestone']
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import numpy as np

from app.collator.config import NotificationConfig
from app.collator.types import Notification


def generate_notifications(
    user_id: int,
    friend_ids: Sequence[int],
    candidate_requester_ids: Sequence[int],
    post_likes: Mapping[int, int],
    *,
    seed: int,
    config: NotificationConfig,
    name: Callable[[int], object] | None = None,
) -> list[Notification]:
    """Notifications for `user_id`, highest priority first.

    Friend requests: each candidate requester who is neither the user nor already a friend sent a
    request with probability `friend_request_probability`; at most `max_friend_requests` of them,
    in the seeded order. Milestones: one per post, for the highest threshold its likes reached
    ("Your post got 100 likes"), priority `milestone_priority · log10(threshold)`. `name` renders
    a user in ids and texts (the dataset's own ids; default: the index itself).
    """
    name = name or (lambda u: u)
    rng = np.random.default_rng([seed, user_id])
    friends = set(friend_ids)
    pool = sorted({r for r in candidate_requester_ids if r != user_id and r not in friends})
    order = rng.permutation(len(pool)) if pool else np.zeros(0, dtype=int)
    sent = rng.random(len(pool)) < config.friend_request_probability
    out: list[Notification] = []
    for i in order:
        if len(out) >= config.max_friend_requests:
            break
        if sent[i]:
            requester = pool[int(i)]
            out.append(Notification(
                notification_id=f"fr:{name(user_id)}:{name(requester)}",
                kind="friend_request",
                text=f"User {name(requester)} sent you a friend request",
                priority=config.friend_request_priority,
            ))
    for post_id in sorted(post_likes):
        reached = [t for t in config.milestone_thresholds if post_likes[post_id] >= t]
        if not reached:
            continue
        top = reached[-1]
        out.append(Notification(
            notification_id=f"ms:{name(user_id)}:{post_id}:{top}",
            kind="milestone",
            text=f"Your post {post_id} got {top} likes",
            priority=config.milestone_priority * math.log10(top),
        ))
    out.sort(key=lambda n: (-n.priority, n.notification_id))
    return out
