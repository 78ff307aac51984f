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
    """The collator's view of reranked organic candidates (value = the ranker's final score).

    Columns are converted to Python lists first: numpy scalar arithmetic per item was most of
    this function's cost."""
    n = len(candidates)
    items = np.asarray(candidates.item_ids, dtype=np.int64)
    close = candidates.features.get("close_friend", np.zeros(n, bool))
    p_click = candidates.scores.get("p_click", np.zeros(n))
    values = np.maximum(np.asarray(candidates.scores["final"], dtype=np.float64), 0.0)
    p_engage = np.clip(np.asarray(p_click, dtype=np.float64), 0.0, 1.0)
    return [
        OrganicEntry(item_id=item, value=value, p_engage=p, creator_id=creator, topics=topics,
                     min_age=min_age, close_friend=c)
        for item, value, p, creator, topics, min_age, c in zip(
            items.tolist(), values.tolist(), p_engage.tolist(), catalog.creator_id[items].tolist(),
            catalog.topic_names_of(items), catalog.min_age[items].tolist(), np.asarray(close, bool).tolist(),
        )
    ]


def notifications_for(query: FeedQuery, dataset: Dataset, config: NotificationConfig, seed: int) -> list[Notification]:
    """Friend requests from friends-of-friends (people you may know); no milestones without posts."""
    requesters: set[int] = set()
    for friend in query.friend_ids[:10]:
        requesters.update(int(f) for f in dataset.friends_of(friend)[:10])
    ids = dataset.ids
    name = None
    if ids is not None:  # ids and texts in the dataset's own ids, not the models' indices
        def name(user: int) -> object:
            return ids.users.to_external([user])[0] or user
    return generate_notifications(query.user_id, query.friend_ids, sorted(requesters), {}, seed=seed, config=config,
                                  name=name)
