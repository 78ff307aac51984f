"""Policy filters. Each is a dozen lines: a keep-mask and the reason recorded for the rest."""
from __future__ import annotations

import numpy as np

from app.catalog import Catalog
from app.pipeline.candidates import Candidates, FeedQuery


def _member(values: np.ndarray, members: frozenset[int]) -> np.ndarray:
    if not members:
        return np.zeros(len(values), dtype=bool)
    return np.isin(values, np.fromiter(members, dtype=np.int64, count=len(members)))


class UnknownItemFilter:
    """Drops ids the catalogue does not hold (a stale index or a bad event can produce them)."""

    name = "unknown_item_filter"

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def keep(self, query: FeedQuery, candidates: Candidates) -> tuple[np.ndarray, str]:
        return self.catalog.is_known(candidates.item_ids), "not in catalogue"


class HiddenItemFilter:
    name = "hidden_item_filter"

    def keep(self, query: FeedQuery, candidates: Candidates) -> tuple[np.ndarray, str]:
        return ~_member(candidates.item_ids, query.hidden_item_ids), "item hidden by user"


class TakedownFilter:
    """Items and creators taken down (app/state/takedowns.py) never leave retrieval. Needs the
    `creator_id` column (CatalogHydrator). The page assembly checks again (app/page.py)."""

    name = "takedown_filter"

    def keep(self, query: FeedQuery, candidates: Candidates) -> tuple[np.ndarray, str]:
        gone = _member(candidates.item_ids, query.taken_down_item_ids) | _member(
            candidates.features["creator_id"], query.taken_down_creator_ids)
        return ~gone, "taken down"


class HiddenCreatorFilter:
    """Needs the `creator_id` column (CatalogHydrator)."""

    name = "hidden_creator_filter"

    def keep(self, query: FeedQuery, candidates: Candidates) -> tuple[np.ndarray, str]:
        return ~_member(candidates.features["creator_id"], query.hidden_creator_ids), "creator hidden by user"


class ContentRatingFilter:
    """Content rating against the user's age; users without an age get `unknown_user_age`."""

    name = "content_rating_filter"

    def __init__(self, unknown_user_age: int) -> None:
        self.unknown_user_age = unknown_user_age

    def keep(self, query: FeedQuery, candidates: Candidates) -> tuple[np.ndarray, str]:
        age = query.user_features.get("age")
        age = self.unknown_user_age if age is None else int(age)  # type: ignore[arg-type]
        return candidates.features["min_age"] <= age, f"content rating above user age {age}"
