"""What the collator is given besides ads: the reranked organic items as `OrganicEntry`s and the
user's notifications. Kept free of the model stack (no torch, no FAISS) so that the Reranking
replica, which builds both, starts without importing it."""
from __future__ import annotations

import numpy as np

from app.catalog import Catalog
from app.collator.config import NotificationConfig
from app.collator.notifications import generate_notifications
from app.collator.types import Notification, OrganicEntry
from app.data.tables import Dataset
from app.pipeline import Candidates, FeedQuery


def organic_entries(candidates: Candidates, catalog: Catalog) -> list[OrganicEntry]:
    """The collator's view of reranked organic candidates (value = the ranker's final score)."""
    close = candidates.features.get("close_friend", np.zeros(len(candidates), bool))
    p_click = candidates.scores.get("p_click", np.zeros(len(candidates)))
    return [
        OrganicEntry(
            item_id=int(item),
            value=float(max(value, 0.0)),
            p_engage=float(np.clip(p, 0.0, 1.0)),
            creator_id=int(catalog.creator_id[item]),
            topics=catalog.topic_names(int(item)),
            min_age=int(catalog.min_age[item]),
            close_friend=bool(c),
        )
        for item, value, p, c in zip(candidates.item_ids, candidates.scores["final"], p_click, close)
    ]


def notifications_for(query: FeedQuery, dataset: Dataset, config: NotificationConfig, seed: int) -> list[Notification]:
    """Friend requests from friends-of-friends (people you may know); no milestones without posts."""
    requesters: set[int] = set()
    for friend in query.friend_ids[:10]:
        requesters.update(int(f) for f in dataset.friends_of(friend)[:10])
    return generate_notifications(query.user_id, query.friend_ids, sorted(requesters), {}, seed=seed, config=config)
